//! The admin API service (`sigil.admin.v1.AdminApi`) on the local admin
//! socket: entries, bundle, join tokens, minted SVIDs, health. Protobuf stops
//! here; errors become a `Status` in one place ([`to_status`]): a safe
//! message out, the full chain in the log.

pub mod client;
pub mod convert;
pub mod socket;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ring::digest;
use sigil_proto::admin_api::{self as pb, admin_api_server::AdminApi};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::{error, info};

use crate::bundle::bundle_jwks;
use crate::ca::manager::{CaManager, CaOpError, CaStatus, state_name};
use crate::ca::{random16, unix};
use crate::config::server_id;
use crate::entry::{EntryFilter, EntrySpec};
use crate::registry::Registry;
use crate::store::{JoinTokenRecord, SlotId, Store, StoreError};
use convert::Limits;
use sigil_proto::clock::Clock;

/// Largest admin request accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// What the admin service reports, before it becomes a `Status`.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ca(#[from] crate::ca::CaError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Maps every admin error to a `Status`: the only place that does.
pub fn to_status(e: AdminError) -> Status {
    match e {
        AdminError::Invalid(m) => Status::invalid_argument(m),
        AdminError::Store(StoreError::NotFound { what, key }) => {
            Status::not_found(format!("{what} {key} not found"))
        }
        AdminError::Store(StoreError::AlreadyExists { what, key }) => {
            Status::already_exists(format!("{what} already exists: {key}"))
        }
        AdminError::Store(StoreError::Conflict { .. }) => {
            Status::aborted("changed concurrently; retry")
        }
        // Disk full, read-only, I/O errors: the operator must see the cause
        // (the admin socket is local and admin-only; no secret is in it).
        AdminError::Store(StoreError::Io(m)) => {
            error!(error = %m, "admin call failed: store I/O");
            Status::unavailable(format!("the store could not complete the call: {m}"))
        }
        other => {
            error!(error = %other, "admin call failed");
            Status::internal("internal error; see the server log")
        }
    }
}

/// Server facts the admin service needs.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub limits: Limits,
    pub default_x509_svid_ttl: Duration,
    pub join_token_ttl: Duration,
    pub bundle_refresh_hint: Duration,
    /// Most entries in one CreateEntries call (`[limits]
    /// max_entries_per_request`).
    pub max_entries_per_request: usize,
}

pub struct AdminService {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    ca: Arc<CaManager>,
    clock: Arc<dyn Clock>,
    settings: AdminSettings,
    /// Held by every entry write, so a batch's all-or-nothing check and
    /// its write see no other admin write in between.
    writes: Arc<std::sync::Mutex<()>>,
}

impl AdminService {
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        ca: Arc<CaManager>,
        clock: Arc<dyn Clock>,
        settings: AdminSettings,
    ) -> AdminService {
        AdminService {
            store,
            registry,
            ca,
            clock,
            settings,
            writes: Arc::new(std::sync::Mutex::new(())),
        }
    }

    fn now(&self) -> i64 {
        unix(self.clock.now())
    }

    /// Runs a blocking registry write off the async threads.
    async fn write<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Registry) -> Result<T, AdminError> + Send + 'static,
    {
        let registry = self.registry.clone();
        let writes = self.writes.clone();
        tokio::task::spawn_blocking(move || {
            let _one_at_a_time = writes.lock().unwrap_or_else(|p| p.into_inner());
            f(registry.as_ref())
        })
        .await
        .map_err(|e| to_status(AdminError::Internal(e.to_string())))?
        .map_err(to_status)
    }

    /// Runs a blocking store call off the async threads.
    async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, AdminError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| to_status(AdminError::Internal(e.to_string())))?
            .map_err(to_status)
    }
}

