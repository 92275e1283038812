//! Entries whose X.509-SVID TTL breaks the CA TTL / 6 rule after `ca_ttl`
//! was lowered. Create and update refuse such a TTL; entries stored before
//! the change are listed at start (one warning per entry, naming it, its
//! TTL and the limit, plus a summary) and keep being served with SVIDs
//! capped at the limit by the issuer. The server keeps serving rather than
//! refusing to start, as a SPIRE user would expect: a restart after a config
//! change must not take every workload's identity down, and capping keeps
//! every SVID inside its CA's life, which is what the rule protects.

use std::time::Duration;

use sigil_proto::format_duration;
use tracing::warn;

use crate::config::max_svid_ttl;
use crate::entry::EntryFilter;
use crate::registry::Registry;

/// One entry over the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offender {
    pub entry_id: String,
    pub spiffe_id: String,
    pub x509_svid_ttl: Duration,
}

/// The stored entries whose own X.509-SVID TTL exceeds `ca_ttl / 6`.
pub fn offenders(registry: &Registry, ca_ttl: Duration) -> Vec<Offender> {
    let max = max_svid_ttl(ca_ttl);
    let mut out: Vec<Offender> = registry
        .list(&EntryFilter::default())
        .iter()
        .filter(|e| e.spec.x509_svid_ttl > 0 && Duration::from_secs(e.spec.x509_svid_ttl) > max)
        .map(|e| Offender {
            entry_id: e.id.clone(),
            spiffe_id: e.spec.spiffe_id.to_string(),
            x509_svid_ttl: Duration::from_secs(e.spec.x509_svid_ttl),
        })
        .collect();
    out.sort_by(|a, b| a.entry_id.cmp(&b.entry_id));
    out
}

/// Logs the offenders at start; returns how many there are.
pub fn report(registry: &Registry, ca_ttl: Duration) -> usize {
    let found = offenders(registry, ca_ttl);
    let limit = format_duration(max_svid_ttl(ca_ttl));
    for o in &found {
        warn!(
            entry_id = %o.entry_id,
            spiffe_id = %o.spiffe_id,
            x509_svid_ttl = %format_duration(o.x509_svid_ttl),
            limit = %limit,
            "entry X.509-SVID TTL exceeds ca_ttl / 6; its SVIDs are capped at the limit until \
             `entry update --x509-svid-ttl` lowers it"
        );
    }
    if !found.is_empty() {
        let ids: Vec<&str> = found.iter().map(|o| o.entry_id.as_str()).collect();
        warn!(
            count = found.len(),
            limit = %limit,
            ca_ttl = %format_duration(ca_ttl),
            entry_ids = %ids.join(","),
            "entries exceed the TTL limit ca_ttl / 6 (ca_ttl was lowered since they were \
             written); SVIDs are capped at the limit, and updates of these entries are refused \
             until their TTL is lowered"
        );
    }
    found.len()
}
