//! The agent API (`sigil.agent.v1.AgentApi`), gRPC over TLS on
//! `bind_address`: node attestation, agent SVID renewal, entry sync, batched
//! SVID signing and the bundle. Who may call what is decided before any
//! handler runs ([`access`]); handlers find the authenticated
//! [`caller::AgentCaller`] in the request. SPIFFE IDs, DNS names and TTLs of
//! signed SVIDs come from entries, never from CSRs.

pub mod access;
pub mod caller;
pub mod convert;
pub mod error;
pub mod idle;
pub mod listener;
pub mod rate_limit;
pub mod refused_peer;
pub mod sync;
pub mod until_shutdown;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sigil_proto::SpiffeId;
use sigil_proto::agent_api::{self as pb, agent_api_server::AgentApi};
use sigil_proto::attestation::ChannelBinding;
use sigil_proto::health::code_label;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::ca::issuer::{Issuer, WorkloadCsr};
use crate::ca::manager::CaManager;
use crate::ca::{SignedLeaf, unix};
use crate::metrics;
use crate::node_attestor::{AttestedNode, NodeAttestor, Step};
use crate::registry::Registry;
use crate::store::{AttestedAgent, Store, StoreError};
use caller::{AgentCaller, Authenticator, admitted};
use error::{ApiError, item_error};
use listener::PeerInfo;
use rate_limit::RateLimiter;
use sigil_proto::clock::Clock;

/// Time an attesting agent has for each step of the exchange.
const ATTEST_STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Most challenge rounds in one attestation.
const MAX_CHALLENGES: usize = 4;

#[derive(Debug, Clone)]
pub struct AgentApiSettings {
    pub bundle_refresh_hint: Duration,
    /// Attestations per second per remote IP (burst: twice that).
    pub attestations_per_second: u32,
    /// CSRs signed per second per agent (burst: twice that).
    pub csrs_per_second: u32,
    /// Most CSRs in one SignSvids call (`[limits] max_csrs_per_request`).
    pub max_csrs_per_request: usize,
    /// RenewAgent calls per second per agent (burst: twice that).
    pub renewals_per_second: u32,
    /// SyncEntries streams opened per second per agent (burst: twice that).
    pub sync_streams_per_second: u32,
    /// FetchBundle calls per second per agent (burst: twice that).
    pub bundle_fetches_per_second: u32,
    /// SyncEntries streams open at once per agent.
    pub max_sync_streams_per_agent: usize,
}

pub struct AgentApiService {
    auth: Arc<Authenticator>,
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    ca: Arc<CaManager>,
    issuer: Arc<Issuer>,
    clock: Arc<dyn Clock>,
    attestors: HashMap<&'static str, Arc<dyn NodeAttestor>>,
    settings: AgentApiSettings,
    attest_limit: RateLimiter,
    sign_limit: RateLimiter,
    renew_limit: RateLimiter,
    sync_limit: RateLimiter,
    fetch_limit: RateLimiter,
    /// Ends open sync streams on shutdown (see [`AgentApiService::with_shutdown`]).
    shutdown: Option<watch::Receiver<bool>>,
    sync_streams: sync::StreamCount,
    /// Foreign bundles sync streams send (issue 16).
    foreign: Option<Arc<crate::federation::foreign::ForeignBundles>>,
}

impl AgentApiService {
    pub fn new(
        auth: Arc<Authenticator>,
        registry: Arc<Registry>,
        ca: Arc<CaManager>,
        issuer: Arc<Issuer>,
        clock: Arc<dyn Clock>,
        attestors: Vec<Arc<dyn NodeAttestor>>,
        settings: AgentApiSettings,
    ) -> AgentApiService {
        let limit = |per_second: u32| RateLimiter::new(per_second, per_second.saturating_mul(2));
        AgentApiService {
            store: auth.store().clone(),
            auth,
            attest_limit: limit(settings.attestations_per_second),
            sign_limit: limit(settings.csrs_per_second),
            renew_limit: limit(settings.renewals_per_second),
            sync_limit: limit(settings.sync_streams_per_second),
            fetch_limit: limit(settings.bundle_fetches_per_second),
            sync_streams: sync::stream_count(settings.max_sync_streams_per_agent),
            registry,
            ca,
            issuer,
            clock,
            attestors: attestors.into_iter().map(|a| (a.name(), a)).collect(),
            settings,
            shutdown: None,
            foreign: None,
        }
    }

