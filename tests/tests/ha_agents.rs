//! Agents on several servers (issue 17 item 4), with real processes:
//!
//! - an agent given a list of servers, some dead and one a DNS name
//!   (`localhost`, whose IPv6 address nobody listens on), attests on the
//!   live one, is served, and reports the server it uses in its metrics;
//! - two servers on one PostgreSQL ([`sigil_tests::ha`]) and two agents
//!   listing both: `kill -9` of the server one agent uses while workloads
//!   of both agents stream: no stream error, the agent moves to the other
//!   server without attesting again, and entries created afterwards still
//!   arrive on both agents;
//! - entries written concurrently through both servers (creates and
//!   deletes): each agent ends with exactly the SVIDs of the entries it is
//!   authorized for, none missing, none twice.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sigil_proto::workload as wl;
use sigil_tests::ha::Ha;
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
    assert_eq!(server_gauge(health, &live), Some(1.0), "{}", a.log_text());
    for dead in [dead1, dead2] {
        assert_ne!(server_gauge(health, &dead.to_string()), Some(1.0));
    }
}

/// The value of `name` (a counter without labels, or summed) on `/metrics`.
fn metric_sum(health: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = http_get(health, "/metrics").ok()?;
    let fams = sigil_tests::prom::parse(&body).ok()?;
    Some(fams.get(name)?.sum(name))
}

/// Polls `f` (every 50 ms, at most `limit`) until it returns `Some`.
async fn until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two servers on one PostgreSQL whose bundles both hold both CAs.
async fn two_servers() -> Option<Ha> {
    let ha = Ha::start(2)?;
    for s in &ha.servers {
        until(Duration::from_secs(20), "the bundle holds both CAs", || {
            (s.bundle().len() == 2).then_some(())
        })
        .await;
    }
    Some(ha)
}

/// An agent attested with a token of `via`, listing every server of `ha`,
/// with a health endpoint (returned).
fn listing_agent(ha: &Ha, via: usize) -> (TestAgent, SocketAddr) {
    let list: Vec<String> = ha
        .servers
        .iter()
        .map(|s| format!("\"{}\"", s.agent_addr))
        .collect();
    let health = free_addr();
    let a = TestAgent::start_at(
        ha.server(via),
        &format!("[{}]", list.join(", ")),
        &format!("[health]\naddress = \"{health}\"\n"),
        None,
    )
    .expect("agent listing both servers");
    (a, health)
}

/// Index of the server `health`'s agent reports it uses.
fn used_server(ha: &Ha, health: SocketAddr) -> Option<usize> {
    ha.servers
        .iter()
        .position(|s| server_gauge(health, &s.agent_addr.to_string()) == Some(1.0))
}

