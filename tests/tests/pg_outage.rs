//! Issue 17 item 5 with real processes: PostgreSQL restarted while a
//! workload fetches its SVID and an operator writes entries. While it is
//! down the agent keeps being served from the server's memory (cached SVIDs,
//! a fresh sync stream gets the full set), admin writes fail with
//! `unavailable: store unreachable: …`, `/ready` stays 200 and says "ready
//! (degraded): store unreachable", and an agent resuming from a revision
//! ahead of the server's is refused with `UNAVAILABLE` instead of being
//! sent an older set as current. Once it is back everything recovers by
//! itself and no acknowledged write is lost.
//!
//! Its own test binary: stopping the cluster affects every test of the
//! process.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sigil_proto::agent_api as pb;
use sigil_server::store::Store;
use sigil_server::store::postgres::PgStore;
use sigil_tests::pg_server::{fetch_ids, has, pg_server, uid_entry, until};
use sigil_tests::prom::http_get;
use sigil_tests::sync_stream::{SyncStream, attested_agent};
use sigil_tests::{TestAgent, free_addr, pg, poll, text};

const LIMIT: Duration = Duration::from_secs(30);

fn ready(addr: SocketAddr) -> (u16, String) {
    http_get(addr, "/ready").expect("GET /ready")
}

/// `entry create` for `id` under a made-up agent: exit status and output.
fn create(socket: &std::path::Path, id: &str) -> (bool, String) {
    let sock = socket.display().to_string();
    let out = sigil_tests::sigil_server(
        &[
            "entry",
            "create",
            "--spiffe-id",
            id,
            "--parent-id",
            "spiffe://example.org/sigil/agent/x",
            "--selector",
            "unix:uid:1",
        ],
        &[("SIGIL_ADMIN_SOCKET", &sock)],
    );
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn i17_5_postgres_restart_during_traffic_serves_from_memory_and_recovers() {
    let Some(cluster) = pg::cluster() else { return };
    let db = cluster.create_database();
    let health = free_addr();
    let server = pg_server(
        cluster,
        &db,
        &format!("\n[health]\naddress = \"{health}\"\n"),
    );
    let agent = TestAgent::start(&server).expect("agent");
    let me = "spiffe://example.org/outage/workload";
    server.register_uid(&agent, me);
    until(&agent, LIMIT, "the workload's SVID", |g| has(g, me)).await;
    // A second agent identity whose record the server has read (a sync
    // stream), to open streams while PostgreSQL is down.
    let probe = attested_agent(&server).await;
    let mut first = SyncStream::open(&server, &probe, 0).await;
    assert!(first.wait_for(LIMIT, |s| s.full_revision().is_some()).await);
    let revision = first.full_revision().unwrap_or_default();
    assert_eq!(ready(health), (200, "ready\n".to_string()));

    // Traffic: a workload fetching, an operator writing.
    let stop = Arc::new(AtomicBool::new(false));
    let fetches = Arc::new(AtomicUsize::new(0));
    let fetch_failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let fetcher = {
        let (stop, fetches, failures) = (stop.clone(), fetches.clone(), fetch_failures.clone());
        let socket = agent.socket.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let r = async {
                    let mut c = sigil_agent::workload_client::connect(&socket)
                        .await
                        .map_err(|e| e.to_string())?;
                    let r = c
                        .fetch_x509svid(sigil_proto::workload::X509svidRequest {})
                        .await
                        .map_err(|e| e.to_string())?;
                    r.into_inner().message().await.map_err(|e| e.to_string())
                }
                .await;
                match r {
                    Ok(Some(m)) if m.svids.iter().any(|s| s.spiffe_id == me) => {}
                    other => failures.lock().unwrap().push(format!("{other:?}")),
                }
                fetches.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let refusals = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let (stop, acked, refusals) = (stop.clone(), acked.clone(), refusals.clone());
        let socket = server.socket.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 1000 {
                let id = format!("spiffe://example.org/outage/acked/{n}");
                n += 1;
                match create(&socket, &id) {
                    (true, _) => acked.lock().unwrap().push(id),
                    (false, out) => refusals.lock().unwrap().push(out),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    poll::wait_for(LIMIT, "writes acknowledged before the outage", || {
        (acked.lock().unwrap().len() >= 3).then_some(())
    });

    cluster.stop();
    let acked_before_down = acked.lock().unwrap().len();
    // /ready says so, and stays 200 (served from memory).
    let body = poll::wait_for(LIMIT, "/ready to report the store", || {
        let (code, body) = ready(health);
        assert_eq!(code, 200, "/ready while the store is down: {body}");
        body.contains("store unreachable").then_some(body)
    });
    assert!(
        body.starts_with("ready (degraded): store unreachable: "),
        "{body}"
    );
    // An admin write fails clearly.
    let (ok, out) = create(&server.socket, "spiffe://example.org/outage/refused");
    assert!(!ok, "a write while PostgreSQL is down: {out}");
    assert!(out.contains("unavailable: store unreachable: "), "{out}");
    // The workload keeps its SVID; a fresh sync stream gets the full set
    // from memory.
    until(&agent, LIMIT, "the SVID while PostgreSQL is down", |g| {
        has(g, me)
    })
    .await;
    let mut fresh = SyncStream::open(&server, &probe, 0).await;
    assert!(
        fresh.wait_for(LIMIT, |s| s.full_revision().is_some()).await,
        "a sync stream while PostgreSQL is down: {:?}\n{}",
        fresh.got,
        server.log_text()
    );
    // An agent ahead of this server (it failed over from one that was
    // ahead) is refused, not sent an older set as current.
    let mut client = server.agent_client(Some(&probe)).await.expect("agent API");
    let ahead = pb::SyncEntriesRequest {
        since_revision: revision + 1000,
        page_size: 0,
    };
    let answer = match client.sync_entries(ahead).await {
        Err(s) => Err(s),
        Ok(r) => {
            let mut st = r.into_inner();
            let mut got = Vec::new();
            loop {
                match tokio::time::timeout(LIMIT, st.message()).await {
                    Ok(Ok(Some(m))) => got.extend(m.kind),
                    Ok(Ok(None)) => break Ok(got),
                    Ok(Err(s)) => break Err(s),
                    Err(_) => panic!("the ahead stream neither failed nor ended: {got:?}"),
                }
            }
        }
    };
    let status = answer.expect_err("a stream resumed from ahead while PostgreSQL is down");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("behind the agent's"),
        "{status:?}"
    );

    cluster.start_again();
    // Everything recovers by itself.
    poll::wait_for(LIMIT, "/ready to recover", || {
        (ready(health) == (200, "ready\n".to_string())).then_some(())
    });
    let n_acked = acked.lock().unwrap().len();
    poll::wait_for(LIMIT, "writes acknowledged after the restart", || {
        (acked.lock().unwrap().len() >= n_acked + 3).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    fetcher.await.expect("fetcher");
    // The follower resumed: another server's write reaches the workload.
    let other = PgStore::open(&cluster.store_config(&db, 2)).expect("second writer");
    let followed = "spiffe://example.org/outage/after";
    let spec = uid_entry(followed, &agent.agent_id);
    tokio::task::spawn_blocking(move || other.create_entry(spec, 0))
        .await
        .expect("task")
        .expect("write after the restart");
    until(&agent, LIMIT, "a followed entry after the restart", |g| {
        has(g, followed)
    })
    .await;
    // Nothing acknowledged is lost.
    let listed = server.cli_json(&["entry", "list"]);
    let listed: Vec<&str> = listed["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["spiffe_id"].as_str())
        .collect::<Vec<_>>()
        .into_iter()
        .collect();
    let acked = acked.lock().unwrap().clone();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !listed.contains(&id.as_str()))
        .collect();
    assert!(lost.is_empty(), "acknowledged entries lost: {lost:?}");
    let refusals = refusals.lock().unwrap().clone();
    let unclear: Vec<&String> = refusals
        .iter()
        .filter(|r| !r.contains("unavailable: store unreachable: "))
        .collect();
    assert!(
        unclear.is_empty(),
        "writes that failed without naming the cause: {unclear:?}"
    );
    let failures = fetch_failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "workload fetches that failed: {failures:?}"
    );
    println!(
        "outage: {} writes acknowledged ({acked_before_down} before PostgreSQL stopped), \
         {} refused with 'store unreachable', {} workload fetches, 0 failed",
        acked.len(),
        refusals.len(),
        fetches.load(Ordering::SeqCst),
    );
    assert!(fetch_ids(&agent).await.is_ok());
}
