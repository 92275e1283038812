//! Domain types to the agent API's protobuf messages.

use sigil_proto::agent_api as pb;

use crate::entry::Entry;
use crate::store::BundleRecord;

/// The entry as the agent API sends it: the shared `sigil.types.v1.Entry`,
/// `created_at` included (the agent's default SVID is the oldest entry's).
pub fn entry_to_pb(e: &Entry) -> pb::Entry {
    crate::admin::convert::entry_to_pb(e)
}

pub fn bundle_to_pb(b: &BundleRecord, refresh_hint_secs: i64) -> pb::Bundle {
    pb::Bundle {
        trust_domain: b.trust_domain.to_string(),
        x509_authorities: b.x509_authorities.clone(),
        sequence: b.sequence,
        refresh_hint_seconds: refresh_hint_secs,
        tainted_key_ids: b.tainted_key_ids.clone(),
        jwt_authorities: b
            .jwt_authorities
            .iter()
            .map(|k| pb::JwtAuthority {
                key_id: k.kid.clone(),
                public_key: k.public_key.clone(),
                expires_at: k.expires_at,
            })
            .collect(),
        tainted_jwt_key_ids: b.tainted_jwt_key_ids.clone(),
    }
}
