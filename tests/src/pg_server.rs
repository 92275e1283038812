//! A real `sigil-server` on a database of the test's PostgreSQL cluster,
//! and what its agent's workloads get: the pieces the tests of following
//! other servers' writes and of PostgreSQL outages share (issue 17).

use std::time::{Duration, Instant};

use sigil_proto::workload as wpb;
use sigil_server::entry::EntrySpec;

use crate::{ServerOptions, TestAgent, TestServer, pg};

/// A server on database `db` of `cluster`, with `extra` TOML.
pub fn pg_server(cluster: &pg::PgCluster, db: &str, extra: &str) -> TestServer {
    TestServer::start(ServerOptions {
        extra: format!(
            "[store.postgres]\nconnection_string = \"{}\"\nmax_connections = 4\n{extra}",
            cluster.connection_string(db)
        ),
        ..Default::default()
    })
    .expect("server on PostgreSQL starts")
}

/// An entry for this process's uid under `agent_id`, as another server's
/// admin API would write it.
pub fn uid_entry(spiffe_id: &str, agent_id: &str) -> EntrySpec {
    let uid = nix::unistd::getuid().as_raw();
    let mut spec = EntrySpec {
        spiffe_id: sigil_proto::SpiffeId::parse(spiffe_id).expect("spiffe id"),
        parent_id: sigil_proto::SpiffeId::parse(agent_id).expect("agent id"),
        selectors: vec![
            sigil_proto::Selector::parse(&format!("unix:uid:{uid}")).expect("selector"),
        ],
        x509_svid_ttl: 0,
        jwt_svid_ttl: 0,
        dns_names: Vec::new(),
        federates_with: Vec::new(),
        hint: String::new(),
        admin: false,
        downstream: false,
        expires_at: None,
    };
    spec.normalize();
    spec
}

/// What a fresh FetchX509SVID call gets now: the SPIFFE IDs of its first
/// answer, `None` for PermissionDenied (no identity), `Err` for any other
/// failure.
pub async fn fetch_ids(agent: &TestAgent) -> Result<Option<Vec<String>>, String> {
    let mut c = sigil_agent::workload_client::connect(&agent.socket)
        .await
        .map_err(|e| format!("connecting to the Workload API: {e}"))?;
    let first = match c.fetch_x509svid(wpb::X509svidRequest {}).await {
        Ok(r) => r.into_inner().message().await,
        Err(s) => Err(s),
    };
    match first {
        Ok(Some(m)) => Ok(Some(m.svids.into_iter().map(|s| s.spiffe_id).collect())),
        Err(s) if s.code() == tonic::Code::PermissionDenied => Ok(None),
        other => Err(format!("FetchX509SVID: {other:?}")),
    }
}

/// Whether `got` holds an SVID for `id`.
pub fn has(got: &Result<Option<Vec<String>>, String>, id: &str) -> bool {
    matches!(got, Ok(Some(v)) if v.iter().any(|s| s == id))
}

/// Polls a fresh fetch (every 5 ms, for at most `limit`) until `done`
/// holds for what the workload gets; the time it took. Panics with the
/// last answer and the agent's log otherwise.
pub async fn until(
    agent: &TestAgent,
    limit: Duration,
    what: &str,
    done: impl Fn(&Result<Option<Vec<String>>, String>) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = fetch_ids(agent).await;
        if done(&got) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}; the workload gets {got:?}\nagent log:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
