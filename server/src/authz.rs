//! Which entries an agent may have: pure functions, no I/O. An agent is
//! known by its agent ID and its node selectors. Node entries (parent = the
//! server ID) whose selectors are a subset of the agent's node selectors give
//! it alias IDs; an entry is authorized for the agent when its parent is the
//! agent ID or one of those aliases, and it has not expired.

use std::collections::HashSet;

use sigil_proto::selector::is_subset;
use sigil_proto::{Selector, SpiffeId};

use crate::entry::Entry;

/// The alias IDs node entries give to an agent with `node_selectors`.
pub fn aliases<'a>(
    node_entries: impl IntoIterator<Item = &'a Entry>,
    node_selectors: &[Selector],
    now: i64,
) -> Vec<SpiffeId> {
    let mut out: Vec<SpiffeId> = node_entries
        .into_iter()
        .filter(|e| !expired(e, now) && is_subset(&e.spec.selectors, node_selectors))
        .map(|e| e.spec.spiffe_id.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The IDs an agent's entries may be parented to: its own and its aliases.
pub fn parents(agent_id: &SpiffeId, aliases: &[SpiffeId]) -> HashSet<SpiffeId> {
    let mut p: HashSet<SpiffeId> = aliases.iter().cloned().collect();
    p.insert(agent_id.clone());
    p
}

pub fn expired(e: &Entry, now: i64) -> bool {
    e.spec.expires_at.is_some_and(|t| t <= now)
}

/// True when `entry` is authorized for an agent whose parents are `parents`.
pub fn is_authorized(entry: &Entry, parents: &HashSet<SpiffeId>, now: i64) -> bool {
    parents.contains(&entry.spec.parent_id) && !expired(entry, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntrySpec;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }
    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }
    fn entry(spiffe: &str, parent: &str, sels: &[&str], expires_at: Option<i64>) -> Entry {
        Entry {
            id: spiffe.replace('/', "_"),
            spec: EntrySpec {
                spiffe_id: id(spiffe),
                parent_id: id(parent),
                selectors: sels.iter().map(|s| sel(s)).collect(),
                x509_svid_ttl: 0,
                jwt_svid_ttl: 0,
                dns_names: vec![],
                federates_with: vec![],
                hint: String::new(),
                admin: false,
                downstream: false,
                expires_at,
            },
            revision: 1,
            created_at: 0,
        }
    }

    const SERVER: &str = "spiffe://td/sigil/server";
    const AGENT: &str = "spiffe://td/sigil/agent/x509pop/aa";

    #[test]
    fn aliases_need_all_node_selectors() {
        let nodes = [
            entry(
                "spiffe://td/rack1",
                SERVER,
                &["x509pop:subject:cn:n1"],
                None,
            ),
            entry(
                "spiffe://td/rack1-gpu",
                SERVER,
                &["x509pop:subject:cn:n1", "x509pop:ca:fingerprint:ff"],
                None,
            ),
            entry(
                "spiffe://td/rack2",
                SERVER,
                &["x509pop:subject:cn:n2"],
                None,
            ),
            entry(
                "spiffe://td/old",
                SERVER,
                &["x509pop:subject:cn:n1"],
                Some(5),
            ),
        ];
        let a = aliases(nodes.iter(), &[sel("x509pop:subject:cn:n1")], 10);
        assert_eq!(a, vec![id("spiffe://td/rack1")]);
        let a = aliases(
            nodes.iter(),
            &[
                sel("x509pop:subject:cn:n1"),
                sel("x509pop:ca:fingerprint:ff"),
            ],
            10,
        );
        assert_eq!(
            a,
            vec![id("spiffe://td/rack1"), id("spiffe://td/rack1-gpu")]
        );
        assert!(aliases(nodes.iter(), &[], 10).is_empty());
    }

    #[test]
    fn authorized_by_parent_and_unexpired() {
        let p = parents(&id(AGENT), &[id("spiffe://td/rack1")]);
        assert!(is_authorized(
            &entry("spiffe://td/w", AGENT, &["unix:uid:1"], None),
            &p,
            10
        ));
        assert!(is_authorized(
            &entry("spiffe://td/w", "spiffe://td/rack1", &["unix:uid:1"], None),
            &p,
            10
        ));
        assert!(!is_authorized(
            &entry(
                "spiffe://td/w",
                "spiffe://td/sigil/agent/x509pop/bb",
                &["unix:uid:1"],
                None
            ),
            &p,
            10
        ));
        assert!(!is_authorized(
            &entry("spiffe://td/w", AGENT, &["unix:uid:1"], Some(10)),
            &p,
            10
        ));
    }
}