    /// Sync streams send agents the foreign bundles their entries federate
    /// with, from `foreign`.
    pub fn with_foreign_bundles(
        mut self,
        foreign: Arc<crate::federation::foreign::ForeignBundles>,
    ) -> AgentApiService {
        self.foreign = Some(foreign);
        self
    }

    /// Open sync streams end when `shutdown` turns `true`, so the server's
    /// graceful stop does not wait for them.
    pub fn with_shutdown(mut self, shutdown: watch::Receiver<bool>) -> AgentApiService {
        self.shutdown = Some(shutdown);
        self
    }

    /// Takes one token of `limiter` for agent `c`, or refuses the call.
    fn per_agent_limit(
        &self,
        limiter: &RateLimiter,
        c: &AgentCaller,
        method: &'static str,
    ) -> Result<(), ApiError> {
        if limiter.try_take(c.id.as_str(), 1) {
            return Ok(());
        }
        warn!(agent_id = %c.id, method, "agent API rate limit exceeded");
        Err(ApiError::Exhausted(
            "rate limit exceeded for this agent; retry later",
        ))
    }

    fn refresh_hint(&self) -> i64 {
        i64::try_from(self.settings.bundle_refresh_hint.as_secs()).unwrap_or(i64::MAX)
    }

    fn bundle_pb(&self) -> pb::Bundle {
        convert::bundle_to_pb(&self.ca.bundle(), self.refresh_hint())
    }

    fn agent_svid_pb(&self, leaf: SignedLeaf) -> pb::AgentSvid {
        pb::AgentSvid {
            spiffe_id: leaf.spiffe_id.to_string(),
            cert_chain: leaf.chain,
            expires_at: leaf.not_after,
            bundle: Some(self.bundle_pb()),
        }
    }
}

fn caller(ext: &tonic::Extensions) -> Result<AgentCaller, ApiError> {
    // The access layer inserts it for every Agent method; its absence means
    // the layer was bypassed, which must fail closed.
    ext.get::<AgentCaller>()
        .cloned()
        .ok_or_else(|| ApiError::Unauthenticated("caller not authenticated".into()))
}

type Outbound<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

async fn next_message(
    inbound: &mut Streaming<pb::AttestNodeRequest>,
) -> Result<pb::attest_node_request::Step, ApiError> {
    match tokio::time::timeout(ATTEST_STEP_TIMEOUT, inbound.message()).await {
        Err(_) => Err(ApiError::Timeout("attestation step timed out")),
        Ok(Err(s)) => Err(ApiError::Inbound(s)),
        Ok(Ok(None)) => Err(ApiError::Cancelled(
            "attestation stream closed by the agent",
        )),
        Ok(Ok(Some(m))) => m
            .step
            .ok_or_else(|| ApiError::Invalid("attestation message without a step".into())),
    }
}

