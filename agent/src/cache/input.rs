//! What the cache is told, as domain values: the entries this agent is
//! authorized to serve (parsed, never protobuf), the trust bundle, the
//! foreign trust domains' bundles its entries federate with, and the
//! sync events that carry them. `sync.rs` converts the server's messages into
//! these; nothing past it sees the wire types.

use std::collections::BTreeSet;

use sigil_proto::{JwtKey, Selector, SpiffeId, TrustDomain};

/// One registration entry this agent may issue SVIDs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedEntry {
    /// The server's entry id; the key SVIDs are cached and signed under.
    pub id: String,
    pub spiffe_id: SpiffeId,
    /// A workload gets the entry's SVID only if it has all of them.
    pub selectors: Vec<Selector>,
    /// Seconds; 0 = the server's default.
    pub x509_svid_ttl_seconds: i64,
    pub dns_names: Vec<String>,
    pub federates_with: Vec<TrustDomain>,
    pub hint: String,
    /// Unix seconds after which the entry no longer authorizes anything
    /// (`None`: never). The cache stops serving its SVID at that moment,
    /// whether or not the server's Deleted arrives.
    pub expires_at: Option<i64>,
    /// Bumped by the server on every change: a new revision re-issues.
    pub revision: u64,
    /// Unix seconds the entry was created (0 from an older server): the
    /// oldest entry a workload matches is its default SVID.
    pub created_at: i64,
}

/// The own trust domain's bundle as the server publishes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustBundle {
    /// DER CA certificates (may be empty: every SVID is then invalid).
    pub x509_authorities: Vec<Vec<u8>>,
    /// Subject key identifiers of tainted CAs: re-issue what they signed.
    pub tainted_key_ids: Vec<Vec<u8>>,
    pub sequence: u64,
    /// JWT-SVID signing keys (usable ones only, unique `kid`s).
    pub jwt_authorities: Vec<JwtKey>,
    /// `kid`s of tainted JWT keys: drop and re-mint the tokens they signed.
    pub tainted_jwt_key_ids: Vec<String>,
}

/// A foreign trust domain's bundle, relayed by the server because an entry
/// of this agent federates with that trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignBundle {
    pub trust_domain: TrustDomain,
    /// Its CAs may be empty: every SVID of that trust domain is then invalid.
    pub bundle: TrustBundle,
}

/// What the sync stream reports.
#[derive(Debug)]
pub enum SyncEvent {
    /// The complete authorized set; entries not in it are gone.
    Full(Vec<AuthorizedEntry>),
    Upsert(AuthorizedEntry),
    /// An entry id that is no longer authorized.
    Delete(String),
    Bundle(TrustBundle),
    /// A foreign bundle, new or changed.
    Federated(ForeignBundle),
    /// A foreign trust domain no entry of this agent federates with any more
    /// (or whose bundle the server deleted): its bundle is dropped.
    FederatedRemoved(TrustDomain),
    /// Sent with a full set, just before [`SyncEvent::Full`]: the foreign
    /// trust domains that full set sent; every other held foreign bundle is
    /// dropped.
    FederatedSet(BTreeSet<TrustDomain>),
}
