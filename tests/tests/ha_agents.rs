//! Agents on several servers (issue 17 item 4), with real processes:
//!
//! - an agent given a list of servers, some dead and one a DNS name
//!   (`localhost`, whose IPv6 address nobody listens on), attests on the
//!   live one, is served, and reports the server it uses in its metrics.

use std::time::Duration;

use sigil_tests::prom::http_get;
use sigil_tests::{ServerOptions, TestAgent, TestServer, free_addr};
use spiffe::WorkloadApiClient;

/// Fetches SVIDs until one for `id` is served (bounded).
async fn fetch_until_served(a: &TestAgent, id: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last: String;
    loop {
        match WorkloadApiClient::connect_to(a.endpoint()).await {
            Ok(c) => match c.fetch_all_x509_svids().await {
                Ok(v) if v.iter().any(|s| s.spiffe_id().to_string() == id) => return,
                Ok(v) => last = format!("{} SVIDs", v.len()),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} not served in {limit:?}; last: {last}\nagent log:\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of `sigil_agent_server{address}` on the agent's `/metrics`.
fn server_gauge(health: std::net::SocketAddr, address: &str) -> Option<f64> {
    let (_, body) = http_get(health, "/metrics").ok()?;
    let fams = sigil_tests::prom::parse(&body).ok()?;
    fams.get("sigil_agent_server")?
        .value("sigil_agent_server", &[("address", address)])
}

#[tokio::test(flavor = "multi_thread")]
async fn item4_agent_given_a_list_and_a_dns_name_skips_dead_servers() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let (dead1, dead2) = (free_addr(), free_addr());
    let health = free_addr();
    let list = format!(
        "[\"{dead1}\", \"localhost:{}\", \"{dead2}\"]",
        s.agent_addr.port()
    );
    let a = TestAgent::start_at(
        &s,
        &list,
        &format!("[health]\naddress = \"{health}\"\n"),
        None,
    )
    .unwrap();
    let id = "spiffe://example.org/ha/listed";
    s.register_uid(&a, id);
    fetch_until_served(&a, id, Duration::from_secs(20)).await;
    let live = format!("127.0.0.1:{}", s.agent_addr.port());
    assert_eq!(
        server_gauge(health, &live),
        Some(1.0),
        "{}",
        a.log_text()
    );
    for dead in [dead1, dead2] {
        assert_ne!(server_gauge(health, &dead.to_string()), Some(1.0));
    }
}
