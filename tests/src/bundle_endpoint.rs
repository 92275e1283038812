//! Fetching the SPIFFE bundle (JWK Set) from a test server's bundle
//! endpoint (`https_spiffe`: the endpoint presents the server's SVID,
//! checked here against the trust bundle `bundle show --format pem` prints).

use std::sync::Arc;
use std::time::Duration;

use sigil_proto::SpiffeId;
use sigil_proto::tls::{SpiffeServerVerifier, TrustRoots, authorize_exact, client_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{TestServer, pem_certs};

/// The body of `GET /` on the bundle endpoint: the JWK Set JSON. Errors
/// name what failed; the whole exchange is bounded by 10 s.
pub async fn get_jwks(s: &TestServer) -> Result<String, String> {
    let pem = pem_certs(&s.cli_ok(&["bundle", "show", "--format", "pem"]));
    get_jwks_trusting(s, pem).await
}

/// [`get_jwks`], checking the endpoint's SVID against `roots` (DER trust
/// anchors, e.g. the ones a consumer held before a rotation) instead of
/// the server's current bundle.
pub async fn get_jwks_trusting(s: &TestServer, roots: Vec<Vec<u8>>) -> Result<String, String> {
    let addr = s
        .bundle_addr
        .ok_or("the test server has no bundle endpoint")?;
    let roots = TrustRoots::new(roots).map_err(|e| e.to_string())?;
    let server_id = format!("spiffe://{}/sigil/server", s.trust_domain);
    let id = SpiffeId::parse(&server_id).map_err(|e| e.to_string())?;
    let verifier = Arc::new(SpiffeServerVerifier::new(roots, authorize_exact(id)));
    let cfg = client_config(verifier, None).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let get = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let name =
            rustls_pki_types::ServerName::try_from("bundle.invalid").map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        tls.write_all(b"GET / HTTP/1.1\r\nHost: bundle\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut resp = Vec::new();
        tls.read_to_end(&mut resp)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(resp)
    };
    let resp = tokio::time::timeout(Duration::from_secs(10), get)
        .await
        .map_err(|_| "bundle endpoint timed out".to_string())??;
    let resp = String::from_utf8(resp).map_err(|e| e.to_string())?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP body in {resp:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("bundle endpoint answered {head}"));
    }
    Ok(body.to_string())
}
