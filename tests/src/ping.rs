//! A ping over mutual TLS, for soaks that count failed handshakes: [`ping`]
//! opens a new TCP connection, does a new handshake and sends `ping`;
//! [`serve_pong`] answers `pong` on every connection it accepts and reports
//! each failure on its side. Both give up after 10 s. [`soak_ends`] makes
//! the two TLS ends from two workloads' `X509Source`s.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The TLS ends of a ping soak: the acceptor serves `backend`'s SVID and
/// admits only `frontend_id`; the connector presents `frontend`'s SVID and
/// accepts only `backend_id`. Each side trusts the bundle of `td` its own
/// source receives (roots follow the source's updates).
pub fn soak_ends(
    backend: &std::sync::Arc<spiffe::X509Source>,
    backend_id: &str,
    frontend: &std::sync::Arc<spiffe::X509Source>,
    frontend_id: &str,
    td: &str,
) -> anyhow::Result<(tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector)> {
    use sigil_proto::SpiffeId;
    let scfg = crate::mtls::server_config(
        backend.clone(),
        crate::mtls::roots(backend, td)?,
        vec![SpiffeId::parse(frontend_id)?],
    )?;
    let ccfg = crate::mtls::client_config(
        Some(frontend.clone()),
        crate::mtls::roots(frontend, td)?,
        SpiffeId::parse(backend_id)?,
    )?;
    Ok((
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(scfg)),
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(ccfg)),
    ))
}

/// How long one exchange may take on either side.
const LIMIT: Duration = Duration::from_secs(10);

/// One full exchange on a new connection: handshake, `ping`, `pong`.
pub async fn ping(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
) -> Result<(), String> {
    let run = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name =
            rustls_pki_types::ServerName::try_from("backend.invalid").map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tls.write_all(b"ping")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut b = [0u8; 4];
        tls.read_exact(&mut b)
            .await
            .map_err(|e| format!("read (server refused us?): {e}"))?;
        if &b != b"pong" {
            return Err(format!("bad reply {b:?}"));
        }
        Ok(())
    };
    tokio::time::timeout(LIMIT, run)
        .await
        .map_err(|_| format!("timed out after {LIMIT:?}"))?
}

/// Accepts on `listener` until aborted, answering each `ping` with `pong`;
/// `failed` gets what went wrong on a connection.
pub fn serve_pong(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    failed: impl Fn(String) + Clone + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, failed) = (acceptor.clone(), failed.clone());
            tokio::spawn(async move {
                let serve = async {
                    let mut tls = acceptor
                        .accept(tcp)
                        .await
                        .map_err(|e| format!("server handshake: {e}"))?;
                    let mut b = [0u8; 4];
                    tls.read_exact(&mut b)
                        .await
                        .map_err(|e| format!("server read: {e}"))?;
                    tls.write_all(b"pong")
                        .await
                        .map_err(|e| format!("server write: {e}"))?;
                    let _ = tls.shutdown().await;
                    Ok::<_, String>(())
                };
                let r = tokio::time::timeout(LIMIT, serve)
                    .await
                    .unwrap_or_else(|_| Err("server side timed out".into()));
                if let Err(e) = r {
                    failed(e);
                }
            });
        }
    })
}
