//! Two real Sigil deployments, `a.test` and `b.test` (a server and an agent
//! each), federated both ways over `https_spiffe` (issue 16, "What must be
//! shown" 1 and 2). A workload of `a.test` using the Rust `spiffe` crate and
//! one of `b.test` using py-spiffe do mutual TLS with nothing but what their
//! Workload APIs gave them, each authorizing the other's SPIFFE ID; a
//! workload of `a.test` whose entry does not federate with `b.test` cannot
//! verify `b.test`'s server. Then `b.test` rotates its CA (`ca prepare`,
//! `ca activate --force`): `a.test`'s workload holds the new CA within one
//! refresh hint and before it signs anything, and the cross-domain
//! handshakes, counted throughout, never fail.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sigil_proto::SpiffeId;
use sigil_tests::interop::{self, run_json};
use sigil_tests::{ServerOptions, TestAgent, TestServer, free_addr, mtls};
use tokio::io::AsyncReadExt;

const A: &str = "a.test";
const B: &str = "b.test";
/// Both bundle endpoints' `refresh_hint`: the longest a federated peer may
/// go without polling (the clients' floor is set below it).
const HINT: Duration = Duration::from_secs(4);
/// What the new CA may take beyond one refresh hint to reach the
/// workload: the client polls at the hint counted from the start of its
/// last fetch, so the hint covers the wait; on top come one fetch over
/// loopback (milliseconds; ~100 ms under load), the store write, the sync
/// push to the agent and the Workload API stream update (milliseconds
/// each), and this test's 50 ms probe. One second covers them with margin.
const PROPAGATION: Duration = Duration::from_secs(1);
const NOBODY: u32 = 65534;

const CLIENT: &str = "spiffe://a.test/client";
const OTHER: &str = "spiffe://a.test/other";
const LONELY: &str = "spiffe://a.test/lonely";
const SERVER: &str = "spiffe://b.test/server";

/// A deployment: its server (with its bundle endpoint at `bundle_addr`)
/// and one agent.
struct Deployment {
    server: TestServer,
    agent: TestAgent,
    bundle_addr: SocketAddr,
}

fn deploy(td: &str, extra: &str) -> Deployment {
    let bundle_addr = free_addr();
    let server = TestServer::start(ServerOptions {
        trust_domain: td.into(),
        bundle_endpoint: false,
        extra: format!(
            "{extra}\n[federation_client]\nrefresh_floor = \"1s\"\n\n\
             [bundle_endpoint]\naddress = \"{bundle_addr}\"\nrefresh_hint = \"{}s\"\n",
            HINT.as_secs()
        ),
        ..Default::default()
    })
    .unwrap();
    let agent = TestAgent::start(&server).unwrap();
    Deployment {
        server,
        agent,
        bundle_addr,
    }
}

/// `of` trusts `peer` through its bundle endpoint (`https_spiffe`),
/// bootstrapped from `peer`'s bundle as its operator would hand it over.
fn federate(of: &Deployment, peer: &Deployment) {
    let file = of
        .server
        .dir
        .path()
        .join(format!("{}.pem", peer.server.trust_domain));
    std::fs::write(&file, peer.server.cli_ok(&["bundle", "show"])).unwrap();
    of.server.cli_ok(&[
        "federation",
        "create",
        "--trust-domain",
        &peer.server.trust_domain,
        "--bundle-endpoint-url",
        &format!("https://{}/", peer.bundle_addr),
        "--bundle-endpoint-profile",
        "https_spiffe",
        "--endpoint-spiffe-id",
        &format!("spiffe://{}/sigil/server", peer.server.trust_domain),
        "--trust-domain-bundle",
        file.to_str().unwrap(),
        "--trust-domain-bundle-format",
        "pem",
    ]);
}

