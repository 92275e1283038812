//! P2 `workload-api`: one real `sigil-agent` with a cached SVID for this
//! process's uid and 1,000 clients (one connection each). First every
//! client calls `FetchX509SVID` at the same moment (the burst: latency of
//! the last one is the whole queue); then, with those 1,000 streams still
//! open, every client calls once more, the calls spread evenly over one
//! second (1,000 calls/s): latency from the call to the first message, the
//! P2 figure. Also the agent's RSS with 2,000 streams open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sigil_proto::workload as wpb;
use tokio::sync::Barrier;
use tonic::Streaming;

use crate::common::{Ctx, Report, Target, bounded, ms, note, percentile, poll, rss_mib};
use crate::procs::{Agent, Server, TRUST_DOMAIN, entry};

const S: &str = "workload-api";

pub type SvidStream = Streaming<wpb::X509svidResponse>;

/// A server, an agent, and an entry for this process's uid served by it.
pub struct Setup {
    pub server: Server,
    pub agent: Agent,
    pub entry_id: String,
}

pub async fn setup() -> anyhow::Result<Setup> {
    let server = Server::start().await?;
    let agent = Agent::start(&server).await?;
    let uid = nix::unistd::getuid().as_raw();
    let spiffe_id = format!("spiffe://{TRUST_DOMAIN}/bench/workload");
    let ids = server
        .create_entries(
            vec![entry(
                &spiffe_id,
                &agent.agent_id,
                &[("unix", &format!("uid:{uid}"))],
            )],
            1,
        )
        .await?;
    let entry_id = ids.into_iter().next().context("entry id")?;
    let socket = agent.socket.clone();
    poll(
        "the agent serving the workload SVID",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            let socket = socket.clone();
            async move {
                let mut c = sigil_agent::workload_client::connect(&socket).await?;
                let Ok(resp) = c.fetch_x509svid(wpb::X509svidRequest {}).await else {
                    return Ok(None);
                };
                let mut s = resp.into_inner();
                Ok(match s.message().await {
                    Ok(Some(m)) if !m.svids.is_empty() => Some(()),
                    _ => None,
                })
            }
        },
    )
    .await?;
    Ok(Setup {
        server,
        agent,
        entry_id,
    })
}

/// The default SVID's leaf (first certificate) of a message.
pub fn leaf(m: &wpb::X509svidResponse) -> Option<Vec<u8>> {
    let chain = &m.svids.first()?.x509_svid;
    let (rest, _) = x509_parser::parse_x509_certificate(chain).ok()?;
    Some(chain[..chain.len() - rest.len()].to_vec())
}

/// An open `FetchX509SVID` stream with its connection.
pub struct Open {
    pub client: sigil_agent::workload_client::Client,
    pub stream: SvidStream,
    pub first: wpb::X509svidResponse,
    /// From the call to the first message.
    pub took: Duration,
}

/// Opens `n` connections, then starts `FetchX509SVID` on all of them at
/// once; returns each stream with its first message and the latency from
/// the call to that message.
pub async fn open_streams(agent: &Agent, n: usize) -> anyhow::Result<Vec<Open>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(sigil_agent::workload_client::connect(&agent.socket).await?);
    }
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let t0 = Instant::now();
                let mut s = c
                    .fetch_x509svid(wpb::X509svidRequest {})
                    .await?
                    .into_inner();
                let first = s
                    .message()
                    .await?
                    .context("stream ended before a message")?;
                let took = t0.elapsed();
                if first.svids.is_empty() {
                    bail!("first message without an SVID");
                }
                anyhow::Ok(Open {
                    client: c,
                    stream: s,
                    first,
                    took,
                })
            })
        })
        .collect();
    bounded(
        "opening Workload API streams",
        Duration::from_secs(120),
        async {
            let mut out = Vec::with_capacity(n);
            for t in tasks {
                out.push(t.await??);
            }
            Ok(out)
        },
    )
    .await
}

/// With the burst's streams still open, every client opens a second
/// `FetchX509SVID` on its connection, the calls spread evenly over `window`
/// (1,000 calls per second for 1,000 clients); latency of each.
async fn paced(opened: &[Open], window: Duration) -> anyhow::Result<Vec<f64>> {
    let n = opened.len();
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let tasks: Vec<_> = opened
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let mut c = o.client.clone();
            let at = start + window.mul_f64(i as f64 / n as f64);
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let t0 = Instant::now();
                let mut s = c
                    .fetch_x509svid(wpb::X509svidRequest {})
                    .await?
                    .into_inner();
                let first = s
                    .message()
                    .await?
                    .context("stream ended before a message")?;
                let took = t0.elapsed();
                if first.svids.is_empty() {
                    bail!("first message without an SVID");
                }
                anyhow::Ok((s, took))
            })
        })
        .collect();
    bounded(
        "paced FetchX509SVID calls",
        Duration::from_secs(120),
        async {
            let mut out = Vec::with_capacity(n);
            let mut keep = Vec::with_capacity(n);
            for t in tasks {
                let (s, took) = t.await??;
                keep.push(s);
                out.push(ms(took));
            }
            Ok(out)
        },
    )
    .await
}

pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let n = ctx.size(1000, 100);
    note(format!(
        "workload-api: {n} clients: all calling FetchX509SVID at once, then once more each, \
         spread over 1 s, with the first {n} streams open"
    ));
    let st = setup().await?;
    let rss_before = rss_mib(st.agent.pid()?)?;
    // Warm-up round (first attestation of this binary, page cache), then
    // the measured rounds.
    drop(open_streams(&st.agent, n.min(50)).await?);
    let streams = open_streams(&st.agent, n).await?;
    let mut burst: Vec<f64> = streams.iter().map(|o| ms(o.took)).collect();
    let mut lat = paced(&streams, Duration::from_secs(1)).await?;
    let rss = rss_mib(st.agent.pid()?)?;
    report.fig(S, "clients", n as f64, "clients", Target::None);
    report.fig(
        S,
        "burst_first_response_p50_ms",
        percentile(&mut burst, 50.0),
        "ms",
        Target::None,
    );
    report.fig(
        S,
        "burst_first_response_p99_ms",
        percentile(&mut burst, 99.0),
        "ms",
        Target::None,
    );
    report.fig(
        S,
        "first_response_p50_ms",
        percentile(&mut lat, 50.0),
        "ms",
        Target::None,
    );
    report.fig(
        S,
        "first_response_p99_ms",
        percentile(&mut lat, 99.0),
        "ms",
        Target::AtMost(5.0),
    );
    report.fig(
        S,
        "first_response_max_ms",
        percentile(&mut lat, 100.0),
        "ms",
        Target::None,
    );
    report.fig(S, "agent_rss_idle_mib", rss_before, "MiB", Target::None);
    report.fig(S, "agent_rss_mib", rss, "MiB", Target::None);
    Ok(())
}
