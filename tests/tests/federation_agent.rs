//! Federation, agent side (issue 16), with a real server and agent: a
//! foreign bundle deleted while the agent was not connected is dropped by
//! the agent when its sync resumes (not only on its next full set).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sigil_proto::test_pki::TestCa;
use sigil_tests::{ServerOptions, TestAgent, TestServer};
use spiffe::WorkloadApiClient;

const OPENED: &str = "entry sync stream open";

fn set_bundle(s: &TestServer, td: &str, ca: &TestCa) {
    let p = s.dir.path().join(format!("{td}.pem"));
    std::fs::write(&p, sigil_proto::pem::to_pem(std::slice::from_ref(&ca.der))).unwrap();
    s.cli_ok(&[
        "bundle",
        "set",
        "--trust-domain",
        td,
        "--path",
        &p.display().to_string(),
    ]);
}

/// The trust domains and CA certificates the agent gives this process
/// over the Workload API (`FetchX509Bundles`); `None` while it serves
/// nothing (not ready, or no identity yet).
async fn served(a: &TestAgent) -> Option<BTreeMap<String, Vec<Vec<u8>>>> {
    let c = WorkloadApiClient::connect_to(a.endpoint()).await.ok()?;
    let set = tokio::time::timeout(Duration::from_secs(5), c.fetch_x509_bundles())
        .await
        .ok()?
        .ok()?;
    let tds = ["a.test", "b.test"];
    Some(
        tds.iter()
            .filter_map(|td| {
                let b = set.get(&spiffe::TrustDomain::new(td).unwrap())?;
                let cas = b.authorities().iter().map(|c| c.as_bytes().to_vec());
                Some((td.to_string(), cas.collect()))
            })
            .collect(),
    )
}

/// Polls `probe` every 100 ms until it holds; panics naming `what` after
/// `limit`.
async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !probe().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `sig` to the agent process.
fn signal(a: &TestAgent, sig: Signal) {
    let pid = a.pid().expect("agent running");
    kill(Pid::from_raw(pid as i32), sig).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i16_open1_resumed_sync_drops_a_foreign_bundle_deleted_while_offline() {
    let mut s = TestServer::start(ServerOptions {
        trust_domain: "a.test".into(),
        bundle_endpoint: false,
        ..Default::default()
    })
    .unwrap();
    let b = TestCa::new("b.test");
    set_bundle(&s, "b.test", &b);
    let a = TestAgent::start(&s).unwrap();
    let uid = nix::unistd::getuid().as_raw();
    s.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://a.test/fed",
        "--parent-id",
        &a.agent_id,
        "--selector",
        &format!("unix:uid:{uid}"),
        "--federates-with",
        "spiffe://b.test",
    ]);
    until(
        "the workload is served b.test's bundle",
        Duration::from_secs(20),
        || async {
            served(&a)
                .await
                .is_some_and(|m| m.get("b.test") == Some(&vec![b.der.clone()]))
        },
    )
    .await;
    let opened = a.log_text().matches(OPENED).count();
    let server_log_before = s.log_text().len();

    // The agent is away (stopped, so it hears nothing) while the server
    // restarts, which ends its stream, and b.test's bundle is deleted.
    signal(&a, Signal::SIGSTOP);
    s.stop();
    s.spawn().unwrap();
    s.cli_ok(&["bundle", "delete", "--trust-domain", "b.test"]);
    signal(&a, Signal::SIGCONT);

    // The agent reconnects and resumes (not a full set).
    until(
        "the agent reopens its entry stream",
        Duration::from_secs(30),
        || async { a.log_text().matches(OPENED).count() > opened },
    )
    .await;
    let reopened = a
        .log_text()
        .lines()
        .filter(|l| l.contains(OPENED))
        .nth(opened)
        .unwrap()
        .to_string();
    assert!(
        !reopened.contains("since=0"),
        "the agent resumed from its revision: {reopened}"
    );
    until(
        "the server logs the resume",
        Duration::from_secs(10),
        || async { s.log_text()[server_log_before..].contains("resumed") },
    )
    .await;
    assert!(
        !s.log_text()[server_log_before..].contains("cannot resume"),
        "a resume, not a full set"
    );

    // The workload is no longer given b.test's bundle.
    until(
        "the agent drops b.test's deleted bundle after resuming",
        Duration::from_secs(15),
        || async {
            served(&a)
                .await
                .is_some_and(|m| m.contains_key("a.test") && !m.contains_key("b.test"))
        },
    )
    .await;
    assert!(
        a.log_text().contains("federated bundle dropped"),
        "the drop is logged"
    );
}
