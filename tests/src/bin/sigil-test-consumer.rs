//! A stand-in for nginx in the helper tests: reads `svid.pem`,
//! `svid_key.pem` and `bundle.pem` from a directory (through the helper's
//! symlinks, the way nginx opens them), serves mutual TLS on 127.0.0.1
//! (client SVIDs verified against the bundle, one SPIFFE ID allowed), writes
//! its pid to a pid file and reloads the files on SIGHUP. A reload that
//! fails (unreadable files, key not matching the certificate) keeps the old
//! certificate and prints `reload failed`, like nginx.
//!
//! Usage: sigil-test-consumer DIR PID_FILE ADDR_FILE ALLOWED_SPIFFE_ID
//! Protocol: the client sends `ping`, the server answers `pong`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, bail};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sigil_proto::SpiffeId;
use sigil_proto::tls::{SpiffeClientVerifier, TrustRoots, authorize_one_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|k| k.clone())
    }
}

struct Loaded {
    key: Arc<CertifiedKey>,
    bundle: Vec<Vec<u8>>,
    serial: String,
}

fn load(dir: &Path) -> anyhow::Result<Loaded> {
    let chain = sigil_proto::pem::from_pem(&std::fs::read(dir.join("svid.pem"))?)?;
    let key_pem = pem::parse(std::fs::read(dir.join("svid_key.pem"))?)?;
    let bundle = sigil_proto::pem::from_pem(&std::fs::read(dir.join("bundle.pem"))?)?;
    let leaf = chain.first().context("svid.pem has no certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)?;
    let pair = rcgen::KeyPair::try_from(key_pem.contents())?;
    if pair.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
        bail!("the key does not match the certificate");
    }
    let serial = hex(cert.raw_serial());
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pem.contents().to_vec()));
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)?;
    let certs: Vec<CertificateDer<'static>> = chain.into_iter().map(CertificateDer::from).collect();
    Ok(Loaded {
        key: Arc::new(CertifiedKey::new(certs, signing)),
        bundle,
        serial,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, pid_file, addr_file, allowed] = args.as_slice() else {
        bail!("usage: sigil-test-consumer DIR PID_FILE ADDR_FILE ALLOWED_SPIFFE_ID");
    };
    let dir = PathBuf::from(dir);
    let allowed = SpiffeId::parse(allowed)?;
    let first = load(&dir).context("initial load")?;
    eprintln!("loaded serial={}", first.serial);
    let roots = TrustRoots::new(first.bundle)?;
    let current = Arc::new(Current(RwLock::new(first.key)));
    let verifier = Arc::new(SpiffeClientVerifier::new(
        roots.clone(),
        authorize_one_of(vec![allowed]),
    ));
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_client_cert_verifier(verifier)
    .with_cert_resolver(current.clone());
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // Both files appear complete (written, then renamed).
    for (path, text) in [
        (pid_file.as_str(), std::process::id().to_string()),
        (addr_file.as_str(), addr.to_string()),
    ] {
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
    }
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = hup.recv() => match load(&dir) {
                Ok(l) => {
                    if let Err(e) = roots.set(l.bundle) {
                        eprintln!("reload failed: bundle: {e}");
                        continue;
                    }
                    if let Ok(mut k) = current.0.write() {
                        *k = l.key;
                    }
                    eprintln!("reloaded serial={}", l.serial);
                }
                Err(e) => eprintln!("reload failed: {e:#}"),
            },
            r = listener.accept() => {
                let (tcp, _) = r?;
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(mut tls) => {
                            let mut b = [0u8; 4];
                            if tls.read_exact(&mut b).await.is_ok() && &b == b"ping" {
                                let _ = tls.write_all(b"pong").await;
                                let _ = tls.shutdown().await;
                            }
                        }
                        Err(e) => eprintln!("handshake failed: {e}"),
                    }
                });
            }
        }
    }
}