fn register(d: &Deployment, id: &str, uid: u32, federates_with: Option<&str>) {
    let mut args = vec![
        "entry".to_string(),
        "create".into(),
        "--spiffe-id".into(),
        id.into(),
        "--parent-id".into(),
        d.agent.agent_id.clone(),
        "--selector".into(),
        format!("unix:uid:{uid}"),
    ];
    if let Some(td) = federates_with {
        args.extend(["--federates-with".into(), format!("spiffe://{td}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    d.server.cli_ok(&args);
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Prints the four daemons' log tails when the test fails.
struct Logs<'a>(&'a [&'a Deployment]);

impl Drop for Logs<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for d in self.0 {
                eprintln!(
                    "--- {} server log tail:\n{}\n--- {} agent log tail:\n{}",
                    d.server.trust_domain,
                    tail(&d.server.log_text(), 60),
                    d.server.trust_domain,
                    tail(&d.agent.log_text(), 60)
                );
            }
        }
    }
}

/// Whether `leaf` was issued by `ca` (its signature checks with the CA key).
fn signed_by(leaf: &[u8], ca: &[u8]) -> bool {
    let (_, l) = x509_parser::parse_x509_certificate(leaf).unwrap();
    let (_, c) = x509_parser::parse_x509_certificate(ca).unwrap();
    l.verify_signature(Some(c.public_key())).is_ok()
}

/// The CAs of `td` in the source's bundle set (what the workload trusts).
fn source_cas(source: &spiffe::X509Source, td: &str) -> Vec<Vec<u8>> {
    mtls::bundle_cas(source, &spiffe::TrustDomain::new(td).unwrap())
}

/// Waits (bounded) until `probe` holds; returns when it did.
async fn until(what: &str, limit: Duration, mut probe: impl FnMut() -> bool) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        if probe() {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The py-spiffe server of `b.test`, running until `finish`.
struct PyServer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl PyServer {
    fn start(py: &interop::Python, endpoint: &str) -> PyServer {
        let mut child = py
            .script(
                "federation.py",
                &["serve", endpoint, "--peer-td", A, "--allow", CLIENT],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let first = read_json_line(&mut stdout, Duration::from_secs(60));
        let port = first["port"]
            .as_u64()
            .unwrap_or_else(|| panic!("py-spiffe server did not start: {first:#}"))
            as u16;
        eprintln!(
            "py-spiffe server on 127.0.0.1:{port}: {}",
            first["versions"]
        );
        PyServer {
            child,
            stdin,
            stdout,
            port,
        }
    }

    /// Closes its stdin; returns its summary.
    fn finish(mut self) -> Value {
        drop(self.stdin.take());
        let v = read_json_line(&mut self.stdout, Duration::from_secs(30));
        let _ = self.child.wait();
        v
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One JSON line from a child's stdout, read on a thread (bounded).
fn read_json_line(r: &mut BufReader<ChildStdout>, limit: Duration) -> Value {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(limit)
            .unwrap_or_else(|_| panic!("no line from the py-spiffe server in {limit:?}"));
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("py-spiffe server printed {line:?}: {e}"))
    })
}

/// One TLS connection: the server's greeting and its certificate chain.
async fn handshake(cfg: Arc<rustls::ClientConfig>, port: u16) -> Result<(String, Vec<u8>), String> {
    let go = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = rustls_pki_types::ServerName::try_from("b.test").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .ok_or("no server certificate")?;
        let mut got = Vec::new();
        tls.read_to_end(&mut got)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok((String::from_utf8_lossy(&got).trim().to_string(), leaf))
    };
    tokio::time::timeout(Duration::from_secs(10), go)
        .await
        .map_err(|_| "timed out".to_string())?
}

fn client_cfg(source: &Arc<spiffe::X509Source>, server_id: &str) -> Arc<rustls::ClientConfig> {
    let roots = mtls::roots(source, B).unwrap();
    Arc::new(
        mtls::client_config(
            Some(source.clone()),
            roots,
            SpiffeId::parse(server_id).unwrap(),
        )
        .unwrap(),
    )
}

/// What the handshake loop saw.
#[derive(Default)]
struct Tally {
    ok: usize,
    failed: Vec<String>,
    /// Each handshake's server leaf, with when it was seen.
    leaves: Vec<(Instant, Vec<u8>)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn federated_workloads_do_mtls_across_trust_domains_through_a_ca_rotation() {
    assert!(
        nix::unistd::geteuid().is_root() || !interop::in_ci(),
        "needs root (a workload of another uid)"
    );
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to run a workload of another uid");
        return;
    }
    let Some(py) = interop::python() else {
        return;
    };
    let a = deploy(A, "");
    // b.test rotates: short TTLs so the server workload's SVID moves to the
    // new CA within seconds of the activation.
    let b = deploy(
        B,
        "ca_ttl = \"10m\"\ndefault_x509_svid_ttl = \"20s\"\nagent_svid_ttl = \"20s\"\n",
    );
    let _logs = Logs(&[&a, &b]);
    federate(&a, &b);
    federate(&b, &a);
    register(&a, CLIENT, 0, Some(B));
    register(&a, OTHER, 0, Some(B));
    register(&a, LONELY, NOBODY, None);
    register(&b, SERVER, 0, Some(A));

    // a.test: the Rust `spiffe` crate. It holds b.test's bundle once the
    // agent has synced the entry.
    let source = mtls::source(&a.agent.endpoint(), CLIENT).await.unwrap();
    until(
        "b.test's bundle in the a.test workload",
        Duration::from_secs(30),
        || !source_cas(&source, B).is_empty(),
    )
    .await;
    assert_eq!(
        source_cas(&source, B),
        b.server.bundle(),
        "a.test's workload trusts exactly b.test's CAs"
    );

    // b.test: py-spiffe.
    let server = PyServer::start(&py, &b.agent.endpoint());
    let cfg = client_cfg(&source, SERVER);
    let (greeting, leaf) = handshake(cfg.clone(), server.port).await.unwrap();
    assert_eq!(greeting, format!("WELCOME {CLIENT}"));
    assert!(b.server.bundle().iter().any(|ca| signed_by(&leaf, ca)));

    // Authorization on both sides: the server refuses an a.test workload
    // not on its list; the client refuses a server that is not SERVER.
    let other = mtls::source(&a.agent.endpoint(), OTHER).await.unwrap();
    let (greeting, _) = handshake(client_cfg(&other, SERVER), server.port)
        .await
        .unwrap();
    assert_eq!(greeting, "DENIED", "the server admits only {CLIENT}");
    let wrong = client_cfg(&source, "spiffe://b.test/someone-else");
    let e = handshake(wrong, server.port).await.unwrap_err();
    assert!(e.contains("handshake"), "{e}");

    // An a.test workload whose entry does not federate with b.test.
    let lonely = run_json(&mut py.script_as(
        NOBODY,
        "federation.py",
        &[
            "client",
            &a.agent.endpoint(),
            "--port",
            &server.port.to_string(),
            "--server-td",
            B,
            "--server-id",
            SERVER,
        ],
    ));
    assert_eq!(lonely["ok"], true, "{lonely:#}");
    assert_eq!(lonely["spiffe_id"], LONELY, "{lonely:#}");
    assert_eq!(lonely["has_server_bundle"], false, "{lonely:#}");
    assert_eq!(lonely["handshake"]["ok"], false, "{lonely:#}");
    assert!(
        lonely["handshake"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("CERTIFICATE_VERIFY_FAILED")),
        "{lonely:#}"
    );

    // Handshakes every 100 ms from now on, every one counted.
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let looper = {
        let (tally, stop, cfg, port) = (tally.clone(), stop.clone(), cfg.clone(), server.port);
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let r = handshake(cfg.clone(), port).await;
                {
                    let mut t = tally.lock().unwrap();
                    match r {
                        Ok((g, leaf)) if g == format!("WELCOME {CLIENT}") => {
                            t.ok += 1;
                            t.leaves.push((Instant::now(), leaf));
                        }
                        Ok((g, _)) => t.failed.push(format!("greeting {g:?}")),
                        Err(e) => t.failed.push(e),
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // b.test prepares a CA: a.test's workload holds it within one refresh
    // hint (plus the push to the agent and the workload), with no refresh
    // asked for.
    let before = b.server.bundle();
    let old_ca = before.clone();
    b.server.cli_ok(&["ca", "prepare"]);
    let t_prepared = Instant::now();
    let after = b.server.bundle();
    let new_ca = after
        .iter()
        .find(|c| !before.contains(c))
        .expect("ca prepare adds a CA to the bundle")
        .clone();
    let t_seen = until(
        "the prepared b.test CA in the a.test workload",
        HINT + PROPAGATION,
        || source_cas(&source, B).contains(&new_ca),
    )
    .await;
    // Nothing the server presented so far was signed by it.
    assert!(
        tally
            .lock()
            .unwrap()
            .leaves
            .iter()
            .all(|(_, l)| !signed_by(l, &new_ca)),
        "the prepared CA signed before the federated workload held it"
    );
    let t_activated = Instant::now();
    b.server.cli_ok(&["ca", "activate", "--force"]);

    // The server's SVID moves to the new CA; the handshakes go on.
    let t_new = until(
        "a handshake with a server SVID of the new b.test CA",
        Duration::from_secs(60),
        || {
            tally
                .lock()
                .unwrap()
                .leaves
                .iter()
                .any(|(_, l)| signed_by(l, &new_ca))
        },
    )
    .await;
    let ok_at_new = tally.lock().unwrap().ok;
    until(
        "20 more handshakes after the new CA signed",
        Duration::from_secs(30),
        || tally.lock().unwrap().ok >= ok_at_new + 20,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    looper.await.unwrap();
    let summary = server.finish();

    let t = tally.lock().unwrap();
    let first_new = t
        .leaves
        .iter()
        .find(|(_, l)| signed_by(l, &new_ca))
        .map(|(at, _)| *at)
        .unwrap();
    let by_old = t
        .leaves
        .iter()
        .filter(|(_, l)| old_ca.iter().any(|ca| signed_by(l, ca)))
        .count();
    let by_new = t
        .leaves
        .iter()
        .filter(|(_, l)| signed_by(l, &new_ca))
        .count();
    let ms = |i: Instant| i.saturating_duration_since(t_prepared).as_millis();
    eprintln!(
        "b.test CA prepared; in a.test's workload +{} ms (hint {} ms); activated +{} ms; \
         first handshake with the new CA's SVID +{} ms; handshakes: {} ok ({} by the old CA, \
         {} by the new), {} failed; py-spiffe server: {}",
        ms(t_seen),
        HINT.as_millis(),
        ms(t_activated),
        ms(first_new),
        t.ok,
        by_old,
        by_new,
        t.failed.len(),
        summary
    );
    assert!(t_seen < t_activated && t_activated <= t_new);
    assert_eq!(t.failed, Vec::<String>::new(), "failed handshakes");
    assert!(by_old > 0 && by_new >= 20, "old {by_old}, new {by_new}");
    assert_eq!(by_old + by_new, t.ok);
    assert_eq!(summary["ok"], true, "{summary:#}");
    // The server's only failed handshakes are the two refusals above: the
    // client that wanted another server ID, and the workload without
    // b.test's bundle. None during the rotation.
    let failures: Vec<&str> = summary["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        failures.len() == 2
            && failures[0].contains("ACCESS_DENIED")
            && failures[1].contains("UNKNOWN_CA"),
        "{summary:#}"
    );
    assert_eq!(summary["handshakes"], t.ok + 2, "{summary:#}");
    assert!(
        summary["serials"].as_array().is_some_and(|s| s.len() >= 2),
        "the py-spiffe server followed its SVID's rotation: {summary:#}"
    );
    // The old CA stays trusted while SVIDs it signed may still be served.
    let cas = source_cas(&source, B);
    assert!(cas.contains(&new_ca) && old_ca.iter().all(|c| cas.contains(c)));
}
