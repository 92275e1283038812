//! Who is calling: an agent is authenticated on every call, not once per
//! connection. Its certificate must chain to the current bundle and be
//! unexpired now, name an agent ID of this trust domain that the store
//! knows, not banned, and carry the agent's current (or immediately
//! previous) SVID serial. Eviction and bans therefore apply to the very next
//! call, also on a long-lived connection, whichever server wrote them.
//!
//! While the store is unreachable (a shared database down), the record
//! last read for the agent stands in ([`LastRead`]), so agents keep being
//! served from memory; no ban or eviction can be written meanwhile, except
//! by a server that still reaches the database (a partition), which this
//! server then applies once it reaches it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_proto::tls::{SpiffeClientVerifier, TrustRoots};
use sigil_proto::{SpiffeId, TrustDomain};
use tracing::{debug, warn};

use super::error::ApiError;
use super::listener::{PeerInfo, client_verifier};
use crate::node_attestor::is_agent_id;
use crate::store::{AttestedAgent, Store, StoreError, join_token_ids};

/// The agent records read last, by agent ID: what authentication uses
/// while the store is unreachable. One record per attested agent that
/// called; an agent read as absent (evicted) is removed.
#[derive(Default)]
struct LastRead(Mutex<HashMap<SpiffeId, AttestedAgent>>);

impl LastRead {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SpiffeId, AttestedAgent>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records what the store said about `id`.
    fn note(&self, id: &SpiffeId, record: &Option<AttestedAgent>) {
        match record {
            Some(r) => {
                let mut m = self.map();
                if m.get(id) != Some(r) {
                    m.insert(id.clone(), r.clone());
                }
            }
            None => {
                self.map().remove(id);
            }
        }
    }

    fn get(&self, id: &SpiffeId) -> Option<AttestedAgent> {
        self.map().get(id).cloned()
    }
}

/// An authenticated agent, put into the request's extensions.
#[derive(Debug, Clone)]
pub struct AgentCaller {
    pub id: SpiffeId,
    /// Lowercase hex serial of the SVID the call was made with.
    pub serial: String,
    /// Unix seconds: expiry of that SVID.
    pub cert_not_after: i64,
    /// The certificate chain the call was made with (leaf first).
    pub chain: Arc<Vec<CertificateDer<'static>>>,
    pub record: AttestedAgent,
}

pub struct Authenticator {
    store: Arc<dyn Store>,
    last_read: LastRead,
    verifier: Arc<SpiffeClientVerifier>,
    trust_domain: TrustDomain,
}

impl Authenticator {
    pub fn new(
        store: Arc<dyn Store>,
        verifier: Arc<SpiffeClientVerifier>,
        trust_domain: TrustDomain,
    ) -> Authenticator {
        Authenticator {
            store,
            last_read: LastRead::default(),
            verifier,
            trust_domain,
        }
    }

