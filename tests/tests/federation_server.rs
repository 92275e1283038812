//! Federation, server side (issue 16), with real servers: a.test federates
//! with b.test over `https_spiffe` and follows b.test's CA rotation within
//! one refresh hint; a b.test endpoint that is down, answers garbage,
//! another trust domain's bundle or an older sequence leaves a.test with
//! the last good bundle, counted by reason, until it recovers; `https_web`
//! with a test CA as `ca_file`; the bad-input table through the CLI; the
//! sync stream sends exactly the foreign bundles an agent's entries
//! federate with, and pushes their changes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sigil_proto::TrustDomain;
use sigil_proto::agent_api::sync_entries_response::Kind;
use sigil_proto::bundle::{SpiffeBundle, encode};
use sigil_proto::test_pki::{TestCa, web_server_cert};
use sigil_tests::poll::wait_for;
use sigil_tests::prom::http_get;
use sigil_tests::sync_stream::{SyncStream, attested_agent};
use sigil_tests::{ServerOptions, TestServer, free_addr, pem_certs, text};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// b.test's bundle endpoint refresh hint.
const HINT: Duration = Duration::from_secs(2);
/// What a change may take beyond one refresh hint to show in a.test: the
/// client polls at the hint measured from the start of its last fetch, so
/// the hint covers the wait; on top come one fetch over loopback (TLS and
/// a ~1 KiB body: milliseconds, 100 ms under load), the store write with
/// its fsync (tens of ms) and this test's own probe, one `bundle show`
/// process run every 50 ms (a few hundred ms on a loaded 2-core machine).
/// One second covers these with margin and is half the hint.
const ALLOWANCE: Duration = Duration::from_secs(1);

fn b_server() -> (TestServer, SocketAddr) {
    let addr = free_addr();
    let s = TestServer::start(ServerOptions {
        trust_domain: "b.test".into(),
        bundle_endpoint: false,
        extra: format!(
            "[bundle_endpoint]\naddress = \"{addr}\"\nrefresh_hint = \"{}s\"\n",
            HINT.as_secs()
        ),
        ..Default::default()
    })
    .unwrap();
    (s, addr)
}

/// a.test, polling at most every second, with `/metrics` on the returned
/// address.
fn a_server(extra: &str) -> (TestServer, SocketAddr) {
    let health = free_addr();
    let s = TestServer::start(ServerOptions {
        trust_domain: "a.test".into(),
        extra: format!(
            "[health]\naddress = \"{health}\"\n\n[federation_client]\nrefresh_floor = \"1s\"\n{extra}"
        ),
        ..Default::default()
    })
    .unwrap();
    (s, health)
}

fn write(s: &TestServer, name: &str, content: &[u8]) -> String {
    let p = s.dir.path().join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

/// The CA certificates a.test holds for `td`.
fn foreign_bundle(a: &TestServer, td: &str) -> Vec<Vec<u8>> {
    pem_certs(&a.cli_ok(&["bundle", "show", "--trust-domain", td]))
}

/// `sigil_server_federation_refresh_failures_total{trust_domain, reason}`.
fn failures(health: SocketAddr, td: &str, reason: &str) -> f64 {
    let (_, body) = http_get(health, "/metrics").unwrap();
    body.lines()
        .filter(|l| l.starts_with("sigil_server_federation_refresh_failures_total{"))
        .filter(|l| l.contains(&format!("trust_domain=\"{td}\"")))
        .filter(|l| l.contains(&format!("reason=\"{reason}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn last_refresh(health: SocketAddr, td: &str) -> Option<f64> {
    let (_, body) = http_get(health, "/metrics").unwrap();
    body.lines()
        .filter(|l| l.starts_with("sigil_server_federation_last_refresh_timestamp_seconds{"))
        .filter(|l| l.contains(&format!("trust_domain=\"{td}\"")))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
}

/// A one-document HTTPS server: answers every request with `body` (200,
/// JSON), presenting `chain`/`key`.
struct FakeEndpoint {
    addr: SocketAddr,
    body: Arc<Mutex<Vec<u8>>>,
    /// How long each answer waits after its request arrived.
    delay: Arc<Mutex<Duration>>,
    /// When each request arrived.
    arrivals: Arc<Mutex<Vec<Instant>>>,
    _rt: tokio::runtime::Runtime,
}

impl FakeEndpoint {
    fn start(chain: Vec<Vec<u8>>, key_der: Vec<u8>, body: Vec<u8>) -> FakeEndpoint {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let chain = chain
            .into_iter()
            .map(rustls_pki_types::CertificateDer::from)
            .collect();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(key_der.into());
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(body));
        let served = body.clone();
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let (delays, arrived) = (delay.clone(), arrivals.clone());
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, served) = (acceptor.clone(), served.clone());
                let (delays, arrived) = (delays.clone(), arrived.clone());
                tokio::spawn(tokio::time::timeout(Duration::from_secs(10), async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    arrived.lock().unwrap().push(Instant::now());
                    let delay = *delays.lock().unwrap();
                    tokio::time::sleep(delay).await;
                    let body = served.lock().unwrap().clone();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(&body).await;
                    let _ = tls.shutdown().await;
                }));
            }
        });
        FakeEndpoint {
            addr,
            body,
            delay,
            arrivals,
            _rt: rt,
        }
    }

    fn serve(&self, body: Vec<u8>) {
        *self.body.lock().unwrap() = body;
    }

    fn answer_after(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().unwrap().clone()
    }
}

