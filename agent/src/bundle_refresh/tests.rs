//! The bundle fetch's refusals against a real local HTTPS server: another
//! trust domain, an oversize body, a body that is not a JWK Set, a
//! certificate that does not name the host; and the fetch that works.

use std::path::PathBuf;

use rustls_pki_types::CertificateDer;

use sigil_proto::bundle::{SpiffeBundle, encode};
use sigil_proto::test_pki::{TestCa, web_server_cert};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

fn td(s: &str) -> TrustDomain {
    TrustDomain::parse(s).unwrap()
}

fn jwks(trust_domain: &str, cas: &[Vec<u8>]) -> Vec<u8> {
    encode(&SpiffeBundle {
        trust_domain: td(trust_domain),
        x509_authorities: cas.to_vec(),
        jwt_authorities: Vec::new(),
        sequence: Some(7),
        refresh_hint: None,
    })
    .unwrap()
    .into_bytes()
}

/// A TLS acceptor presenting `chain` (leaf first) with `key`.
fn acceptor(chain: Vec<Vec<u8>>, key: &rcgen::KeyPair) -> tokio_rustls::TlsAcceptor {
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let chain = chain.into_iter().map(CertificateDer::from).collect();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// A web CA (written to `dir/web-ca.pem`) and an HTTPS server with a
/// certificate for `localhost` that answers every request with `body`;
/// returns the CA file and the port.
async fn web_server(dir: &std::path::Path, body: Vec<u8>) -> (PathBuf, u16) {
    let (ca_der, cert, key) = web_server_cert("localhost");
    let ca_file = dir.join("web-ca.pem");
    std::fs::write(&ca_file, sigil_proto::pem::to_pem(&[ca_der])).unwrap();
    let acceptor = acceptor(vec![cert], &key);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let body = body.clone();
            tokio::spawn(async move {
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
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(&body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (ca_file, port)
}

fn endpoint(url: String, ca_file: PathBuf) -> BundleEndpointConfig {
    let uri: http::Uri = url.parse().unwrap();
    BundleEndpointConfig {
        host: uri.host().unwrap().to_string(),
        port: uri.port_u16().unwrap(),
        path: "/".into(),
        url,
        ca_file,
    }
}

async fn fetch_from(body: Vec<u8>, host: &str) -> anyhow::Result<TrustBundle> {
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, port) = web_server(dir.path(), body).await;
    let be = endpoint(format!("https://{host}:{port}/"), ca_file);
    fetch(&be, web_tls(&be).unwrap(), &td("example.org")).await
}

#[tokio::test]
async fn i14_fetch_accepts_the_trust_domains_bundle() {
    let ca = TestCa::new("example.org");
    let b = fetch_from(
        jwks("example.org", std::slice::from_ref(&ca.der)),
        "localhost",
    )
    .await
    .unwrap();
    assert_eq!(b.x509_authorities, vec![ca.der]);
    assert_eq!(b.sequence, 7);
}

#[tokio::test]
async fn i14_fetch_refuses_another_trust_domain() {
    let other = TestCa::new("other.org");
    let e = fetch_from(jwks("other.org", &[other.der]), "localhost")
        .await
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("spiffe://other.org") && e.contains("not trust domain spiffe://example.org"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        fetch_from(jwks("example.org", &[]), "localhost")
            .await
            .unwrap_err()
    );
    assert!(e.contains("no X.509 authority"), "{e}");
}

#[tokio::test]
async fn i14_fetch_refuses_an_oversize_body() {
    let mut body = b"{\"keys\":[],\"pad\":\"".to_vec();
    body.resize(MAX_BUNDLE_BYTES + 10, b'a');
    body.extend_from_slice(b"\"}");
    let e = format!("{:#}", fetch_from(body, "localhost").await.unwrap_err());
    assert!(
        e.contains(&format!("at most {MAX_BUNDLE_BYTES} bytes")),
        "{e}"
    );
}

#[tokio::test]
async fn i14_fetch_refuses_a_body_that_is_not_json() {
    let e = format!(
        "{:#}",
        fetch_from(b"<html>hello</html>".to_vec(), "localhost")
            .await
            .unwrap_err()
    );
    assert!(e.contains("not a valid JWK Set"), "{e}");
}

#[tokio::test]
async fn i14_fetch_refuses_a_certificate_for_another_host() {
    let ca = TestCa::new("example.org");
    // The certificate names localhost, not 127.0.0.1.
    let e = format!(
        "{:#}",
        fetch_from(jwks("example.org", &[ca.der]), "127.0.0.1")
            .await
            .unwrap_err()
    );
    assert!(
        e.contains("TLS with https://127.0.0.1") && e.contains("not valid for name"),
        "{e}"
    );
}

/// A TLS server presenting `spiffe://example.org/sigil/server` from a CA
/// of its own, which completes handshakes and serves nothing.
async fn server_of_another_ca() -> u16 {
    let other = TestCa::new("example.org");
    let (cert, key) = other.leaf("spiffe://example.org/sigil/server");
    let acceptor = acceptor(vec![cert, other.der.clone()], &key);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn i14_probe_tells_an_unknown_issuer_from_an_unreachable_server() {
    // Nothing listens: unreachable, not a bundle problem.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let roots = TrustRoots::new(vec![TestCa::new("example.org").der]).unwrap();
    assert!(matches!(
        probe(&addr, &roots, &td("example.org")).await,
        Probe::Unreachable(_)
    ));
    // The agent API's server SVID, signed by a CA the roots lack (the
    // server rotated while the agent was away): not verified.
    let port = server_of_another_ca().await;
    let p = probe(&format!("127.0.0.1:{port}"), &roots, &td("example.org")).await;
    assert!(
        matches!(&p, Probe::NotVerified(w) if w.contains("lacks the CA that signed")),
        "{p:?}"
    );
}