    /// The store agent records are read from.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Authenticates the caller of `method` as an attested agent.
    pub fn authenticate(
        &self,
        peer: Option<&PeerInfo>,
        method: &str,
    ) -> Result<AgentCaller, ApiError> {
        let remote = peer
            .and_then(|p| p.remote)
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let deny = |refusal: fn(String) -> ApiError, agent: &str, reason: String| {
            warn!(method, %remote, agent_id = agent, reason = %reason, "agent API call refused");
            refusal(reason)
        };
        let Some(chain) = peer.and_then(|p| p.chain.clone()) else {
            return Err(deny(
                ApiError::Unauthenticated,
                "",
                "a client certificate (agent SVID) is required for this method".into(),
            ));
        };
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(deny(
                ApiError::Unauthenticated,
                "",
                "empty certificate chain".into(),
            ));
        };
        // Again at call time: the bundle may have changed and the
        // certificate may have expired since the handshake.
        self.verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| deny(ApiError::Refused, "", format!("agent SVID refused: {e}")))?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| deny(ApiError::Refused, "", format!("agent SVID unreadable: {e}")))?;
        let id = sigil_proto::tls::spiffe_id_from_cert(leaf).map_err(|e| {
            deny(
                ApiError::Refused,
                "",
                format!("agent SVID has no SPIFFE ID: {e}"),
            )
        })?;
        if !is_agent_id(&id, &self.trust_domain) {
            return Err(deny(
                ApiError::Refused,
                id.as_str(),
                format!(
                    "{id} is not an agent ID of trust domain {}",
                    self.trust_domain
                ),
            ));
        }
        let (id, record) = self.lookup(id)?;
        let agent = id.to_string();
        let serial = hex::encode(cert.raw_serial())
            .trim_start_matches("00")
            .to_string();
        let record = admitted(&id, &serial, record)
            .map_err(|reason| deny(ApiError::Refused, &agent, reason))?;
        let cert_not_after = cert.validity().not_after.timestamp();
        Ok(AgentCaller {
            id,
            serial,
            chain,
            cert_not_after,
            record,
        })
    }

    /// The stored record of the agent named `id` in its SVID, and the ID it
    /// is known by: an old-form join-token ID (the token itself, issued by
    /// earlier builds) without a record of its own is the hash-form ID its
    /// record was migrated to, so the agent renews to that ID instead of
    /// being stranded, and its token is not logged.
    fn lookup(&self, id: SpiffeId) -> Result<(SpiffeId, Option<AttestedAgent>), ApiError> {
        let get = |id: &SpiffeId| match self.store.get_agent(id) {
            Ok(record) => {
                self.last_read.note(id, &record);
                Ok(record)
            }
            Err(StoreError::Unreachable(e)) if self.last_read.get(id).is_some() => {
                debug!(agent_id = %id, error = %e, "store unreachable; authenticating with the agent record read last");
                Ok(self.last_read.get(id))
            }
            Err(e) => Err(ApiError::store("agent lookup")(e)),
        };
        let record = get(&id)?;
        if record.is_some() {
            return Ok((id, record));
        }
        if let Some((new, _)) = join_token_ids::from_old_form(&id)
            && let Some(migrated) = get(&new)?
        {
            debug!(agent_id = %new, "agent calls with its pre-migration join-token SVID");
            return Ok((new, Some(migrated)));
        }
        Ok((id, None))
    }

    /// Authenticates an earlier caller again, now: its certificate still
    /// chains to the current bundle and is unexpired, and the stored record
    /// still admits its serial. An open stream calls this before each batch
    /// it sends, so it ends with the refusal a new call would get.
    pub fn recheck(&self, caller: &AgentCaller, method: &str) -> Result<AgentCaller, ApiError> {
        let peer = PeerInfo {
            remote: None,
            chain: Some(caller.chain.clone()),
            channel: None,
            activity: None,
        };
        self.authenticate(Some(&peer), method)
    }

    /// Whether `caller`'s chain verifies against exactly `authorities`, the
    /// bundle the CA manager publishes now. An open sync stream checks this
    /// before each batch: the shared roots the handshake and [`Self::recheck`]
    /// use follow the bundle in a task of their own and may lag it by a
    /// moment, and a stream must not send the bundle that drops its own CA.
    pub fn chains_to(&self, caller: &AgentCaller, authorities: &[Vec<u8>]) -> Result<(), ApiError> {
        let refused = |e: String| ApiError::Refused(format!("agent SVID refused: {e}"));
        let roots = TrustRoots::new(authorities.to_vec()).map_err(|e| refused(e.to_string()))?;
        let verifier = client_verifier(roots, self.trust_domain.clone());
        let Some((leaf, intermediates)) = caller.chain.split_first() else {
            return Err(refused("empty certificate chain".into()));
        };
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| refused(e.to_string()))
    }
}

/// Whether the stored `record` of agent `id` admits a caller holding the SVID
/// with `serial`: the agent is known (not evicted), not banned, and `serial`
/// is its current or immediately previous SVID. The refusal reason is the
/// same for every agent API call and for an open sync stream.
pub fn admitted(
    id: &SpiffeId,
    serial: &str,
    record: Option<AttestedAgent>,
) -> Result<AttestedAgent, String> {
    let Some(record) = record else {
        return Err(format!(
            "agent {id} is not attested (unknown or evicted); it must attest again"
        ));
    };
    if record.banned {
        return Err(format!("agent {id} is banned"));
    }
    if record.serial != serial && record.previous_serial.as_deref() != Some(serial) {
        return Err(format!(
            "agent SVID serial {serial} is not the current SVID of {id}"
        ));
    }
    Ok(record)
}