fn jwks(td: &str, cas: Vec<Vec<u8>>, sequence: u64) -> Vec<u8> {
    encode(&SpiffeBundle {
        trust_domain: TrustDomain::parse(td).unwrap(),
        x509_authorities: cas,
        jwt_authorities: vec![],
        sequence: Some(sequence),
        refresh_hint: Some(HINT.as_secs()),
    })
    .unwrap()
    .into_bytes()
}

/// `federation create|update` of a.test's `https_spiffe` relationship with
/// b.test.
fn spiffe_relationship(a: &TestServer, verb: &str, url: &str, id: &str, extra: &[&str]) {
    let mut args = vec![
        "federation",
        verb,
        "--trust-domain",
        "b.test",
        "--bundle-endpoint-url",
        url,
        "--bundle-endpoint-profile",
        "https_spiffe",
        "--endpoint-spiffe-id",
        id,
    ];
    args.extend_from_slice(extra);
    a.cli_ok(&args);
}

/// `federation refresh` that must fail; its message.
fn refresh_fails(a: &TestServer, td: &str) -> String {
    let out = a.cli(&["federation", "refresh", "--trust-domain", td]);
    assert!(
        !out.status.success(),
        "refresh succeeded: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

#[test]
fn item2_https_spiffe_follows_rotation_and_keeps_the_last_good_bundle() {
    let (mut b, b_addr) = b_server();
    let (a, health) = a_server("");
    let b_pem = b.cli_ok(&["bundle", "show"]);
    let bootstrap = write(&a, "b.pem", b_pem.as_bytes());
    let url = format!("https://{b_addr}/");
    spiffe_relationship(
        &a,
        "create",
        &url,
        "spiffe://b.test/sigil/server",
        &["--trust-domain-bundle", &bootstrap],
    );
    wait_for(
        Duration::from_secs(20),
        "a.test's first fetch of b.test's bundle",
        || last_refresh(health, "b.test"),
    );

    // b.test prepares its next CA: a.test has it within one refresh hint
    // (plus the fetch itself), with no manual refresh.
    b.cli_ok(&["ca", "prepare"]);
    let rotated = pem_certs(&b.cli_ok(&["bundle", "show"]));
    assert_eq!(rotated.len(), 2, "b.test publishes the prepared CA");
    let t0 = Instant::now();
    wait_for(HINT * 3, "a.test holding b.test's prepared CA", || {
        (foreign_bundle(&a, "b.test") == rotated).then_some(())
    });
    let took = t0.elapsed();
    eprintln!("a.test had b.test's new CA after {took:?} (refresh hint {HINT:?})");
    assert!(
        took <= HINT + ALLOWANCE,
        "b.test's new CA reached a.test after {took:?}, more than one refresh hint ({HINT:?}) \
         plus {ALLOWANCE:?} for one fetch and the check"
    );

    // What the stand-in endpoint needs: b.test's document, and an SVID of
    // b.test to present.
    let doc: serde_json::Value =
        serde_json::from_str(&b.cli_ok(&["bundle", "show", "--format", "jwks"])).unwrap();
    let seq = doc["spiffe_sequence"].as_u64().unwrap();
    let minted = b.cli_json(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://b.test/fake-endpoint",
    ]);
    let chain = pem_certs(minted["svid_pem"].as_str().unwrap());
    let key = pem::parse(minted["key_pem"].as_str().unwrap())
        .unwrap()
        .into_contents();

    // Down.
    b.stop();
    let why = refresh_fails(&a, "b.test");
    assert!(why.contains("last good bundle is kept"), "{why}");
    assert!(
        failures(health, "b.test", "connect") >= 1.0,
        "connect failure counted"
    );
    assert_eq!(
        foreign_bundle(&a, "b.test"),
        rotated,
        "kept while b.test is down"
    );

    // A stand-in endpoint (an SVID of b.test) answering garbage, another
    // trust domain's bundle, then b.test's bundle with an older sequence.
    let fake = FakeEndpoint::start(chain, key, b"<html>garbage</html>".to_vec());
    spiffe_relationship(
        &a,
        "update",
        &format!("https://{}/", fake.addr),
        "spiffe://b.test/fake-endpoint",
        &[],
    );
    let other = TestCa::new("c.test");
    let mut older = doc.clone();
    older["spiffe_sequence"] = (seq - 1).into();
    for (body, reason, needle) in [
        (
            b"<html>garbage</html>".to_vec(),
            "parse",
            "not a SPIFFE bundle",
        ),
        (
            jwks("c.test", vec![other.der.clone()], seq + 5),
            "trust_domain",
            "spiffe://c.test",
        ),
        (serde_json::to_vec(&older).unwrap(), "sequence", "older"),
    ] {
        fake.serve(body);
        let before = failures(health, "b.test", reason);
        let why = refresh_fails(&a, "b.test");
        assert!(why.contains(needle), "{reason}: {why}");
        assert!(
            failures(health, "b.test", reason) > before,
            "{reason}: the failure is counted under its reason"
        );
        assert_eq!(
            foreign_bundle(&a, "b.test"),
            rotated,
            "{reason}: last good bundle kept"
        );
        let shown = a.cli_json(&["federation", "show", "--trust-domain", "b.test"]);
        assert!(shown["last_error"].as_str().is_some(), "{reason}: {shown}");
    }
    let log = a.log_text();
    assert!(
        log.contains("bundle refresh failed; keeping the last good bundle"),
        "the refusals are logged"
    );

    // b.test is back: a.test recovers.
    b.spawn().unwrap();
    spiffe_relationship(&a, "update", &url, "spiffe://b.test/sigil/server", &[]);
    let shown = a.cli_json(&["federation", "refresh", "--trust-domain", "b.test"]);
    let f = &shown["federations"][0];
    assert!(f["last_error"].is_null(), "recovered: {shown}");
    assert_eq!(foreign_bundle(&a, "b.test"), rotated);
}

#[test]
fn item2_https_web_with_a_test_ca_as_ca_file() {
    let (a, _health) = a_server("");
    let web_ca = TestCa::new("web.test");
    let fake = web_federation(
        &a,
        "web.test",
        jwks("web.test", vec![web_ca.der.clone()], 1),
        Duration::ZERO,
    );
    let url = format!("https://localhost:{}/", fake.addr.port());
    wait_for(
        Duration::from_secs(20),
        "web.test's bundle fetched over https_web",
        || (foreign_bundle_opt(&a, "web.test") == Some(vec![web_ca.der.clone()])).then_some(()),
    );
    // The same endpoint without the test CA (system roots) is refused.
    a.cli_ok(&[
        "federation",
        "create",
        "--trust-domain",
        "web2.test",
        "--bundle-endpoint-url",
        &url,
        "--bundle-endpoint-profile",
        "https_web",
    ]);
    let why = refresh_fails(&a, "web2.test");
    assert!(
        why.contains("TLS") || why.contains("ca-certificates.crt"),
        "{why}"
    );
}

fn foreign_bundle_opt(a: &TestServer, td: &str) -> Option<Vec<Vec<u8>>> {
    let out = a.cli(&["bundle", "show", "--trust-domain", td]);
    out.status.success().then(|| pem_certs(&text(&out.stdout)))
}

#[test]
fn item1_bad_input_is_refused_with_a_clear_error() {
    let b_ca = TestCa::new("b.test");
    let (a, _) = a_server(
        "\n[[federation]]\ntrust_domain = \"s.test\"\nbundle_endpoint_url = \"https://127.0.0.1:9/\"\nbundle_endpoint_profile = \"https_web\"\n",
    );
    let good_pem = write(
        &a,
        "b.pem",
        sigil_proto::pem::to_pem(std::slice::from_ref(&b_ca.der)).as_bytes(),
    );
    let not_a_bundle = write(&a, "junk.pem", b"hello, not a bundle\n");
    let base = |td: &str, url: &str, profile: &str| -> Vec<String> {
        [
            "federation",
            "create",
            "--trust-domain",
            td,
            "--bundle-endpoint-url",
            url,
            "--bundle-endpoint-profile",
            profile,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let with = |mut v: Vec<String>, more: &[&str]| {
        v.extend(more.iter().map(|s| s.to_string()));
        v
    };
    let id = ["--endpoint-spiffe-id", "spiffe://b.test/sigil/server"];
    let boot = ["--trust-domain-bundle", good_pem.as_str()];
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            with(
                base("b.test", "http://b.test/", "https_spiffe"),
                &[&id[..], &boot[..]].concat(),
            ),
            "must be an https:// URL",
        ),
        (
            with(
                base("b.test", "https://u:p@b.test/", "https_spiffe"),
                &[&id[..], &boot[..]].concat(),
            ),
            "user information",
        ),
        (
            with(
                base("b.test", "https://b.test/#frag", "https_spiffe"),
                &[&id[..], &boot[..]].concat(),
            ),
            "fragment",
        ),
        (
            with(base("b.test", "https://b.test/", "https_pki"), &boot),
            "unknown bundle endpoint profile \"https_pki\"",
        ),
        (
            with(base("b.test", "https://b.test/", "https_spiffe"), &boot),
            "endpoint_spiffe_id is required",
        ),
        (
            with(
                base("b.test", "https://b.test/", "https_spiffe"),
                &[
                    "--endpoint-spiffe-id",
                    "spiffe://c.test/x",
                    boot[0],
                    boot[1],
                ],
            ),
            "is not in trust domain b.test",
        ),
        (
            with(base("b.test", "https://b.test/", "https_spiffe"), &id),
            "none is stored",
        ),
        (
            with(
                base("b.test", "https://b.test/", "https_spiffe"),
                &[id[0], id[1], "--trust-domain-bundle", &not_a_bundle],
            ),
            "trust_domain_bundle",
        ),
        (
            with(
                base("a.test", "https://a.test/", "https_spiffe"),
                &["--endpoint-spiffe-id", "spiffe://a.test/sigil/server"],
            ),
            "own trust domain",
        ),
        (
            base("s.test", "https://s.test/", "https_web"),
            "server.toml",
        ),
    ];
    for (args, needle) in cases {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = a.cli(&argv);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{argv:?} was accepted");
        assert!(
            err.contains(needle),
            "{argv:?}: expected {needle:?} in {err}"
        );
    }
    // An entry cannot federate with a trust domain without a bundle.
    let out = a.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://a.test/w",
        "--parent-id",
        "spiffe://a.test/agent",
        "--selector",
        "unix:uid:1",
        "--federates-with",
        "spiffe://nobundle.test",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no bundle of nobundle.test is stored"),
        "{}",
        text(&out.stderr)
    );
    // `bundle set` refuses what is not a bundle.
    let out = a.cli(&[
        "bundle",
        "set",
        "--trust-domain",
        "b.test",
        "--path",
        &not_a_bundle,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a bundle"),
        "{}",
        text(&out.stderr)
    );

    // The static relationship says so; --data round-trips `show` output.
    let listed = a.cli_json(&["federation", "list"]);
    assert_eq!(listed["federations"][0]["static"], true, "{listed}");
    assert!(
        a.cli_ok(&["federation", "show", "--trust-domain", "s.test"])
            .contains("server.toml")
    );
    a.cli_ok(
        &with(
            base("b.test", "https://127.0.0.1:9/", "https_spiffe"),
            &[&id[..], &boot[..]].concat(),
        )
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    let shown = a.cli_ok(&[
        "federation",
        "show",
        "--trust-domain",
        "b.test",
        "--output",
        "json",
    ]);
    let data = write(&a, "b.json", shown.as_bytes());
    a.cli_ok(&["federation", "delete", "--trust-domain", "b.test"]);
    a.cli_ok(&["federation", "create", "--data", &data]);
    let again = a.cli_json(&["federation", "show", "--trust-domain", "b.test"]);
    let before: serde_json::Value = serde_json::from_str(&shown).unwrap();
    for k in [
        "trust_domain",
        "bundle_endpoint_url",
        "bundle_endpoint_profile",
        "endpoint_spiffe_id",
        "ca_file",
        "static",
    ] {
        assert_eq!(again[k], before[k], "{k} round-trips through --data");
    }
    // Foreign bundles by hand: set, list, show, delete.
    let c_ca = TestCa::new("c.test");
    let c_pem = write(
        &a,
        "c.pem",
        sigil_proto::pem::to_pem(std::slice::from_ref(&c_ca.der)).as_bytes(),
    );
    a.cli_ok(&[
        "bundle",
        "set",
        "--trust-domain",
        "c.test",
        "--path",
        &c_pem,
    ]);
    assert_eq!(foreign_bundle(&a, "c.test"), vec![c_ca.der.clone()]);
    let list = a.cli_json(&["bundle", "list"]);
    assert!(
        list["bundles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["trust_domain"] == "c.test"),
        "{list}"
    );
    a.cli_ok(&["bundle", "delete", "--trust-domain", "c.test"]);
    assert_eq!(foreign_bundle_opt(&a, "c.test"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item3_sync_sends_exactly_the_federated_bundles_and_pushes_changes() {
    let s = TestServer::start(ServerOptions {
        trust_domain: "a.test".into(),
        ..Default::default()
    })
    .unwrap();
    let (b1, b2, c1) = (
        TestCa::new("b.test"),
        TestCa::new("b.test"),
        TestCa::new("c.test"),
    );
    let set = |td: &str, ca: &TestCa| {
        let p = write(
            &s,
            &format!("{td}.pem"),
            sigil_proto::pem::to_pem(std::slice::from_ref(&ca.der)).as_bytes(),
        );
        s.cli_ok(&["bundle", "set", "--trust-domain", td, "--path", &p]);
    };
    set("b.test", &b1);
    set("c.test", &c1);
    let agent = attested_agent(&s).await;
    let parent = agent.id.clone();
    let created = s.cli_json(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://a.test/fed",
        "--parent-id",
        &parent,
        "--selector",
        "unix:uid:1",
        "--federates-with",
        "spiffe://b.test",
    ]);
    let entry_id = created["entries"][0]["id"].as_str().unwrap().to_string();

    let mut st = SyncStream::open(&s, &agent, 0).await;
    assert!(
        st.wait_for(Duration::from_secs(10), |st| st.full_revision().is_some())
            .await
    );
    let fed: Vec<(String, Vec<Vec<u8>>)> = st
        .got
        .iter()
        .filter_map(|k| match k {
            Kind::FederatedBundle(b) => Some((b.trust_domain.clone(), b.x509_authorities.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        fed,
        vec![("b.test".to_string(), vec![b1.der.clone()])],
        "exactly b.test's bundle, not c.test's"
    );
    let bundle_at = st
        .got
        .iter()
        .position(|k| matches!(k, Kind::FederatedBundle(_)))
        .unwrap();
    let last_page = st
        .got
        .iter()
        .position(|k| matches!(k, Kind::Page(p) if p.last))
        .unwrap();
    assert!(
        bundle_at < last_page,
        "the federated bundle comes before the last page"
    );

    // The bundle changes: pushed.
    st.clear();
    set("b.test", &b2);
    assert!(
        st.wait_for(Duration::from_secs(10), |st| st.got.iter().any(
            |k| matches!(k, Kind::FederatedBundle(b) if b.x509_authorities == vec![b2.der.clone()])
        ))
        .await,
        "updated bundle pushed: {:?}",
        st.got
    );
    // c.test changes: nothing is sent for it.
    set("c.test", &TestCa::new("c.test"));
    // The bundle is deleted: removed.
    st.clear();
    s.cli_ok(&["bundle", "delete", "--trust-domain", "b.test"]);
    assert!(
        st.wait_for(Duration::from_secs(10), |st| st.got.iter().any(
            |k| matches!(k, Kind::FederatedBundleRemoved(td) if td == "b.test")
        ))
        .await,
        "removal pushed: {:?}",
        st.got
    );
    assert!(
        !st.got
            .iter()
            .any(|k| matches!(k, Kind::FederatedBundle(b) if b.trust_domain == "c.test")),
        "c.test never sent: {:?}",
        st.got
    );
    // Set again, then the entry goes: removed again.
    set("b.test", &b1);
    assert!(
        st.wait_for(Duration::from_secs(10), |st| st.got.iter().any(
            |k| matches!(k, Kind::FederatedBundle(b) if b.trust_domain == "b.test")
        ))
        .await
    );
    st.clear();
    s.cli_ok(&["entry", "delete", "--entry-id", &entry_id]);
    assert!(
        st.wait_for(Duration::from_secs(10), |st| st.got.iter().any(
            |k| matches!(k, Kind::FederatedBundleRemoved(td) if td == "b.test")
        ))
        .await,
        "removal after the entry went: {:?}",
        st.got
    );
}

/// A stand-in endpoint of `td` with a web certificate from a test CA,
/// serving `body` each time `delay` after the request, and a.test's
/// `https_web` relationship with it (the test CA as `ca_file`).
fn web_federation(a: &TestServer, td: &str, body: Vec<u8>, delay: Duration) -> FakeEndpoint {
    let (ca, cert, key) = web_server_cert("localhost");
    let fake = FakeEndpoint::start(vec![cert], key.serialize_der(), body);
    fake.answer_after(delay);
    let roots = write(
        a,
        "web-roots.pem",
        sigil_proto::pem::to_pem(&[ca]).as_bytes(),
    );
    let url = format!("https://localhost:{}/", fake.addr.port());
    a.cli_ok(&[
        "federation",
        "create",
        "--trust-domain",
        td,
        "--bundle-endpoint-url",
        &url,
        "--bundle-endpoint-profile",
        "https_web",
        "--ca-file",
        &roots,
    ]);
    fake
}

/// Issue 16 open item 2: the last accepted remote `spiffe_sequence` is
/// persisted, so after a restart of a.test an older bundle from the
/// endpoint is still refused (reason `sequence`), counted, and the last
/// good bundle kept.
#[test]
fn i16_open2_remote_sequence_survives_a_server_restart() {
    let (mut a, health) = a_server("");
    let (good, forged) = (TestCa::new("b.test"), TestCa::new("b.test"));
    let fake = web_federation(
        &a,
        "b.test",
        jwks("b.test", vec![good.der.clone()], 7),
        Duration::ZERO,
    );
    wait_for(
        Duration::from_secs(20),
        "b.test's bundle with sequence 7 accepted",
        || (foreign_bundle_opt(&a, "b.test") == Some(vec![good.der.clone()])).then_some(()),
    );

    // The endpoint now serves an older sequence with other keys (a replay
    // or rollback), and a.test restarts: its first fetch must still be
    // judged against sequence 7.
    fake.serve(jwks("b.test", vec![forged.der.clone()], 6));
    a.stop();
    a.spawn().unwrap();
    wait_for(
        Duration::from_secs(20),
        "the older sequence counted after the restart",
        || (failures(health, "b.test", "sequence") >= 1.0).then_some(()),
    );
    let why = refresh_fails(&a, "b.test");
    assert!(why.contains("older"), "{why}");
    assert_eq!(
        foreign_bundle(&a, "b.test"),
        vec![good.der.clone()],
        "the last good bundle is kept across the restart"
    );

    // The endpoint moves on: a newer sequence is accepted.
    fake.serve(jwks("b.test", vec![forged.der.clone()], 8));
    a.cli_ok(&["federation", "refresh", "--trust-domain", "b.test"]);
    assert_eq!(foreign_bundle(&a, "b.test"), vec![forged.der.clone()]);
}

/// Issue 16 open item 5: the client polls at the refresh hint measured
/// from the start of its last fetch, so a slow endpoint does not stretch
/// the period (today's client waited the hint after the fetch ended:
/// hint + fetch time).
#[test]
fn i16_open5_polls_at_the_hint_from_the_start_of_the_last_fetch() {
    const SLOW: Duration = Duration::from_millis(1500);
    let (a, _health) = a_server("");
    let b_ca = TestCa::new("b.test");
    let fake = web_federation(
        &a,
        "b.test",
        jwks("b.test", vec![b_ca.der.clone()], 1),
        SLOW,
    );
    let arrivals = wait_for(
        (HINT + SLOW) * 6,
        "five requests to the slow endpoint",
        || {
            let a = fake.arrivals();
            (a.len() >= 5).then_some(a)
        },
    );
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("request gaps {gaps:?} (hint {HINT:?}, each answer {SLOW:?} late)");
    // The last three gaps are regular polls (the first may be a refresh
    // asked for by `create`). 300 ms: timer and scheduling slack.
    for g in &gaps[gaps.len() - 3..] {
        assert!(
            *g <= HINT + Duration::from_millis(300),
            "a poll came {g:?} after the previous one started: more than the hint {HINT:?} \
             (all gaps: {gaps:?})"
        );
    }
}
