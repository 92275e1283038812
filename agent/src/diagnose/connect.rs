//! `diagnose --connect`: one TLS handshake with a peer, presenting this
//! workload's own SVID, that records rather than decides. Its server
//! verifier accepts any certificate and keeps the chain (which
//! [`super::judge`] then judges offline, with the same verifier a real
//! client uses); its client-certificate resolver notes whether the server
//! asked for one; after the handshake a bounded read tells whether the
//! server refused our SVID (a TLS 1.3 server says so only after the
//! handshake). Transport failures (nothing listening, no TLS) become
//! verdicts here.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{Error as TlsError, SignatureScheme};
use serde::Serialize;
use sigil_proto::tls::verdict::{Diagnosis, PeerVerdict, Verdict, diagnose_connect_error};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::inputs::OwnSvid;

/// Bound of the TCP connect and of the TLS handshake each.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after the handshake a refusal of our SVID may take to arrive.
const REFUSAL_WAIT: Duration = Duration::from_millis(1500);

/// What the handshake showed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Probe {
    pub address: String,
    /// `TLSv1_3` etc., once a handshake completed.
    pub tls_version: Option<String>,
    /// Whether the server sent a CertificateRequest.
    pub client_cert_requested: bool,
    /// Our SVID, when we presented it.
    pub presented_as: Option<String>,
    /// `Some(false)`: the server refused our SVID (with the alert).
    pub accepted_us: Option<bool>,
    pub refusal: Option<String>,
    /// The server's chain, DER, leaf first.
    #[serde(skip)]
    pub server_chain: Vec<Vec<u8>>,
    /// A transport-level verdict (no TLS, nothing listening), if any.
    #[serde(skip)]
    pub transport: Option<Diagnosis>,
}

#[derive(Debug)]
struct Recorder {
    chain: Mutex<Vec<Vec<u8>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let mut chain = vec![end_entity.to_vec()];
        chain.extend(intermediates.iter().map(|c| c.to_vec()));
        *self.chain.lock().unwrap_or_else(PoisonError::into_inner) = chain;
        // Judged offline by `judge`; the handshake goes on to learn the
        // server's view of us.
        Ok(ServerCertVerified::assertion())
    }

    sigil_proto::tls_signature_methods!(self);
}

#[derive(Debug)]
struct AskedFor {
    key: Arc<CertifiedKey>,
    asked: Mutex<bool>,
}

impl ResolvesClientCert for AskedFor {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        *self.asked.lock().unwrap_or_else(PoisonError::into_inner) = true;
        Some(self.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn transport(v: PeerVerdict, detail: String) -> Option<Diagnosis> {
    Some(Diagnosis::new(Verdict::Peer(v), detail))
}

/// The verdict of a failed handshake with `addr`.
fn handshake_failure(addr: &str, e: &std::io::Error) -> Diagnosis {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>());
    let (v, detail) = match tls {
        Some(TlsError::InvalidMessage(_) | TlsError::InappropriateMessage { .. }) => (
            PeerVerdict::Plaintext,
            format!("{addr} answered the TLS ClientHello with bytes that are not TLS ({e})"),
        ),
        // The agent's translation knows which alerts refuse a certificate.
        Some(TlsError::AlertReceived(a))
            if diagnose_connect_error(addr, e)
                .is_some_and(|d| d.verdict == Verdict::AgentSvidRefused) =>
        {
            (
                PeerVerdict::RefusedUs,
                format!(
                    "{addr} refused this workload's SVID during the handshake (TLS alert {a:?})"
                ),
            )
        }
        Some(other) => (
            PeerVerdict::Invalid,
            format!("the TLS handshake with {addr} failed: {other}"),
        ),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => (
            PeerVerdict::Plaintext,
            format!("{addr} closed the connection without a TLS answer (not a TLS service?)"),
        ),
        None => (
            PeerVerdict::Invalid,
            format!("the TLS handshake with {addr} failed: {e}"),
        ),
    };
    Diagnosis::new(Verdict::Peer(v), detail)
}

/// Handshakes with `addr` presenting `own`'s SVID.
pub async fn probe(addr: &str, own: &OwnSvid) -> anyhow::Result<Probe> {
    let mut out = Probe {
        address: addr.to_string(),
        ..Probe::default()
    };
    let tcp = match tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => {
            out.transport = transport(
                PeerVerdict::Unreachable,
                format!("no TCP connection to {addr} in {HANDSHAKE_TIMEOUT:?}"),
            );
            return Ok(out);
        }
        Ok(Err(e)) => {
            out.transport = transport(
                PeerVerdict::Unreachable,
                format!("cannot connect to {addr}: {e}"),
            );
            return Ok(out);
        }
        Ok(Ok(s)) => s,
    };
    let provider = rustls::crypto::ring::default_provider();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(own.key.clone()));
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)?;
    let chain = own
        .chain
        .iter()
        .cloned()
        .map(CertificateDer::from)
        .collect();
    let resolver = Arc::new(AskedFor {
        key: Arc::new(CertifiedKey::new(chain, signing)),
        asked: Mutex::new(false),
    });
    let recorder = Arc::new(Recorder {
        chain: Mutex::new(Vec::new()),
    });
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_client_cert_resolver(resolver.clone());
    let name = ServerName::try_from(addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string())
        .unwrap_or_else(|_| ServerName::from(std::net::IpAddr::from([127, 0, 0, 1])));
    let handshake = TlsConnector::from(Arc::new(config)).connect(name, tcp);
    let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await;
    out.server_chain = recorder
        .chain
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    out.client_cert_requested = *resolver
        .asked
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if out.client_cert_requested {
        out.presented_as = Some(own.spiffe_id.to_string());
    }
    let mut tls = match result {
        Err(_) => {
            out.transport = transport(
                PeerVerdict::Plaintext,
                format!(
                    "{addr} accepted the connection but sent no TLS answer in \
                     {HANDSHAKE_TIMEOUT:?} (a plaintext service waiting for its client?)"
                ),
            );
            return Ok(out);
        }
        Ok(Err(e)) => {
            let d = handshake_failure(addr, &e);
            if d.verdict == Verdict::Peer(PeerVerdict::RefusedUs) {
                out.accepted_us = Some(false);
                out.refusal = Some(d.detail.clone());
            }
            out.transport = Some(d);
            return Ok(out);
        }
        Ok(Ok(s)) => s,
    };
    out.tls_version = tls.get_ref().1.protocol_version().map(|v| format!("{v:?}"));
    if !out.client_cert_requested {
        return Ok(out);
    }
    // A TLS 1.3 server checks our certificate after its own Finished: a
    // refusal arrives as an alert on the first read.
    let mut buf = [0u8; 512];
    match tokio::time::timeout(REFUSAL_WAIT, tls.read(&mut buf)).await {
        Ok(Err(e)) => {
            let d = handshake_failure(addr, &e);
            out.accepted_us = Some(false);
            out.refusal = Some(d.detail);
        }
        // Data, a clean close or silence: no refusal.
        _ => out.accepted_us = Some(true),
    }
    Ok(out)
}
