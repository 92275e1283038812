//! Issue 22 item 1: a TLS failure between agent and server says its cause
//! and the fix, with a verdict code, on both sides. Each test makes one of
//! an operator's usual mistakes with the real binaries and reads the
//! agent's (or the server's) log line.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sigil_proto::agent_api as pb;
use sigil_tests::agent_client::AgentIdentity;
use sigil_tests::{ServerOptions, TestServer, bin, free_addr};

const LOG_WAIT: Duration = Duration::from_secs(20);

/// Waits (bounded) for a line of `log` that contains every one of
/// `needles`; returns it.
fn await_line(log: &Path, needles: &[&str]) -> String {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let all = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = all.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return l.to_string();
        }
        if Instant::now() > deadline {
            panic!("no log line with {needles:?} in {LOG_WAIT:?}; log:\n{all}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An agent started with `trust_domain`, `server_address` and the PEM
/// `bundle` as its trust_bundle_path; killed on drop.
struct MisconfiguredAgent {
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
    child: Child,
}

impl MisconfiguredAgent {
    fn start(trust_domain: &str, server_address: &str, bundle: &str) -> MisconfiguredAgent {
        let dir = tempfile::tempdir().unwrap();
        let bundle_path = dir.path().join("bundle.pem");
        std::fs::write(&bundle_path, bundle).unwrap();
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "trust_domain = \"{trust_domain}\"\ndata_dir = \"{}\"\n\
                 server_address = \"{server_address}\"\ntrust_bundle_path = \"{}\"\n\
                 socket_path = \"{}\"\n",
                dir.path().join("data").display(),
                bundle_path.display(),
                dir.path().join("run/agent.sock").display(),
            ),
        )
        .unwrap();
        let log = dir.path().join("agent.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin("sigil-agent"))
            .args(["run", "--config"])
            .arg(&config)
            .args(["--join-token", "not-a-real-token"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        MisconfiguredAgent {
            _dir: dir,
            log,
            child,
        }
    }

    /// The agent's line about the failed attestation with every `needle`.
    fn failure(&self, needles: &[&str]) -> String {
        let mut all = vec!["node attestation failed"];
        all.extend_from_slice(needles);
        await_line(&self.log, &all)
    }
}

impl Drop for MisconfiguredAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn no_bundle_endpoint() -> ServerOptions {
    ServerOptions {
        bundle_endpoint: false,
        ..Default::default()
    }
}

#[test]
fn i22_1_wrong_trust_domain_names_both_domains() {
    let s = TestServer::start(no_bundle_endpoint()).unwrap();
    let bundle = s.cli_ok(&["bundle", "show"]);
    let a = MisconfiguredAgent::start("example.com", &s.agent_addr.to_string(), &bundle);
    let line = a.failure(&[
        "the server is spiffe://example.org/sigil/server but this agent's trust_domain is \
         example.com",
        "set trust_domain to the server's trust domain",
        "[tls_wrong_trust_domain]",
    ]);
    assert_eq!(line.matches("trust_domain is").count(), 1, "{line}");
    println!("{line}");
}

#[test]
fn i22_1_stale_bundle_names_the_issuer_and_bundle_show() {
    let s = TestServer::start(no_bundle_endpoint()).unwrap();
    let other = sigil_proto::test_pki::TestCa::new("example.org");
    let bundle = sigil_proto::pem::to_pem(std::slice::from_ref(&other.der));
    let a = MisconfiguredAgent::start("example.org", &s.agent_addr.to_string(), &bundle);
    let line = a.failure(&[
        "trust_bundle_path lacks the CA that signed the server's certificate (issuer ",
        "refresh it with `sigil-server bundle show",
        "[tls_stale_bundle_file]",
    ]);
    println!("{line}");
}

#[test]
fn i22_1_nothing_listening_names_the_address() {
    let addr = free_addr().to_string();
    let a = MisconfiguredAgent::start("example.org", &addr, &fake_bundle());
    let line = a.failure(&[
        &format!("nothing listens on {addr}"),
        "check server_address",
        "[tls_nothing_listening]",
    ]);
    assert_eq!(line.matches("onnection refused").count(), 1, "{line}");
    println!("{line}");
}

fn fake_bundle() -> String {
    sigil_proto::pem::to_pem(&[sigil_proto::test_pki::TestCa::new("example.org").der])
}

#[test]
fn i22_1_plaintext_service_is_not_the_agent_api() {
    // An HTTP server: answers every connection with a 400 and closes.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for c in l.incoming().take(64) {
            let Ok(mut c) = c else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 512];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let a = MisconfiguredAgent::start("example.org", &addr, &fake_bundle());
    let line = a.failure(&[
        &format!("{addr} answers but is not the agent API"),
        "set server_address to the server's bind_address",
        "[tls_not_agent_api]",
    ]);
    println!("{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn i22_1_server_names_the_refused_agent_svid() {
    let s = TestServer::start(no_bundle_endpoint()).unwrap();
    // An agent-shaped SVID from a CA the server does not know (its CA was
    // revoked, or it comes from another server).
    let rogue = sigil_proto::test_pki::TestCa::new("example.org");
    let id = "spiffe://example.org/sigil/agent/join_token/0123456789abcdef";
    let (leaf, key) = rogue.leaf(id);
    let facts_serial = {
        use x509_parser::prelude::FromDer;
        let (_, c) = x509_parser::certificate::X509Certificate::from_der(&leaf).unwrap();
        c.raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let ident = AgentIdentity {
        id: id.to_string(),
        chain: vec![leaf.into()],
        key: rustls_pki_types::PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )),
    };
    // Refused at the handshake (TLS 1.2) or at the first call (TLS 1.3).
    if let Ok(mut c) = s.agent_client(Some(&ident)).await {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            c.fetch_bundle(pb::FetchBundleRequest {}),
        )
        .await
        .expect("bounded");
        assert!(r.is_err(), "a foreign agent SVID was accepted");
    }
    let line = await_line(
        &s.log,
        &[
            "agent API TLS handshake refused",
            "tls_client_ca_unknown",
            id,
            &facts_serial,
            "issuer",
            "does not chain to the current bundle",
            "re-attest",
        ],
    );
    assert_eq!(line.matches("issuer").count(), 1, "{line}");
    println!("server: {line}");
}
