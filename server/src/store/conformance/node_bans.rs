//! Conformance checks for node bans (issue 21 item 8): a ban records its
//! agent's node ban rules persistently, an attesting agent matching one is
//! refused in the same step as its record would be written, and unbanning
//! lifts a rule once no banned agent names it.

use std::sync::atomic::{AtomicBool, Ordering};

use super::fixtures::*;
use super::*;

const KEY_A: &str = "x509pop:spki:sha256:aa";
const KEY_B: &str = "x509pop:spki:sha256:bb";
const NODE_1: &str = "x509pop:subject:cn:node-1";
const NODE_2: &str = "x509pop:subject:cn:node-2";

fn node_agent(name: &str, rules: &[&str]) -> AttestedAgent {
    let mut a = agent(&format!("/sigil/agent/x509pop/{name}"), "01");
    a.attestor = "x509pop".to_string();
    a.ban_rules = rules.iter().map(|r| r.to_string()).collect();
    a
}

#[track_caller]
fn banned_rule(r: StoreResult<()>, what: &str, rule: &str) {
    match r {
        Err(StoreError::Banned { rule: found, .. }) if found == rule => {}
        other => panic!("{what}: expected Banned naming {rule}, got {other:?}"),
    }
}

fn ban(s: &dyn Store, a: &AttestedAgent, banned: bool, now: i64) -> AttestedAgent {
    let mut new = a.clone();
    new.banned = banned;
    ok(s.swap_agent_ban(a, &new, now), "ban change");
    new
}

/// A ban of a node agent bans its key and subject persistently; an
/// attestation that read the agent records before the ban landed is still
/// refused at its write; unbanning lifts a rule only when no banned agent
/// names it any more.
pub fn i21_8_node_bans_persist_and_are_checked_atomically(location: &dyn StoreLocation) {
    let store = location.open();
    let s = &*store;
    let cert_a = node_agent("cert-a", &[KEY_A, NODE_1]);
    ok(s.admit_agent(None, &cert_a), "admit cert A");
    assert!(ok(s.list_node_bans(), "no bans").is_empty());

    // Re-issued certificates of node 1 start attesting (they read "no
    // record" for their new IDs); then cert A is banned.
    let same_key = node_agent("cert-b", &[KEY_A, NODE_1]);
    let same_subject = node_agent("cert-c", &[KEY_B, NODE_1]);
    let other_node = node_agent("other", &[KEY_B, NODE_2]);
    let banned_a = ban(s, &cert_a, true, 2000);
    banned_rule(s.admit_agent(None, &same_key), "same key", KEY_A);
    banned_rule(s.admit_agent(None, &same_subject), "same subject", NODE_1);
    assert_eq!(ok(s.get_agent(&same_key.spiffe_id), "refused"), None);
    assert_eq!(ok(s.get_agent(&same_subject.spiffe_id), "refused"), None);
    // A different node is not affected, nor are agents without rules.
    ok(s.admit_agent(None, &other_node), "other node");
    ok(
        s.admit_agent(None, &agent("/sigil/agent/join_token/t", "01")),
        "join-token agent",
    );
    // Another agent of a node that gets banned cannot renew either.
    let sibling = node_agent("sibling", &[KEY_B, NODE_2]);
    ok(s.admit_agent(None, &sibling), "sibling before the ban");
    let banned_other = ban(s, &other_node, true, 2100);
    let mut renewed = sibling.clone();
    renewed.serial = "02".into();
    banned_rule(s.admit_agent(Some(&sibling), &renewed), "renewal", KEY_B);

    let mut listed = ok(s.list_node_bans(), "list");
    listed.sort_by(|x, y| x.rule.cmp(&y.rule));
    let rules: Vec<&str> = listed.iter().map(|b| b.rule.as_str()).collect();
    assert_eq!(rules, [KEY_A, KEY_B, NODE_1, NODE_2]);
    assert_eq!(listed[0].banned_by, vec![cert_a.spiffe_id.clone()]);
    assert_eq!(listed[0].created_at, 2000);
    drop(store);

    // Persistent: a reopened store still refuses.
    let store = location.open();
    let s = &*store;
    banned_rule(s.admit_agent(None, &same_key), "after reopen", KEY_A);

    // Unbanning lifts A's rules; then two banned agents name them, and
    // unbanning one of them keeps the rules.
    ban(s, &banned_a, false, 3000);
    ok(s.admit_agent(None, &same_key), "same key after unban");
    let shared = node_agent("shared", &[KEY_A, NODE_1]);
    ok(s.admit_agent(None, &shared), "shared");
    let banned_shared = ban(s, &shared, true, 3100);
    let mut a_again = ok(s.get_agent(&cert_a.spiffe_id), "a").expect("a");
    a_again = ban(s, &a_again, true, 3200);
    ban(s, &a_again, false, 3300);
    let subject_only = node_agent("cert-e", &["x509pop:spki:sha256:ee", NODE_1]);
    banned_rule(s.admit_agent(None, &subject_only), "still banned", NODE_1);
    // The last banner evicted, then unbanned by ID: the rules go.
    ok(s.delete_agent(&banned_shared.spiffe_id), "evict shared");
    assert_eq!(
        ok(s.clear_node_bans_of(&banned_shared.spiffe_id), "clear"),
        2
    );
    assert_eq!(
        ok(s.clear_node_bans_of(&banned_shared.spiffe_id), "again"),
        0
    );
    ok(s.admit_agent(None, &subject_only), "lifted");
    ban(s, &banned_other, false, 3400);
    assert!(ok(s.list_node_bans(), "all lifted").is_empty());

    // Racing: attesters admit fresh agents of one node while the node is
    // banned; no admission that starts after the ban returned succeeds.
    for round in 0..20 {
        let rule = format!("x509pop:spki:sha256:race{round}");
        let victim = node_agent(&format!("victim{round}"), &[&rule]);
        ok(s.admit_agent(None, &victim), "victim");
        let done = AtomicBool::new(false);
        let barrier = Barrier::new(5);
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (barrier, done, rule) = (&barrier, &done, &rule);
                scope.spawn(move || {
                    barrier.wait();
                    for i in 0..20 {
                        let after_ban = done.load(Ordering::SeqCst);
                        let a = node_agent(&format!("r{round}-{t}-{i}"), &[rule]);
                        match s.admit_agent(None, &a) {
                            Ok(()) if after_ban => {
                                panic!("round {round}: {} admitted after the ban", a.spiffe_id)
                            }
                            Ok(()) | Err(StoreError::Banned { .. }) => {}
                            Err(e) => panic!("admission: {e}"),
                        }
                    }
                });
            }
            barrier.wait();
            ban(s, &victim, true, 4000);
            done.store(true, Ordering::SeqCst);
        });
    }
}
