//! `ha` (issue 17): two `sigil-server`s sharing one throwaway PostgreSQL
//! (Debian's binaries, as the tests use: `sigil_tests::pg`), an agent on
//! server B, and entries created through server A: the time until a
//! workload waiting on B's agent gets its SVID (B follows A's write, pushes
//! it to its agent, which signs it through B), p99 over 50 samples in every
//! mode (target ≤ 1 s; SPIRE polls every 5 s). Then entry writes per second
//! through the admin API, the same load on a PostgreSQL server and on a
//! sled server, in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sigil_proto::admin_api as apb;

use crate::common::{Ctx, Report, Target, bounded, note, percentile};
use crate::procs::{Agent, Server, TRUST_DOMAIN, entry};

const S: &str = "ha";
/// Propagation samples, in every mode: a p99 needs them.
const SAMPLES: usize = 50;
/// Admin API calls in flight at once while measuring writes.
const WRITERS: usize = 8;

/// The `[store.postgres]` section for database `db`.
fn store_toml(pg: &sigil_tests::pg::PgCluster, db: &str) -> String {
    format!(
        "[store.postgres]\nconnection_string = \"{}\"\nmax_connections = 16\n",
        pg.connection_string(db)
    )
}

/// Creates `n` entries through `server`, one per call, `WRITERS` calls in
/// flight; entries per second.
async fn writes_per_s(server: &Server, n: usize, tag: &str) -> anyhow::Result<f64> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let mut admin = server.admin().await?;
        let next = next.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= n {
                    return anyhow::Ok(());
                }
                let r = admin
                    .create_entries(apb::CreateEntriesRequest {
                        entries: vec![entry(
                            &format!("spiffe://{TRUST_DOMAIN}/bench/{tag}/{i}"),
                            &format!("spiffe://{TRUST_DOMAIN}/bench/writes-parent"),
                            &[("unix", "uid:1")],
                        )],
                        allow_unknown_selectors: false,
                    })
                    .await?
                    .into_inner();
                match r.results.into_iter().next().and_then(|r| r.result) {
                    Some(apb::entry_result::Result::Entry(_)) => {}
                    other => bail!("creating an entry failed: {other:?}"),
                }
            }
        }));
    }
    for t in tasks {
        bounded("entry writers", Duration::from_secs(600), async {
            t.await.context("writer task")?
        })
        .await?;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// Runs the scenario; `Ok(false)` (with a note) when PostgreSQL is not
/// installed and `skippable` (inside `all`).
pub async fn run(ctx: &Ctx, report: &mut Report, skippable: bool) -> anyhow::Result<bool> {
    let Some(pg) = sigil_tests::pg::cluster() else {
        if skippable {
            note("ha: skipped, PostgreSQL is not installed (Debian's postgresql package)");
            return Ok(false);
        }
        bail!("ha needs PostgreSQL (Debian's postgresql package: initdb, pg_ctl)");
    };
    let db = pg.create_database();
    let a = Server::start_with(&store_toml(pg, &db)).await?;
    let b = Server::start_with(&store_toml(pg, &db)).await?;
    let agent = Agent::start(&b).await?;
    note(format!(
        "ha: servers A and B on one PostgreSQL, an agent on B; {SAMPLES} samples of create on A -> SVID on B's workload"
    ));
    let mut lat = crate::propagation::measure(&a, &agent, SAMPLES, "ha").await?;
    report.fig(S, "samples", SAMPLES as f64, "samples", Target::None);
    report.fig(
        S,
        "cross_server_propagation_p50_ms",
        percentile(&mut lat, 50.0),
        "ms",
        Target::None,
    );
    report.fig(
        S,
        "cross_server_propagation_p99_ms",
        percentile(&mut lat, 99.0),
        "ms",
        Target::AtMost(1000.0),
    );
    drop(agent);
    drop(b);
    let n = ctx.size(2000, 200);
    note(format!(
        "ha: {n} entry writes, {WRITERS} in flight, on PostgreSQL then on sled"
    ));
    let on_pg = writes_per_s(&a, n, "writes-pg").await?;
    drop(a);
    let sled = Server::start().await?;
    let on_sled = writes_per_s(&sled, n, "writes-sled").await?;
    report.fig(S, "entry_writes_per_s_postgres", on_pg, "/s", Target::None);
    report.fig(S, "entry_writes_per_s_sled", on_sled, "/s", Target::None);
    report.fig(
        S,
        "postgres_vs_sled_write_ratio",
        on_pg / on_sled,
        "x",
        Target::None,
    );
    Ok(true)
}
