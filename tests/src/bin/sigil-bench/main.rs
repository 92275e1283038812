//! `sigil-bench`: the performance instrument of issue 7. Starts the real
//! release binaries (`sigil-server`, `sigil-agent`, found next to this
//! binary) in temp dirs on loopback, or drives the real server API with many
//! simulated agent identities, and reports one figure per line: a table, or
//! with `--json` one JSON object per figure. Every loop is bounded in count
//! and time; every throughput figure is divided by the crypto `limit`
//! measured in the same run.
//!
//! ```text
//! cargo build --release -p sigil-server -p sigil-agent
//! cargo run --release -p sigil-tests --bin sigil-bench -- all [--quick] [--json]
//! ```

mod cfssl;
mod cold_start;
mod common;
mod fanout;
mod flood;
mod ha;
mod issuance;
mod jwt;
mod limit;
mod pin;
mod procs;
mod propagation;
mod proxy;
mod scale;
mod workload_api;

use std::time::Instant;

use anyhow::bail;
use common::{Ctx, Report};

const SCENARIOS: &[&str] = &[
    "limit",
    "issuance",
    "workload-api",
    "jwt",
    "fanout",
    "propagation",
    "scale",
    "cold-start",
    "flood",
    "proxy",
    "ha",
    "all",
];

fn usage() -> String {
    format!(
        "usage: sigil-bench SCENARIO [--quick] [--json]\n  SCENARIO: one of {}",
        SCENARIOS.join(", ")
    )
}

fn main() -> anyhow::Result<()> {
    let mut scenario = None;
    let mut quick = false;
    let mut json = false;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--quick" => quick = true,
            "--json" => json = true,
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(());
            }
            s if SCENARIOS.contains(&s) && scenario.is_none() => scenario = Some(s.to_string()),
            other => bail!("unknown argument {other:?}\n{}", usage()),
        }
    }
    let Some(scenario) = scenario else {
        bail!("no scenario given\n{}", usage());
    };
    // 1,000 Workload API connections: raise the descriptor limit before any
    // daemon is spawned, so the agent inherits it.
    common::raise_nofile()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let ctx = Ctx::new(quick, json)?;
    let started = Instant::now();
    let mut report = Report::new(json);
    rt.block_on(run(&ctx, &scenario, &mut report))?;
    report.finish(started.elapsed());
    Ok(())
}

async fn run(ctx: &Ctx, scenario: &str, report: &mut Report) -> anyhow::Result<()> {
    // Every throughput figure is paired with the limit of this run.
    let lim = limit::run(ctx, report)?;
    match scenario {
        "limit" => {}
        "issuance" => issuance::run(ctx, &lim, report).await?,
        "workload-api" => workload_api::run(ctx, report).await?,
        "jwt" => jwt::run(ctx, report).await?,
        "fanout" => fanout::run(ctx, report).await?,
        "propagation" => propagation::run(ctx, report).await?,
        "scale" => {
            scale::run(ctx, report).await?;
        }
        "cold-start" => cold_start::run(ctx, None, report).await?,
        "flood" => flood::run(ctx, report).await?,
        "proxy" => proxy::run(ctx, report).await?,
        "ha" => {
            ha::run(ctx, report, false).await?;
        }
        "all" => {
            issuance::run(ctx, &lim, report).await?;
            workload_api::run(ctx, report).await?;
            jwt::run(ctx, report).await?;
            fanout::run(ctx, report).await?;
            propagation::run(ctx, report).await?;
            let server = scale::run(ctx, report).await?;
            cold_start::run(ctx, Some(server), report).await?;
            flood::run(ctx, report).await?;
            proxy::run(ctx, report).await?;
            ha::run(ctx, report, true).await?;
        }
        other => bail!("unknown scenario {other:?}"),
    }
    Ok(())
}