/// Why each entry of a create batch is refused before anything is written:
/// invalid, a duplicate of an earlier entry of the batch, or already stored.
/// Linear in the batch plus the stored children of the parents it names.
fn batch_refusals(items: &[Result<EntrySpec, String>], registry: &Registry) -> Vec<Option<Status>> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    // Per parent: identity key → id of every stored child entry.
    let mut stored: HashMap<String, HashMap<String, String>> = HashMap::new();
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Err(m) => Some(invalid(m.clone())),
            Ok(spec) => {
                let key = spec.identity_key();
                if let Some(j) = seen.get(&key) {
                    return Some(Status::already_exists(format!(
                        "entry {i}: duplicates entry {j} of this batch (same spiffe_id, \
                         parent_id and selectors)"
                    )));
                }
                seen.insert(key.clone(), i);
                let children = stored.entry(spec.parent_id.to_string()).or_insert_with(|| {
                    let filter = EntryFilter {
                        parent_id: Some(spec.parent_id.clone()),
                        ..Default::default()
                    };
                    registry
                        .list(&filter)
                        .iter()
                        .map(|e| (e.spec.identity_key(), e.id.clone()))
                        .collect()
                });
                children.get(&key).map(|id| {
                    Status::already_exists(format!(
                        "entry {i}: entry already exists: {id} (same spiffe_id, parent_id \
                         and selectors)"
                    ))
                })
            }
        })
        .collect()
}

/// Logs, for each of `entries`, the stored entries that share its hint and
/// can match the same workload (see [`EntrySpec::shares_hint_with`]).
fn warn_shared_hints(registry: &Registry, entries: &[Arc<crate::entry::Entry>]) {
    let mut siblings: HashMap<String, Vec<Arc<crate::entry::Entry>>> = HashMap::new();
    for e in entries.iter().filter(|e| !e.spec.hint.is_empty()) {
        let family = siblings
            .entry(e.spec.parent_id.to_string())
            .or_insert_with(|| {
                registry.list(&EntryFilter {
                    parent_id: Some(e.spec.parent_id.clone()),
                    ..Default::default()
                })
            });
        let others: Vec<&str> = family
            .iter()
            .filter(|o| o.id != e.id && e.spec.shares_hint_with(&o.spec))
            .map(|o| o.id.as_str())
            .collect();
        if !others.is_empty() {
            tracing::warn!(
                entry_id = %e.id,
                hint = %e.spec.hint,
                others = %others.join(","),
                "entries with the same hint can match one workload; the Workload API sends the \
                 hint with the first SVID only (hints are unique within a response)"
            );
        }
    }
}

fn invalid(m: String) -> Status {
    to_status(AdminError::Invalid(m))
}

fn item_error(s: &Status) -> pb::ItemError {
    pb::ItemError {
        code: s.code() as i32,
        message: s.message().to_string(),
    }
}

fn agent_to_pb(a: &crate::store::AttestedAgent) -> pb::Agent {
    pb::Agent {
        spiffe_id: a.spiffe_id.to_string(),
        attestor: a.attestor.clone(),
        selectors: a.selectors.iter().map(convert::selector_to_pb).collect(),
        serial: a.serial.clone(),
        expires_at: a.expires_at,
        banned: a.banned,
        attested_at: a.attested_at,
        updated_at: a.updated_at,
    }
}

fn load_agent(
    store: &dyn Store,
    id: &sigil_proto::SpiffeId,
) -> Result<crate::store::AttestedAgent, AdminError> {
    store.get_agent(id)?.ok_or_else(|| {
        StoreError::NotFound {
            what: "agent",
            key: id.to_string(),
        }
        .into()
    })
}

impl AdminService {
    fn agent_id(&self, v: &str) -> Result<sigil_proto::SpiffeId, Status> {
        let id = convert::parse_id_in("spiffe_id", v, &self.settings.limits).map_err(invalid)?;
        if !crate::agent_api::caller::is_agent_id(&id, &self.settings.limits.trust_domain) {
            return Err(invalid(format!(
                "spiffe_id: {id} is not an agent ID (spiffe://<td>/sigil/agent/...)"
            )));
        }
        Ok(id)
    }

