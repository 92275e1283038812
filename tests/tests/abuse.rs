//! Abuse scenarios from security reviews of mTLS deployments, each against
//! the real daemons, each asserting the refusal and the server's (or
//! agent's) log line: no client certificate, a certificate from another CA
//! naming a real agent, an expired certificate signed by the real CA, a
//! self-signed one, an agent asking for another agent's entry or identity,
//! forged identity metadata on both APIs, plaintext gRPC and garbage on the
//! agent API port, and a Workload API caller of another uid.
//!
//! Then the resource bounds of `[limits]`: each one hit, refused with its
//! gRPC code and a message naming the key, and the daemon still serving.
//! (tests/tests/agent_api.rs covers the basic refusal codes; this file adds
//! the log lines, the forged inputs and the limits.)

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sigil_proto::agent_api as pb;
use sigil_proto::attestation;
use sigil_proto::workload as wl;
use sigil_tests::agent_client::{AgentIdentity, attest, identity, key_and_csr};
use sigil_tests::{ServerOptions, TestAgent, TestServer, bin, run_bounded, text};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const NOBODY: u32 = 65534;
const LOG_WAIT: Duration = Duration::from_secs(10);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Where a log file ends now; lines after it belong to what follows.
fn mark(log: &Path) -> usize {
    std::fs::read(log).map_or(0, |b| b.len())
}