impl AgentApiService {
    async fn attest(
        self: Arc<Self>,
        mut inbound: Streaming<pb::AttestNodeRequest>,
        tx: &mpsc::Sender<Result<pb::AttestNodeResponse, Status>>,
        remote: &str,
        channel: Option<ChannelBinding>,
        attestor_label: &mut &'static str,
    ) -> Result<pb::AgentSvid, ApiError> {
        let pb::attest_node_request::Step::Params(params) = next_message(&mut inbound).await?
        else {
            return Err(ApiError::Invalid(
                "the first attestation message must carry AttestationParams".into(),
            ));
        };
        let attestor = self
            .attestors
            .get(params.attestor.as_str())
            .cloned()
            .ok_or_else(|| {
                let mut known: Vec<&str> = self.attestors.keys().copied().collect();
                known.sort_unstable();
                ApiError::Invalid(format!(
                    "unknown node attestor {:?} (configured: {})",
                    params.attestor,
                    known.join(", ")
                ))
            })?;
        *attestor_label = attestor.name();
        // Check the CSR before the attestor consumes anything (a token).
        Issuer::check_csr(&params.csr)?;
        let now = unix(self.clock.now());
        let payload = params.payload;
        let a = attestor.clone();
        let mut step = tokio::task::spawn_blocking(move || {
            a.begin_bound(&payload, now, channel.as_ref())
        })
        .await
        .map_err(ApiError::task)?
        .inspect_err(|e| {
            warn!(attestor = attestor.name(), %remote, error = %e, "node attestation refused");
        })?;
        let mut rounds = 0;
        let node: AttestedNode = loop {
            match step {
                Step::Done(node) => break node,
                Step::Challenge { challenge, state } => {
                    rounds += 1;
                    if rounds > MAX_CHALLENGES {
                        return Err(ApiError::Internal(
                            "attestor asked too many challenges".into(),
                        ));
                    }
                    tx.send(Ok(pb::AttestNodeResponse {
                        step: Some(pb::attest_node_response::Step::Challenge(challenge)),
                    }))
                    .await
                    .map_err(|_| ApiError::Cancelled("agent went away"))?;
                    let pb::attest_node_request::Step::ChallengeResponse(answer) =
                        next_message(&mut inbound).await?
                    else {
                        return Err(ApiError::Invalid("expected a challenge response".into()));
                    };
                    step = state.verify(&answer).inspect_err(|e| {
                        warn!(attestor = attestor.name(), %remote, error = %e, "node attestation refused");
                    })?;
                }
            }
        };
        let id = node.agent_id.clone();
        let attestor_name = attestor.name();
        let me = self.clone();
        let csr = params.csr;
        let leaf = tokio::task::spawn_blocking(move || -> Result<SignedLeaf, ApiError> {
            let existing = me
                .store
                .get_agent(&id)
                .map_err(ApiError::store("agent lookup"))?;
            let refuse_banned = || {
                warn!(agent_id = %id, "banned agent tried to attest");
                ApiError::Refused(format!("agent {id} is banned"))
            };
            if existing.as_ref().is_some_and(|a| a.banned) {
                return Err(refuse_banned());
            }
            let leaf = me.issuer.sign_agent(&id, &csr)?;
            let now = unix(me.clock.now());
            let record = AttestedAgent {
                spiffe_id: id.clone(),
                attestor: attestor_name.to_string(),
                selectors: node.selectors.clone(),
                serial: leaf.serial_hex.clone(),
                previous_serial: None,
                expires_at: leaf.not_after,
                ca_serial: Some(leaf.ca_serial.clone()),
                banned: false,
                ban_rules: node.ban_rules.clone(),
                attested_at: now,
                updated_at: now,
            };
            // Only over the record checked above and only while none of
            // the node's ban rules is banned, in one step: a ban that
            // landed since wins, and the new SVID is never handed out.
            match me.store.admit_agent(existing.as_ref(), &record) {
                Ok(()) => Ok(leaf),
                Err(e @ StoreError::Banned { .. }) => Err(refuse_node_banned(&id, e)),
                Err(StoreError::Changed { .. }) => {
                    let now = me
                        .store
                        .get_agent(&id)
                        .map_err(ApiError::store("agent lookup"))?;
                    if now.is_some_and(|a| a.banned) {
                        return Err(refuse_banned());
                    }
                    Err(ApiError::Aborted(format!(
                        "agent {id} changed while it attested; attest again"
                    )))
                }
                Err(e) => Err(ApiError::store("storing the attested agent")(e)),
            }
        })
        .await
        .map_err(ApiError::task)??;
        info!(agent_id = %leaf.spiffe_id, attestor = attestor_name, %remote, serial = %leaf.serial_hex, "node attested");
        Ok(self.agent_svid_pb(leaf))
    }
}

/// The refusal of an agent that matches a node ban (`e` names the rule).
fn refuse_node_banned(id: &SpiffeId, e: StoreError) -> ApiError {
    warn!(agent_id = %id, reason = %e, "agent of a banned node refused");
    ApiError::Refused(format!(
        "agent {id} is refused: its node is banned by {e}; `sigil-server agent unban` of that \
         agent lifts it"
    ))
}

