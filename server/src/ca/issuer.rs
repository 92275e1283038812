//! The one signing path (SPIRE's `ServerCA`): every X.509-SVID the server
//! issues — agent, server, workload, admin-minted — goes through
//! [`Issuer`]. It parses the CSR's public key, checks that a workload entry
//! is authorized for the agent asking, chooses the TTL (the entry's or the
//! default; the signing CA's expiry caps it) and records the signing metric.
//! Names come from the entry or the caller, never from a CSR. JWT-SVIDs are
//! signed here too ([`jwt`]), with the same authorization. Domain types in
//! and out; no protobuf.

mod jwt;

pub use jwt::JwtIssueSettings;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::PublicKeyData;
use sigil_proto::SpiffeId;
use sigil_proto::clock::{Clock, unix_seconds};
use tracing::{error, warn};

use super::csr::csr_public_key;
use super::manager::CaManager;
use super::{CaError, SignedLeaf, X509Ca};
use crate::authz;
use crate::entry::{Entry, EntrySpec};
use crate::metrics::{self, SvidKind};
use crate::registry::Registry;
use crate::store::AttestedAgent;

/// Why a signing request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CSR is unusable; the message says why and is safe to return.
    #[error("{0}")]
    BadCsr(String),
    /// The entry does not exist, has expired, or is not the agent's.
    #[error("entry {entry_id} is not authorized for this agent")]
    NotAuthorized { entry_id: String },
    /// A JWT-SVID request breaks a rule (audience, TTL); the message names
    /// the value and the rule and is safe to return.
    #[error("{0}")]
    BadRequest(String),
    /// Signing itself failed (internal: the caller sees no detail).
    #[error(transparent)]
    Ca(#[from] CaError),
}

impl IssueError {
    /// The metric's `result` label (a gRPC code name).
    fn label(&self) -> &'static str {
        match self {
            IssueError::BadCsr(_) | IssueError::BadRequest(_) => "invalid_argument",
            IssueError::NotAuthorized { .. } => "permission_denied",
            IssueError::Ca(_) => "internal",
        }
    }
}

/// The TTLs the server is configured with.
#[derive(Debug, Clone, Copy)]
pub struct IssuerSettings {
    pub agent_svid_ttl: Duration,
    /// For entries without their own TTL, and minted SVIDs without one.
    pub default_x509_svid_ttl: Duration,
    /// ca_ttl / 6: an entry TTL above it (stored before `ca_ttl` was
    /// lowered, see `ttl_limit`) is capped to it.
    pub max_x509_svid_ttl: Duration,
}

/// One workload signing request of a batch.
#[derive(Debug, Clone)]
pub struct WorkloadCsr {
    pub entry_id: String,
    pub csr: Vec<u8>,
}

/// Signs with the CA manager's active CA.
pub struct Issuer {
    ca: Arc<CaManager>,
    clock: Arc<dyn Clock>,
    settings: IssuerSettings,
    jwt: JwtIssueSettings,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Runs one signing, recording its outcome under `kind`.
fn measured<T>(
    kind: SvidKind,
    sign: impl FnOnce() -> Result<T, IssueError>,
) -> Result<T, IssueError> {
    let started = Instant::now();
    let result = sign();
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.label(),
    };
    metrics::svid_signed(kind, label, started.elapsed());
    result
}

impl Issuer {
    /// An issuer with the default JWT-SVID settings
    /// ([`JwtIssueSettings::defaults`]); see [`Issuer::with_jwt`].
    pub fn new(ca: Arc<CaManager>, clock: Arc<dyn Clock>, settings: IssuerSettings) -> Issuer {
        Issuer {
            ca,
            clock,
            jwt: JwtIssueSettings::defaults(&settings),
            settings,
        }
    }

    /// The clock signing reads.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// Serial (hex) of the CA that signs now.
    pub fn active_ca_serial(&self) -> String {
        self.ca.active().serial_hex().to_string()
    }

    /// Checks a CSR without signing (proof of possession and key type).
    pub fn check_csr(csr: &[u8]) -> Result<(), IssueError> {
        csr_public_key(csr).map(|_| ()).map_err(IssueError::BadCsr)
    }

    fn sign(
        &self,
        ca: &X509Ca,
        id: &SpiffeId,
        dns_names: &[String],
        ttl: Duration,
        key: &impl PublicKeyData,
    ) -> Result<SignedLeaf, IssueError> {
        Ok(ca.sign_leaf(id, dns_names, ttl, key, self.clock.now())?)
    }

