//! P5 `scale`: 100,000 entries in a real server's store (created through
//! the admin API in batches of 1,000), the server's RSS; one simulated
//! agent authorized for 10,000 of them: the time of its full sync, then one
//! entry change and what the server sends for it (entries and bytes).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use prost::Message;
use sigil_proto::admin_api as apb;
use sigil_proto::agent_api as pb;
use sigil_tests::agent_client;

use crate::common::{Ctx, Report, Target, bounded, ms, note, rss_mib};
use crate::procs::{Server, TRUST_DOMAIN, entry};

const S: &str = "scale";
/// Entries per CreateEntries call.
pub const CREATE_BATCH: usize = 1000;

/// Fills `server` with `total` entries, `mine` of them parented to
/// `agent_id`; returns the ids of those, and the time it took.
pub async fn populate(
    server: &Server,
    total: usize,
    mine: usize,
    agent_id: &str,
) -> anyhow::Result<(Vec<String>, Duration)> {
    let t0 = Instant::now();
    let mut my_ids = Vec::with_capacity(mine);
    let mut done = 0;
    while done < total {
        let n = CREATE_BATCH.min(total - done);
        let specs: Vec<apb::Entry> = (done..done + n)
            .map(|i| {
                let parent = if i < mine {
                    agent_id.to_string()
                } else {
                    format!("spiffe://{TRUST_DOMAIN}/bench/node/{}", i % 100)
                };
                entry(
                    &format!("spiffe://{TRUST_DOMAIN}/bench/scale/w{i}"),
                    &parent,
                    &[
                        ("unix", &format!("uid:{}", 1000 + i % 5000)),
                        ("unix", "gid:1000"),
                    ],
                )
            })
            .collect();
        let ids = server.create_entries(specs, CREATE_BATCH).await?;
        my_ids.extend(ids.into_iter().take(mine.saturating_sub(done)));
        done += n;
    }
    Ok((my_ids, t0.elapsed()))
}

pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<Server> {
    let total = ctx.size(100_000, 5_000);
    let mine = ctx.size(10_000, 1_000);
    note(format!("scale: {total} entries, {mine} for one agent"));
    let server = Server::start().await?;
    let token = server.join_token().await?;
    let agent_id = sigil_tests::join_token_agent_id(TRUST_DOMAIN, &token);
    let (my_ids, took) = bounded(
        "creating the entries",
        Duration::from_secs(600),
        populate(&server, total, mine, &agent_id),
    )
    .await?;
    report.fig(S, "entries", total as f64, "entries", Target::None);
    report.fig(
        S,
        "entries_created_per_sec",
        total as f64 / took.as_secs_f64(),
        "entry/s",
        Target::None,
    );
    report.fig(
        S,
        "server_rss_mib",
        rss_mib(server.pid()?)?,
        "MiB",
        Target::AtMost(512.0),
    );

    // The agent: attest, then a full sync.
    let bundle = server.bundle().await?;
    let ident = crate::procs::attest_simulated(server.agent_addr, &bundle, token).await?;
    let mut c =
        agent_client::connect(server.agent_addr, bundle, TRUST_DOMAIN, Some(&ident)).await?;
    let t0 = Instant::now();
    let mut stream = c
        .sync_entries(pb::SyncEntriesRequest {
            since_revision: 0,
            page_size: 0,
        })
        .await?
        .into_inner();
    let mut synced = 0usize;
    let mut sync_bytes = 0usize;
    bounded("the full sync", Duration::from_secs(120), async {
        loop {
            let m = stream.message().await?.context("sync stream ended")?;
            sync_bytes += m.encoded_len();
            if let Some(pb::sync_entries_response::Kind::Page(p)) = m.kind {
                synced += p.entries.len();
                if p.last {
                    return Ok(());
                }
            }
        }
    })
    .await?;
    let full = t0.elapsed();
    if synced != mine {
        bail!("the full sync sent {synced} entries; the agent is authorized for {mine}");
    }
    report.fig(S, "agent_entries", mine as f64, "entries", Target::None);
    report.fig(S, "full_sync_ms", ms(full), "ms", Target::None);
    report.fig(
        S,
        "full_sync_bytes",
        sync_bytes as f64,
        "bytes",
        Target::None,
    );

    // One change: what goes out for it.
    let mut admin = server.admin().await?;
    admin
        .update_entry(apb::UpdateEntryRequest {
            id: my_ids[mine / 2].clone(),
            hint: Some("changed".into()),
            ..Default::default()
        })
        .await?;
    let (entries, bytes) = bounded(
        "the change reaching the agent",
        Duration::from_secs(30),
        async {
            loop {
                let m = stream.message().await?.context("sync stream ended")?;
                let len = m.encoded_len();
                match m.kind {
                    Some(pb::sync_entries_response::Kind::Change(ch)) => {
                        if ch.entry_id != my_ids[mine / 2] {
                            bail!("change for an unexpected entry {}", ch.entry_id);
                        }
                        return Ok((1usize, len));
                    }
                    Some(pb::sync_entries_response::Kind::Page(p)) => {
                        return Ok((p.entries.len(), len));
                    }
                    _ => {}
                }
            }
        },
    )
    .await?;
    report.fig(
        S,
        "changed_entries_sent",
        entries as f64,
        "entries",
        Target::AtMost(1.0),
    );
    report.fig(S, "changed_bytes_sent", bytes as f64, "bytes", Target::None);
    Ok(server)
}