/// Most attempts of one renewal when other renewals of the same agent
/// change its record in between.
const RENEW_ATTEMPTS: usize = 3;

impl AgentApiService {
    /// Signs a new agent SVID for `c` and records it with a compare-and-swap
    /// over the record the decision was made on: a ban or an eviction that
    /// lands meanwhile always wins, and the caller then gets the refusal a
    /// new call would get. `previous_serial` is the serial the caller
    /// authenticated with, so an agent that lost the answer can renew again
    /// with the SVID it still holds.
    fn renew(&self, c: &AgentCaller, csr: &[u8]) -> Result<SignedLeaf, ApiError> {
        let mut current = Some(c.record.clone());
        for _ in 0..RENEW_ATTEMPTS {
            let rec = admitted(&c.id, &c.serial, current).map_err(|reason| {
                warn!(agent_id = %c.id, reason = %reason, "agent SVID renewal refused");
                ApiError::Refused(reason)
            })?;
            let leaf = self.issuer.sign_agent(&c.id, csr)?;
            let mut new = rec.clone();
            new.previous_serial = Some(c.serial.clone());
            new.serial = leaf.serial_hex.clone();
            new.expires_at = leaf.not_after;
            new.ca_serial = Some(leaf.ca_serial.clone());
            new.updated_at = unix(self.clock.now());
            // A node ban recorded by another agent of the same node (a
            // re-issued certificate) stops this one's renewals too.
            match self.store.admit_agent(Some(&rec), &new) {
                Ok(()) => return Ok(leaf),
                Err(e @ StoreError::Banned { .. }) => return Err(refuse_node_banned(&c.id, e)),
                Err(StoreError::Changed { .. }) => {
                    current = self
                        .store
                        .get_agent(&c.id)
                        .map_err(ApiError::store("agent lookup"))?;
                }
                Err(e) => return Err(ApiError::store("storing the renewed agent")(e)),
            }
        }
        Err(ApiError::Aborted(format!(
            "agent {} changed concurrently {RENEW_ATTEMPTS} times during renewal; retry",
            c.id
        )))
    }
}

/// The service as registered with tonic; shares state with spawned tasks.
#[derive(Clone)]
pub struct AgentApiHandle(pub Arc<AgentApiService>);

#[tonic::async_trait]
impl AgentApi for AgentApiHandle {
    type AttestNodeStream = Outbound<pb::AttestNodeResponse>;

