//! Minted SVIDs and the bundle over real TLS: the profile checks pass, the
//! chain verifies in a rustls mTLS handshake (webpki underneath), upstream
//! mode chains leaf → intermediate → upstream root, and the bundle endpoint
//! serves the same certificates as `bundle show`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use sigil_proto::tls::{
    SpiffeClientVerifier, SpiffeServerVerifier, TrustRoots, authorize_exact, client_config,
    server_config,
};
use sigil_proto::{SpiffeId, TrustDomain, bundle, svid_profile};
use sigil_tests::{ServerOptions, TestServer, pem_certs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Svid {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    bundle: Vec<Vec<u8>>,
}

fn mint(s: &TestServer, id: &str, dir: &Path) -> Svid {
    s.cli_ok(&[
        "x509",
        "mint",
        "--spiffe-id",
        id,
        "--write",
        dir.to_str().unwrap(),
    ]);
    let mode = std::fs::metadata(dir.join("svid_key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "svid_key.pem must be 0600");
    let chain = pem_certs(&std::fs::read_to_string(dir.join("svid.pem")).unwrap())
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("svid_key.pem")).unwrap();
    let bundle = pem_certs(&std::fs::read_to_string(dir.join("bundle.pem")).unwrap());
    Svid { chain, key, bundle }
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

/// One mTLS exchange over loopback; returns the result on both sides.
async fn handshake(
    server: &Svid,
    server_id: &str,
    client: &Svid,
    client_id: &str,
    allowed_client: &str,
) -> (Result<(), String>, Result<(), String>) {
    let roots = TrustRoots::new(server.bundle.clone()).unwrap();
    let sv = Arc::new(SpiffeClientVerifier::new(
        roots,
        authorize_exact(id(allowed_client)),
    ));
    let scfg = server_config(server.chain.clone(), server.key.clone_key(), sv).unwrap();
    let croots = TrustRoots::new(client.bundle.clone()).unwrap();
    let cv = Arc::new(SpiffeServerVerifier::new(
        croots,
        authorize_exact(id(server_id)),
    ));
    let ccfg = client_config(cv, Some((client.chain.clone(), client.key.clone_key()))).unwrap();
    let _ = client_id;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(scfg));
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    });
    let cli = async {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(ccfg));
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("sigil.invalid").unwrap();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if &buf != b"pong" {
            return Err("bad reply".into());
        }
        Ok(())
    };
    let c = tokio::time::timeout(std::time::Duration::from_secs(20), cli)
        .await
        .unwrap_or_else(|_| Err("client timed out".into()));
    let s = tokio::time::timeout(std::time::Duration::from_secs(20), srv)
        .await
        .map_or_else(|_| Err("server timed out".into()), |j| j.unwrap());
    (s, c)
}