/// Waits (bounded) for a log line written after `from` that contains every
/// one of `needles`; returns it.
fn await_log(log: &Path, from: usize, needles: &[&str]) -> String {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let all = std::fs::read(log).unwrap_or_default();
        let new = strip_ansi(&String::from_utf8_lossy(&all[from.min(all.len())..]));
        if let Some(l) = new.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return l.to_string();
        }
        if Instant::now() > deadline {
            panic!("no log line with {needles:?} in {LOG_WAIT:?}; new log lines:\n{new}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn token(s: &TestServer) -> String {
    s.cli_json(&["token", "generate"])["token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn join(s: &TestServer) -> AgentIdentity {
    let t = token(s);
    let mut c = s.agent_client(None).await.unwrap();
    let (key, csr) = key_and_csr();
    let svid = attest(&mut c, attestation::JOIN_TOKEN, t.into_bytes(), csr)
        .await
        .unwrap();
    identity(&key, &svid)
}

fn entry(s: &TestServer, spiffe: &str, parent: &str, sel: &str) -> String {
    s.cli_json(&[
        "entry",
        "create",
        "--spiffe-id",
        spiffe,
        "--parent-id",
        parent,
        "--selector",
        sel,
    ])["entries"][0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn csr_item(entry_id: &str) -> pb::SvidRequest {
    pb::SvidRequest {
        entry_id: entry_id.to_string(),
        csr: key_and_csr().1,
    }
}

fn item_code(r: &pb::SvidResult) -> Option<i32> {
    match &r.result {
        Some(pb::svid_result::Result::Error(e)) => Some(e.code),
        _ => None,
    }
}

/// True when a client with `ident` cannot get a FetchBundle answer (the
/// handshake or the call fails).
async fn refused(s: &TestServer, ident: &AgentIdentity) -> bool {
    match s.agent_client(Some(ident)).await {
        Err(_) => true,
        Ok(mut c) => tokio::time::timeout(
            Duration::from_secs(10),
            c.fetch_bundle(pb::FetchBundleRequest {}),
        )
        .await
        .expect("bounded")
        .is_err(),
    }
}

/// The server still serves a legitimate agent.
async fn still_serves(s: &TestServer, who: &AgentIdentity) {
    let mut c = s.agent_client(Some(who)).await.unwrap();
    c.fetch_bundle(pb::FetchBundleRequest {})
        .await
        .expect("the server keeps serving legitimate agents");
}

/// An agent-shaped leaf for `id` over a fresh key, signed by `issuer`, with
/// the given validity.
fn agent_leaf<S: rcgen::SigningKey>(
    id: &str,
    issuer: &rcgen::Issuer<'_, S>,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
    ca_chain: &[Vec<u8>],
) -> AgentIdentity {
    agent_leaf_with_usages(
        id,
        issuer,
        not_before,
        not_after,
        ca_chain,
        &[rcgen::KeyUsagePurpose::DigitalSignature],
    )
}

/// [`agent_leaf`] with the given keyUsage bits.
fn agent_leaf_with_usages<S: rcgen::SigningKey>(
    id: &str,
    issuer: &rcgen::Issuer<'_, S>,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
    ca_chain: &[Vec<u8>],
    usages: &[rcgen::KeyUsagePurpose],
) -> AgentIdentity {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.subject_alt_names
        .push(rcgen::SanType::URI(id.to_string().try_into().unwrap()));
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.key_usages = usages.to_vec();
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = not_before;
    p.not_after = not_after;
    let cert = p.signed_by(&key, issuer).unwrap();
    let mut chain = vec![cert.der().clone()];
    chain.extend(ca_chain.iter().map(|c| CertificateDer::from(c.clone())));
    AgentIdentity {
        id: id.to_string(),
        chain,
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// The server's active CA certificate and its private key, read from the
/// data dir (the test runs as the server's user).
fn real_ca(s: &TestServer) -> (Vec<u8>, rcgen::KeyPair) {
    let v = s.cli_json(&["ca", "show"]);
    let active = v["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["state"] == "active")
        .unwrap()
        .clone();
    let want = active["serial"]
        .as_str()
        .unwrap()
        .to_ascii_lowercase()
        .replace(':', "")
        .trim_start_matches('0')
        .to_string();
    let ca = s
        .bundle()
        .into_iter()
        .find(|c| {
            let (_, x) = x509_parser::parse_x509_certificate(c).unwrap();
            let h: String = x.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
            h.trim_start_matches('0') == want
        })
        .expect("active CA in the bundle");
    let der = std::fs::read(
        s.data_dir
            .join("keys")
            .join(format!("{}.pk8", active["key_id"].as_str().unwrap())),
    )
    .unwrap();
    (ca, rcgen::KeyPair::try_from(der.as_slice()).unwrap())
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_client_certificates_are_refused_and_logged() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = join(&s).await;

    // 1. No client certificate, on every method but attestation.
    let mut anon = s.agent_client(None).await.unwrap();
    for (method, r) in [
        (
            "FetchBundle",
            anon.fetch_bundle(pb::FetchBundleRequest {}).await.err(),
        ),
        (
            "SignSvids",
            anon.sign_svids(pb::SignSvidsRequest { requests: vec![] })
                .await
                .err(),
        ),
        (
            "RenewAgent",
            anon.renew_agent(pb::RenewAgentRequest {
                csr: key_and_csr().1,
            })
            .await
            .err(),
        ),
        (
            "SyncEntries",
            anon.sync_entries(pb::SyncEntriesRequest::default())
                .await
                .err(),
        ),
    ] {
        let e = r.unwrap_or_else(|| panic!("{method} without a certificate answered"));
        assert_eq!(e.code(), Code::Unauthenticated, "{method}: {e}");
        await_log(
            &s.log,
            0,
            &[
                "agent API call refused",
                &format!("/sigil.agent.v1.AgentApi/{method}"),
                "a client certificate (agent SVID) is required",
            ],
        );
    }

    // 2. Another CA (self-made, with the trust domain's URI) issuing an
    // agent-shaped SVID with a real agent's SPIFFE ID.
    let from = mark(&s.log);
    let rogue = sigil_proto::test_pki::TestCa::new("example.org");
    let forged = agent_leaf(
        &a.id,
        rogue.issuer(),
        now() - Duration::from_secs(60),
        now() + Duration::from_secs(3600),
        std::slice::from_ref(&rogue.der),
    );
    assert!(
        refused(&s, &forged).await,
        "a foreign CA's agent SVID was accepted"
    );
    let line = await_log(&s.log, from, &["agent API TLS handshake refused"]);
    assert!(
        line.to_lowercase().contains("issuer"),
        "the reason is the unknown issuer: {line}"
    );

    // 3. Expired: signed by the server's real CA, for the real agent ID,
    // valid an hour ago only.
    let from = mark(&s.log);
    let (ca_der, ca_key) = real_ca(&s);
    let real =
        rcgen::Issuer::from_ca_cert_der(&CertificateDer::from(ca_der.clone()), ca_key).unwrap();
    let expired = agent_leaf(
        &a.id,
        &real,
        now() - Duration::from_secs(7200),
        now() - Duration::from_secs(3600),
        &[],
    );
    assert!(
        refused(&s, &expired).await,
        "an expired agent SVID was accepted"
    );
    let line = await_log(&s.log, from, &["agent API TLS handshake refused"]);
    assert!(
        line.to_lowercase().contains("expired"),
        "the reason is expiry: {line}"
    );
    // 3b. Current, from the real CA, for the real agent ID, but with a
    // signing key usage (X509-SVID §5.2: a validator refuses keyCertSign
    // and cRLSign on a leaf).
    for (usage, name) in [
        (rcgen::KeyUsagePurpose::KeyCertSign, "keyCertSign"),
        (rcgen::KeyUsagePurpose::CrlSign, "cRLSign"),
    ] {
        let from = mark(&s.log);
        let signing = agent_leaf_with_usages(
            &a.id,
            &real,
            now() - Duration::from_secs(60),
            now() + Duration::from_secs(600),
            &[],
            &[rcgen::KeyUsagePurpose::DigitalSignature, usage],
        );
        assert!(
            refused(&s, &signing).await,
            "an agent SVID with {name} was accepted"
        );
        // The line naming it: a retry of the previous case may log after
        // `from` too.
        let line = await_log(&s.log, from, &["agent API TLS handshake refused", name]);
        assert!(line.contains(name), "the reason names {name}: {line}");
    }
    // The same leaf with a current validity passes TLS (the CA key and the
    // shape are right) and is then refused for its serial: proof that the
    // expiry alone caused the refusal above.
    let from = mark(&s.log);
    let current = agent_leaf(
        &a.id,
        &real,
        now() - Duration::from_secs(60),
        now() + Duration::from_secs(600),
        &[],
    );
    let mut c = s.agent_client(Some(&current)).await.unwrap();
    let e = c.fetch_bundle(pb::FetchBundleRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.message().contains("not the current SVID"), "{e}");
    await_log(
        &s.log,
        from,
        &["agent API call refused", &a.id, "not the current SVID"],
    );

    // 4. Self-signed, with the agent's ID.
    let from = mark(&s.log);
    let self_key = rcgen::KeyPair::generate().unwrap();
    let mut sp = rcgen::CertificateParams::default();
    sp.subject_alt_names
        .push(rcgen::SanType::URI(a.id.clone().try_into().unwrap()));
    sp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let self_cert = sp.self_signed(&self_key).unwrap();
    let selfsigned = AgentIdentity {
        id: a.id.clone(),
        chain: vec![self_cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self_key.serialize_der())),
    };
    assert!(
        refused(&s, &selfsigned).await,
        "a self-signed SVID was accepted"
    );
    await_log(&s.log, from, &["agent API TLS handshake refused"]);

    still_serves(&s, &a).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_cannot_get_another_agents_entries_or_identity() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = join(&s).await;
    let b = join(&s).await;
    let a_entry = entry(&s, "spiffe://example.org/a-workload", &a.id, "unix:uid:1");
    let b_entry = entry(&s, "spiffe://example.org/b-workload", &b.id, "unix:uid:1");
    // A node entry: an identity for agents, never signed as a workload SVID.
    let node = s.cli_json(&[
        "entry",
        "create",
        "--node",
        "--spiffe-id",
        "spiffe://example.org/nodes/all",
        "--selector",
        "x509pop:subject:cn:n1",
    ])["entries"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A mixed batch: its own entry signed, B's entry and the node entry
    // refused, each refusal logged with A's ID and the entry ID.
    let from = mark(&s.log);
    let mut c = s.agent_client(Some(&a)).await.unwrap();
    let r = c
        .sign_svids(pb::SignSvidsRequest {
            requests: vec![
                csr_item(&a_entry),
                csr_item(&b_entry),
                csr_item(&node),
                csr_item("no-such-entry"),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let codes: Vec<Option<i32>> = r.iter().map(item_code).collect();
    let denied = Some(Code::PermissionDenied as i32);
    assert_eq!(codes, vec![None, denied, denied, denied]);
    for id in [&b_entry, &node, &"no-such-entry".to_string()] {
        await_log(&s.log, from, &["signing refused", &a.id, id]);
    }
    // The SVID signed for A is A's entry's ID, whatever the CSR said.
    let Some(pb::svid_result::Result::Svid(svid)) = &r[0].result else {
        panic!("{r:?}")
    };
    let leaf = sigil_proto::svid_profile::check_leaf(&svid.cert_chain[0]).unwrap();
    assert_eq!(leaf.spiffe_id.as_str(), "spiffe://example.org/a-workload");

    // A CSR naming B's agent ID is renewed as A: the ID comes from the
    // caller's certificate, never from the CSR.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.subject_alt_names
        .push(rcgen::SanType::URI(b.id.clone().try_into().unwrap()));
    let csr = p.serialize_request(&key).unwrap().der().to_vec();
    let renewed = c
        .renew_agent(pb::RenewAgentRequest { csr })
        .await
        .unwrap()
        .into_inner()
        .svid
        .unwrap();
    assert_eq!(renewed.spiffe_id, a.id);
    let leaf = sigil_proto::svid_profile::check_leaf(&renewed.cert_chain[0]).unwrap();
    assert_eq!(leaf.spiffe_id.as_str(), a.id);

    // Forged identity metadata claiming B: no effect.
    let from = mark(&s.log);
    let a2 = identity(&key, &renewed);
    let mut c = s.agent_client(Some(&a2)).await.unwrap();
    let mut req = tonic::Request::new(pb::SignSvidsRequest {
        requests: vec![csr_item(&b_entry)],
    });
    for k in [
        "x-spiffe-id",
        "spiffe-id",
        "agent-id",
        "x-agent-id",
        "x-forwarded-client-cert",
        "x-ssl-client-cert",
    ] {
        let v = if k == "x-forwarded-client-cert" {
            format!("By={};URI={}", "spiffe://example.org/sigil/server", b.id)
        } else {
            b.id.clone()
        };
        req.metadata_mut().insert(k, v.parse().unwrap());
    }
    let r = c.sign_svids(req).await.unwrap().into_inner().results;
    assert_eq!(item_code(&r[0]), denied, "forged metadata changed who A is");
    let line = await_log(&s.log, from, &["signing refused", &b_entry]);
    assert!(
        line.contains(&a.id) && !line.contains(&format!("agent_id={}", b.id)),
        "the refusal names the certificate's agent: {line}"
    );
    // Without a certificate, the same metadata authenticates nobody.
    let from = mark(&s.log);
    let mut anon = s.agent_client(None).await.unwrap();
    let mut req = tonic::Request::new(pb::FetchBundleRequest {});
    req.metadata_mut()
        .insert("x-spiffe-id", b.id.parse().unwrap());
    req.metadata_mut().insert("agent-id", b.id.parse().unwrap());
    let e = anon.fetch_bundle(req).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    await_log(
        &s.log,
        from,
        &[
            "agent API call refused",
            "a client certificate (agent SVID) is required",
        ],
    );
    still_serves(&s, &b).await;
}

/// A TCP connection to `addr` whose local address is recorded.
async fn tcp(
    addr: SocketAddr,
    local: Arc<Mutex<Option<SocketAddr>>>,
) -> std::io::Result<tokio::net::TcpStream> {
    let t = tokio::net::TcpStream::connect(addr).await?;
    *local.lock().unwrap() = Some(t.local_addr()?);
    Ok(t)
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_grpc_and_garbage_on_the_agent_api_port_are_refused() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = join(&s).await;
    let addr = s.agent_addr;

    // Plaintext (h2c) gRPC.
    let from = mark(&s.log);
    let local = Arc::new(Mutex::new(None));
    let l2 = local.clone();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_| {
            let l = l2.clone();
            async move { tcp(addr, l).await.map(hyper_util::rt::TokioIo::new) }
        }))
        .await;
    let refused = match channel {
        Err(_) => true,
        Ok(ch) => {
            let mut c = pb::agent_api_client::AgentApiClient::new(ch);
            tokio::time::timeout(
                Duration::from_secs(10),
                c.fetch_bundle(pb::FetchBundleRequest {}),
            )
            .await
            .expect("bounded")
            .is_err()
        }
    };
    assert!(refused, "a plaintext gRPC call was answered");
    let port = local.lock().unwrap().expect("connected").port();
    await_log(
        &s.log,
        from,
        &[
            "agent API TLS handshake refused",
            &format!("127.0.0.1:{port}"),
        ],
    );

    // Raw garbage: the server closes the connection and logs it.
    let from = mark(&s.log);
    let mut t = tokio::net::TcpStream::connect(addr).await.unwrap();
    let port = t.local_addr().unwrap().port();
    let mut junk = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    junk.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let _ = t.write_all(&junk).await;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, t.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => continue, // a TLS alert, then the close
            Err(_) => panic!("the server kept a garbage connection open"),
        }
    }
    await_log(
        &s.log,
        from,
        &[
            "agent API TLS handshake refused",
            &format!("127.0.0.1:{port}"),
        ],
    );
    still_serves(&s, &a).await;
}

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// A raw Workload API client (the agent's own client code).
async fn workload(path: &Path) -> sigil_agent::workload_client::Client {
    sigil_agent::workload_client::connect(path).await.unwrap()
}

/// FetchX509SVID with extra metadata; the first message or the status.
async fn fetch_with(
    path: &Path,
    metadata: &[(&'static str, String)],
) -> Result<wl::X509svidResponse, tonic::Status> {
    let mut c = workload(path).await;
    let mut req = tonic::Request::new(wl::X509svidRequest {});
    for (k, v) in metadata {
        req.metadata_mut().append(*k, v.parse().unwrap());
    }
    let mut st = c.fetch_x509svid(req).await?.into_inner();
    tokio::time::timeout(Duration::from_secs(10), st.message())
        .await
        .expect("bounded")?
        .ok_or_else(|| tonic::Status::unknown("stream ended"))
}

#[tokio::test(flavor = "multi_thread")]
async fn workload_identity_comes_only_from_the_kernel() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    // An entry for a uid nobody here runs as.
    entry(
        &s,
        "spiffe://example.org/uid-12345",
        &a.agent_id,
        "unix:uid:12345",
    );
    let forged: Vec<(&'static str, String)> = vec![
        ("workload.spiffe.io", "true".into()),
        ("x-forwarded-uid", "12345".into()),
        ("x-forwarded-user", "12345".into()),
        ("x-forwarded-for", "127.0.0.1".into()),
        ("uid", "12345".into()),
        ("pid", "1".into()),
        ("x-spiffe-id", "spiffe://example.org/uid-12345".into()),
        ("spiffe-id", "spiffe://example.org/uid-12345".into()),
        ("selector", "unix:uid:12345".into()),
    ];
    // Our process (another uid) with forged metadata: nothing.
    let from = mark(&a.log);
    let e = fetch_with(&a.socket, &forged).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert_eq!(e.message(), "no identity issued");
    await_log(
        &a.log,
        from,
        &[
            "Workload API caller matches no entry",
            &format!("uid={}", uid()),
        ],
    );

    // Once our uid has an entry, forged metadata still adds nothing.
    let me = format!("unix:uid:{}", uid());
    entry(&s, "spiffe://example.org/mine", &a.agent_id, &me);
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        match fetch_with(&a.socket, &forged).await {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "own entry never served: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let ids: Vec<&str> = got.svids.iter().map(|x| x.spiffe_id.as_str()).collect();
    assert_eq!(ids, vec!["spiffe://example.org/mine"]);

    // A process of another uid (nobody) gets nothing, though our uid has an
    // identity; the refusal is logged with its uid.
    if !is_root() {
        eprintln!("SKIPPED (other uid): switching users needs root");
        return;
    }
    let from = mark(&a.log);
    let out = run_bounded(
        Command::new("setpriv")
            .args([
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".into(),
            ])
            .arg(bin("sigil-agent"))
            .args([
                "api",
                "fetch",
                "x509",
                "--output",
                "json",
                "--timeout",
                "1s",
                "--socket",
            ])
            .arg(&a.socket),
    );
    assert!(
        !out.status.success(),
        "nobody got an SVID: {}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("no identity issued"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("spiffe://"));
    await_log(
        &a.log,
        from,
        &[
            "Workload API caller matches no entry",
            &format!("uid={NOBODY}"),
        ],
    );
}

// ---------------------------------------------------------------------------
// Resource bounds (`[limits]`).

#[tokio::test(flavor = "multi_thread")]
async fn server_limits_refuse_oversized_requests_and_keep_serving() {
    let s = TestServer::start(ServerOptions {
        extra: "[limits]\nagent_api_max_message_bytes = 1048576\n\
                admin_api_max_message_bytes = 65536\nmax_csrs_per_request = 500\n\
                max_entries_per_request = 5\n"
            .into(),
        ..Default::default()
    })
    .unwrap();
    let a = join(&s).await;
    let e = entry(&s, "spiffe://example.org/l", &a.id, "unix:uid:1");
    let mut c = s.agent_client(Some(&a)).await.unwrap();

    // Agent API message size: a 1.5 MiB request against a 1 MiB limit.
    let big = pb::SignSvidsRequest {
        requests: vec![pb::SvidRequest {
            entry_id: e.clone(),
            csr: vec![0x30; 1536 * 1024],
        }],
    };
    let err = c.sign_svids(big).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err}"
    );
    assert!(err.message().contains("too large"), "{err}");
    // CSRs per request.
    let from = mark(&s.log);
    let items: Vec<pb::SvidRequest> = (0..501)
        .map(|_| pb::SvidRequest {
            entry_id: e.clone(),
            csr: vec![],
        })
        .collect();
    let err = c
        .sign_svids(pb::SignSvidsRequest { requests: items })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(
        err.message().contains(
            "501 CSRs in one call, more than the limit of 500 (limits.max_csrs_per_request)"
        ),
        "{err}"
    );
    await_log(&s.log, from, &["too many CSRs in one call", &a.id]);
    // Still serving, on the same connection.
    let r = c
        .sign_svids(pb::SignSvidsRequest {
            requests: vec![csr_item(&e), csr_item(&e)],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(
        r.iter().map(item_code).collect::<Vec<_>>(),
        vec![None, None]
    );

    // Admin API: entries per request, all or nothing.
    let count = |s: &TestServer| s.cli_json(&["entry", "count"])["count"].as_u64().unwrap();
    let before = count(&s);
    let write = |n: usize, pad: usize| {
        let entries: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"spiffe_id":"spiffe://example.org/batch/{pad}/{i}","parent_id":"{}","selectors":[{{"type":"unix","value":"uid:{i}"}}],"hint":"{}"}}"#,
                    a.id,
                    "h".repeat(pad)
                )
            })
            .collect();
        let f = s.dir.path().join(format!("batch-{n}-{pad}.json"));
        std::fs::write(&f, format!(r#"{{"entries":[{}]}}"#, entries.join(","))).unwrap();
        f
    };
    let f = write(6, 0);
    let out = s.cli(&["entry", "create", "--data", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let msg = text(&out.stderr);
    assert!(
        msg.contains(
            "6 entries in one request, more than the limit of 5 (limits.max_entries_per_request)"
        ),
        "{msg}"
    );
    assert_eq!(count(&s), before, "a refused batch wrote nothing");
    // Admin message size: 5 entries, but over 64 KiB.
    let f = write(5, 20_000);
    let out = s.cli(&["entry", "create", "--data", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let msg = text(&out.stderr);
    assert!(msg.contains("too large") && msg.contains("65536"), "{msg}");
    assert_eq!(count(&s), before);
    // A batch within both limits works.
    let f = write(5, 10);
    s.cli_ok(&["entry", "create", "--data", f.to_str().unwrap()]);
    assert_eq!(count(&s), before + 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn workload_api_limits_per_process_and_message_size() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start_with(
        &s,
        "[limits]\nworkload_api_max_streams_per_workload = 3\n\
         workload_api_max_concurrent_streams = 4\nworkload_api_max_request_bytes = 1024\n",
    )
    .unwrap();
    let me = format!("unix:uid:{}", uid());
    entry(&s, "spiffe://example.org/streams", &a.agent_id, &me);
    // Three streams from this process, each with its first message.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut streams = Vec::new();
    while streams.len() < 3 {
        let mut c = workload(&a.socket).await;
        let mut req = tonic::Request::new(wl::X509svidRequest {});
        req.metadata_mut()
            .insert("workload.spiffe.io", "true".parse().unwrap());
        match c.fetch_x509svid(req).await {
            Ok(r) => {
                let mut st = r.into_inner();
                match tokio::time::timeout(Duration::from_secs(10), st.message()).await {
                    Ok(Ok(Some(_))) => streams.push((c, st)),
                    other => {
                        assert!(Instant::now() < deadline, "no SVID: {other:?}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            // The entry may not have reached the agent yet: "no identity
            // issued" (PermissionDenied) until it has.
            Err(e) if e.code() == Code::PermissionDenied && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("stream {} refused: {e}", streams.len() + 1),
        }
    }
    // The fourth from the same process is refused...
    let from = mark(&a.log);
    let e = fetch_with(&a.socket, &[("workload.spiffe.io", "true".into())])
        .await
        .unwrap_err();
    // Load shedding is `Unavailable` (Workload API §6): clients retry.
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("from this process (limit 3)"), "{e}");
    await_log(
        &a.log,
        from,
        &[
            "per-workload stream limit reached",
            &format!("pid={}", std::process::id()),
        ],
    );
    // ... while another process (same uid) is served.
    let out = sigil_tests::sigil_agent(
        &[
            "api",
            "fetch",
            "x509",
            "--output",
            "json",
            "--socket",
            a.socket.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("spiffe://example.org/streams"));
    // The global cap (4): another process holds the fourth stream; then
    // every caller is refused, also a process with no stream open.
    let mut watch = std::process::Command::new(bin("sigil-agent"))
        .args(["api", "watch", "--socket"])
        .arg(&a.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let watch_out = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(watch_out).lines() {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(20));
    assert!(
        matches!(&first, Ok(Ok(l)) if l.contains("update: 1 SVID")),
        "api watch got no SVID: {first:?}"
    );
    let from = mark(&a.log);
    let out = sigil_tests::sigil_agent(
        &[
            "api",
            "fetch",
            "x509",
            "--timeout",
            "1s",
            "--socket",
            a.socket.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success(), "served past the global cap");
    assert!(
        text(&out.stderr).contains("too many open Workload API streams; retry later"),
        "{}",
        text(&out.stderr)
    );
    await_log(
        &a.log,
        from,
        &["Workload API call refused: stream limit reached"],
    );
    let _ = watch.kill();
    let _ = watch.wait();
    // Once the watcher is gone, other processes are served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = sigil_tests::sigil_agent(
            &[
                "api",
                "fetch",
                "x509",
                "--timeout",
                "1s",
                "--socket",
                a.socket.to_str().unwrap(),
            ],
            &[],
        );
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slot never freed: {}",
            text(&out.stderr)
        );
    }

    // Closing one of our streams frees its per-process slot.
    drop(streams.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match fetch_with(&a.socket, &[("workload.spiffe.io", "true".into())]).await {
            Ok(_) => break,
            Err(e) if e.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("slot not freed: {e}"),
        }
    }
    drop(streams);

    // Request size: a 2 KiB request against a 1 KiB limit.
    let mut c = workload(&a.socket).await;
    let mut req = tonic::Request::new(wl::JwtsvidRequest {
        audience: vec!["a".repeat(2048)],
        spiffe_id: String::new(),
    });
    req.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    let e = c.fetch_jwtsvid(req).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e}"
    );
    assert!(e.message().contains("too large"), "{e}");
    fetch_with(&a.socket, &[("workload.spiffe.io", "true".into())])
        .await
        .expect("still serving after an oversized request");
}

#[tokio::test(flavor = "multi_thread")]
async fn exe_hash_limit_omits_the_sha256_selector_only() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let mut a = TestAgent::start_with(&s, "[limits]\nmax_exe_hash_bytes = 1024\n").unwrap();
    // The CLI that will call is this binary; an entry for its hash.
    let exe = bin("sigil-agent");
    let digest = ring::digest::digest(&ring::digest::SHA256, &std::fs::read(&exe).unwrap());
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let me = format!("unix:uid:{}", uid());
    entry(&s, "spiffe://example.org/by-uid", &a.agent_id, &me);
    entry(
        &s,
        "spiffe://example.org/by-hash",
        &a.agent_id,
        &format!("unix:sha256:{hash}"),
    );
    let fetch = |a: &TestAgent| {
        let out = sigil_tests::sigil_agent(
            &[
                "api",
                "fetch",
                "x509",
                "--output",
                "json",
                "--timeout",
                "20s",
                "--socket",
                a.socket.to_str().unwrap(),
            ],
            &[],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut ids: Vec<String> = v["svids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["spiffe_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    // Over the limit: served by uid, not by hash; the agent says why.
    let from = mark(&a.log);
    assert_eq!(fetch(&a), vec!["spiffe://example.org/by-uid"]);
    await_log(
        &a.log,
        from,
        &["executable larger than the hash limit", "limit=1024"],
    );

    // With the default limit the same binary is hashed and matched.
    a.kill();
    let cfg = std::fs::read_to_string(&a.config).unwrap();
    std::fs::write(&a.config, cfg.replace("max_exe_hash_bytes = 1024", "")).unwrap();
    a.spawn(None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ids = fetch(&a);
        if ids.len() == 2 {
            assert_eq!(
                ids,
                vec![
                    "spiffe://example.org/by-hash",
                    "spiffe://example.org/by-uid"
                ]
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hash entry never served: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
