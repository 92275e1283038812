//! P3 `fanout`: 1,000 open `FetchX509SVID` streams on one agent; the
//! operator changes the entry (a new DNS name), which forces the agent to
//! re-issue the SVID; time from the admin call until every stream has
//! received a message with the new certificate.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sigil_proto::admin_api as apb;

use crate::common::{Ctx, Report, Target, bounded, ms, note, percentile};
use crate::workload_api::{leaf, open_streams, setup};

const S: &str = "fanout";

pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let n = ctx.size(1000, 100);
    let rounds = ctx.size(3, 1);
    note(format!("fanout: {n} streams, {rounds} rotations"));
    let st = setup().await?;
    let streams = open_streams(&st.agent, n).await?;
    let mut streams: Vec<_> = streams
        .into_iter()
        .map(|o| {
            leaf(&o.first)
                .map(|l| (o.client, o.stream, l))
                .context("no leaf")
        })
        .collect::<anyhow::Result<_>>()?;
    let mut admin = st.server.admin().await?;
    let mut all = Vec::new();
    let mut each = Vec::new();
    for round in 0..rounds {
        let t0 = Instant::now();
        admin
            .update_entry(apb::UpdateEntryRequest {
                id: st.entry_id.clone(),
                dns_names: Some(apb::StringList {
                    values: vec![format!("rotation{round}.bench.example")],
                }),
                ..Default::default()
            })
            .await?;
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|(c, mut s, old)| {
                tokio::spawn(async move {
                    loop {
                        let m = s.message().await?.context("stream ended")?;
                        let new = leaf(&m).context("message without an SVID")?;
                        if new != old {
                            return anyhow::Ok((c, s, new, t0.elapsed()));
                        }
                    }
                })
            })
            .collect();
        let done = bounded(
            "every stream receiving the new SVID",
            Duration::from_secs(60),
            async {
                let mut out = Vec::with_capacity(tasks.len());
                for t in tasks {
                    out.push(t.await??);
                }
                Ok(out)
            },
        )
        .await?;
        let mut lat: Vec<f64> = done.iter().map(|(_, _, _, d)| ms(*d)).collect();
        let first = done.first().map(|(_, _, l, _)| l.clone());
        if done.iter().any(|(_, _, l, _)| Some(l) != first.as_ref()) {
            bail!("streams received different new certificates");
        }
        all.push(percentile(&mut lat, 100.0));
        each.push(percentile(&mut lat, 50.0));
        streams = done.into_iter().map(|(c, s, l, _)| (c, s, l)).collect();
    }
    report.fig(S, "streams", n as f64, "streams", Target::None);
    report.fig(
        S,
        "fanout_p50_ms",
        percentile(&mut each, 50.0),
        "ms",
        Target::None,
    );
    report.fig(
        S,
        "fanout_all_ms",
        percentile(&mut all, 100.0),
        "ms",
        Target::AtMost(250.0),
    );
    Ok(())
}
