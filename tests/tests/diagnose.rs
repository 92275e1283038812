//! `sigil-agent diagnose` (issue 18 item 3), the real binary: a table of
//! broken chains built here with rcgen (each breaking one rule) plus
//! healthy ones, each with its expected verdict code and exit status, and
//! `--connect` against real TLS listeners on 127.0.0.1 — a healthy mTLS
//! server holding an SVID from a real server and agent, the same server
//! with the wrong expected ID, one that refuses our SVID, one that never
//! asks for a client certificate, one with an untrusted certificate, a
//! plaintext HTTP port and a closed port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use sigil_proto::SpiffeId;
use sigil_proto::pem::to_pem;
use sigil_proto::test_pki::{TestCa, ca_params, leaf_params};
use sigil_proto::tls::{SpiffeClientVerifier, TrustRoots, authorize_any_in};
use sigil_tests::{ServerOptions, TestAgent, TestServer, bin, free_addr, mtls, run_bounded, text};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const ID: &str = "spiffe://example.org/web";

/// Runs `sigil-agent diagnose ARGS --output json`: (exit code, report).
fn diagnose(args: &[String]) -> (i32, Value) {
    let out = run_bounded(
        std::process::Command::new(bin("sigil-agent"))
            .arg("diagnose")
            .args(args)
            .args(["--output", "json"]),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "diagnose {args:?}: no JSON ({e}): {}{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

fn write(dir: &Path, name: &str, certs: &[Vec<u8>]) -> String {
    let p: PathBuf = dir.join(name);
    std::fs::write(&p, to_pem(certs)).unwrap();
    p.display().to_string()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// One `--cert` case.
struct Case {
    name: &'static str,
    chain: Vec<Vec<u8>>,
    extra: Vec<String>,
    verdict: &'static str,
    /// Words the verdict line must carry (the evidence of this case).
    says: Vec<String>,
}

fn case(name: &'static str, chain: Vec<Vec<u8>>, verdict: &'static str) -> Case {
    Case {
        name,
        chain,
        extra: Vec::new(),
        verdict,
        says: Vec::new(),
    }
}

#[test]
fn diagnose_cert_table() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("example.org");
    let bundle = write(dir.path(), "bundle.pem", std::slice::from_ref(&ca.der));
    let now = OffsetDateTime::now_utc();
    let signed = |ca: &TestCa, f: &dyn Fn(&mut rcgen::CertificateParams)| {
        let mut p = leaf_params(&[ID]);
        f(&mut p);
        ca.sign(&p).0
    };
    let good = ca.leaf(ID).0;

    // A CA of the same name with another key: an impostor or a re-key.
    let twin_params = ca_params("example.org");
    let (a, b) = (
        TestCa::from_params(twin_params.clone()),
        TestCa::from_params(twin_params),
    );
    let twin_bundle = write(dir.path(), "twin.pem", std::slice::from_ref(&a.der));
    // root → int1 → int2 → leaf.
    let root = TestCa::new("example.org");
    let int1 = root.intermediate("example.org");
    let int2 = int1.intermediate("example.org");
    let deep_leaf = int2.leaf(ID).0;
    let root_bundle = write(dir.path(), "root.pem", std::slice::from_ref(&root.der));
    let foreign = TestCa::new("example.org");
    let other_td = TestCa::new("other.org");

    let mut cases = vec![
        case("healthy", vec![good.clone()], "ok"),
        Case {
            // Checked at the time the certificates were made: an exact skew.
            extra: vec!["--at".into(), rfc3339(now)],
            says: vec!["1h 0m 0s before the check time".into()],
            ..case(
                "expired",
                vec![signed(&ca, &|p| {
                    p.not_before = now - time::Duration::hours(2);
                    p.not_after = now - time::Duration::hours(1);
                })],
                "tls_peer_expired",
            )
        },
        Case {
            extra: vec!["--at".into(), rfc3339(now)],
            says: vec!["2h 0m 0s after the check time".into()],
            ..case(
                "not yet valid",
                vec![signed(&ca, &|p| {
                    p.not_before = now + time::Duration::hours(2);
                    p.not_after = now + time::Duration::hours(3);
                })],
                "tls_peer_not_yet_valid",
            )
        },
        Case {
            says: vec!["not in the bundle".into(), "key id".into()],
            ..case(
                "untrusted CA",
                vec![foreign.leaf(ID).0],
                "tls_peer_untrusted_ca",
            )
        },
        Case {
            extra: vec!["--bundle".into(), twin_bundle],
            says: vec!["another key".into()],
            ..case(
                "same-name CA, other key",
                vec![b.leaf(ID).0],
                "tls_peer_untrusted_ca",
            )
        },
        Case {
            says: vec!["other.org".into(), "example.org".into()],
            ..case(
                "wrong trust domain",
                vec![other_td.leaf("spiffe://other.org/web").0],
                "tls_peer_wrong_trust_domain",
            )
        },
        Case {
            says: vec!["no URI SAN".into()],
            ..case(
                "no URI SAN",
                vec![ca.sign(&leaf_params(&[])).0],
                "tls_peer_not_svid",
            )
        },
        Case {
            says: vec!["2 URI SANs".into()],
            ..case(
                "two URI SANs",
                vec![ca.sign(&leaf_params(&[ID, "spiffe://example.org/db"])).0],
                "tls_peer_not_svid",
            )
        },
        Case {
            extra: vec!["--allow".into(), "spiffe://example.org/api".into()],
            says: vec!["not in the allow-list".into()],
            ..case(
                "not in the allow-list",
                vec![good.clone()],
                "tls_peer_not_allowed",
            )
        },
        Case {
            extra: vec!["--allow".into(), ID.into()],
            ..case("in the allow-list", vec![good.clone()], "ok")
        },
        Case {
            says: vec!["clientAuth".into()],
            ..case(
                "server-only EKU used as a client",
                vec![signed(&ca, &|p| {
                    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                })],
                "tls_peer_wrong_key_usage",
            )
        },
        Case {
            says: vec!["keyCertSign".into()],
            ..case(
                "leaf with keyCertSign",
                vec![signed(&ca, &|p| {
                    p.key_usages = vec![
                        KeyUsagePurpose::DigitalSignature,
                        KeyUsagePurpose::KeyCertSign,
                    ];
                })],
                "tls_peer_wrong_key_usage",
            )
        },
        Case {
            says: vec!["cA=true".into()],
            ..case(
                "CA as leaf",
                vec![signed(&ca, &|p| {
                    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
                })],
                "tls_peer_ca_as_leaf",
            )
        },
        Case {
            extra: vec!["--bundle".into(), root_bundle.clone()],
            says: vec!["did not send".into()],
            ..case(
                "chain incomplete",
                vec![deep_leaf.clone(), int1.der.clone()],
                "tls_peer_chain_incomplete",
            )
        },
        Case {
            extra: vec!["--bundle".into(), root_bundle],
            ..case(
                "whole chain through two intermediates",
                vec![deep_leaf, int2.der.clone(), int1.der.clone()],
                "ok",
            )
        },
        Case {
            extra: vec!["--at".into(), rfc3339(now + time::Duration::hours(3))],
            says: vec!["expired at".into()],
            ..case(
                "healthy, checked --at later",
                vec![good],
                "tls_peer_expired",
            )
        },
    ];
    let mut failures = Vec::new();
    for (i, c) in cases.iter_mut().enumerate() {
        let chain = write(dir.path(), &format!("chain{i}.pem"), &c.chain);
        let mut args = vec!["--cert".to_string(), chain];
        if !c.extra.iter().any(|a| a == "--bundle") {
            args.extend(["--bundle".to_string(), bundle.clone()]);
        }
        args.extend(c.extra.clone());
        let (code, v) = diagnose(&args);
        let want_code = if c.verdict == "ok" { 0 } else { 1 };
        let line = v["line"].as_str().unwrap_or_default();
        if v["verdict"] != c.verdict
            || code != want_code
            || c.says.iter().any(|w| !line.contains(w.as_str()))
        {
            failures.push(format!(
                "{}: want {} (exit {want_code}) saying {:?}, got {} (exit {code}): {line}",
                c.name, c.verdict, c.says, v["verdict"]
            ));
        }
    }
    assert!(cases.len() >= 13);
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Text output: one verdict line, then the evidence.
    let chain = write(dir.path(), "foreign.pem", &[foreign.leaf(ID).0]);
    let out = run_bounded(
        std::process::Command::new(bin("sigil-agent"))
            .args(["diagnose", "--cert", &chain, "--bundle", &bundle]),
    );
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out.stdout);
    let first = t.lines().next().unwrap();
    assert!(
        first.starts_with("FAIL: ") && first.ends_with("[tls_peer_untrusted_ca]"),
        "{t}"
    );
    assert!(t.contains("bundle CA CN=example.org test CA"), "{t}");
}

/// Serves TLS with `cfg` on 127.0.0.1; each accepted connection is held
/// (bounded) until the client closes it.
async fn serve_tls(cfg: rustls::ServerConfig) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(cfg));
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut t) = acceptor.accept(s).await {
                    let mut b = [0u8; 64];
                    let _ = tokio::time::timeout(Duration::from_secs(10), t.read(&mut b)).await;
                }
            });
        }
    });
    addr
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

