//! Conformance checks for attested agents: put, get, list, delete, and the
//! compare-and-swap that keeps a ban or an eviction from being undone.

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

/// Item 1 of issue 14: agent changes are compare-and-swap. A swap from a
/// record read earlier fails with `Changed` (writing nothing) once anything
/// changed it, also a ban or an eviction; then, with renewers racing a ban
/// on several threads, the ban always holds.
pub fn item1_agent_swap_never_undoes_a_ban(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    let a = agent("/sigil/agent/join_token/a", "01");
    let changed = |r: StoreResult<()>, what: &str| {
        expect_err(r, what, "Changed", |e| {
            matches!(e, StoreError::Changed { .. })
        });
    };
    ok(s.swap_agent(None, &a), "swap into an absent record");
    changed(s.swap_agent(None, &a), "swap expecting absence");
    assert_eq!(ok(s.get_agent(&a.spiffe_id), "get a"), Some(a.clone()));

    // A renewal read `a`; a ban lands; the renewal's swap must fail.
    let mut renewed = a.clone();
    renewed.previous_serial = Some("01".into());
    renewed.serial = "02".into();
    let mut banned = a.clone();
    banned.banned = true;
    ok(s.swap_agent(Some(&a), &banned), "ban");
    changed(s.swap_agent(Some(&a), &renewed), "stale renewal");
    assert_eq!(
        ok(s.get_agent(&a.spiffe_id), "get"),
        Some(banned.clone()),
        "ban held"
    );

    // An eviction lands; a stale swap must not bring the agent back.
    ok(s.delete_agent(&a.spiffe_id), "evict");
    changed(
        s.swap_agent(Some(&banned), &renewed),
        "stale swap after evict",
    );
    assert_eq!(
        ok(s.get_agent(&a.spiffe_id), "get evicted"),
        None,
        "eviction held"
    );

    // Renewers on 4 threads (read, then swap) race one ban, 50 rounds.
    for round in 0..50 {
        let b = agent(&format!("/sigil/agent/join_token/r{round}"), "01");
        ok(s.put_agent(&b), "put");
        let barrier = Barrier::new(5);
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (barrier, b) = (&barrier, &b);
                scope.spawn(move || {
                    barrier.wait();
                    for i in 0..10 {
                        let Some(cur) = ok(s.get_agent(&b.spiffe_id), "read") else {
                            return;
                        };
                        if cur.banned {
                            return;
                        }
                        let mut next = cur.clone();
                        next.previous_serial = Some(cur.serial.clone());
                        next.serial = format!("{t}{i}");
                        match s.swap_agent(Some(&cur), &next) {
                            Ok(()) | Err(StoreError::Changed { .. }) => {}
                            Err(e) => panic!("renewal swap: {e}"),
                        }
                    }
                });
            }
            barrier.wait();
            loop {
                let cur = ok(s.get_agent(&b.spiffe_id), "read for ban").expect("agent");
                let mut next = cur.clone();
                next.banned = true;
                match s.swap_agent(Some(&cur), &next) {
                    Ok(()) => break,
                    Err(StoreError::Changed { .. }) => continue,
                    Err(e) => panic!("ban swap: {e}"),
                }
            }
        });
        let after = ok(s.get_agent(&b.spiffe_id), "read after race").expect("agent");
        assert!(
            after.banned,
            "round {round}: a renewal undid the ban: {after:?}"
        );
    }
}
