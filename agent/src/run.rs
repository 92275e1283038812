//! `sigil-agent run`: binds the health endpoint and the Workload API socket,
//! restores its identity from `data_dir` or attests the node (see
//! `bootstrap`), then runs the entry sync, the SVID cache, the lifecycle of
//! its own identity and the Workload API until SIGTERM or SIGINT.

use std::sync::{Arc, OnceLock};

use anyhow::Context;
use sigil_proto::clock::{Clock, SystemClock};
use sigil_proto::daemon::signals::shutdown_signal;
use sigil_proto::daemon::supervise::{self, Supervisor};
use sigil_proto::tls::TrustRoots;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::bootstrap::{self, Plan};
use crate::cache::{Cache, TrustBundle};
use crate::config::AgentConfig;
use crate::health::{Health, ServerContact};
use crate::lifecycle::State;
use crate::lifecycle::driver::{BundleView, Driver, set_state};
use crate::persist::{DataDir, StoredIdentity};
use crate::server_client::ServerClient;
use crate::state::Snapshot;

/// Runs the agent until a shutdown signal. `join_token` is the token as
/// resolved by [`crate::config::join_token`] (flag, file, config);
/// `reset_identity` (`--reset-identity`) attests again even though an
/// identity is stored.
pub async fn run(
    cfg: AgentConfig,
    join_token: Option<String>,
    reset_identity: bool,
) -> anyhow::Result<()> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Supervisor::new("agent", shutdown_tx);
    // Ready once the agent's identity is usable and the first sync has been
    // served: the cache says so on `ready`. Up first, so probes see "live,
    // not ready" (with the reason) while the agent attests and syncs.
    let (ready_tx, ready_rx) = watch::channel(false);
    let (ident_state_tx, ident_state_rx) = watch::channel(State::Attesting("starting".into()));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // One notion of health for /ready, `healthcheck` and the metric.
    let contact = ServerContact::default();
    let snapshot: Arc<OnceLock<crate::state::StateRx>> = Arc::default();
    let readiness = Health {
        identity: ident_state_rx.clone(),
        synced: ready_rx,
        contact: contact.clone(),
        snapshot: snapshot.clone(),
        grace: cfg.server_unreachable_grace,
        clock: clock.clone(),
    }
    .readiness();
    let up: Arc<OnceLock<sigil_proto::health::Refresh>> = Arc::new(OnceLock::new());
    if let Some(h) = &cfg.health {
        let listener = tokio::net::TcpListener::bind(h.address)
            .await
            .with_context(|| format!("health.address {}", h.address))?;
        sigil_proto::health::recorder();
        crate::metrics::describe();
        crate::metrics::identity_state(ident_state_rx.borrow().label());
        let up = up.clone();
        let ready = readiness.clone();
        let endpoint = sigil_proto::health::Endpoint {
            ready: readiness.clone(),
            refresh: Arc::new(move || {
                // Sets sigil_agent_ready.
                let _ = ready();
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
    let stored = data.load().context("reading the stored agent identity")?;
    let plan = bootstrap::plan(&cfg, stored, join_token.as_deref(), reset_identity)?;
    // The trust sources are read (and refused) before anything is bound.
    let trust = match &plan {
        Plan::Attest { stored_bundle, .. } => {
            bootstrap::trust_configs(&cfg, stored_bundle.as_deref())?
        }
        Plan::Keep(..) => Vec::new(),
    };
    // Bound before attesting: a socket path the agent cannot use fails
    // here, before a join token is spent.
    let listener = crate::workload_api::bind(&cfg.socket_path)?;
    let servers = Arc::new(crate::servers::Servers::new(cfg.server_address.clone()));
    let (ident, bundle) = match plan {
        Plan::Keep(ident, bundle) => (ident, bundle),
        Plan::Attest { why, attestor, .. } => {
            info!(why, attestor = attestor.name(), server = %cfg.server_address, "attesting the node");
            let (ident, bundle) = tokio::select! {
                done = bootstrap::attest_until_done(
                    &cfg,
                    &servers,
                    trust,
                    attestor.as_ref(),
                    &ident_state_tx,
                    clock.as_ref(),
                ) => match done {
                    Ok(done) => done,
                    Err(e) => {
                        let _ = std::fs::remove_file(&cfg.socket_path);
                        return Err(e);
                    }
                },
                r = shutdown_signal() => {
                    let _ = std::fs::remove_file(&cfg.socket_path);
                    r?;
                    info!("stopped before the node was attested");
                    return Ok(());
                }
            };
            if let Err(e) = data.save(&StoredIdentity {
                key_pkcs8: ident.key_pkcs8.clone(),
                chain: ident.chain.clone(),
                bundle: bundle.x509_authorities.clone(),
            }) {
                let _ = std::fs::remove_file(&cfg.socket_path);
                return Err(e.context("storing the new agent identity"));
            }
            set_state(&ident_state_tx, State::Attested);
            (ident, bundle.x509_authorities)
        }
    };
    let roots = TrustRoots::new(bundle.clone()).context("the trust bundle")?;
    let (ident_tx, ident_rx) = watch::channel(Arc::new(ident));
    let client = Arc::new(ServerClient::new(
        servers.clone(),
        cfg.trust_domain.clone(),
        roots.clone(),
        ident_rx.clone(),
    ));
    let (bundle_tx, bundle_rx) = watch::channel(BundleView {
        authorities: bundle.clone(),
        tainted: Default::default(),
    });

    // Snapshot for the Workload API, with the JWT keys of the last run.
    let jwt_keys = data.load_jwt_keys(&cfg.trust_domain).unwrap_or_else(|e| {
        warn!(error = %format!("{e:#}"), "stored JWT keys not usable; waiting for the first sync");
        None
    });
    let jwt_keys = jwt_keys.unwrap_or_default();
    let mut first = Snapshot::empty(cfg.trust_domain.clone(), bundle.clone());
    first.jwt_authorities = jwt_keys.jwt_authorities.clone();
    first.tainted_jwt_key_ids = jwt_keys.tainted_jwt_key_ids.clone();
    let (state_tx, state_rx) = watch::channel(Arc::new(first));
    let (events_tx, events_rx) = mpsc::channel(1024);
    let cache = Cache::new(
        cfg.trust_domain.clone(),
        client.clone(),
        clock.clone(),
        bundle.clone(),
        state_tx,
        ready_tx,
    )
    .with_jwt_keys(
        jwt_keys.jwt_authorities.clone(),
        jwt_keys.tainted_jwt_key_ids.clone(),
    );
    tasks.spawn(
        "JWT key store",
        crate::persist::jwt_keys::follow(data.clone(), state_rx.clone(), jwt_keys).then_ok(),
    );
    let _ = snapshot.set(state_rx.clone());
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
        // The authorities the roots were last set to.
        let roots_set = watch::Sender::new(bundle.clone());
        Arc::new(move |b: &TrustBundle| {
            // The lifecycle sees every bundle: a taint changes no roots.
            let view = BundleView::of(b);
            bundle_tx.send_if_modified(|cur| {
                let changed = cur.tainted != view.tainted
                    || (!view.authorities.is_empty() && cur.authorities != view.authorities);
                if changed {
                    cur.tainted = view.tainted.clone();
                    if !view.authorities.is_empty() {
                        cur.authorities = view.authorities.clone();
                    }
                }
                changed
            });
            // An empty bundle reaches workloads through the cache (every
            // SVID of the trust domain is invalid). The agent's own roots
            // for the server and the stored bundle keep the last usable
            // set: with none, it could never hear of the server's next
            // CAs, nor restart (issue 20: no agent is stranded).
            if b.x509_authorities.is_empty() || *roots_set.borrow() == b.x509_authorities {
                return;
            }
            if let Err(e) = roots.set(b.x509_authorities.clone()) {
                warn!(error = %e, "bundle from the server not usable");
                return;
            }
            if let Err(e) = data.save_bundle(&b.x509_authorities) {
                warn!(error = %format!("{e:#}"), "storing the bundle failed");
            }
            roots_set.send_replace(b.x509_authorities.clone());
            info!(sequence = b.sequence, "trust bundle updated");
        })
    };
    tasks.spawn(
        "entry sync",
        crate::sync::run(
            client.clone(),
            contact.clone(),
            events_tx,
            on_bundle.clone(),
            clock.clone(),
            shutdown_rx.clone(),
        )
        .then_ok(),
    );
    tasks.spawn(
        "bundle refresh",
        crate::bundle_refresh::Refresher {
            servers: servers.clone(),
            trust_domain: cfg.trust_domain.clone(),
            endpoint: cfg.bundle_endpoint.clone(),
            roots: roots.clone(),
            contact,
            on_bundle: on_bundle.clone(),
            clock: clock.clone(),
        }
        .run(shutdown_rx.clone())
        .then_ok(),
    );
    tasks.spawn(
        "agent identity",
        Driver {
            cfg: cfg.clone(),
            join_token,
            client: client.clone(),
            data: data.clone(),
            ident_tx,
            bundle_rx,
            on_bundle: on_bundle.clone(),
            state: ident_state_tx,
            clock: clock.clone(),
        }
        .run(shutdown_rx.clone())
        .then_ok(),
    );

    // The Workload API.
    let attestor = Arc::new(crate::workload_attestor::Attestors::standard(
        crate::workload_attestor::unix::UnixAttestorConfig {
            max_exe_hash_bytes: cfg.max_exe_hash_bytes,
        },
    ));
    let jwt_state_rx = state_rx.clone();
    let service = crate::workload_api::WorkloadApiService::new(
        state_rx,
        attestor,
        crate::workload_api::WorkloadApiLimits {
            max_concurrent_streams: cfg.limits.workload_api_max_concurrent_streams,
            max_streams_per_workload: cfg.limits.workload_api_max_streams_per_workload,
            max_streams_per_uid: cfg.limits.workload_api_max_streams_per_uid,
            max_decoding_message_bytes: cfg.limits.workload_api_max_request_bytes,
            max_encoding_message_bytes: cfg.limits.workload_api_max_response_bytes,
            connections: cfg.limits.connection_limits(),
            ..Default::default()
        },
    );
    // `healthcheck` says what /ready says (crate::health).
    let service = service.with_readiness(readiness).with_jwt_validation_cache(
        (cfg.limits.workload_api_jwt_validation_cache)
            .unwrap_or(crate::workload_api::DEFAULT_JWT_VALIDATION_CACHE),
    );
    // JWT-SVIDs: minted by the server on demand, cached, pruned on every
    // snapshot (a removed entry, a tainted JWT key).
    let jwt_cache = Arc::new(crate::cache::JwtCache::new(
        client.clone(),
        clock.clone(),
        crate::cache::DEFAULT_JWT_CACHE_SIZE,
    ));
    tasks.spawn(
        "JWT cache",
        jwt_cache.clone().follow(jwt_state_rx).then_ok(),
    );
    let service = service.with_jwt_cache(jwt_cache);
    {
        let path = cfg.socket_path.clone();
        let mut rx = shutdown_rx.clone();
        tasks.spawn("Workload API", async move {
            info!(socket = %path.display(), "sigil-agent ready");
            crate::workload_api::serve_bound(&path, listener, service, async move {
                let _ = rx.changed().await;
            })
            .await
        });
    }

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