    async fn set_banned(
        &self,
        r: pb::AgentIdRequest,
        banned: bool,
    ) -> Result<Response<pb::Agent>, Status> {
        let id = self.agent_id(&r.spiffe_id)?;
        let now = self.now();
        let a = self
            .blocking(move |store| {
                let mut a = load_agent(store, &id)?;
                a.banned = banned;
                a.updated_at = now;
                store.put_agent(&a)?;
                Ok(a)
            })
            .await?;
        info!(agent_id = %a.spiffe_id, banned, "agent ban changed");
        Ok(Response::new(agent_to_pb(&a)))
    }
}

fn parse_slot(v: &str) -> Result<SlotId, Status> {
    match v {
        "a" => Ok(SlotId::A),
        "b" => Ok(SlotId::B),
        other => Err(invalid(format!("slot: {other:?} must be \"a\" or \"b\""))),
    }
}

fn ca_status_to_pb(st: &CaStatus) -> pb::CaStatus {
    pb::CaStatus {
        slots: st
            .slots
            .iter()
            .map(|s| pb::CaSlotStatus {
                slot: s.slot.name().to_string(),
                state: state_name(s.state).to_string(),
                serial: s.serial.clone(),
                not_before: s.not_before,
                not_after: s.not_after,
                tainted: s.tainted,
                in_bundle: st.in_bundle.contains(&s.serial),
                key_id: s.key_id.clone(),
            })
            .collect(),
        prepare_at: st.timeline.map_or(0, |t| t.prepare_at),
        activate_at: st.timeline.map_or(0, |t| t.activate_at),
        bundle_sequence: st.bundle_sequence,
    }
}

impl AdminService {
    /// Runs a CA operation off the async threads; refusals are
    /// `FailedPrecondition` with the reason.
    async fn ca_op<F>(&self, f: F) -> Result<Response<pb::CaStatus>, Status>
    where
        F: FnOnce() -> Result<CaStatus, CaOpError> + Send + 'static,
    {
        match tokio::task::spawn_blocking(f).await {
            Ok(Ok(st)) => Ok(Response::new(ca_status_to_pb(&st))),
            Ok(Err(CaOpError::Refused(m))) => Err(Status::failed_precondition(m)),
            Ok(Err(CaOpError::Ca(e))) => Err(to_status(e.into())),
            Err(e) => Err(to_status(AdminError::Internal(e.to_string()))),
        }
    }
}

/// Lowercase hex SHA-256 of a join token.
pub fn hash_token(token: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, token.as_bytes()))
}

type EntryStream = Pin<Box<dyn Stream<Item = Result<pb::Entry, Status>> + Send>>;

