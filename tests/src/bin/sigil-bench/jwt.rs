//! `jwt` (issue 15): one real `sigil-agent` serving a JWT-SVID entry for
//! this process's uid. `FetchJWTSVID` latency with the token cached (the
//! same audience again: the agent answers from its cache) and uncached (a
//! new audience each call: the agent asks the server to mint), sequential
//! calls on one connection; then `ValidateJWTSVID` throughput through the
//! agent, in the same run, twice: the same token again (the agent answers
//! from its verified-token cache after re-checking everything but the
//! signature) and through a second agent with that cache off, where every
//! call verifies the signature. For scale, the validator alone
//! (`sigil_proto::jwt`, in this process, one thread) is reported too, with
//! the bundle keys parsed per call and prepared once.
//!
//! Throughput "per core": during a `ValidateJWTSVID` phase the agent runs
//! on one CPU of its own and the bench's clients on the others (see
//! `pin`), so the calls per second are what the agent does on one core,
//! and the clients' own gRPC work is not counted against it. The clients
//! are [`CONNECTIONS`] connections with [`IN_FLIGHT`] calls in flight on
//! each, as a relying party validating the tokens of concurrent requests
//! over one gRPC channel does. How busy the agent's core was is reported
//! beside it, and so is the rate per CPU second the agent used. On a
//! machine with one CPU nothing is pinned and the figure is per machine
//! core.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sigil_proto::workload as wpb;

use crate::common::{Ctx, Report, Target, bounded, ms, note, percentile};
use crate::procs::Agent;
use crate::workload_api::setup;

const S: &str = "jwt";

async fn fetch(
    c: &mut sigil_agent::workload_client::Client,
    audience: &str,
) -> anyhow::Result<String> {
    let r = c
        .fetch_jwtsvid(wpb::JwtsvidRequest {
            audience: vec![audience.to_string()],
            spiffe_id: String::new(),
        })
        .await?
        .into_inner();
    Ok(r.svids.first().context("no JWT-SVID")?.svid.clone())
}

/// Latencies (ms) of `n` sequential fetches; `audience(i)` names each.
async fn fetches(
    c: &mut sigil_agent::workload_client::Client,
    n: usize,
    audience: impl Fn(usize) -> String,
) -> anyhow::Result<Vec<f64>> {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        fetch(c, &audience(i)).await?;
        lat.push(ms(t0.elapsed()));
    }
    Ok(lat)
}

pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let (cached_n, uncached_n) = (ctx.size(5000, 500), ctx.size(500, 100));
    let window = Duration::from_secs(ctx.size(5, 2) as u64);
    note(format!(
        "jwt: FetchJWTSVID x{cached_n} cached and x{uncached_n} uncached (sequential), then \
         ValidateJWTSVID over {CONNECTIONS} connections x {IN_FLIGHT} calls in flight for \
         {window:?}, the agent on a core of its own"
    ));
    let st = setup().await?;
    let mut c = sigil_agent::workload_client::connect(&st.agent.socket).await?;
    let token = bounded("the first JWT-SVID", Duration::from_secs(30), async {
        loop {
            match fetch(&mut c, "bench-cached").await {
                Ok(t) => return Ok(t),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await?;

    let mut cached = bounded(
        "cached FetchJWTSVID",
        Duration::from_secs(120),
        fetches(&mut c, cached_n, |_| "bench-cached".to_string()),
    )
    .await?;
    let mut uncached = bounded(
        "uncached FetchJWTSVID",
        Duration::from_secs(300),
        fetches(&mut c, uncached_n, |i| format!("bench-new-{i}")),
    )
    .await?;

    // ValidateJWTSVID through the agent, from `clients` connections at once:
    // the same token again (answered from the agent's verified-token
    // cache), then through a second agent with that cache off, where every
    // call verifies the signature.
    let repeated = validate_rate(&st.agent, &token, window).await?;
    let uncached_agent =
        Agent::start_with(&st.server, "workload_api_jwt_validation_cache = 0\n").await?;
    bounded(
        "the cache-less agent's JWT keys",
        Duration::from_secs(30),
        async {
            loop {
                let mut c = sigil_agent::workload_client::connect(&uncached_agent.socket).await?;
                let r = c
                    .validate_jwtsvid(wpb::ValidateJwtsvidRequest {
                        audience: "bench-cached".into(),
                        svid: token.clone(),
                    })
                    .await;
                if r.is_ok() {
                    return anyhow::Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await?;
    let verified = validate_rate(&uncached_agent, &token, window).await?;

    // The validator alone, one thread, against the agent's own view of the
    // bundle (the JWKS of FetchJWTBundles): keys parsed per call
    // (`validate`), and prepared once (`validate_with`, as the agent does).
    let (in_process, prepared) = validator_rates(&mut c, &token, Duration::from_secs(1)).await?;

    report.fig(
        S,
        "fetch_cached_p50_ms",
        percentile(&mut cached, 50.0),
        "ms",
        Target::None,
    );
    report.fig(
        S,
        "fetch_cached_p99_ms",
        percentile(&mut cached, 99.0),
        "ms",
        Target::AtMost(5.0),
    );
    report.fig(
        S,
        "fetch_uncached_p50_ms",
        percentile(&mut uncached, 50.0),
        "ms",
        Target::None,
    );
    report.fig(
        S,
        "fetch_uncached_p99_ms",
        percentile(&mut uncached, 99.0),
        "ms",
        Target::None,
    );
    for (names, rate, target) in [
        // The target: ValidateJWTSVID per second per core.
        (
            [
                "validate_repeated_token_per_s_agent_on_one_core",
                "validate_repeated_token_per_s_per_core",
                "validate_repeated_token_agent_core_busy",
                "validate_repeated_token_per_agent_cpu_s",
            ],
            repeated,
            Target::AtLeast(20_000.0),
        ),
        // Every call an ECDSA verification: bounded by the validator
        // alone (`validator_prepared_keys_in_process_per_s_one_core`).
        (
            [
                "validate_signature_verified_per_s_agent_on_one_core",
                "validate_signature_verified_per_s_per_core",
                "validate_signature_verified_agent_core_busy",
                "validate_signature_verified_per_agent_cpu_s",
            ],
            verified,
            Target::None,
        ),
    ] {
        let [pinned, unpinned, busy, per_cpu_s] = names;
        report.fig(
            S,
            if rate.agent_cores == 1 {
                pinned
            } else {
                unpinned
            },
            rate.per_s / rate.agent_cores as f64,
            "/s/core",
            target,
        );
        // The share of its core(s) the agent used: below 1, the clients did
        // not saturate it and the figure above is a floor.
        report.fig(
            S,
            busy,
            rate.agent_cpu_s / rate.elapsed_s / rate.agent_cores as f64,
            "core",
            Target::None,
        );
        // Calls per second of CPU time the agent itself used in the phase
        // (utime + stime of its process).
        report.fig(
            S,
            per_cpu_s,
            rate.per_s * rate.elapsed_s / rate.agent_cpu_s.max(f64::EPSILON),
            "/cpu-s",
            Target::None,
        );
    }
    report.fig(
        S,
        "validator_in_process_per_s_one_core",
        in_process,
        "/s",
        Target::None,
    );
    report.fig(
        S,
        "validator_prepared_keys_in_process_per_s_one_core",
        prepared,
        "/s",
        Target::None,
    );
    Ok(())
}

/// Connections the `ValidateJWTSVID` clients open.
const CONNECTIONS: usize = 4;
/// Calls each connection keeps in flight (HTTP/2 streams at once).
const IN_FLIGHT: usize = 8;

/// A `ValidateJWTSVID` load phase.
#[derive(Clone, Copy)]
struct Rate {
    /// Calls per wall-clock second.
    per_s: f64,
    /// The phase's length.
    elapsed_s: f64,
    /// CPU seconds the agent used in the phase.
    agent_cpu_s: f64,
    /// CPUs the agent could run on in the phase (1 when pinned).
    agent_cores: usize,
}

/// CPU seconds (user + system, all threads) `pid` has used so far: fields
/// 14 and 15 of `/proc/<pid>/stat`, in clock ticks of `USER_HZ`, which the
/// kernel's ABI fixes at 100 per second on Linux.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    const USER_HZ: f64 = 100.0;
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Field 2 (the command) may hold spaces: count from after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path}: no ')' after the command name"))?;
    let field = |n: usize| -> anyhow::Result<u64> {
        rest.split_ascii_whitespace()
            .nth(n - 3)
            .with_context(|| format!("{path}: no field {n}"))?
            .parse()
            .with_context(|| format!("{path}: field {n} is not a number"))
    };
    Ok((field(14)? + field(15)?) as f64 / USER_HZ)
}

/// `ValidateJWTSVID` calls for `token` through `agent` for `window`, from
/// [`CONNECTIONS`] x [`IN_FLIGHT`] concurrent calls, with the agent pinned
/// to one CPU and this process to the others (when there are two or more).
async fn validate_rate(agent: &Agent, token: &str, window: Duration) -> anyhow::Result<Rate> {
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        conns.push(sigil_agent::workload_client::connect(&agent.socket).await?);
    }
    let pid = agent.pid()?;
    let cpus = crate::pin::own_cpus()?;
    let pins = match cpus.split_last() {
        Some((&agent_cpu, rest)) if !rest.is_empty() => Some((
            crate::pin::pin(pid, &[agent_cpu])?,
            crate::pin::pin(std::process::id(), rest)?,
        )),
        _ => None,
    };
    let agent_cores = if pins.is_some() { 1 } else { cpus.len().max(1) };
    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    let ok = Arc::new(AtomicU64::new(0));
    let deadline = started + window;
    let mut tasks = Vec::new();
    for c in conns {
        for _ in 0..IN_FLIGHT {
            // A clone shares the connection: its calls are further streams.
            let (mut c, ok, token) = (c.clone(), ok.clone(), token.to_string());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let r = c
                        .validate_jwtsvid(wpb::ValidateJwtsvidRequest {
                            audience: "bench-cached".into(),
                            svid: token.clone(),
                        })
                        .await?;
                    if r.into_inner().spiffe_id.is_empty() {
                        bail!("validated without a SPIFFE ID");
                    }
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            }));
        }
    }
    bounded(
        "ValidateJWTSVID load",
        window + Duration::from_secs(30),
        async {
            for t in tasks {
                t.await??;
            }
            Ok(())
        },
    )
    .await?;
    let (elapsed, cpu) = (started.elapsed(), cpu_seconds(pid)? - cpu_before);
    drop(pins);
    Ok(Rate {
        per_s: ok.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        agent_cpu_s: cpu,
        agent_cores,
    })
}

/// Validations per second on one thread for `token`, against the own trust
/// domain's JWT bundle as the agent serves it: with
/// `sigil_proto::jwt::validate` (keys parsed per call), then with
/// `validate_with` and keys prepared once.
async fn validator_rates(
    c: &mut sigil_agent::workload_client::Client,
    token: &str,
    window: Duration,
) -> anyhow::Result<(f64, f64)> {
    let mut s = c
        .fetch_jwt_bundles(wpb::JwtBundlesRequest {})
        .await?
        .into_inner();
    let m = s.message().await?.context("no JWT bundles message")?;
    let td = sigil_proto::TrustDomain::parse(crate::procs::TRUST_DOMAIN)?;
    let (_, jwks) = m.bundles.iter().next().context("no JWT bundle")?;
    let bundle = sigil_proto::bundle::decode(&td, jwks)?.bundle;
    let token = token.to_string();
    tokio::task::spawn_blocking(move || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let rate = |f: &dyn Fn() -> Result<(), sigil_proto::jwt::JwtError>| {
            let t0 = Instant::now();
            let mut n = 0u64;
            while t0.elapsed() < window {
                f().map_err(|e| anyhow::anyhow!("{e}"))?;
                n += 1;
            }
            anyhow::Ok(n as f64 / t0.elapsed().as_secs_f64())
        };
        let parsed =
            rate(&|| sigil_proto::jwt::validate(&token, "bench-cached", [&bundle], now).map(drop))?;
        let ring = sigil_proto::jwt::JwtKeyRing::of_bundles([&bundle]);
        let prepared = rate(&|| {
            sigil_proto::jwt::validate_with(&token, "bench-cached", |td| ring.get(td), now)
                .map(drop)
        })?;
        Ok((parsed, prepared))
    })
    .await?
}
