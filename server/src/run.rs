//! `sigil-server run`: opens the store, brings up the CA, and serves the
//! admin socket and the bundle endpoint until SIGTERM or SIGINT. Each piece
//! of state has one owner; shutdown is one `watch` signal.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use sigil_proto::admin_api::admin_api_server::AdminApiServer;
use sigil_proto::daemon::signals::shutdown_signal;
use sigil_proto::daemon::supervise::{self, Supervisor};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::admin::{self, AdminService, AdminSettings, convert::Limits};
use crate::agent_api::access::AccessLayer;
use crate::agent_api::caller::Authenticator;
use crate::agent_api::{self, AgentApiHandle, AgentApiService, AgentApiSettings};
use crate::ca::issuer::{Issuer, IssuerSettings, JwtIssueSettings};
use crate::ca::manager::{CaManager, CaSettings};
use crate::ca::startup::check_key_files;
use crate::ca::unix;
use crate::config::ServerConfig;
use crate::key_manager::disk::DiskKeyManager;
use crate::pruning::{self, Pruner};
use crate::registry::Registry;
use crate::server_svid::ServerSvid;
use crate::upstream::UpstreamAuthority;
use crate::upstream::disk::DiskUpstream;
use crate::{bundle, node_attestor, store};
use sigil_proto::agent_api::agent_api_server::AgentApiServer;
use sigil_proto::clock::{Clock, SystemClock};
use sigil_proto::tls::TrustRoots;

/// How often the CA manager checks the key slots.
const CA_TICK: Duration = Duration::from_secs(1);
/// How often the entry follower checks a shared store's revision when no
/// notification came (the safety net behind `NOTIFY`).
const FOLLOW_POLL: Duration = Duration::from_secs(1);
/// How often the agent API pings an HTTP/2 connection, and how long it
/// waits for the answer before closing it (a dead peer's connection and
/// its descriptor are given back within a minute).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Loads the upstream CA if one is configured.
pub fn load_upstream(
    cfg: &ServerConfig,
    now: i64,
) -> anyhow::Result<Option<Arc<dyn UpstreamAuthority>>> {
    let Some(d) = &cfg.upstream.disk else {
        return Ok(None);
    };
    let up: Arc<dyn UpstreamAuthority> =
        Arc::new(DiskUpstream::load(d, now).context("[upstream.disk]")?);
    if let Some(w) = crate::upstream::expiry_warning(&*up, now, cfg.ca_ttl) {
        warn!(warning = %w, cert_file = %d.cert_file.display(), "upstream CA warning");
    }
    Ok(Some(up))
}

/// What the health endpoint looks at once everything is serving.
struct Up {
    ca: Arc<CaManager>,
    refresh: sigil_proto::health::Refresh,
}

/// Ready once the store is open, every listener is bound and the active CA
/// has not expired.
fn health_endpoint(up: Arc<OnceLock<Up>>, clock: Arc<dyn Clock>) -> sigil_proto::health::Endpoint {
    let ready_up = up.clone();
    sigil_proto::health::Endpoint {
        ready: Arc::new(move || {
            let up = ready_up.get().ok_or("starting")?;
            let now = unix(clock.now());
            if up.ca.active().not_after() <= now {
                return Err("the active CA has expired".into());
            }
            Ok(())
        }),
        refresh: Arc::new(move || {
            if let Some(up) = up.get() {
                (up.refresh)();
            }
        }),
    }
}

/// What [`run`] undoes after every task stopped: the admin socket it bound
/// is removed only once the store it opened is released, so a restart
/// that waits for the socket to go finds the store free.
#[derive(Default)]
struct Teardown {
    store: Option<std::sync::Weak<dyn store::Store>>,
    admin_socket: Option<std::path::PathBuf>,
}

