//! Issue 17 item 3 with real processes: several `sigil-server`s on one
//! PostgreSQL database ([`sigil_tests::ha`]), each with its own CA (its own
//! key slots and journal, keyed by its instance id), and one trust bundle,
//! the union of their CAs.

use std::time::{Duration, Instant};

use sigil_tests::ha::Ha;
use sigil_tests::{TestAgent, TestServer};

/// Polls `f` until it returns `Some` (bounded by `limit`).
fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The serials of the CA slots `ca show` lists on `s`.
fn ca_serials(s: &TestServer) -> Vec<String> {
    let v = s.cli_json(&["ca", "show"]);
    v["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["serial"].as_str().unwrap().to_string())
        .collect()
}

/// The harness smoke test: two servers on one PostgreSQL both start and
/// are healthy, each attests an agent, each has its own instance id and CA,
/// and the bundle each serves holds both CAs.
#[test]
fn i17_3_two_servers_on_one_postgres_each_attest_an_agent() {
    let Some(ha) = Ha::start(2) else { return };
    let (a, b) = (ha.server(0), ha.server(1));
    a.cli_ok(&["healthcheck"]);
    b.cli_ok(&["healthcheck"]);
    let (id_a, id_b) = (ha.instance_id(0), ha.instance_id(1));
    assert_ne!(id_a, id_b, "each server has its own instance id");
    let rows = ha.psql("SELECT instance_id FROM sigil_servers ORDER BY instance_id");
    let mut want = vec![id_a.clone(), id_b.clone()];
    want.sort();
    assert_eq!(
        rows.lines().collect::<Vec<_>>(),
        want,
        "one record per server"
    );
    let (ca_a, ca_b) = (a.ca_slot("active"), b.ca_slot("active"));
    let (sa, sb) = (ca_serials(a), ca_serials(b));
    assert_ne!(sa, sb, "each server has its own CA ({ca_a}, {ca_b})");
    for s in [a, b] {
        wait_for(Duration::from_secs(10), "the bundle holds both CAs", || {
            (s.bundle().len() == 2).then_some(())
        });
    }
    let agent_a = TestAgent::start(a).expect("agent of A");
    let agent_b = TestAgent::start(b).expect("agent of B");
    assert_ne!(agent_a.agent_id, agent_b.agent_id);
    let agents = a.cli_json(&["agent", "list"]);
    let n = agents["agents"].as_array().map_or(0, Vec::len);
    assert_eq!(n, 2, "both agents are in the shared store: {agents:#}");
}