#[tonic::async_trait]
impl AdminApi for AdminService {
    async fn create_entries(
        &self,
        req: Request<pb::CreateEntriesRequest>,
    ) -> Result<Response<pb::CreateEntriesResponse>, Status> {
        let now = self.now();
        let entries = req.into_inner().entries;
        let max = self.settings.max_entries_per_request;
        if entries.len() > max {
            tracing::warn!(
                entries = entries.len(),
                limit = max,
                "CreateEntries refused: too many entries in one request"
            );
            return Err(invalid(format!(
                "{} entries in one request, more than the limit of {max} \
                 (limits.max_entries_per_request); split the request",
                entries.len()
            )));
        }
        let items: Vec<Result<EntrySpec, String>> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                convert::entry_spec(e, &self.settings.limits, now)
                    .map_err(|m| format!("entry {i}: {m}"))
            })
            .collect();
        let results = self
            .write(move |registry| {
                // All or nothing: an invalid entry, two entries of the batch
                // with the same identity, or an entry that already exists
                // refuses the whole batch before anything is written, so a
                // refused entry file is never half-applied.
                let refusals = batch_refusals(&items, registry);
                if refusals.iter().any(Option::is_some) {
                    let first = refusals.iter().position(Option::is_some).unwrap_or(0);
                    return Ok(refusals
                        .into_iter()
                        .map(|r| {
                            let status = r.unwrap_or_else(|| {
                                Status::aborted(format!(
                                    "not created: entry {first} of this batch was refused, \
                                     so no entry of the batch was created"
                                ))
                            });
                            pb::EntryResult {
                                result: Some(pb::entry_result::Result::Error(item_error(&status))),
                            }
                        })
                        .collect());
                }
                // The valid specs go to the store in one batch (one flush);
                // their outcomes come back in the same order.
                let specs: Vec<EntrySpec> = items.iter().filter_map(|i| i.as_ref().ok().cloned()).collect();
                let mut created = registry.create_many(specs, now)?.into_iter();
                Ok(items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let outcome = item.map(|_| created.next());
                        let result = match outcome {
                            Err(m) => pb::entry_result::Result::Error(item_error(&invalid(m))),
                            // Invariant: create_many returns one outcome per spec.
                            Ok(None) => pb::entry_result::Result::Error(item_error(&Status::internal(
                                format!("entry {i}: no outcome from the store"),
                            ))),
                            Ok(Some(r)) => match r {
                                Ok(e) => {
                                    info!(entry_id = %e.id, spiffe_id = %e.spec.spiffe_id, revision = e.revision, "entry created");
                                    pb::entry_result::Result::Entry(convert::entry_to_pb(&e))
                                }
                                Err(e) => {
                                    let s = to_status(e.into());
                                    pb::entry_result::Result::Error(item_error(&Status::new(
                                        s.code(),
                                        format!("entry {i}: {}", s.message()),
                                    )))
                                }
                            },
                        };
                        pb::EntryResult {
                            result: Some(result),
                        }
                    })
                    .collect())
            })
            .await?;
        let results: Vec<pb::EntryResult> = results;
        let created: Vec<_> = results
            .iter()
            .filter_map(|r| match &r.result {
                Some(pb::entry_result::Result::Entry(e)) => self.registry.get(&e.id),
                _ => None,
            })
            .collect();
        warn_shared_hints(&self.registry, &created);
        Ok(Response::new(pb::CreateEntriesResponse { results }))
    }

    async fn get_entry(
        &self,
        req: Request<pb::GetEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let id = req.into_inner().id;
        let e = self.registry.get(&id).ok_or_else(|| {
            to_status(
                StoreError::NotFound {
                    what: "entry",
                    key: id.clone(),
                }
                .into(),
            )
        })?;
        Ok(Response::new(convert::entry_to_pb(&e)))
    }

    type ListEntriesStream = EntryStream;

    async fn list_entries(
        &self,
        req: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<Self::ListEntriesStream>, Status> {
        let r = req.into_inner();
        let parse = |field: &str, v: &str| -> Result<Option<sigil_proto::SpiffeId>, Status> {
            if v.is_empty() {
                return Ok(None);
            }
            sigil_proto::SpiffeId::parse(v)
                .map(Some)
                .map_err(|e| invalid(format!("{field}: {e}")))
        };
        let filter = EntryFilter {
            spiffe_id: parse("by_spiffe_id", &r.by_spiffe_id)?,
            parent_id: parse("by_parent_id", &r.by_parent_id)?,
            selectors: convert::parse_selectors("by_selectors", &r.by_selectors)
                .map_err(invalid)?,
        };
        let entries = self.registry.list(&filter);
        let items: Vec<Result<pb::Entry, Status>> = entries
            .iter()
            .map(|e| Ok(convert::entry_to_pb(e)))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn update_entry(
        &self,
        req: Request<pb::UpdateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let u = req.into_inner();
        let limits = self.settings.limits.clone();
        let now = self.now();
        let e = self
            .write(move |registry| {
                let cur = registry.get(&u.id).ok_or_else(|| StoreError::NotFound {
                    what: "entry",
                    key: u.id.clone(),
                })?;
                let mut spec = cur.spec.clone();
                convert::apply_update(&mut spec, &u, &limits, now).map_err(AdminError::Invalid)?;
                Ok(registry.update(&u.id, spec)?)
            })
            .await?;
        info!(entry_id = %e.id, revision = e.revision, "entry updated");
        warn_shared_hints(&self.registry, &[Arc::new(e.clone())]);
        Ok(Response::new(convert::entry_to_pb(&e)))
    }

    async fn delete_entry(
        &self,
        req: Request<pb::DeleteEntryRequest>,
    ) -> Result<Response<pb::DeleteEntryResponse>, Status> {
        let id = req.into_inner().id;
        let e = self
            .write(move |registry| Ok(registry.delete(&id)?))
            .await?;
        info!(entry_id = %e.id, "entry deleted");
        Ok(Response::new(pb::DeleteEntryResponse {}))
    }

    async fn count_entries(
        &self,
        _req: Request<pb::CountEntriesRequest>,
    ) -> Result<Response<pb::CountEntriesResponse>, Status> {
        let count = self.registry.count();
        Ok(Response::new(pb::CountEntriesResponse { count }))
    }

    async fn get_bundle(
        &self,
        _req: Request<pb::GetBundleRequest>,
    ) -> Result<Response<pb::Bundle>, Status> {
        let b = self.ca.bundle();
        let hint = self.settings.bundle_refresh_hint;
        let jwks = bundle_jwks(&b, hint).map_err(|e| to_status(AdminError::Internal(e)))?;
        Ok(Response::new(pb::Bundle {
            trust_domain: b.trust_domain.to_string(),
            x509_authorities: b.x509_authorities.clone(),
            sequence: b.sequence,
            refresh_hint_seconds: i64::try_from(hint.as_secs()).unwrap_or(i64::MAX),
            jwks,
        }))
    }

    async fn generate_join_token(
        &self,
        req: Request<pb::GenerateJoinTokenRequest>,
    ) -> Result<Response<pb::GenerateJoinTokenResponse>, Status> {
        let r = req.into_inner();
        let ttl = match r.ttl_seconds {
            0 => self.settings.join_token_ttl,
            s if s < 0 => return Err(invalid(format!("ttl: {s} is negative"))),
            s => Duration::from_secs(s.unsigned_abs()),
        };
        if ttl > Duration::from_secs(30 * 86_400) {
            return Err(invalid("ttl: more than the limit of 30d".into()));
        }
        let alias = if r.spiffe_id.is_empty() {
            None
        } else {
            Some(
                convert::parse_workload_id("spiffe_id", &r.spiffe_id, &self.settings.limits)
                    .map_err(invalid)?,
            )
        };
        let token = hex::encode(random16().map_err(|e| to_status(e.into()))?);
        let token_hash = hash_token(&token);
        let now = self.now();
        let expires_at = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let td = self.settings.limits.trust_domain.clone();
        let record = JoinTokenRecord {
            token_hash: token_hash.clone(),
            expires_at,
            created_at: now,
        };
        let registry = self.registry.clone();
        let entry_id = self
            .blocking(move |store| {
                store.create_join_token(record)?;
                let Some(alias) = alias else {
                    return Ok(String::new());
                };
                // A node entry: every agent attested with this token gets
                // `alias` as an extra ID. The selector carries the token's
                // hash, never the token.
                let selector = sigil_proto::Selector::new("join_token", &token_hash)
                    .map_err(|e| AdminError::Internal(e.to_string()))?;
                let mut spec = EntrySpec {
                    spiffe_id: alias,
                    parent_id: server_id(&td),
                    selectors: vec![selector],
                    x509_svid_ttl: 0,
                    jwt_svid_ttl: 0,
                    dns_names: vec![],
                    federates_with: vec![],
                    hint: String::new(),
                    admin: false,
                    downstream: false,
                    expires_at: None,
                };
                spec.normalize();
                Ok(registry.create(spec, now)?.id)
            })
            .await?;
        info!(expires_at, "join token generated");
        Ok(Response::new(pb::GenerateJoinTokenResponse {
            token,
            expires_at,
            entry_id,
        }))
    }

    async fn mint_x509_svid(
        &self,
        req: Request<pb::MintX509SvidRequest>,
    ) -> Result<Response<pb::MintX509SvidResponse>, Status> {
        let r = req.into_inner();
        let limits = &self.settings.limits;
        let id = convert::parse_workload_id("spiffe_id", &r.spiffe_id, limits).map_err(invalid)?;
        let secs = convert::check_x509_ttl("ttl", r.ttl_seconds, limits).map_err(invalid)?;
        let ttl = if secs == 0 {
            self.settings.default_x509_svid_ttl
        } else {
            Duration::from_secs(secs)
        };
        convert::check_dns_names("dns_names", &r.dns_names).map_err(invalid)?;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| to_status(AdminError::Internal(e.to_string())))?;
        let ca = self.ca.active();
        let leaf = ca
            .sign_leaf(&id, &r.dns_names, ttl, &key, self.clock.now())
            .map_err(|e| to_status(e.into()))?;
        info!(spiffe_id = %id, serial = %leaf.serial_hex, "X.509-SVID minted");
        Ok(Response::new(pb::MintX509SvidResponse {
            spiffe_id: id.to_string(),
            cert_chain: leaf.chain,
            private_key: key.serialize_der(),
            bundle: self.ca.bundle().x509_authorities.clone(),
            expires_at: leaf.not_after,
        }))
    }

    async fn list_agents(
        &self,
        _req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let agents = self.blocking(|store| Ok(store.list_agents()?)).await?;
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents.iter().map(agent_to_pb).collect(),
        }))
    }

    async fn get_agent(
        &self,
        req: Request<pb::AgentIdRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let id = self.agent_id(&req.into_inner().spiffe_id)?;
        let a = self.blocking(move |store| load_agent(store, &id)).await?;
        Ok(Response::new(agent_to_pb(&a)))
    }

    async fn evict_agent(
        &self,
        req: Request<pb::AgentIdRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let id = self.agent_id(&req.into_inner().spiffe_id)?;
        let a = self
            .blocking(move |store| {
                let a = load_agent(store, &id)?;
                store.delete_agent(&id)?;
                Ok(a)
            })
            .await?;
        info!(agent_id = %a.spiffe_id, "agent evicted");
        Ok(Response::new(agent_to_pb(&a)))
    }

    async fn ban_agent(
        &self,
        req: Request<pb::AgentIdRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        self.set_banned(req.into_inner(), true).await
    }

    async fn unban_agent(
        &self,
        req: Request<pb::AgentIdRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        self.set_banned(req.into_inner(), false).await
    }

    async fn show_ca(
        &self,
        _req: Request<pb::ShowCaRequest>,
    ) -> Result<Response<pb::CaStatus>, Status> {
        let ca = self.ca.clone();
        self.ca_op(move || ca.status().map_err(CaOpError::from))
            .await
    }

    async fn prepare_ca(
        &self,
        _req: Request<pb::ShowCaRequest>,
    ) -> Result<Response<pb::CaStatus>, Status> {
        let ca = self.ca.clone();
        self.ca_op(move || ca.force_prepare()).await
    }

    async fn activate_ca(
        &self,
        _req: Request<pb::ShowCaRequest>,
    ) -> Result<Response<pb::CaStatus>, Status> {
        let ca = self.ca.clone();
        self.ca_op(move || ca.force_activate()).await
    }

    async fn taint_ca(
        &self,
        req: Request<pb::CaSlotRequest>,
    ) -> Result<Response<pb::CaStatus>, Status> {
        let slot = parse_slot(&req.into_inner().slot)?;
        let ca = self.ca.clone();
        self.ca_op(move || ca.taint(slot)).await
    }

    async fn revoke_ca(
        &self,
        req: Request<pb::CaSlotRequest>,
    ) -> Result<Response<pb::CaStatus>, Status> {
        let slot = parse_slot(&req.into_inner().slot)?;
        let ca = self.ca.clone();
        self.ca_op(move || ca.revoke(slot)).await
    }

    async fn healthcheck(
        &self,
        _req: Request<pb::HealthcheckRequest>,
    ) -> Result<Response<pb::HealthcheckResponse>, Status> {
        let now = self.now();
        self.blocking(|store| {
            store.get_ca_journal()?;
            Ok(())
        })
        .await?;
        if self.ca.active().not_after() <= now {
            return Err(Status::unavailable("the active CA has expired"));
        }
        Ok(Response::new(pb::HealthcheckResponse {
            status: "SERVING".into(),
        }))
    }
}
