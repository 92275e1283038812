//! P4 `propagation`: a workload (this process) with no identity waits on
//! `FetchX509SVID`, retrying every 25 ms on `PermissionDenied` as SPIFFE
//! clients do; the admin API creates its entry; time from that call until
//! the SVID arrives on the stream. Then the entry is deleted and the agent
//! is seen to drop it before the next sample.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sigil_proto::admin_api as apb;
use sigil_proto::workload as wpb;
use tokio::sync::oneshot;

use crate::common::{Ctx, Report, Target, bounded, ms, note, percentile, poll};
use crate::procs::{Agent, Server, TRUST_DOMAIN, entry};

const S: &str = "propagation";
const RETRY: Duration = Duration::from_millis(25);

/// True if a fresh call answers `PermissionDenied` (no identity).
async fn denied(agent: &Agent) -> anyhow::Result<bool> {
    let mut c = sigil_agent::workload_client::connect(&agent.socket).await?;
    Ok(match c.fetch_x509svid(wpb::X509svidRequest {}).await {
        Err(s) => s.code() == tonic::Code::PermissionDenied,
        Ok(r) => {
            matches!(r.into_inner().message().await, Err(s) if s.code() == tonic::Code::PermissionDenied)
        }
    })
}

/// Waits on the stream (retrying on PermissionDenied) until an SVID for
/// `want` arrives; reports on `waiting` once the first refusal was seen.
async fn workload(
    agent_socket: std::path::PathBuf,
    want: String,
    waiting: oneshot::Sender<()>,
) -> anyhow::Result<Instant> {
    let mut waiting = Some(waiting);
    let mut c = sigil_agent::workload_client::connect(&agent_socket).await?;
    loop {
        let mut stream = match c.fetch_x509svid(wpb::X509svidRequest {}).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::PermissionDenied => {
                if let Some(w) = waiting.take() {
                    let _ = w.send(());
                }
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Err(s) => bail!("FetchX509SVID failed: {s}"),
        };
        loop {
            match stream.message().await {
                Ok(Some(m)) => {
                    if m.svids.iter().any(|s| s.spiffe_id == want) {
                        return Ok(Instant::now());
                    }
                }
                Ok(None) => break,
                Err(s) if s.code() == tonic::Code::PermissionDenied => {
                    if let Some(w) = waiting.take() {
                        let _ = w.send(());
                    }
                    tokio::time::sleep(RETRY).await;
                    break;
                }
                Err(s) => bail!("FetchX509SVID stream failed: {s}"),
            }
        }
    }
}

/// `samples` times: a workload on `agent` waits with no identity, an entry
/// for it is created through `admin` (the agent's own server, or another
/// one sharing its store), and the time until its SVID arrives is taken;
/// the entry is then deleted and the agent seen to drop it. Latencies in ms.
pub async fn measure(
    admin: &Server,
    agent: &Agent,
    samples: usize,
    tag: &str,
) -> anyhow::Result<Vec<f64>> {
    let uid = nix::unistd::getuid().as_raw();
    let mut admin = admin.admin().await?;
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        let want = format!("spiffe://{TRUST_DOMAIN}/bench/{tag}/{i}");
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(workload(agent.socket.clone(), want.clone(), tx));
        bounded(
            "the workload being refused",
            Duration::from_secs(30),
            async { rx.await.context("workload task ended") },
        )
        .await?;
        let t0 = Instant::now();
        let r = admin
            .create_entries(apb::CreateEntriesRequest {
                entries: vec![entry(
                    &want,
                    &agent.agent_id,
                    &[("unix", &format!("uid:{uid}"))],
                )],
                allow_unknown_selectors: false,
            })
            .await?
            .into_inner();
        let id = match r.results.into_iter().next().and_then(|r| r.result) {
            Some(apb::entry_result::Result::Entry(e)) => e.id,
            other => bail!("creating the entry failed: {other:?}"),
        };
        let arrived = bounded(
            "the SVID reaching the workload",
            Duration::from_secs(30),
            async { task.await? },
        )
        .await?;
        lat.push(ms(arrived - t0));
        admin.delete_entry(apb::DeleteEntryRequest { id }).await?;
        poll(
            "the agent dropping the deleted entry",
            Duration::from_secs(30),
            Duration::from_millis(10),
            || async { Ok(denied(agent).await?.then_some(())) },
        )
        .await?;
    }
    Ok(lat)
}

pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let samples = ctx.size(50, 5);
    note(format!("propagation: {samples} samples"));
    let server = Server::start().await?;
    let agent = Agent::start(&server).await?;
    let mut lat = measure(&server, &agent, samples, "propagation").await?;
    report.fig(S, "samples", samples as f64, "samples", Target::None);
    report.fig(
        S,
        "propagation_p50_ms",
        percentile(&mut lat, 50.0),
        "ms",
        Target::None,
    );
    report.fig(
        S,
        "propagation_p99_ms",
        percentile(&mut lat, 99.0),
        "ms",
        Target::AtMost(1000.0),
    );
    Ok(())
}