    async fn attest_node(
        &self,
        req: Request<Streaming<pb::AttestNodeRequest>>,
    ) -> Result<Response<Self::AttestNodeStream>, Status> {
        let peer = req.extensions().get::<PeerInfo>();
        let remote = peer
            .and_then(|p| p.remote)
            .map_or_else(|| "unknown".to_string(), |a| a.ip().to_string());
        let channel = peer.and_then(|p| p.channel.clone());
        if !self.0.attest_limit.try_take(&remote, 1) {
            warn!(%remote, "attestation rate limit exceeded");
            return Err(ApiError::Exhausted(
                "too many attestations from this address; retry later",
            )
            .into());
        }
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let svc = self.0.clone();
        tokio::spawn(async move {
            let mut attestor = "unknown";
            let result = svc
                .attest(inbound, &tx, &remote, channel, &mut attestor)
                .await
                .map_err(Status::from);
            metrics::attestation(
                attestor,
                match &result {
                    Ok(_) => "ok",
                    Err(s) => code_label(s.code()),
                },
            );
            let msg = result.map(|svid| pb::AttestNodeResponse {
                step: Some(pb::attest_node_response::Step::Svid(svid)),
            });
            let _ = tx.send(msg).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn renew_agent(
        &self,
        req: Request<pb::RenewAgentRequest>,
    ) -> Result<Response<pb::RenewAgentResponse>, Status> {
        let c = caller(req.extensions())?;
        self.0
            .per_agent_limit(&self.0.renew_limit, &c, "RenewAgent")?;
        let csr = req.into_inner().csr;
        let svc = self.0.clone();
        let leaf = tokio::task::spawn_blocking(move || svc.renew(&c, &csr))
            .await
            .map_err(ApiError::task)??;
        info!(agent_id = %leaf.spiffe_id, serial = %leaf.serial_hex, "agent SVID renewed");
        Ok(Response::new(pb::RenewAgentResponse {
            svid: Some(self.0.agent_svid_pb(leaf)),
        }))
    }

    type SyncEntriesStream = Outbound<pb::SyncEntriesResponse>;

    async fn sync_entries(
        &self,
        req: Request<pb::SyncEntriesRequest>,
    ) -> Result<Response<Self::SyncEntriesStream>, Status> {
        let c = caller(req.extensions())?;
        self.0
            .per_agent_limit(&self.0.sync_limit, &c, "SyncEntries")?;
        let r = req.into_inner();
        let rx = sync::start(
            sync::SyncContext {
                auth: self.0.auth.clone(),
                store: self.0.store.clone(),
                registry: self.0.registry.clone(),
                ca: self.0.ca.clone(),
                clock: self.0.clock.clone(),
                refresh_hint: self.0.refresh_hint(),
                open: self.0.sync_streams.clone(),
                foreign: self.0.foreign.clone(),
            },
            c,
            r.since_revision,
            r.page_size,
        )?;
        let rx = match &self.0.shutdown {
            Some(stop) => until_shutdown::until_shutdown(rx, stop.clone()),
            None => rx,
        };
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn sign_svids(
        &self,
        req: Request<pb::SignSvidsRequest>,
    ) -> Result<Response<pb::SignSvidsResponse>, Status> {
        let c = caller(req.extensions())?;
        let items = req.into_inner().requests;
        let max = self.0.settings.max_csrs_per_request;
        if items.len() > max {
            warn!(agent_id = %c.id, csrs = items.len(), limit = max, "SignSvids refused: too many CSRs in one call");
            return Err(ApiError::Invalid(format!(
                "{} CSRs in one call, more than the limit of {max} (limits.max_csrs_per_request)",
                items.len()
            ))
            .into());
        }
        let n = u32::try_from(items.len()).unwrap_or(u32::MAX);
        if !self.0.sign_limit.try_take(c.id.as_str(), n) {
            warn!(agent_id = %c.id, csrs = n, "signing rate limit exceeded");
            return Err(ApiError::Exhausted(
                "signing rate limit exceeded for this agent; retry later",
            )
            .into());
        }
        let requests: Vec<WorkloadCsr> = items
            .into_iter()
            .map(|i| WorkloadCsr {
                entry_id: i.entry_id,
                csr: i.csr,
            })
            .collect();
        let svc = self.0.clone();
        let results = tokio::task::spawn_blocking(move || {
            let signed = svc
                .issuer
                .sign_workloads(&svc.registry, &c.record, &requests);
            requests
                .iter()
                .zip(signed)
                .map(|(r, leaf)| pb::SvidResult {
                    entry_id: r.entry_id.clone(),
                    result: Some(match leaf {
                        Ok(leaf) => pb::svid_result::Result::Svid(pb::X509Svid {
                            spiffe_id: leaf.spiffe_id.to_string(),
                            cert_chain: leaf.chain,
                            expires_at: leaf.not_after,
                        }),
                        Err(e) => pb::svid_result::Result::Error(item_error(&e.into())),
                    }),
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(ApiError::task)?;
        Ok(Response::new(pb::SignSvidsResponse { results }))
    }

    async fn fetch_bundle(
        &self,
        req: Request<pb::FetchBundleRequest>,
    ) -> Result<Response<pb::FetchBundleResponse>, Status> {
        let c = caller(req.extensions())?;
        self.0
            .per_agent_limit(&self.0.fetch_limit, &c, "FetchBundle")?;
        Ok(Response::new(pb::FetchBundleResponse {
            bundle: Some(self.0.bundle_pb()),
        }))
    }

    async fn mint_jwt_svid(
        &self,
        _req: Request<pb::MintJwtSvidRequest>,
    ) -> Result<Response<pb::MintJwtSvidResponse>, Status> {
        // Issue 15 (JWT-SVIDs) implements it.
        Err(Status::unimplemented(
            "MintJwtSvid: JWT-SVIDs are not implemented yet (issue 15)",
        ))
    }
}
