//! P1 `issuance`: SVIDs per second through the agent API of a real
//! `sigil-server`: several simulated agents (join-token attested, each on
//! its own mTLS connection) send batched CSRs for entries they are
//! authorized for, all at once; the CSRs are made before the clock starts.
//! Then the same CSRs go through `cfssl serve` at the same concurrency.

use std::time::{Duration, Instant};

use anyhow::bail;
use sigil_proto::agent_api as pb;
use sigil_tests::agent_client;

use crate::cfssl;
use crate::common::{Ctx, Figure, Report, Target, bounded, note};
use crate::limit::{Limit, key_and_csr};
use crate::procs::{Server, TRUST_DOMAIN, entry};

const S: &str = "issuance";
/// CSRs per SignSvids call (the agent's own batch size is 500).
const BATCH: usize = 100;

pub async fn run(ctx: &Ctx, limit: &Limit, report: &mut Report) -> anyhow::Result<()> {
    let agents = ctx.size(8, 4);
    let total = ctx.size(16_000, 1_600);
    let entries_per_agent = ctx.size(100, 20);
    note(format!(
        "issuance: {agents} agents, {total} CSRs in batches of {BATCH}"
    ));
    let server = Server::start().await?;
    let bundle = server.bundle().await?;

    // Attest the agents and give each its entries.
    let mut clients = Vec::new();
    let mut work = Vec::new();
    for a in 0..agents {
        let token = server.join_token().await?;
        let ident = crate::procs::attest_simulated(server.agent_addr, &bundle, token).await?;
        let specs = (0..entries_per_agent)
            .map(|e| {
                entry(
                    &format!("spiffe://{TRUST_DOMAIN}/bench/agent{a}/w{e}"),
                    &ident.id,
                    &[("unix", &format!("uid:{}", 10_000 + e))],
                )
            })
            .collect();
        let ids = server.create_entries(specs, 1000).await?;
        clients.push(
            agent_client::connect(
                server.agent_addr,
                bundle.clone(),
                TRUST_DOMAIN,
                Some(&ident),
            )
            .await?,
        );
        work.push(ids);
    }

    // Every CSR, before the clock.
    let per_agent = total / agents;
    let mut csrs: Vec<Vec<u8>> = Vec::with_capacity(per_agent * agents);
    for _ in 0..per_agent * agents {
        csrs.push(key_and_csr()?.1);
    }
    let batches: Vec<Vec<Vec<pb::SvidRequest>>> = work
        .iter()
        .enumerate()
        .map(|(a, ids)| {
            let mine = &csrs[a * per_agent..(a + 1) * per_agent];
            mine.chunks(BATCH)
                .enumerate()
                .map(|(b, chunk)| {
                    chunk
                        .iter()
                        .enumerate()
                        .map(|(i, csr)| pb::SvidRequest {
                            entry_id: ids[(b * BATCH + i) % ids.len()].clone(),
                            csr: csr.clone(),
                        })
                        .collect()
                })
                .collect()
        })
        .collect();

    // Warm up: one small call per agent (connections, TLS, caches).
    for (c, ids) in clients.iter_mut().zip(&work) {
        let r = c
            .sign_svids(pb::SignSvidsRequest {
                requests: vec![pb::SvidRequest {
                    entry_id: ids[0].clone(),
                    csr: key_and_csr()?.1,
                }],
            })
            .await?
            .into_inner();
        check(&r)?;
    }

    let t0 = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .zip(batches)
        .map(|(mut c, batches)| {
            tokio::spawn(async move {
                let mut n = 0;
                for b in batches {
                    let r = c
                        .sign_svids(pb::SignSvidsRequest { requests: b })
                        .await?
                        .into_inner();
                    n += check(&r)?;
                }
                anyhow::Ok(n)
            })
        })
        .collect();
    let mut signed = 0;
    bounded(
        "signing through the agent API",
        Duration::from_secs(300),
        async {
            for t in tasks {
                signed += t.await??;
            }
            Ok(())
        },
    )
    .await?;
    let took = t0.elapsed();
    let rate = signed as f64 / took.as_secs_f64();
    report.add(Figure {
        scenario: S,
        metric: "svids_per_sec",
        value: rate,
        unit: "SVID/s",
        target: Target::None,
        limit_ratio: Some(limit.ratio(rate)),
    });
    report.fig(
        S,
        "svids_per_sec_limit_ratio",
        limit.ratio(rate),
        "ratio",
        Target::AtLeast(0.5),
    );
    report.fig(
        S,
        "server_rss_mib",
        crate::common::rss_mib(server.pid()?)?,
        "MiB",
        Target::None,
    );
    drop(server);

    // The same CSRs through cfssl, at the same concurrency.
    let Some(cfssl_bin) = cfssl::find() else {
        note("issuance: cfssl not on PATH (apt-get install golang-cfssl); cfssl baseline skipped");
        return Ok(());
    };
    let n = ctx.size(4_000, 400).min(csrs.len());
    let pems: Vec<String> = csrs[..n]
        .iter()
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der.clone())))
        .collect();
    let dir = tempfile::tempdir()?;
    let cf = cfssl::Cfssl::start(&cfssl_bin, dir.path()).await?;
    note(format!(
        "issuance: {n} CSRs through cfssl serve, {agents} connections"
    ));
    let cf_rate = cfssl::sign_all(cf.addr, pems, agents).await?;
    report.add(Figure {
        scenario: S,
        metric: "cfssl_svids_per_sec",
        value: cf_rate,
        unit: "cert/s",
        target: Target::None,
        limit_ratio: Some(limit.ratio(cf_rate)),
    });
    report.fig(
        S,
        "cfssl_ratio",
        rate / cf_rate,
        "ratio",
        Target::AtLeast(2.0),
    );
    Ok(())
}

/// Number of SVIDs in a response; an error if any item failed.
fn check(r: &pb::SignSvidsResponse) -> anyhow::Result<usize> {
    let mut n = 0;
    for item in &r.results {
        match &item.result {
            Some(pb::svid_result::Result::Svid(s)) if !s.cert_chain.is_empty() => n += 1,
            other => bail!("signing entry {} failed: {other:?}", item.entry_id),
        }
    }
    Ok(n)
}
