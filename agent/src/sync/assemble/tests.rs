//! The stream-to-events contract for foreign bundles (issue 16 item 3): a
//! full set names the foreign trust domains it sent, changes pass through.

use super::*;

fn foreign(td: &str, ca: &[u8]) -> Option<pb::sync_entries_response::Kind> {
    Some(pb::sync_entries_response::Kind::FederatedBundle(
        pb::Bundle {
            trust_domain: td.into(),
            x509_authorities: vec![ca.to_vec()],
            sequence: 7,
            ..Default::default()
        },
    ))
}

fn page(last: bool, revision: u64) -> Option<pb::sync_entries_response::Kind> {
    Some(pb::sync_entries_response::Kind::Page(pb::EntryPage {
        entries: vec![pb::Entry {
            id: format!("e{revision}"),
            spiffe_id: "spiffe://a.test/w".into(),
            selectors: vec![pb::Selector {
                r#type: "unix".into(),
                value: "uid:1".into(),
            }],
            federates_with: vec!["b.test".into(), "not a td".into()],
            ..Default::default()
        }],
        last,
        revision,
    }))
}

fn td(s: &str) -> TrustDomain {
    TrustDomain::parse(s).unwrap()
}

/// A short name for each event, to compare sequences.
fn names(evs: &[SyncEvent]) -> Vec<String> {
    evs.iter()
        .map(|e| match e {
            SyncEvent::Full(l) => format!("full:{}", l.len()),
            SyncEvent::Upsert(e) => format!("upsert:{}", e.id),
            SyncEvent::Delete(id) => format!("delete:{id}"),
            SyncEvent::Bundle(_) => "bundle".into(),
            SyncEvent::Federated(f) => format!("federated:{}", f.trust_domain),
            SyncEvent::FederatedRemoved(td) => format!("removed:{td}"),
            SyncEvent::FederatedSet(s) => format!(
                "set:{}",
                s.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(",")
            ),
        })
        .collect()
}

#[test]
fn i16_3_a_full_set_names_the_foreign_bundles_it_sent_and_changes_pass_through() {
    let mut a = Assembler::default();
    let mut rev = 0;
    let mut evs = Vec::new();
    for m in [
        foreign("b.test", b"ca-b"),
        page(false, 1),
        foreign("spiffe://c.test", b"ca-c"),
        page(true, 3),
    ] {
        evs.extend(a.take(m, &mut rev));
    }
    assert_eq!(
        names(&evs),
        [
            "federated:b.test",
            "federated:c.test",
            "set:b.test,c.test",
            "full:2"
        ]
    );
    assert_eq!(rev, 3);
    let SyncEvent::Federated(f) = &evs[0] else {
        unreachable!()
    };
    assert_eq!(f.bundle.x509_authorities, [b"ca-b".to_vec()]);
    assert_eq!(f.bundle.sequence, 7);
    let SyncEvent::Full(entries) = &evs[3] else {
        unreachable!()
    };
    assert_eq!(
        entries[0].federates_with,
        [td("b.test")],
        "unparsable federated trust domains are skipped"
    );

    // After the full set: changes, one event each, no set.
    let mut evs = Vec::new();
    for m in [
        foreign("d.test", b"ca-d"),
        Some(pb::sync_entries_response::Kind::FederatedBundleRemoved(
            "spiffe://b.test".into(),
        )),
        Some(pb::sync_entries_response::Kind::FederatedBundleRemoved(
            "c.test".into(),
        )),
        // Garbage is ignored (logged), never an event.
        Some(pb::sync_entries_response::Kind::FederatedBundleRemoved(
            "spiffe://x.test/path".into(),
        )),
        foreign("", b"ca"),
    ] {
        evs.extend(a.take(m, &mut rev));
    }
    assert_eq!(
        names(&evs),
        ["federated:d.test", "removed:b.test", "removed:c.test"]
    );

    // A second full set on the same stream names only what it sent since
    // the first ended (d.test, not b.test or c.test).
    let evs = a.take(page(true, 9), &mut rev);
    assert_eq!(names(&evs), ["set:d.test", "full:1"]);
    // And a third, which sent none, drops them all.
    let evs = a.take(page(true, 10), &mut rev);
    assert_eq!(names(&evs), ["set:", "full:1"]);
}

#[test]
fn i16_3_a_foreign_bundle_removed_during_a_full_set_is_not_kept_by_it() {
    let mut a = Assembler::default();
    let mut rev = 0;
    a.take(foreign("b.test", b"ca-b"), &mut rev);
    a.take(
        Some(pb::sync_entries_response::Kind::FederatedBundleRemoved(
            "b.test".into(),
        )),
        &mut rev,
    );
    let evs = a.take(page(true, 2), &mut rev);
    assert_eq!(names(&evs), ["set:", "full:1"]);
}

fn set_msg(tds: &[&str]) -> Option<pb::sync_entries_response::Kind> {
    Some(pb::sync_entries_response::Kind::FederatedSet(
        pb::FederatedTrustDomains {
            trust_domains: tds.iter().map(|s| s.to_string()).collect(),
        },
    ))
}

/// Issue 16 open item 1: a resumed stream ends with the set of foreign
/// trust domains to hold; the cache is told to drop every other one. A
/// later full set on the same stream starts from that set, not from every
/// bundle sent since the stream opened.
#[test]
fn i16_1_the_server_set_after_a_resume_drops_what_it_does_not_name() {
    let mut a = Assembler::default();
    let mut rev = 5;
    a.take(foreign("b.test", b"ca-b"), &mut rev);
    let evs = a.take(set_msg(&["b.test", "not a td"]), &mut rev);
    assert_eq!(names(&evs), ["set:b.test"]);
    assert_eq!(rev, 5, "the set changes no revision");
    // A full set (after a lag) sends its bundles, then the set, then pages.
    a.take(foreign("c.test", b"ca-c"), &mut rev);
    a.take(set_msg(&["c.test"]), &mut rev);
    let evs = a.take(page(true, 9), &mut rev);
    assert_eq!(names(&evs), ["set:c.test", "full:1"]);
}