async fn connect(addr: String, extra: &[&str], socket: &str) -> (i32, Value) {
    let mut args = vec![
        "--connect".to_string(),
        addr,
        "--socket".into(),
        socket.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || diagnose(&args))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnose_connect_table() {
    let server = TestServer::start(ServerOptions::default()).unwrap();
    let agent = TestAgent::start(&server).unwrap();
    // This uid gets both; diagnose presents the default one (the order of
    // entries created in the same second is by entry id).
    server.register_uid(&agent, "spiffe://example.org/client");
    server.register_uid(&agent, "spiffe://example.org/server");
    let socket = agent.socket.display().to_string();
    let src = mtls::source(&agent.endpoint(), "spiffe://example.org/server")
        .await
        .unwrap();
    let roots = mtls::roots(&src, "example.org").unwrap();
    let ours = vec![
        SpiffeId::parse("spiffe://example.org/client").unwrap(),
        SpiffeId::parse("spiffe://example.org/server").unwrap(),
    ];

    // A healthy mTLS server that admits our IDs.
    let healthy = serve_tls(mtls::server_config(src.clone(), roots.clone(), ours).unwrap())
        .await
        .to_string();
    // One that admits someone else.
    let picky = mtls::server_config(
        src.clone(),
        roots.clone(),
        vec![SpiffeId::parse("spiffe://example.org/someone-else").unwrap()],
    )
    .unwrap();
    let picky = serve_tls(picky).await.to_string();
    // One that never asks for a client certificate.
    let open = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(mtls::SourceCert(src.clone())));
    let open = serve_tls(open).await.to_string();
    // One whose certificate comes from a CA nobody trusts.
    let foreign = TestCa::new("example.org");
    let (der, key) = foreign.leaf("spiffe://example.org/server");
    let rogue = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(
            TrustRoots::new(server.bundle()).unwrap(),
            authorize_any_in(sigil_proto::TrustDomain::parse("example.org").unwrap()),
        )))
        .with_single_cert(
            vec![CertificateDer::from(der)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let rogue = serve_tls(rogue).await.to_string();
    // A plaintext HTTP port.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b).await;
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    let closed = free_addr().to_string();

    let server_id = ["--server-id", "spiffe://example.org/server"];
    let table: Vec<(&str, String, Vec<&str>, &str)> = vec![
        ("healthy", healthy.clone(), server_id.to_vec(), "ok"),
        (
            "wrong server ID",
            healthy.clone(),
            vec!["--server-id", "spiffe://example.org/payments"],
            "tls_peer_not_allowed",
        ),
        (
            "refuses our SVID",
            picky,
            server_id.to_vec(),
            "tls_peer_refused_our_svid",
        ),
        (
            "no client certificate requested",
            open,
            server_id.to_vec(),
            "tls_no_client_cert_requested",
        ),
        (
            "untrusted server CA",
            rogue,
            vec![],
            "tls_peer_untrusted_ca",
        ),
        ("plaintext", plain, vec![], "tls_plaintext"),
        ("nothing listening", closed, vec![], "tls_unreachable"),
    ];
    let mut failures = Vec::new();
    let mut reports = Vec::new();
    for (name, addr, extra, want) in table {
        let (code, v) = connect(addr, &extra, &socket).await;
        let want_code = if want == "ok" { 0 } else { 1 };
        if v["verdict"] != want || code != want_code {
            failures.push(format!(
                "{name}: want {want} (exit {want_code}), got {} (exit {code}): {}",
                v["verdict"], v["line"]
            ));
        }
        reports.push((name, v));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The evidence of the handshake.
    let (_, ok) = &reports[0];
    assert_eq!(ok["connect"]["client_cert_requested"], true, "{ok:#}");
    assert_eq!(ok["connect"]["accepted_us"], true, "{ok:#}");
    let presented = ok["connect"]["presented_as"].as_str().unwrap();
    assert!(presented.starts_with("spiffe://example.org/"), "{ok:#}");
    assert_eq!(ok["spiffe_id"], "spiffe://example.org/server");
    let (_, open) = &reports[3];
    assert_eq!(open["connect"]["client_cert_requested"], false, "{open:#}");
    let (_, refused) = &reports[2];
    assert_eq!(refused["connect"]["accepted_us"], false, "{refused:#}");
}