#[tokio::test(flavor = "multi_thread")]
async fn minted_svid_passes_profile_and_chains_in_a_real_handshake() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let td = TrustDomain::parse("example.org").unwrap();
    let d1 = s.dir.path().join("srv");
    let d2 = s.dir.path().join("cli");
    let srv = mint(&s, "spiffe://example.org/backend", &d1);
    let cli = mint(&s, "spiffe://example.org/frontend", &d2);

    // Profile: leaf and CA.
    let leaf = svid_profile::check_leaf(&srv.chain[0]).unwrap();
    assert_eq!(leaf.spiffe_id.as_str(), "spiffe://example.org/backend");
    assert_eq!(leaf.serial_hex.len(), 32, "128-bit serial");
    assert!(leaf.not_before < leaf.not_after);
    assert_eq!(srv.bundle.len(), 1);
    let ca = svid_profile::check_signing_cert(&srv.bundle[0], &td).unwrap();
    assert!(leaf.not_after <= ca.not_after, "leaf outlives its CA");
    assert_eq!(leaf.aki.as_deref(), Some(&ca.ski[..]), "AKI names the CA");
    // notBefore is backdated.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(leaf.not_before <= now - 5, "notBefore not backdated");
    // x509-parser reads everything.
    for c in srv.chain.iter().chain(cli.chain.iter()) {
        x509_parser::parse_x509_certificate(c).unwrap();
    }

    // A real mutual-TLS handshake chains both SVIDs to the bundle.
    let (sr, cr) = handshake(
        &srv,
        "spiffe://example.org/backend",
        &cli,
        "spiffe://example.org/frontend",
        "spiffe://example.org/frontend",
    )
    .await;
    assert_eq!((sr.clone(), cr.clone()), (Ok(()), Ok(())), "{sr:?} {cr:?}");

    // Any cert from the CA is not enough: the server authorizes by SPIFFE ID.
    let (sr, _) = handshake(
        &srv,
        "spiffe://example.org/backend",
        &cli,
        "spiffe://example.org/frontend",
        "spiffe://example.org/someone-else",
    )
    .await;
    assert!(sr.is_err(), "unauthorized SPIFFE ID accepted");

    // An SVID from another server's CA does not chain.
    let other = TestServer::start(ServerOptions::default()).unwrap();
    let d3 = other.dir.path().join("x");
    let mut foreign = mint(&other, "spiffe://example.org/frontend", &d3);
    foreign.bundle = cli.bundle.clone();
    let (sr, _) = handshake(
        &srv,
        "spiffe://example.org/backend",
        &foreign,
        "spiffe://example.org/frontend",
        "spiffe://example.org/frontend",
    )
    .await;
    assert!(sr.is_err(), "SVID from another CA accepted");

    // Bad mint inputs: clear errors, nothing written.
    let d4 = s.dir.path().join("nothing");
    let out = s.cli(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://example.org/x",
        "--ttl",
        "5h",
        "--write",
        d4.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(sigil_tests::text(&out.stderr).contains("ca_ttl / 6"));
    assert!(!d4.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_mode_chains_leaf_intermediate_root() {
    let up = tempfile::tempdir().unwrap();
    let (cert, key, root_der) =
        sigil_tests::write_upstream_root(up.path(), &rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let s = TestServer::start(ServerOptions {
        extra: format!(
            "[upstream.disk]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        ..Default::default()
    })
    .unwrap();
    // The bundle is the upstream root, not Sigil's CA.
    let bundle = pem_certs(&s.cli_ok(&["bundle", "show"]));
    assert_eq!(bundle, vec![root_der.clone()]);

    let d1 = s.dir.path().join("a");
    let d2 = s.dir.path().join("b");
    let srv = mint(&s, "spiffe://example.org/backend", &d1);
    let cli = mint(&s, "spiffe://example.org/frontend", &d2);
    assert_eq!(srv.chain.len(), 2, "leaf + Sigil's intermediate");
    svid_profile::check_leaf(&srv.chain[0]).unwrap();
    let td = TrustDomain::parse("example.org").unwrap();
    let inter = svid_profile::check_signing_cert(&srv.chain[1], &td).unwrap();
    // The intermediate was issued by the upstream root.
    let (_, ic) = x509_parser::parse_x509_certificate(&srv.chain[1]).unwrap();
    let (_, rc) = x509_parser::parse_x509_certificate(&root_der).unwrap();
    assert_eq!(ic.issuer(), rc.subject());
    ic.verify_signature(Some(rc.public_key())).unwrap();
    assert!(inter.not_after <= rc.validity().not_after.timestamp());

    let (sr, cr) = handshake(
        &srv,
        "spiffe://example.org/backend",
        &cli,
        "spiffe://example.org/frontend",
        "spiffe://example.org/frontend",
    )
    .await;
    assert_eq!((sr.clone(), cr.clone()), (Ok(()), Ok(())), "{sr:?} {cr:?}");
}

/// GET / over TLS; returns (status line + headers, body).
async fn https_get(
    addr: std::net::SocketAddr,
    cfg: rustls::ClientConfig,
    name: &str,
) -> (String, String) {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: bundle\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut resp),
    )
    .await
    .expect("response in time");
    let resp = String::from_utf8(resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn bundle_endpoint_https_spiffe_serves_the_bundle() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let pem = pem_certs(&s.cli_ok(&["bundle", "show", "--format", "pem"]));
    let roots = TrustRoots::new(pem.clone()).unwrap();
    // The endpoint presents the server's own SVID; check exactly that ID.
    let v = Arc::new(SpiffeServerVerifier::new(
        roots,
        authorize_exact(id("spiffe://example.org/sigil/server")),
    ));
    let cfg = client_config(v, None).unwrap();
    let (head, body) = https_get(s.bundle_addr.unwrap(), cfg, "bundle.invalid").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["spiffe_refresh_hint"], 120);
    assert!(json["spiffe_sequence"].as_u64().unwrap() >= 1);
    for k in json["keys"].as_array().unwrap() {
        // Issue 15: the JWT signing keys are published beside the CAs.
        if k["use"] == "jwt-svid" {
            assert!(k["kid"].as_str().is_some_and(|kid| !kid.is_empty()), "{k}");
            continue;
        }
        assert_eq!(k["use"], "x509-svid");
        assert!(k.get("kid").is_none());
        assert_eq!(k["x5c"].as_array().unwrap().len(), 1);
    }
    let td = TrustDomain::parse("example.org").unwrap();
    let decoded = bundle::decode(&td, body.as_bytes()).unwrap();
    assert_eq!(decoded.skipped, vec![], "every published key is usable");
    let decoded = decoded.bundle;
    assert_eq!(
        decoded.x509_authorities, pem,
        "x5c certs differ from `bundle show`"
    );
    // Same as the CLI's JWKS view.
    let cli_jwks: serde_json::Value =
        serde_json::from_str(&s.cli_ok(&["bundle", "show", "--format", "jwks"])).unwrap();
    assert_eq!(cli_jwks, json);
}

#[tokio::test(flavor = "multi_thread")]
async fn bundle_endpoint_https_web_uses_the_operator_cert() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cp = dir.path().join("web.pem");
    let kp = dir.path().join("web_key.pem");
    std::fs::write(&cp, cert.pem()).unwrap();
    std::fs::write(&kp, key.serialize_pem()).unwrap();
    let addr = sigil_tests::free_addr();
    let s = TestServer::start(ServerOptions {
        bundle_endpoint: false,
        extra: format!(
            "[bundle_endpoint]\naddress = \"{addr}\"\nprofile = \"https_web\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            cp.display(),
            kp.display()
        ),
        ..Default::default()
    })
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let (head, body) = https_get(addr, cfg, "localhost").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let td = TrustDomain::parse("example.org").unwrap();
    let decoded = bundle::decode(&td, body.as_bytes()).unwrap();
    assert_eq!(decoded.skipped, vec![], "every published key is usable");
    let decoded = decoded.bundle;
    assert_eq!(
        decoded.x509_authorities,
        pem_certs(&s.cli_ok(&["bundle", "show"]))
    );
}
