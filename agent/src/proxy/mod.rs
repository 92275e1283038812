//! `sigil-agent proxy --config proxy.toml`: mTLS for programs that cannot do
//! it. The proxy is a workload of the Workload API like any other
//! ([`source`]: its SVID and bundles, rotated in place); each `[[inbound]]`
//! ([`inbound`]) terminates mTLS, admitting only clients whose SVID chains
//! to the bundle of their trust domain and whose ID is on its allow-list
//! ([`allow`], checked per connection by [`peer_check`] through the shared
//! SPIFFE verifiers), and forwards plaintext to a local backend; each
//! `[[outbound]]` ([`outbound`]) takes plaintext on loopback and dials its
//! target with mTLS. Every handshake is counted and every refusal logged
//! once ([`handshake`], [`metrics`]); `[health]` serves `/live`, `/ready`
//! (ready once an SVID is held and unexpired) and `/metrics`.

pub mod allow;
pub mod config;
pub mod handshake;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod peer_check;
pub mod peer_header;
pub mod pipe;
pub mod source;

use std::sync::{Arc, OnceLock};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::info;

use config::ProxyConfig;
use source::Identity;

/// Accepts on `listener` forever, handing each connection that gets one
/// of the `slots` to `handle` in its own task (the slot is held until the
/// task ends); over the limit a connection is closed at once.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    name: &'static str,
    slots: Arc<Semaphore>,
    handle: F,
) where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut acceptor = sigil_proto::net::accept::Acceptor::new(listener, name);
    loop {
        let (tcp, peer) = acceptor.accept().await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(listener = name, peer_addr = %peer, "connection limit reached; closing");
            continue;
        };
        let work = handle(tcp, peer);
        tokio::spawn(async move {
            work.await;
            drop(slot);
        });
    }
}

/// Binds `addr`, naming the key in the error.
async fn bind(what: &str, addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {what} {addr}"))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The health endpoint's view: ready once an unexpired SVID is held.
fn endpoint(identity: Arc<OnceLock<Identity>>) -> sigil_proto::health::Endpoint {
    let ready_id = identity.clone();
    sigil_proto::health::Endpoint {
        ready: Arc::new(move || match ready_id.get() {
            None => Err("no SVID from the Workload API yet".into()),
            Some(i) => {
                let f = i.facts.borrow().clone();
                if f.not_after <= now() {
                    Err(format!(
                        "the proxy's SVID {} (serial {}) has expired",
                        f.spiffe_id, f.serial
                    ))
                } else {
                    Ok(())
                }
            }
        }),
        refresh: Arc::new(move || {
            if let Some(i) = identity.get() {
                metrics::svid_expiry(i.facts.borrow().not_after - now());
            }
        }),
    }
}

/// Runs the proxy until SIGTERM/SIGINT.
pub async fn run(cfg: ProxyConfig) -> anyhow::Result<()> {
    let socket = cfg.socket()?;
    // Every listener is bound before anything else, so a taken port fails
    // the start at once.
    let mut inbound = Vec::new();
    for (i, c) in cfg.inbound.iter().enumerate() {
        inbound.push((
            bind(&format!("inbound[{i}].listen"), c.listen).await?,
            c.clone(),
        ));
    }
    let mut outbound = Vec::new();
    for (i, c) in cfg.outbound.iter().enumerate() {
        outbound.push((
            bind(&format!("outbound[{i}].listen"), c.listen).await?,
            c.clone(),
        ));
    }
    let identity = Arc::new(OnceLock::new());
    if let Some(h) = &cfg.health {
        let listener = bind("health.address", h.address).await?;
        sigil_proto::health::recorder();
        metrics::describe();
        let ep = endpoint(identity.clone());
        tokio::spawn(async move {
            let never = std::future::pending::<()>();
            if let Err(e) = sigil_proto::health::serve(listener, ep, never).await {
                tracing::warn!(error = %e, "the health endpoint stopped");
            }
        });
    }
    info!(socket = %socket.display(), inbound = inbound.len(), outbound = outbound.len(),
          "proxy starting; waiting for an SVID");
    let id = tokio::select! {
        id = source::start(socket) => id?,
        r = sigil_proto::daemon::signals::shutdown_signal() => {
            r?;
            return Ok(());
        }
    };
    let _ = identity.set(id.clone());
    // Each proxied connection holds two descriptors.
    let slots = Arc::new(Semaphore::new(
        sigil_proto::net::limits::connection_budget(sigil_proto::net::limits::nofile_soft()) / 2,
    ));
    for (l, c) in inbound {
        info!(listen = %c.listen, backend = %c.backend, "inbound listener ready");
        tokio::spawn(inbound::serve(l, c, id.clone(), slots.clone()));
    }
    for (l, c) in outbound {
        info!(listen = %c.listen, target = %c.target, "outbound listener ready");
        tokio::spawn(outbound::serve(l, c, id.clone(), slots.clone()));
    }
    sigil_proto::daemon::signals::shutdown_signal().await?;
    info!("proxy shutting down");
    Ok(())
}

/// Checks a proxy config file the way `run` would load it.
pub fn validate(path: &std::path::Path) -> anyhow::Result<ProxyConfig> {
    Ok(ProxyConfig::load(path)?)
}
