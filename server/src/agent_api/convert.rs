//! Domain types to the agent API's protobuf messages.

use sigil_proto::agent_api as pb;

use crate::entry::Entry;
use crate::store::BundleRecord;

/// The entry as the agent API sends it: the shared `sigil.types.v1.Entry`,
/// without `created_at` (admin API only; 0 is not encoded, so the agent
/// API's wire is what it was before the type was shared).
pub fn entry_to_pb(e: &Entry) -> pb::Entry {
    pb::Entry {
        created_at: 0,
        ..crate::admin::convert::entry_to_pb(e)
    }
}

pub fn bundle_to_pb(b: &BundleRecord, refresh_hint_secs: i64) -> pb::Bundle {
    pb::Bundle {
        trust_domain: b.trust_domain.to_string(),
        x509_authorities: b.x509_authorities.clone(),
        sequence: b.sequence,
        refresh_hint_seconds: refresh_hint_secs,
        tainted_key_ids: b.tainted_key_ids.clone(),
    }
}
