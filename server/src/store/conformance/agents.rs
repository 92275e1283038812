//! Conformance checks for attested agents: put, get, list, delete.

use super::fixtures::*;
use super::*;

/// Agents: put (overwrites), get, list, delete.
pub fn agents(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    let a = agent("/sigil/agent/join_token/a", "01");
    let b = agent("/sigil/agent/x509pop/b", "02");
    assert_eq!(ok(s.get_agent(&a.spiffe_id), "get unknown agent"), None);
    assert!(ok(s.list_agents(), "list empty").is_empty());
    expect_not_found(s.delete_agent(&a.spiffe_id), "delete unknown agent");

    ok(s.put_agent(&a), "put a");
    ok(s.put_agent(&b), "put b");
    assert_eq!(ok(s.get_agent(&a.spiffe_id), "get a"), Some(a.clone()));

    let mut a2 = a.clone();
    a2.previous_serial = Some(a.serial.clone());
    a2.serial = "03".to_string();
    a2.expires_at = 7000;
    a2.banned = true;
    a2.updated_at = 1500;
    ok(s.put_agent(&a2), "put a again (renewal)");
    assert_eq!(
        ok(s.get_agent(&a.spiffe_id), "get a after overwrite"),
        Some(a2.clone()),
        "put must overwrite"
    );
    let mut listed = ok(s.list_agents(), "list");
    listed.sort_by(|x, y| x.spiffe_id.cmp(&y.spiffe_id));
    assert_eq!(
        listed,
        vec![a2.clone(), b.clone()],
        "list holds each agent once"
    );

    ok(s.delete_agent(&a.spiffe_id), "delete a");
    assert_eq!(ok(s.get_agent(&a.spiffe_id), "get deleted a"), None);
    expect_not_found(s.delete_agent(&a.spiffe_id), "delete a twice");
    assert_eq!(ok(s.list_agents(), "list after delete"), vec![b]);
}
