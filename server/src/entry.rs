//! Registration entries as the server's core sees them: validated domain
//! types, independent of protobuf and of the store's encoding.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sigil_proto::{Selector, SpiffeId, TrustDomain};

/// What an operator asks for; validated before it reaches the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrySpec {
    pub spiffe_id: SpiffeId,
    pub parent_id: SpiffeId,
    /// Sorted and without duplicates (see [`EntrySpec::normalize`]).
    pub selectors: Vec<Selector>,
    /// X.509-SVID TTL in seconds; 0 means the server default.
    pub x509_svid_ttl: u64,
    /// JWT-SVID TTL in seconds; 0 means the server default.
    pub jwt_svid_ttl: u64,
    pub dns_names: Vec<String>,
    pub federates_with: Vec<TrustDomain>,
    pub hint: String,
    pub admin: bool,
    pub downstream: bool,
    /// Unix seconds after which the entry no longer applies.
    pub expires_at: Option<i64>,
}

impl EntrySpec {
    /// Sorts and de-duplicates the set-valued fields so that equal entries
    /// compare (and index) equal.
    pub fn normalize(&mut self) {
        self.selectors.sort();
        self.selectors.dedup();
        self.dns_names.sort();
        self.dns_names.dedup();
        self.federates_with.sort();
        self.federates_with.dedup();
    }

    /// The X.509-SVID TTL to use, given the server default.
    /// The entry's JWT-SVID TTL, or `default` when it has none.
    pub fn jwt_ttl_or(&self, default: Duration) -> Duration {
        if self.jwt_svid_ttl == 0 {
            default
        } else {
            Duration::from_secs(self.jwt_svid_ttl)
        }
    }

    pub fn x509_ttl_or(&self, default: Duration) -> Duration {
        if self.x509_svid_ttl == 0 {
            default
        } else {
            Duration::from_secs(self.x509_svid_ttl)
        }
    }

    /// The key that makes two entries duplicates of each other: same SPIFFE
    /// ID, same parent, same selector set.
    /// Whether `self` and `other` carry the same hint and can both match
    /// one workload: same parent, and one's selectors a subset of the
    /// other's. The Workload API sends such a hint on the first SVID only
    /// (hints are unique within a response, §5.2.1).
    pub fn shares_hint_with(&self, other: &EntrySpec) -> bool {
        !self.hint.is_empty()
            && self.hint == other.hint
            && self.parent_id == other.parent_id
            && (sigil_proto::selector::is_subset(&self.selectors, &other.selectors)
                || sigil_proto::selector::is_subset(&other.selectors, &self.selectors))
    }

    pub fn identity_key(&self) -> String {
        let mut k = format!("{}\u{0}{}", self.spiffe_id, self.parent_id);
        for s in &self.selectors {
            k.push('\u{0}');
            k.push_str(&s.to_string());
        }
        k
    }
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Server-generated, 32 lowercase hex characters.
    pub id: String,
    #[serde(flatten)]
    pub spec: EntrySpec,
    /// The store-wide entry revision of this entry's last change.
    pub revision: u64,
    /// Unix seconds.
    pub created_at: i64,
}

/// Filters for listing entries; every given filter must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    pub spiffe_id: Option<SpiffeId>,
    pub parent_id: Option<SpiffeId>,
    /// Entries whose selectors include all of these.
    pub selectors: Vec<Selector>,
}

impl EntryFilter {
    pub fn matches(&self, e: &Entry) -> bool {
        self.spiffe_id
            .as_ref()
            .is_none_or(|id| *id == e.spec.spiffe_id)
            && self
                .parent_id
                .as_ref()
                .is_none_or(|id| *id == e.spec.parent_id)
            && sigil_proto::selector::is_subset(&self.selectors, &e.spec.selectors)
    }
}

/// One change to the entry set, as recorded in the store's event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryEvent {
    /// Created or updated; carries the entry as it now is.
    Upserted(Entry),
    /// Deleted; carries the entry as it was, with `revision` set to the
    /// revision of the deletion.
    Deleted(Entry),
    /// Updated with a new parent: carries the entry as it now is and the
    /// parent it had before, so that a resuming agent of the old parent is
    /// told to drop it even when nothing else in the log names that parent.
    Moved { entry: Entry, from: SpiffeId },
}

impl EntryEvent {
    /// The event for an update of `old` to `new`: `Moved` when the parent
    /// changed, else `Upserted`.
    pub fn updated(old_parent: &SpiffeId, new: Entry) -> EntryEvent {
        if *old_parent == new.spec.parent_id {
            EntryEvent::Upserted(new)
        } else {
            EntryEvent::Moved {
                entry: new,
                from: old_parent.clone(),
            }
        }
    }

    /// The entry the event carries (as it now is, or as it was if deleted).
    pub fn entry(&self) -> &Entry {
        match self {
            EntryEvent::Upserted(e) | EntryEvent::Deleted(e) => e,
            EntryEvent::Moved { entry, .. } => entry,
        }
    }

    pub fn revision(&self) -> u64 {
        self.entry().revision
    }

    /// Whether the entry exists after this event.
    pub fn is_deleted(&self) -> bool {
        matches!(self, EntryEvent::Deleted(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(parent: &str, selectors: &[&str], hint: &str) -> EntrySpec {
        EntrySpec {
            spiffe_id: SpiffeId::parse("spiffe://example.org/w").unwrap(),
            parent_id: SpiffeId::parse(parent).unwrap(),
            selectors: selectors
                .iter()
                .map(|s| Selector::parse(s).unwrap())
                .collect(),
            x509_svid_ttl: 0,
            jwt_svid_ttl: 0,
            dns_names: vec![],
            federates_with: vec![],
            hint: hint.to_string(),
            admin: false,
            downstream: false,
            expires_at: None,
        }
    }

    #[test]
    fn entries_share_a_hint_when_they_can_match_one_workload() {
        let p = "spiffe://example.org/agent";
        let a = spec(p, &["unix:uid:1"], "db");
        assert!(a.shares_hint_with(&spec(p, &["unix:uid:1", "unix:gid:2"], "db")));
        assert!(spec(p, &["unix:uid:1", "unix:gid:2"], "db").shares_hint_with(&a));
        assert!(a.shares_hint_with(&spec(p, &["unix:uid:1"], "db")));
        // Different hint, no hint, other parent, disjoint selectors: no.
        assert!(!a.shares_hint_with(&spec(p, &["unix:uid:1"], "web")));
        assert!(!spec(p, &["unix:uid:1"], "").shares_hint_with(&spec(p, &["unix:uid:1"], "")));
        assert!(!a.shares_hint_with(&spec("spiffe://example.org/other", &["unix:uid:1"], "db")));
        assert!(!a.shares_hint_with(&spec(p, &["unix:uid:2"], "db")));
    }
}