    /// An agent SVID for `id` (attestation or renewal).
    pub fn sign_agent(&self, id: &SpiffeId, csr: &[u8]) -> Result<SignedLeaf, IssueError> {
        measured(SvidKind::Agent, || {
            let key = csr_public_key(csr).map_err(IssueError::BadCsr)?;
            self.sign(
                &self.ca.active(),
                id,
                &[],
                self.settings.agent_svid_ttl,
                &key,
            )
        })
    }

    /// The server's own SVID over `key`.
    pub fn sign_server(
        &self,
        id: &SpiffeId,
        ttl: Duration,
        key: &impl PublicKeyData,
    ) -> Result<SignedLeaf, IssueError> {
        measured(SvidKind::Server, || {
            self.sign(&self.ca.active(), id, &[], ttl, key)
        })
    }

    /// Workload SVIDs for `agent`, one result per request, in order. Each
    /// entry must be authorized for the agent (its parent is the agent or
    /// one of its node aliases, and it has not expired); the SPIFFE ID, DNS
    /// names and TTL are the entry's.
    pub fn sign_workloads(
        &self,
        registry: &Registry,
        agent: &AttestedAgent,
        requests: &[WorkloadCsr],
    ) -> Vec<Result<SignedLeaf, IssueError>> {
        let now = unix_seconds(self.clock.now());
        let authorized = Authorized::for_agent(registry, agent, now);
        let ca = self.ca.active();
        requests
            .iter()
            .map(|r| {
                measured(SvidKind::Workload, || {
                    let entry = authorized.entry(&r.entry_id)?;
                    let key = csr_public_key(&r.csr).map_err(IssueError::BadCsr)?;
                    let ttl = workload_ttl(&entry.spec, &self.settings, now);
                    self.sign(
                        &ca,
                        &entry.spec.spiffe_id,
                        &entry.spec.dns_names,
                        ttl,
                        &key,
                    )
                    .inspect_err(|e| {
                        error!(agent_id = %agent.spiffe_id, entry_id = %r.entry_id, error = %e, "signing failed");
                    })
                })
            })
            .collect()
    }

    /// An SVID minted by an operator (`x509 mint`): the ID and DNS names
    /// were checked by the caller; `ttl` of `None` is the default.
    pub fn mint(
        &self,
        id: &SpiffeId,
        dns_names: &[String],
        ttl: Option<Duration>,
        key: &impl PublicKeyData,
    ) -> Result<SignedLeaf, IssueError> {
        let ttl = ttl.unwrap_or(self.settings.default_x509_svid_ttl);
        self.sign(&self.ca.active(), id, dns_names, ttl, key)
    }
}

/// What an agent may be issued: the entries whose parent is the agent or
/// one of its node aliases and that have not expired. The one authorization
/// of workload signing, X.509 and JWT alike.
struct Authorized<'a> {
    registry: &'a Registry,
    agent: &'a AttestedAgent,
    parents: std::collections::HashSet<SpiffeId>,
    now: i64,
}

impl<'a> Authorized<'a> {
    fn for_agent(registry: &'a Registry, agent: &'a AttestedAgent, now: i64) -> Self {
        let (_, parents) = registry.parents_for(&agent.spiffe_id, &agent.selectors, now);
        Authorized {
            registry,
            agent,
            parents,
            now,
        }
    }

    /// The entry `entry_id` if the agent may be issued it.
    fn entry(&self, entry_id: &str) -> Result<Arc<Entry>, IssueError> {
        match self.registry.get(entry_id) {
            Some(e) if authz::is_authorized(&e, &self.parents, self.now) => Ok(e),
            _ => {
                warn!(agent_id = %self.agent.spiffe_id, entry_id = %entry_id, "signing refused: entry not authorized for this agent");
                Err(IssueError::NotAuthorized {
                    entry_id: entry_id.to_string(),
                })
            }
        }
    }
}

/// A workload SVID's lifetime: the entry's TTL (or the default), capped at
/// `ca_ttl` / 6 and at the entry's `expires_at`, so no certificate outlives
/// the authorization it was issued under. The caller checked that an
/// entry with `expires_at` has not expired.
fn workload_ttl(spec: &EntrySpec, settings: &IssuerSettings, now: i64) -> Duration {
    let ttl = spec
        .x509_ttl_or(settings.default_x509_svid_ttl)
        .min(settings.max_x509_svid_ttl);
    match spec.expires_at {
        Some(at) => ttl.min(Duration::from_secs(u64::try_from(at - now).unwrap_or(0))),
        None => ttl,
    }
}

#[cfg(test)]
mod tests;