/// How long [`run`] waits, after its tasks stopped, for the last store
/// reference (a stream's producer task ending) before it removes the admin
/// socket anyway.
const STORE_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Loads the foreign bundles, stores the bundle files of static
/// relationships whose trust domain has none yet, and starts one bundle
/// endpoint client per relationship (issue 16).
fn start_federation(
    cfg: &ServerConfig,
    store: Arc<dyn crate::store::Store>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<crate::federation::Federation>> {
    use crate::federation::{Federation, bundle_file, foreign::ForeignBundles};
    let foreign = Arc::new(
        ForeignBundles::load(store.clone(), cfg.trust_domain.clone())
            .context("loading foreign bundles")?,
    );
    for s in &cfg.federation {
        let td = &s.record.trust_domain;
        if let Some((path, format)) = &s.bundle_file
            && foreign.get(td).is_none()
        {
            let bytes = std::fs::read(path).with_context(|| {
                format!("federation {td}: trust_domain_bundle {}", path.display())
            })?;
            let b = bundle_file::parse(td, &bytes, *format).map_err(|m| {
                anyhow::anyhow!(
                    "federation {td}: trust_domain_bundle {}: {m}",
                    path.display()
                )
            })?;
            foreign.put(b).context("storing a federation bundle")?;
            info!(trust_domain = %td, file = %path.display(), "federation: bundle stored from trust_domain_bundle");
        }
    }
    let federation = Federation::new(
        store,
        foreign,
        clock,
        cfg.federation_refresh,
        cfg.federation.iter().map(|s| s.record.clone()).collect(),
    );
    federation
        .reconcile()
        .context("starting the federation clients")?;
    Ok(federation)
}

/// Runs the server until a shutdown signal. `activate_prepared`: see
/// [`CaSettings::activate_prepared`].
pub async fn run(cfg: ServerConfig, activate_prepared: bool) -> anyhow::Result<()> {
    let mut teardown = Teardown::default();
    let r = serve(cfg, activate_prepared, &mut teardown).await;
    if let Some(store) = teardown.store {
        let deadline = tokio::time::Instant::now() + STORE_RELEASE_WAIT;
        // Polled: an `Arc` has no signal for its last drop.
        while store.strong_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if store.strong_count() > 0 {
            warn!(
                references = store.strong_count(),
                "the store is still referenced; removing the admin socket anyway"
            );
        }
    }
    if let Some(path) = teardown.admin_socket {
        let _ = std::fs::remove_file(&path);
    }
    r
}

async fn serve(
    cfg: ServerConfig,
    activate_prepared: bool,
    teardown: &mut Teardown,
) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    for w in cfg.warnings() {
        warn!(warning = %w, "configuration warning");
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Supervisor::new("server", shutdown_tx);
    // Up first, so probes see "live, not ready" while the store and CA load.
    let up: Arc<OnceLock<Up>> = Arc::new(OnceLock::new());
    if let Some(h) = &cfg.health {
        let listener = TcpListener::bind(h.address)
            .await
            .with_context(|| format!("health.address {}", h.address))?;
        sigil_proto::health::recorder();
        crate::metrics::describe();
        let endpoint = health_endpoint(up.clone(), clock.clone());
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
    // Check everything that can be checked before writing anything.
    let upstream = load_upstream(&cfg, unix(clock.now()))?;
    sigil_proto::daemon::data_dir::private_dir(&cfg.data_dir)?;

    let keys =
        Arc::new(DiskKeyManager::open(&cfg.keys_dir()).context("opening the key directory")?);
    check_key_files(keys.as_ref()).context("starting the CA")?;
    let instance_id = crate::instance_id::load_or_create(&cfg.data_dir)?;
    info!(instance_id = %instance_id, "server instance id");
    let store = store::open(&cfg)?;
    teardown.store = Some(Arc::downgrade(&store));
    let ca = CaManager::init(
        store.clone(),
        keys,
        upstream,
        CaSettings {
            trust_domain: cfg.trust_domain.clone(),
            key_type: cfg.ca_key_type,
            jwt_key_type: cfg.jwt.key_type,
            ca_ttl: cfg.ca_ttl,
            activate_prepared,
            min_publish: 2 * cfg.refresh_hint(),
            instance_id,
        },
        clock.clone(),
    )
    .context("starting the CA")?;
    let issuer = Arc::new(
        Issuer::new(
            ca.clone(),
            clock.clone(),
            IssuerSettings {
                agent_svid_ttl: cfg.agent_svid_ttl,
                default_x509_svid_ttl: cfg.default_x509_svid_ttl,
                max_x509_svid_ttl: crate::config::max_svid_ttl(cfg.ca_ttl),
            },
        )
        .with_jwt(JwtIssueSettings {
            default_ttl: cfg.jwt.default_svid_ttl,
            max_ttl: crate::config::max_svid_ttl(cfg.ca_ttl),
            issuer: cfg.jwt.issuer.clone(),
        }),
    );
    let svid = ServerSvid::new(cfg.server_id(), cfg.default_x509_svid_ttl, issuer.clone())
        .context("issuing the server SVID")?;

    // Admin API on the local socket.
    let listener = admin::socket::bind(&cfg.admin_socket)
        .with_context(|| format!("admin_socket {}", cfg.admin_socket.display()))?;
    teardown.admin_socket = Some(cfg.admin_socket.clone());
    let refresh_hint = cfg.refresh_hint();
    let registry = Registry::load(store.clone(), cfg.server_id()).context("loading entries")?;
    crate::ttl_limit::report(&registry, cfg.ca_ttl);
    // Other servers' entry writes (a shared store), and the store's health.
    let federation = start_federation(&cfg, store.clone(), clock.clone())?;
    if let Some(feed) = store
        .revision_feed(FOLLOW_POLL)
        .context("following the store's entry revision")?
    {
        let (registry, rx) = (registry.clone(), shutdown_rx.clone());
        tasks.spawn("entry follower", async move {
            crate::registry::follow::follow(registry, feed, rx).await;
            Ok(())
        });
        let (federation, rx) = (federation.clone(), shutdown_rx.clone());
        tasks.spawn("federation follower", async move {
            crate::federation::follow::follow(federation, crate::federation::follow::PERIOD, rx)
                .await;
            Ok(())
        });
    }
    {
        let health = Arc::new(crate::store_health::StoreHealth::default());
        let probe = health.clone();
        sigil_proto::health::set_degraded(Arc::new(move || probe.problem()));
        let (store, rx) = (store.clone(), shutdown_rx.clone());
        tasks.spawn("store probe", async move {
            health.run(store, rx).await;
            Ok(())
        });
    }
    let service = AdminService::new(
        store.clone(),
        registry.clone(),
        ca.clone(),
        issuer.clone(),
        clock.clone(),
        AdminSettings {
            limits: Limits {
                trust_domain: cfg.trust_domain.clone(),
                ca_ttl: cfg.ca_ttl,
            },
            join_token_ttl: cfg.join_token_ttl,
            bundle_refresh_hint: refresh_hint,
            max_entries_per_request: cfg.limits.max_entries_per_request,
        },
    )
    .with_federation(federation.clone());
    let server_uid = nix::unistd::getuid().as_raw();
    let admin_server = tonic::service::interceptor::InterceptedService::new(
        AdminApiServer::new(service)
            .max_decoding_message_size(cfg.limits.admin_api_max_message_bytes)
            .max_encoding_message_size(cfg.limits.admin_api_max_message_bytes),
        admin::socket::uid_check(server_uid, cfg.admin_allowed_uids.clone()),
    );
    {
        let mut rx = shutdown_rx.clone();
        tasks.spawn("admin API", async move {
            let r = tonic::transport::Server::builder()
                .add_service(admin_server)
                // Any `:authority` is accepted on the admin socket too.
                .serve_with_incoming_shutdown(
                    sigil_proto::unix_h2::incoming(listener),
                    async move {
                        let _ = rx.changed().await;
                    },
                )
                .await;
            r.map_err(|e| anyhow::anyhow!("admin API: {e}"))
        });
    }
    info!(socket = %cfg.admin_socket.display(), "admin API listening");

    // Bundle endpoint.
    if let Some(be) = &cfg.bundle_endpoint {
        let resolver = bundle::endpoint::cert_resolver(be, svid.clone(), unix(clock.now()))?;
        let tls = bundle::endpoint::tls_config(resolver)?;
        let listener = TcpListener::bind(be.address)
            .await
            .with_context(|| format!("bundle_endpoint.address {}", be.address))?;
        let ca = ca.clone();
        let hint = be.refresh_hint;
        let rx = shutdown_rx.clone();
        let limits = bundle::endpoint::limits(
            cfg.limits.bundle_endpoint_max_connections,
            cfg.limits.bundle_endpoint_max_connections_per_ip,
        );
        tasks.spawn("bundle endpoint", async move {
            bundle::endpoint::serve(listener, tls, ca, hint, limits, rx).await;
            Ok(())
        });
    }

    // OIDC discovery (off by default; the config guarantees jwt_issuer).
    if let (Some(d), Some(issuer)) = (&cfg.oidc_discovery, &cfg.jwt.issuer) {
        let endpoint = crate::oidc::Endpoint::bind(
            d,
            issuer,
            ca.subscribe_bundle(),
            refresh_hint,
            bundle::endpoint::limits(
                cfg.limits.bundle_endpoint_max_connections,
                cfg.limits.bundle_endpoint_max_connections_per_ip,
            ),
        )
        .await?;
        let rx = shutdown_rx.clone();
        tasks.spawn("OIDC discovery", async move {
            endpoint.serve(rx).await;
            Ok(())
        });
    }

    // Agent API (mTLS) on bind_address.
    {
        let roots = TrustRoots::new(ca.bundle().x509_authorities.clone())
            .context("trust bundle for the agent API")?;
        let verifier =
            agent_api::listener::client_verifier(roots.clone(), cfg.trust_domain.clone());
        let tls = agent_api::listener::tls_config(verifier.clone(), Arc::new(svid.resolver()))?;

        // Keep the verifier's roots in step with the bundle.
        {
            let bundles = ca.subscribe_bundle();
            let rx = shutdown_rx.clone();
            tasks.spawn("agent API trust roots", async move {
                agent_api::listener::follow_bundle(roots, bundles, rx).await;
                Ok(())
            });
        }

        let attestors = node_attestor::from_config(&cfg, store.clone())?;
        let auth = Arc::new(Authenticator::new(
            store.clone(),
            verifier,
            cfg.trust_domain.clone(),
        ));
        let service = AgentApiService::new(
            auth.clone(),
            registry.clone(),
            ca.clone(),
            issuer.clone(),
            clock.clone(),
            attestors,
            AgentApiSettings {
                bundle_refresh_hint: refresh_hint,
                attestations_per_second: cfg.rate_limit.attestations_per_second,
                csrs_per_second: cfg.rate_limit.csrs_per_second,
                renewals_per_second: cfg.rate_limit.renewals_per_second,
                sync_streams_per_second: cfg.rate_limit.sync_streams_per_second,
                bundle_fetches_per_second: cfg.rate_limit.bundle_fetches_per_second,
                max_csrs_per_request: cfg.limits.max_csrs_per_request,
                max_sync_streams_per_agent: cfg.limits.agent_api_max_sync_streams_per_agent,
            },
        )
        .with_shutdown(shutdown_rx.clone())
        .with_foreign_bundles(federation.foreign().clone());
        let api = AgentApiServer::new(AgentApiHandle(Arc::new(service)))
            .max_decoding_message_size(cfg.limits.agent_api_max_message_bytes)
            .max_encoding_message_size(cfg.limits.agent_api_max_message_bytes);
        let listener = TcpListener::bind(cfg.bind_address)
            .await
            .with_context(|| format!("bind_address {}", cfg.bind_address))?;
        info!(address = %cfg.bind_address, "agent API listening");
        let l = &cfg.limits;
        let incoming = tokio_stream::wrappers::ReceiverStream::new(agent_api::listener::incoming(
            listener,
            tls,
            agent_api::listener::ListenerLimits {
                max_connections: l.agent_api_max_connections,
                max_connections_per_ip: l.agent_api_max_connections_per_ip,
                preface_timeout: l.agent_api_preface_timeout,
                idle_timeout: l.agent_api_idle_timeout,
            },
            shutdown_rx.clone(),
        ));
        info!(
            max_connections = l.agent_api_max_connections,
            max_connections_per_ip = l.agent_api_max_connections_per_ip,
            open_file_limit = sigil_proto::net::nofile_soft(),
            "agent API connection limits"
        );
        let mut rx = shutdown_rx.clone();
        let h2 = *l;
        tasks.spawn("agent API", async move {
            tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
                .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
                .max_concurrent_streams(h2.agent_api_max_concurrent_streams)
                .http2_max_pending_accept_reset_streams(Some(
                    h2.agent_api_max_pending_reset_streams,
                ))
                .http2_max_local_error_reset_streams(Some(h2.agent_api_max_local_reset_streams))
                .layer(AccessLayer::new(auth))
                .layer(agent_api::idle::IdleLayer::new(
                    agent_api::listener::activity_of,
                ))
                .add_service(api)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = rx.changed().await;
                })
                .await
                .map_err(|e| anyhow::anyhow!("agent API: {e}"))
        });
    }

    // Server SVID renewal.
    {
        let svid = svid.clone();
        let rx = shutdown_rx.clone();
        tasks.spawn("server SVID renewal", async move {
            svid.run(rx).await;
            Ok(())
        });
    }

    // CA upkeep.
    {
        let ca = ca.clone();
        let mut rx = shutdown_rx.clone();
        tasks.spawn("CA upkeep", async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(CA_TICK) => {}
                    _ = rx.changed() => return Ok(()),
                }
                let ca = ca.clone();
                match tokio::task::spawn_blocking(move || ca.tick()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(error = %e, "CA upkeep failed; retrying"),
                    Err(e) => warn!(error = %e, "CA upkeep task failed"),
                }
            }
        });
    }

    // Event log and join token pruning.
    {
        let retention = cfg.limits.entry_event_retention;
        let pruner = Arc::new(Pruner::new(store.clone(), retention));
        let (clock, rx) = (clock.clone(), shutdown_rx.clone());
        tasks.spawn("store pruning", async move {
            pruner.run(clock, pruning::interval(retention), rx).await;
            Ok(())
        });
    }

    let _ = up.set(Up {
        refresh: crate::scrape::refresher(
            ca.clone(),
            registry.clone(),
            svid.clone(),
            clock.clone(),
        ),
        ca: ca.clone(),
    });
    info!(trust_domain = %cfg.trust_domain, "sigil-server ready");
    tasks.run(shutdown_signal(), supervise::GRACE).await
}