/// A workload that keeps one FetchX509SVID stream open and records every
/// message's SPIFFE IDs, and any error (the stream must never fail).
struct Streaming {
    seen: Arc<Mutex<Vec<BTreeSet<String>>>>,
    errors: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Streaming {
    async fn open(a: &TestAgent) -> Streaming {
        let mut c = sigil_agent::workload_client::connect(&a.socket)
            .await
            .expect("Workload API");
        let mut st = c
            .fetch_x509svid(wl::X509svidRequest {})
            .await
            .expect("FetchX509SVID")
            .into_inner();
        let (seen, errors) = (
            Arc::<Mutex<Vec<_>>>::default(),
            Arc::<Mutex<Vec<_>>>::default(),
        );
        let (s2, e2) = (seen.clone(), errors.clone());
        let task = tokio::spawn(async move {
            let _keep = c;
            loop {
                match st.message().await {
                    Ok(Some(m)) => s2
                        .lock()
                        .unwrap()
                        .push(m.svids.into_iter().map(|s| s.spiffe_id).collect()),
                    Ok(None) => {
                        e2.lock().unwrap().push("stream ended".into());
                        return;
                    }
                    Err(s) => {
                        e2.lock().unwrap().push(format!("{s:?}"));
                        return;
                    }
                }
            }
        });
        Streaming { seen, errors, task }
    }

    /// Waits until the last message holds `id`.
    async fn until_has(&self, id: &str, limit: Duration) {
        until(limit, &format!("{id} on the stream"), || {
            let seen = self.seen.lock().unwrap();
            seen.last().is_some_and(|m| m.contains(id)).then_some(())
        })
        .await;
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

/// Issue 17 item 4 / acceptance: `kill -9` of the server an agent uses.
#[tokio::test(flavor = "multi_thread")]
async fn item4_kill_9_of_the_agents_server_fails_over_without_reattesting() {
    let Some(mut ha) = two_servers().await else {
        return;
    };
    let (a1, h1) = listing_agent(&ha, 0);
    let (a2, h2) = listing_agent(&ha, 1);
    let (w1, w2) = ("spiffe://example.org/ha/w1", "spiffe://example.org/ha/w2");
    ha.server(0).register_uid(&a1, w1);
    ha.server(1).register_uid(&a2, w2);
    fetch_until_served(&a1, w1, Duration::from_secs(20)).await;
    fetch_until_served(&a2, w2, Duration::from_secs(20)).await;
    let (s1, s2) = (Streaming::open(&a1).await, Streaming::open(&a2).await);
    s1.until_has(w1, Duration::from_secs(10)).await;
    s2.until_has(w2, Duration::from_secs(10)).await;

    let victim = until(Duration::from_secs(10), "agent 1 names its server", || {
        used_server(&ha, h1)
    })
    .await;
    let survivor = 1 - victim;
    let attested = |h| metric_sum(h, "sigil_agent_node_attestations_total");
    let before = (attested(h1), attested(h2));
    assert_eq!(before, (Some(1.0), Some(1.0)), "one attestation each");
    println!(
        "agent 1 uses server {victim}, agent 2 uses server {:?}; kill -9 of server {victim}",
        used_server(&ha, h2)
    );
    ha.servers[victim].kill();

    // New entries, written through the survivor, reach both agents.
    let (w3, w4) = ("spiffe://example.org/ha/w3", "spiffe://example.org/ha/w4");
    let started = std::time::Instant::now();
    ha.server(survivor).register_uid(&a1, w3);
    ha.server(survivor).register_uid(&a2, w4);
    s1.until_has(w3, Duration::from_secs(30)).await;
    s2.until_has(w4, Duration::from_secs(30)).await;
    println!(
        "entries created after the kill reached both workloads in {:?}",
        started.elapsed()
    );
    for (h, a) in [(h1, &a1), (h2, &a2)] {
        assert_eq!(
            used_server(&ha, h),
            Some(survivor),
            "agent on the survivor:\n{}",
            a.log_text()
        );
    }
    assert!(metric_sum(h1, "sigil_agent_server_failovers_total") >= Some(1.0));
    // Not attested again: one attestation each, the same two agents.
    assert_eq!((attested(h1), attested(h2)), before);
    let agents = ha.server(survivor).cli_json(&["agent", "list"]);
    assert_eq!(
        agents["agents"].as_array().map_or(0, Vec::len),
        2,
        "{agents:#}"
    );
    for (s, w) in [(&s1, [w1, w3]), (&s2, [w2, w4])] {
        let last = s.seen.lock().unwrap().last().cloned().unwrap_or_default();
        assert!(w.iter().all(|w| last.contains(*w)), "{last:?}");
        assert_eq!(s.errors(), Vec::<String>::new(), "a workload stream failed");
    }
    s1.task.abort();
    s2.task.abort();
}

/// The SPIFFE IDs a fresh fetch on `a` gets, each as often as served.
async fn served(a: &TestAgent) -> Option<Vec<String>> {
    let c = WorkloadApiClient::connect_to(a.endpoint()).await.ok()?;
    let v = c.fetch_all_x509_svids().await.ok()?;
    let mut ids: Vec<String> = v.iter().map(|s| s.spiffe_id().to_string()).collect();
    ids.sort();
    Some(ids)
}

/// Issue 17 acceptance: concurrent entry writes through both servers.
#[tokio::test(flavor = "multi_thread")]
async fn item4_concurrent_writes_through_both_servers_reach_every_agent_exactly() {
    let Some(ha) = two_servers().await else {
        return;
    };
    let agents = [
        TestAgent::start(ha.server(0)).expect("agent of server 0"),
        TestAgent::start(ha.server(1)).expect("agent of server 1"),
    ];
    const PER_WRITER: usize = 24;
    let uid = nix::unistd::getuid().as_raw();
    // Four writers, two per server, each creating entries for both agents
    // and deleting every third one it created.
    let mut writers = Vec::new();
    for w in 0..4usize {
        let sock = ha.server(w % 2).socket.display().to_string();
        let parents: Vec<String> = agents.iter().map(|a| a.agent_id.clone()).collect();
        writers.push(std::thread::spawn(move || {
            let mut kept: Vec<(usize, String)> = Vec::new();
            for i in 0..PER_WRITER {
                let agent = (w + i) % 2;
                let id = format!("spiffe://example.org/ha/concurrent/{w}/{i}");
                let cli = |args: &[&str]| {
                    let out = sigil_tests::sigil_server(args, &[("SIGIL_ADMIN_SOCKET", &sock)]);
                    assert!(
                        out.status.success(),
                        "{args:?}: {}",
                        sigil_tests::text(&out.stderr)
                    );
                    out.stdout
                };
                let selector = format!("unix:uid:{uid}");
                let made = cli(&[
                    "entry",
                    "create",
                    "--spiffe-id",
                    &id,
                    "--parent-id",
                    &parents[agent],
                    "--selector",
                    &selector,
                    "--output",
                    "json",
                ]);
                let made: serde_json::Value = serde_json::from_slice(&made).unwrap();
                let entry = made["entries"][0]["id"].as_str().unwrap().to_string();
                if i % 3 == 2 {
                    cli(&["entry", "delete", "--entry-id", &entry]);
                } else {
                    kept.push((agent, id));
                }
            }
            kept
        }));
    }
    let mut want: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for w in writers {
        for (agent, id) in w.join().expect("writer") {
            want[agent].push(id);
        }
    }
    for (i, a) in agents.iter().enumerate() {
        want[i].sort();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut last = None;
        loop {
            last = served(a).await.or(last);
            if last.as_ref() == Some(&want[i]) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "agent {i} (server {i}) does not serve exactly its {} entries: got {:?}",
                want[i].len(),
                last
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("agent {i}: exactly its {} entries", want[i].len());
    }
}
