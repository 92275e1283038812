//! The agent's SVID cache against a real `sigil-server` and `sigil-agent`
//! (issue 14 item 6): an entry past its `expires_at` stops being served at
//! that moment, although its certificate (default TTL 1 h) is still valid
//! and nothing tells the agent (the server sends no change when an entry
//! expires).

use std::time::Duration;

use sigil_tests::{ServerOptions, TestAgent, TestServer};
use spiffe::WorkloadApiClient;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How long the entry lives: long enough for the agent to serve it first on
/// a loaded machine.
const LIFE: Duration = Duration::from_secs(20);

fn register(s: &TestServer, a: &TestAgent, id: &str, extra: &[&str]) {
    let sel = format!("unix:uid:{}", nix::unistd::getuid().as_raw());
    let mut args = vec![
        "entry",
        "create",
        "--spiffe-id",
        id,
        "--parent-id",
        &a.agent_id,
        "--selector",
        &sel,
    ];
    args.extend_from_slice(extra);
    s.cli_ok(&args);
}

/// The SPIFFE IDs the agent serves this process, once `pred` holds for them
/// (polled, bounded by `limit`).
async fn served_until(
    a: &TestAgent,
    limit: Duration,
    pred: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last: String;
    loop {
        match WorkloadApiClient::connect_to(a.endpoint()).await {
            Ok(c) => match c.fetch_all_x509_svids().await {
                Ok(v) => {
                    let mut ids: Vec<String> =
                        v.iter().map(|s| s.spiffe_id().to_string()).collect();
                    ids.sort();
                    if pred(&ids) {
                        return ids;
                    }
                    last = format!("{ids:?}");
                }
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in {limit:?}; last: {last}\nagent log:\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn item6_an_entry_past_expires_at_is_no_longer_served() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    let expires = OffsetDateTime::now_utc() + LIFE;
    let at = expires.format(&Rfc3339).unwrap();
    register(
        &s,
        &a,
        "spiffe://example.org/expiring",
        &["--expires-at", &at],
    );
    register(&s, &a, "spiffe://example.org/lasting", &[]);
    served_until(&a, LIFE, |ids| ids.len() == 2).await;
    assert!(
        OffsetDateTime::now_utc() < expires - Duration::from_secs(1),
        "the agent served the entry only at its expiry: inconclusive"
    );
    let ids = served_until(&a, LIFE + Duration::from_secs(10), |ids| ids.len() < 2).await;
    let now = OffsetDateTime::now_utc();
    assert_eq!(ids, ["spiffe://example.org/lasting"]);
    assert!(
        now >= expires - Duration::from_secs(1),
        "dropped at {now}, before the entry's expires_at {expires}"
    );
}
