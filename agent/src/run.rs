//! `sigil-agent run`: bootstraps trust from the bundle file, restores its
//! identity from `data_dir` or attests the node, then runs the entry sync,
//! the SVID cache, its own SVID renewal and the Workload API until SIGTERM
//! or SIGINT.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use sigil_proto::clock::{Clock, SystemClock};
use sigil_proto::daemon::signals::shutdown_signal;
use sigil_proto::daemon::supervise::{self, Supervisor};
use sigil_proto::tls::TrustRoots;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::cache::{Cache, TrustBundle};
use crate::config::AgentConfig;
use crate::identity::{AgentIdentity, key_and_csr};
use crate::node_attestor::NodeAttestorClient;
use crate::node_attestor::join_token::JoinTokenClient;
use crate::node_attestor::x509pop::X509PopClient;
use crate::persist::{DataDir, StoredIdentity};
use crate::rotation;
use crate::server_client::{self, ServerClient};
use crate::state::Snapshot;

/// The attestor to use for a first (or renewed-after-expiry) attestation.
fn attestor(
    cfg: &AgentConfig,
    join_token: Option<String>,
) -> anyhow::Result<Box<dyn NodeAttestorClient>> {
    if let Some(t) = join_token.or_else(|| cfg.join_token.clone()) {
        return Ok(Box::new(JoinTokenClient::new(t)));
    }
    if let Some(x) = &cfg.node_attestor.x509pop {
        return Ok(Box::new(
            X509PopClient::load(&x.cert_path, &x.key_path).context("[node_attestor.x509pop]")?,
        ));
    }
    anyhow::bail!(
        "the agent has no stored identity and nothing to attest with: pass --join-token, set \
         join_token, or configure [node_attestor.x509pop]"
    )
}

/// Restores the stored identity if it is still valid, or attests.
async fn bootstrap(
    cfg: &AgentConfig,
    data: &DataDir,
    join_token: Option<String>,
    clock: &dyn Clock,
) -> anyhow::Result<(AgentIdentity, Vec<Vec<u8>>)> {
    let stored = data.load().context("reading the stored agent identity")?;
    if let Some(s) = stored {
        let ident = AgentIdentity::from_parts(s.chain, s.key_pkcs8)?;
        if ident.not_after > clock.now_unix() + 5 {
            info!(agent_id = %ident.id, not_after = ident.not_after, "restored agent identity; not attesting again");
            return Ok((ident, s.bundle));
        }
        warn!(agent_id = %ident.id, "stored agent SVID expired; attesting again");
    }
    let tls = match &cfg.trust_bundle_path {
        Some(p) => {
            let bytes =
                std::fs::read(p).with_context(|| format!("trust_bundle_path {}", p.display()))?;
            let certs = sigil_proto::pem::certs_from_pem_or_der(&bytes)
                .with_context(|| format!("trust_bundle_path {}", p.display()))?;
            server_client::tls_config(&TrustRoots::new(certs)?, &cfg.trust_domain, None)?
        }
        None if cfg.insecure_bootstrap => {
            warn!("insecure_bootstrap: trusting the server without a bundle for attestation");
            server_client::insecure_bootstrap_config()?
        }
        None => anyhow::bail!("trust_bundle_path is required (insecure_bootstrap is off)"),
    };
    let a = attestor(cfg, join_token)?;
    let mut client = server_client::connect(&cfg.server_address, tls).await?;
    let attested = server_client::attest(&mut client, a.as_ref()).await;
    crate::metrics::node_attestation(a.name(), if attested.is_ok() { "ok" } else { "error" });
    let (ident, bundle) = attested?;
    info!(agent_id = %ident.id, attestor = a.name(), "node attested");
    data.save(&StoredIdentity {
        key_pkcs8: ident.key_pkcs8.clone(),
        chain: ident.chain.clone(),
        bundle: bundle.x509_authorities.clone(),
    })?;
    Ok((ident, bundle.x509_authorities))
}

