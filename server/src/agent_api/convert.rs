//! Domain types to the agent API's protobuf messages.

use sigil_proto::agent_api as pb;

use crate::entry::Entry;
use crate::store::BundleRecord;

pub fn entry_to_pb(e: &Entry) -> pb::Entry {
    pb::Entry {
        id: e.id.clone(),
        spiffe_id: e.spec.spiffe_id.to_string(),
        parent_id: e.spec.parent_id.to_string(),
        selectors: e
            .spec
            .selectors
            .iter()
            .map(|s| pb::Selector {
                r#type: s.ty().to_string(),
                value: s.value().to_string(),
            })
            .collect(),
        x509_svid_ttl_seconds: i64::try_from(e.spec.x509_svid_ttl).unwrap_or(i64::MAX),
        jwt_svid_ttl_seconds: i64::try_from(e.spec.jwt_svid_ttl).unwrap_or(i64::MAX),
        dns_names: e.spec.dns_names.clone(),
        federates_with: e
            .spec
            .federates_with
            .iter()
            .map(ToString::to_string)
            .collect(),
        hint: e.spec.hint.clone(),
        admin: e.spec.admin,
        downstream: e.spec.downstream,
        expires_at: e.spec.expires_at.unwrap_or(0),
        revision: e.revision,
        // Admin API only: 0 is not encoded, so the agent API's wire is
        // what it was before the shared `sigil.types.v1.Entry`.
        created_at: 0,
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
