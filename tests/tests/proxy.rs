//! `sigil-agent proxy` end to end (issue 18 items 1-2), with the real server,
//! agent and two proxy processes of two workload identities under different
//! uids: the inbound proxy (this test's uid, `spiffe://example.org/inbound`)
//! in front of a plaintext HTTP backend, the outbound proxy (uid 65534,
//! `spiffe://example.org/web`) in front of a client. Requests flow; every
//! kind of bad client is refused, counted with its `result` and logged with
//! its reason and certificate; the soak keeps connections up across SVID
//! rotations of both proxies and a CA rotation with zero failed handshakes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sigil_proto::tls::{SpiffeServerVerifier, TrustRoots, authorize_any_in, client_config};
use sigil_proto::{TrustDomain, test_pki};
use sigil_tests::proxy::Proxy;
use sigil_tests::{ServerOptions, TestAgent, TestServer, bin, free_addr, pem_certs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The outbound proxy's uid (another workload than this test's).
const OTHER_UID: u32 = 65534;
const INBOUND_ID: &str = "spiffe://example.org/inbound";
const WEB_ID: &str = "spiffe://example.org/web";
const LIMIT: Duration = Duration::from_secs(20);

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// A plaintext HTTP/1 backend: answers every request with the values of
/// its `X-Spiffe-Id` headers (`peer=a,b`), then closes.
async fn http_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let ids: Vec<&str> = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .filter(|(k, _)| k.trim().eq_ignore_ascii_case("x-spiffe-id"))
                    .map(|(_, v)| v.trim())
                    .collect();
                let body = format!("peer={}", ids.join(","));
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A backend that echoes every byte back.
async fn echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// `GET /` through `addr` with the extra header lines `extra`; the body.
async fn get(addr: SocketAddr, extra: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("GET / HTTP/1.1\r\nHost: backend\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out).to_string();
    anyhow::ensure!(text.starts_with("HTTP/1.1 200"), "no 200: {text:?}");
    Ok(text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default())
}

/// The setup both tests share: server, agent, entries for both uids, a
/// temp dir every uid can read.
struct Setup {
    s: TestServer,
    a: TestAgent,
    dir: tempfile::TempDir,
}

fn setup(extra: &str) -> Setup {
    use std::os::unix::fs::PermissionsExt;
    let s = TestServer::start(ServerOptions {
        extra: extra.to_string(),
        ..Default::default()
    })
    .unwrap();
    let a = TestAgent::start(&s).unwrap();
    s.register(&a, INBOUND_ID, &format!("unix:uid:{}", uid()));
    s.register(&a, WEB_ID, &format!("unix:uid:{OTHER_UID}"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    Setup { s, a, dir }
}

impl Setup {
    fn inbound(&self, listen: SocketAddr, backend: SocketAddr, extra: &str) -> Proxy {
        let body = format!(
            "agent_address = \"unix://{}\"\n[[inbound]]\nlisten = \"{listen}\"\n\
             backend = \"{backend}\"\nallow = [\"{WEB_ID}\", \"spiffe://example.org/ns/*\"]\n{extra}",
            self.a.socket.display()
        );
        Proxy::start(
            &bin("sigil-agent"),
            self.dir.path(),
            "inbound",
            &body,
            free_addr(),
            None,
        )
        .unwrap()
    }

    fn outbound(&self, listen: SocketAddr, target: SocketAddr) -> Proxy {
        let body = format!(
            "agent_address = \"unix://{}\"\n[[outbound]]\nlisten = \"{listen}\"\n\
             target = \"{target}\"\nserver_id = \"{INBOUND_ID}\"\n",
            self.a.socket.display()
        );
        Proxy::start(
            &bin("sigil-agent"),
            self.dir.path(),
            "outbound",
            &body,
            free_addr(),
            Some(OTHER_UID),
        )
        .unwrap()
    }
}

/// A certificate and key to present.
struct Presented {
    chain: Vec<Vec<u8>>,
    key: Vec<u8>,
}

fn minted(s: &TestServer, dir: &Path, id: &str, ttl: Option<&str>) -> Presented {
    let out = dir.join(id.replace(['/', ':'], "_"));
    let mut args = vec!["x509", "mint", "--spiffe-id", id, "--write"];
    let out_s = out.display().to_string();
    args.push(&out_s);
    if let Some(t) = ttl {
        args.extend(["--ttl", t]);
    }
    s.cli_ok(&args);
    let chain = pem_certs(&std::fs::read_to_string(out.join("svid.pem")).unwrap());
    let key = pem::parse(std::fs::read(out.join("svid_key.pem")).unwrap())
        .unwrap()
        .into_contents();
    Presented { chain, key }
}

fn serial(der: &[u8]) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    c.raw_serial().iter().map(|b| format!("{b:02x}")).collect()
}

fn not_after(der: &[u8]) -> i64 {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    c.validity().not_after.timestamp()
}

/// Connects to the inbound proxy at `addr` presenting `cert`, sends a
/// request and reads: true when a response came back.
async fn try_direct(addr: SocketAddr, roots: &TrustRoots, cert: Option<&Presented>) -> bool {
    let verifier = Arc::new(SpiffeServerVerifier::new(
        roots.clone(),
        authorize_any_in(TrustDomain::parse("example.org").unwrap()),
    ));
    let client_cert = cert.map(|c| {
        (
            c.chain
                .iter()
                .map(|d| CertificateDer::from(d.clone()))
                .collect(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.clone())),
        )
    });
    let cfg = client_config(verifier, client_cert).unwrap();
    let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let attempt = async {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = conn
            .connect(ServerName::try_from("inbound.invalid").unwrap(), tcp)
            .await?;
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = Vec::new();
        tls.read_to_end(&mut out).await?;
        anyhow::Ok(!out.is_empty())
    };
    matches!(tokio::time::timeout(LIMIT, attempt).await, Ok(Ok(true)))
}

fn handshakes(p: &Proxy, direction: &str, result: &str) -> f64 {
    let m = p.metrics().unwrap();
    m.get("sigil_proxy_handshakes_total")
        .map(|f| {
            f.samples
                .iter()
                .filter(|s| s.labels["direction"] == direction && s.labels["result"] == result)
                .map(|s| s.value)
                .sum()
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn item1_requests_flow_and_every_bad_client_is_refused_counted_and_logged() {
    let st = setup("");
    let backend = http_backend().await;
    let in_addr = free_addr();
    let out_addr = free_addr();
    let inbound = st.inbound(in_addr, backend, "pass_peer_id_header = true\n");
    let outbound = st.outbound(out_addr, in_addr);

    // Requests flow, and the backend sees exactly the verified peer ID: the
    // client's own X-Spiffe-Id is stripped.
    for _ in 0..3 {
        let body = get(out_addr, "X-Spiffe-Id: spiffe://example.org/admin\r\n")
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{e:#}\ninbound: {}\noutbound: {}",
                    inbound.log_text(),
                    outbound.log_text()
                )
            });
        assert_eq!(body, format!("peer={WEB_ID}"));
    }
    let m = inbound.metrics().unwrap();
    let ok = m["sigil_proxy_handshakes_total"]
        .value(
            "sigil_proxy_handshakes_total",
            &[
                ("direction", "inbound"),
                ("peer_id", WEB_ID),
                ("result", "ok"),
            ],
        )
        .unwrap_or(0.0);
    assert!(ok >= 3.0, "{ok}");
    let out_ok = handshakes(&outbound, "outbound", "ok");
    assert!(out_ok >= 3.0, "{out_ok}");
    // Bytes are counted in header mode too, both ways, once each connection
    // has ended (the request line and headers in, the response out).
    for way in ["in", "out"] {
        let bytes = |p: &Proxy| {
            p.metrics()
                .unwrap()
                .get("sigil_proxy_bytes_total")
                .and_then(|f| {
                    f.value(
                        "sigil_proxy_bytes_total",
                        &[("direction", "inbound"), ("way", way)],
                    )
                })
                .unwrap_or(0.0)
        };
        wait_until(
            &format!("inbound header-mode bytes ({way}) counted"),
            Duration::from_secs(10),
            &inbound,
            &outbound,
            &|| bytes(&inbound) >= 3.0 * 40.0,
        );
    }

    // The bad clients, each straight at the inbound proxy.
    let roots = TrustRoots::new(st.s.bundle()).unwrap();
    let d = st.dir.path();
    let (self_signed, ss_key) = test_pki::self_signed(&test_pki::leaf_params(&[WEB_ID]));
    let self_signed = Presented {
        chain: vec![self_signed],
        key: ss_key.serialize_der(),
    };
    let (no_san, ns_key) = test_pki::self_signed(&test_pki::leaf_params(&[]));
    let no_san = Presented {
        chain: vec![no_san],
        key: ns_key.serialize_der(),
    };
    let expired = minted(&st.s, d, WEB_ID, Some("1s"));
    let other = TestServer::start(ServerOptions {
        trust_domain: "other.org".into(),
        ..Default::default()
    })
    .unwrap();
    let foreign = minted(&other, d, "spiffe://other.org/web", None);
    let intruder = minted(&st.s, d, "spiffe://example.org/intruder", None);
    // Wait (bounded) until the short SVID has expired.
    let end = not_after(&expired.chain[0]);
    sigil_tests::poll::wait_for(Duration::from_secs(10), "the 1s SVID to expire", || {
        (time::OffsetDateTime::now_utc().unix_timestamp() > end).then_some(())
    });

    let cases: [(&str, Option<&Presented>); 6] = [
        ("no_client_cert", None),
        ("unknown_ca", Some(&self_signed)),
        ("expired", Some(&expired)),
        ("wrong_trust_domain", Some(&foreign)),
        ("id_not_allowed", Some(&intruder)),
        ("bad_san", Some(&no_san)),
    ];
    for (result, cert) in cases {
        let before = handshakes(&inbound, "inbound", result);
        assert!(
            !try_direct(in_addr, &roots, cert).await,
            "{result}: the proxy answered"
        );
        let after = handshakes(&inbound, "inbound", result);
        assert_eq!(
            after,
            before + 1.0,
            "{result} not counted once\n{}",
            inbound.log_text()
        );
        let logged = inbound.log_events("mTLS handshake refused");
        let line = logged
            .iter()
            .find(|v| v["fields"]["reason"] == result)
            .unwrap_or_else(|| panic!("{result} not logged:\n{}", inbound.log_text()));
        let f = &line["fields"];
        assert!(
            f["peer_addr"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{line}"
        );
        if let Some(c) = cert {
            assert_eq!(f["serial"], serial(&c.chain[0]), "{line}");
            assert!(
                f["issuer"].as_str().is_some_and(|i| !i.is_empty()),
                "{line}"
            );
        }
        if result == "wrong_trust_domain" || result == "id_not_allowed" || result == "expired" {
            let id = f["spiffe_id"].as_str().unwrap();
            assert!(id.starts_with("spiffe://"), "{line}");
        }
    }
    // Refused peers never get their own label.
    let m = inbound.metrics().unwrap();
    for s in &m["sigil_proxy_handshakes_total"].samples {
        if s.labels["result"] != "ok" && s.labels["result"] != "id_not_allowed" {
            assert_eq!(s.labels["peer_id"], "unknown", "{s:?}");
        }
    }
    // Still serving.
    assert_eq!(get(out_addr, "").await.unwrap(), format!("peer={WEB_ID}"));
}

/// Polls `cond` (bounded by `limit`); on timeout fails with both logs.
fn wait_until(
    what: &str,
    limit: Duration,
    inbound: &Proxy,
    outbound: &Proxy,
    cond: &dyn Fn() -> bool,
) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} not within {limit:?}\ninbound: {}\noutbound: {}",
            inbound.log_text(),
            outbound.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Serials and issuers of the peers of the proxy's ok handshakes, in order.
fn ok_peers(p: &Proxy) -> Vec<(String, String)> {
    p.log_events("mTLS handshake ok")
        .iter()
        .map(|v| {
            (
                v["fields"]["serial"].as_str().unwrap_or("-").to_string(),
                v["fields"]["issuer"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

fn distinct<T: Ord + Clone>(v: impl Iterator<Item = T>) -> usize {
    v.collect::<std::collections::BTreeSet<T>>().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn item1_soak_connections_survive_svid_and_ca_rotations_with_zero_failed_handshakes() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let st = setup("ca_ttl = \"2m\"\ndefault_x509_svid_ttl = \"20s\"\nagent_svid_ttl = \"20s\"\n");
    let backend = echo_backend().await;
    let in_addr = free_addr();
    let out_addr = free_addr();
    let inbound = st.inbound(in_addr, backend, "");
    let outbound = st.outbound(out_addr, in_addr);

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let new_ok = Arc::new(AtomicU64::new(0));
    // Long-lived connections: one socket each for the whole soak.
    let mut long = Vec::new();
    for i in 0..4 {
        let (stop, failed) = (stop.clone(), failed.clone());
        let mut s = TcpStream::connect(out_addr).await.unwrap();
        long.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let msg = format!("long {i} ping {n:08}\n");
                let mut back = vec![0u8; msg.len()];
                let r = tokio::time::timeout(LIMIT, async {
                    s.write_all(msg.as_bytes()).await?;
                    s.read_exact(&mut back).await?;
                    anyhow::Ok(())
                })
                .await;
                if !matches!(r, Ok(Ok(()))) || back != msg.as_bytes() {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return n;
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            n
        }));
    }
    // New connections (new handshakes on both proxies) all along.
    let churn = {
        let (stop, failed, new_ok) = (stop.clone(), failed.clone(), new_ok.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = tokio::time::timeout(LIMIT, async {
                    let mut s = TcpStream::connect(out_addr).await?;
                    s.write_all(b"new\n").await?;
                    let mut back = [0u8; 4];
                    s.read_exact(&mut back).await?;
                    anyhow::ensure!(&back == b"new\n", "echo mismatch");
                    anyhow::Ok(())
                })
                .await;
                if matches!(r, Ok(Ok(()))) {
                    new_ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let (inb, outb) = (&inbound, &outbound);
    let wait = |what: &'static str, limit: Duration, cond: &dyn Fn() -> bool| {
        wait_until(what, limit, inb, outb, cond)
    };
    // Both proxies' SVIDs rotate (20 s TTL, renewed at half life), and the
    // new SVIDs are what the peers see in new handshakes.
    let rotated = |p: &Proxy| {
        p.log_events("proxy SVID rotated; new handshakes use it")
            .len()
    };
    wait(
        "two SVID rotations of both proxies",
        Duration::from_secs(45),
        &|| rotated(&inbound) >= 2 && rotated(&outbound) >= 2,
    );
    wait(
        "new handshakes with the rotated SVIDs",
        Duration::from_secs(10),
        &|| {
            distinct(ok_peers(&inbound).into_iter().map(|p| p.0)) >= 3
                && distinct(ok_peers(&outbound).into_iter().map(|p| p.0)) >= 3
        },
    );
    // A CA rotation: prepare, then activate at once (forced).
    let first_issuer = ok_peers(&inbound)[0].1.clone();
    st.s.cli_ok(&["ca", "prepare"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    st.s.cli_ok(&["ca", "activate", "--force"]);
    wait(
        "handshakes with SVIDs of the new CA on both sides",
        Duration::from_secs(45),
        &|| {
            let i = ok_peers(&inbound);
            let o = ok_peers(&outbound);
            i.last().is_some_and(|p| p.1 != first_issuer) && o.last().is_some_and(|p| p.1 != o[0].1)
        },
    );
    // The 4 long connections are still open on both proxies.
    for (p, d) in [(&inbound, "inbound"), (&outbound, "outbound")] {
        let m = p.metrics().unwrap();
        let open = m["sigil_proxy_connections_open"]
            .value("sigil_proxy_connections_open", &[("direction", d)])
            .unwrap();
        assert!(open >= 4.0, "{d}: {open} connections open");
    }
    stop.store(true, Ordering::Relaxed);
    churn.await.unwrap();
    let mut pings = 0;
    for l in long {
        pings += l.await.unwrap();
    }
    let failed = failed.load(Ordering::Relaxed);
    let new_ok = new_ok.load(Ordering::Relaxed);
    eprintln!(
        "soak: {new_ok} new connections, {pings} pings on 4 long connections, {failed} failed"
    );
    assert_eq!(failed, 0, "failed handshakes or broken connections");
    assert!(new_ok >= 20 && pings >= 100, "{new_ok} {pings}");
    for (p, d) in [(&inbound, "inbound"), (&outbound, "outbound")] {
        let m = p.metrics().unwrap();
        for s in &m["sigil_proxy_handshakes_total"].samples {
            assert_eq!(s.labels["result"], "ok", "{d}: {s:?}");
        }
        assert!(p.log_events("mTLS handshake refused").is_empty(), "{d}");
    }
}

/// `sigil-agent proxy validate`: the shipped example passes, and a refused
/// file exits non-zero naming the key and the rule, from the command line.
#[test]
fn proxy_validate_checks_a_file_from_the_command_line() {
    let example =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/proxy.toml");
    let out = sigil_tests::sigil_agent(
        &["proxy", "validate", "--config", example.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", sigil_tests::text(&out.stderr));
    assert!(
        sigil_tests::text(&out.stdout).contains("proxy configuration is valid"),
        "{}",
        sigil_tests::text(&out.stdout)
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("proxy.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&example).unwrap().replace(
            r#"allow = ["spiffe://example.org/web", "spiffe://example.org/ns/*"]"#,
            "allow = []",
        ),
    )
    .unwrap();
    let out = sigil_tests::sigil_agent(
        &["proxy", "validate", "--config", bad.to_str().unwrap()],
        &[],
    );
    let err = sigil_tests::text(&out.stderr);
    assert!(!out.status.success(), "an empty allow list was accepted");
    assert!(
        err.contains("inbound[0].allow") && err.contains("is empty"),
        "{err}"
    );
}