/// Renews the agent's own SVID at half its life, forever.
async fn renew_loop(
    client: Arc<ServerClient>,
    data: DataDir,
    ident_tx: watch::Sender<Arc<AgentIdentity>>,
    bundle_rx: watch::Receiver<Vec<Vec<u8>>>,
    clock: Arc<dyn Clock>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut attempt = 0u32;
    loop {
        let cur = ident_tx.borrow().clone();
        let at = rotation::renew_at(&rotation::Issued {
            not_before: cur.not_before,
            issued_at: cur.received_at,
            not_after: cur.not_after,
            entry_revision: 0,
            jitter_unit: 0.5,
        });
        let wait = Duration::from_secs(u64::try_from(at - clock.now_unix()).unwrap_or(0));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        let result = async {
            let (key, csr) = key_and_csr()?;
            let chain = client.renew_agent(csr).await?;
            let ident = AgentIdentity::from_parts(chain, key.serialize_der())?;
            data.save(&StoredIdentity {
                key_pkcs8: ident.key_pkcs8.clone(),
                chain: ident.chain.clone(),
                bundle: bundle_rx.borrow().clone(),
            })?;
            anyhow::Ok(ident)
        }
        .await;
        match result {
            Ok(ident) => {
                info!(agent_id = %ident.id, not_after = ident.not_after, "agent SVID renewed");
                attempt = 0;
                let _ = ident_tx.send(Arc::new(ident));
            }
            Err(e) => {
                let wait = Duration::from_millis(rotation::backoff_ms(attempt, 0.5));
                attempt = attempt.saturating_add(1);
                warn!(error = %format!("{e:#}"), "agent SVID renewal failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// Runs the agent until a shutdown signal.
pub async fn run(cfg: AgentConfig, join_token: Option<String>) -> anyhow::Result<()> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Supervisor::new("agent", shutdown_tx);
    // Ready once attested and the first sync has been served: the cache
    // says so on `ready`. Up first, so probes see "live, not ready" while
    // the agent attests and syncs.
    let (ready_tx, ready_rx) = watch::channel(false);
    let up: Arc<OnceLock<sigil_proto::health::Refresh>> = Arc::new(OnceLock::new());
    if let Some(h) = &cfg.health {
        let listener = tokio::net::TcpListener::bind(h.address)
            .await
            .with_context(|| format!("health.address {}", h.address))?;
        sigil_proto::health::recorder();
        crate::metrics::describe();
        let up = up.clone();
        let endpoint = sigil_proto::health::Endpoint {
            ready: Arc::new(move || {
                if *ready_rx.borrow() {
                    Ok(())
                } else {
                    Err("attesting or waiting for the first sync".into())
                }
            }),
            refresh: Arc::new(move || {
                if let Some(r) = up.get() {
                    r();
                }
            }),
        };
        let mut rx = shutdown_rx.clone();
        tasks.spawn("health endpoint", async move {
            sigil_proto::health::serve(listener, endpoint, async move {
                let _ = rx.changed().await;
            })
            .await
            .map_err(|e| anyhow::anyhow!("health endpoint: {e}"))
        });
        info!(address = %h.address, "health endpoint listening");
    }
    let data = DataDir::open(&cfg.data_dir)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (ident, bundle) = bootstrap(&cfg, &data, join_token, clock.as_ref()).await?;
    let roots = TrustRoots::new(bundle.clone()).context("the trust bundle")?;
    let (ident_tx, ident_rx) = watch::channel(Arc::new(ident));
    let client = Arc::new(ServerClient::new(
        cfg.server_address.clone(),
        cfg.trust_domain.clone(),
        roots.clone(),
        ident_rx.clone(),
    ));
    let (bundle_tx, bundle_rx) = watch::channel(bundle.clone());

    // Snapshot for the Workload API.
    let (state_tx, state_rx) = watch::channel(Arc::new(Snapshot::empty(
        cfg.trust_domain.clone(),
        bundle.clone(),
    )));
    let (events_tx, events_rx) = mpsc::channel(1024);
    let cache = Cache::new(
        cfg.trust_domain.clone(),
        client.clone(),
        clock.clone(),
        bundle,
        state_tx,
        ready_tx,
    );
    let _ = up.set(crate::metrics::refresher(
        state_rx.clone(),
        ident_rx.clone(),
    ));
    tasks.spawn("cache", async move {
        cache.run(events_rx).await;
        anyhow::Ok(())
    });

    // Bundle updates: server verification roots and the stored bundle.
    let on_bundle: Arc<crate::sync::OnBundle> = {
        let roots = roots.clone();
        let data = data.clone();
        Arc::new(move |b: &TrustBundle| {
            // An empty bundle reaches workloads through the cache (every
            // SVID of the trust domain is invalid). The agent's own roots
            // for the server and the stored bundle keep the last usable
            // set: with none, it could never hear of the server's next
            // CAs, nor restart (issue 20: no agent is stranded).
            if b.x509_authorities.is_empty() || *bundle_tx.borrow() == b.x509_authorities {
                return;
            }
            if let Err(e) = roots.set(b.x509_authorities.clone()) {
                warn!(error = %e, "bundle from the server not usable");
                return;
            }
            if let Err(e) = data.save_bundle(&b.x509_authorities) {
                warn!(error = %format!("{e:#}"), "storing the bundle failed");
            }
            let _ = bundle_tx.send(b.x509_authorities.clone());
            info!(sequence = b.sequence, "trust bundle updated");
        })
    };
    tasks.spawn(
        "entry sync",
        crate::sync::run(
            client.clone(),
            events_tx,
            on_bundle,
            clock.clone(),
            shutdown_rx.clone(),
        )
        .then_ok(),
    );
    tasks.spawn(
        "agent SVID renewal",
        renew_loop(
            client.clone(),
            data.clone(),
            ident_tx,
            bundle_rx,
            clock.clone(),
            shutdown_rx.clone(),
        )
        .then_ok(),
    );

    // The Workload API.
    let attestor = Arc::new(crate::workload_attestor::Attestors::standard(
        crate::workload_attestor::unix::UnixAttestorConfig {
            max_exe_hash_bytes: cfg.max_exe_hash_bytes,
        },
    ));
    let service = crate::workload_api::WorkloadApiService::new(
        state_rx,
        attestor,
        crate::workload_api::WorkloadApiLimits {
            max_concurrent_streams: cfg.limits.workload_api_max_concurrent_streams,
            max_streams_per_workload: cfg.limits.workload_api_max_streams_per_workload,
            max_streams_per_uid: cfg.limits.workload_api_max_streams_per_uid,
            max_decoding_message_bytes: cfg.limits.workload_api_max_request_bytes,
            max_encoding_message_bytes: cfg.limits.workload_api_max_response_bytes,
            ..Default::default()
        },
    );
    {
        let path = cfg.socket_path.clone();
        let mut rx = shutdown_rx.clone();
        tasks.spawn("Workload API", async move {
            crate::workload_api::serve(&path, service, async move {
                let _ = rx.changed().await;
            })
            .await
        });
    }
    info!(socket = %cfg.socket_path.display(), "sigil-agent ready");

    tasks.run(shutdown_signal(), supervise::GRACE).await
}

trait ThenOk: std::future::Future<Output = ()> + Send + Sized + 'static {
    fn then_ok(self) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static {
        async move {
            self.await;
            Ok(())
        }
    }
}
impl<F: std::future::Future<Output = ()> + Send + 'static> ThenOk for F {}
