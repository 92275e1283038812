//! `flood` (issue 21, "What must be shown"): legitimate latency without and
//! under a connection flood, in one run. Legitimate traffic is measured two
//! ways, each sample on a new connection: a workload's `FetchX509SVID` over
//! the agent's socket (to the first message), and the agent API as a
//! renewing agent uses it (mTLS handshake with its SVID, then `SignSvids`
//! of one CSR). The attack, bounded in count and time, comes from another
//! loopback address than the agents (127.0.0.2; agents use 127.0.0.1), as
//! from another host: idle TLS connections to the server's agent API (handshake without
//! a client certificate, then silence) and half-open TCP connections (no
//! TLS at all), plus idle connections to the agent's socket from another
//! uid (`sigil-test-attacker idle`, as uid 65533: root only, since the
//! per-uid cap would otherwise refuse the legitimate workload too). Prints
//! the p99 of both, and the ratio under attack / without.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rustls_pki_types::ServerName;
use sigil_proto::agent_api as pb;
use sigil_proto::tls::TrustRoots;
use sigil_proto::workload as wpb;
use sigil_tests::agent_client;

use crate::common::{Ctx, Report, Target, bounded, ms, note, percentile, rss_mib};
use crate::limit::key_and_csr;
use crate::procs::{TRUST_DOMAIN, attest_simulated, bin, entry};
use crate::workload_api;

const S: &str = "flood";
/// The uid the socket attacker runs as (root only).
const ATTACKER_UID: u32 = 65533;
/// Samples of each kind before the measured ones.
const WARM_UP: usize = 5;
/// Longest any one legitimate sample may take.
const SAMPLE_LIMIT: Duration = Duration::from_secs(20);

pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let samples = ctx.size(200, 40);
    // Each phase's samples stop after this long (failed samples under
    // attack can take up to SAMPLE_LIMIT each).
    let budget = Duration::from_secs(ctx.size(120, 15) as u64);
    let tls_conns = ctx.size(3_000, 300);
    let tcp_conns = ctx.size(1_000, 100);
    // Full: more than the bench agent's per-uid connection cap (1,100,
    // see `procs::Agent`), so the cap is hit.
    let socket_conns = ctx.size(3_000, 300);
    note(format!(
        "flood: {samples} samples each; attack: {tls_conns} idle TLS + {tcp_conns} half-open TCP \
         connections to the agent API, {socket_conns} idle socket connections"
    ));
    let setup = workload_api::setup().await?;
    let server = &setup.server;
    let bundle = server.bundle().await?;

    // A simulated agent with one entry: what a renewal signs.
    let ident = attest_simulated(server.agent_addr, &bundle, server.join_token().await?).await?;
    let ids = server
        .create_entries(
            vec![entry(
                &format!("spiffe://{TRUST_DOMAIN}/bench/flood"),
                &ident.id,
                &[("unix", "uid:10000")],
            )],
            1,
        )
        .await?;
    let entry_id = ids.into_iter().next().context("entry id")?;
    let mut csrs = Vec::with_capacity(2 * samples + WARM_UP);
    for _ in 0..2 * samples + WARM_UP {
        csrs.push(key_and_csr()?.1);
    }
    let legit = Legit {
        socket: setup.agent.socket.clone(),
        addr: server.agent_addr,
        bundle: bundle.clone(),
        ident,
        entry_id,
    };

    // Warm-up (first connections, caches), then without attack.
    legit.measure(WARM_UP, budget, &mut csrs).await?;
    let (mut w0, mut a0) = legit.measure(samples, budget, &mut csrs).await?;

    // The attack.
    let td = sigil_proto::TrustDomain::parse(TRUST_DOMAIN)?;
    let cfg = sigil_agent::server_client::tls_config(&TrustRoots::new(bundle)?, &td, None)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let attack_started = Instant::now();
    let mut socket_attacker = SocketAttacker::start(&setup.agent.socket, socket_conns)?;
    let socket_attacker_ran = socket_attacker.is_some();
    let (tls_open, tcp_open, held) = bounded(
        "opening the attack connections",
        Duration::from_secs(120),
        open_attack(server.agent_addr, connector, tls_conns, tcp_conns),
    )
    .await?;
    note(format!(
        "flood: attack open after {:.1}s: {tls_open} TLS, {tcp_open} TCP",
        attack_started.elapsed().as_secs_f64()
    ));
    let (mut w1, mut a1) = legit.measure(samples, budget, &mut csrs).await?;
    let server_fds = fd_count(server.pid()?);
    let agent_fds = fd_count(setup.agent.pid()?);
    let server_rss = rss_mib(server.pid()?)?;
    drop(held);
    drop(socket_attacker.take());

    for (name, v) in [
        ("workload_fetch_failed", &w0),
        ("workload_fetch_failed_attack", &w1),
        ("agent_api_sign_failed", &a0),
        ("agent_api_sign_failed_attack", &a1),
    ] {
        report.fig(S, name, v.failed as f64, "samples", Target::AtMost(0.0));
    }
    let (w0, w1) = (w0.p99(), w1.p99());
    let (a0, a1) = (a0.p99(), a1.p99());
    for (names, without, under) in [
        (
            [
                "workload_fetch_p99_ms",
                "workload_fetch_p99_attack_ms",
                "workload_fetch_p99_ratio",
            ],
            w0,
            w1,
        ),
        (
            [
                "agent_api_sign_p99_ms",
                "agent_api_sign_p99_attack_ms",
                "agent_api_sign_p99_ratio",
            ],
            a0,
            a1,
        ),
    ] {
        report.fig(S, names[0], without, "ms", Target::None);
        report.fig(S, names[1], under, "ms", Target::None);
        report.fig(S, names[2], under / without, "x", Target::AtMost(3.0));
    }
    report.fig(
        S,
        "attack_tls_conns_open",
        tls_open as f64,
        "conns",
        Target::None,
    );
    report.fig(
        S,
        "attack_tcp_conns_open",
        tcp_open as f64,
        "conns",
        Target::None,
    );
    report.fig(
        S,
        "attack_socket_uid",
        if socket_attacker_ran { 1.0 } else { 0.0 },
        "bool",
        Target::None,
    );
    report.fig(
        S,
        "server_fds_attack",
        server_fds as f64,
        "fds",
        Target::None,
    );
    report.fig(S, "server_rss_attack_mib", server_rss, "MiB", Target::None);
    report.fig(S, "agent_fds_attack", agent_fds as f64, "fds", Target::None);
    Ok(())
}

/// What the legitimate samples need.
struct Legit {
    socket: std::path::PathBuf,
    addr: std::net::SocketAddr,
    bundle: Vec<Vec<u8>>,
    ident: agent_client::AgentIdentity,
    entry_id: String,
}

/// One kind's samples: latencies in ms of those that succeeded, and how
/// many failed (p99 is over the successes; NaN when all failed).
#[derive(Default)]
struct Samples {
    ms: Vec<f64>,
    failed: usize,
}

impl Samples {
    fn add(&mut self, t0: Instant, r: anyhow::Result<()>, what: &str) {
        if let Err(e) = r {
            if self.failed == 0 {
                note(format!("flood: {what} failed: {e:#}"));
            }
            self.failed += 1;
        } else {
            self.ms.push(ms(t0.elapsed()));
        }
    }

    fn p99(&mut self) -> f64 {
        percentile(&mut self.ms, 99.0)
    }
}

impl Legit {
    /// Up to `n` samples of each kind, interleaved, for at most `budget`.
    async fn measure(
        &self,
        n: usize,
        budget: Duration,
        csrs: &mut Vec<Vec<u8>>,
    ) -> anyhow::Result<(Samples, Samples)> {
        let (mut w, mut a) = (Samples::default(), Samples::default());
        let end = Instant::now() + budget;
        for _ in 0..n {
            if Instant::now() > end {
                note("flood: sample budget spent");
                break;
            }
            let t0 = Instant::now();
            let r = bounded("a workload fetch", SAMPLE_LIMIT, async {
                let mut c = sigil_agent::workload_client::connect(&self.socket).await?;
                let mut s = c
                    .fetch_x509svid(wpb::X509svidRequest {})
                    .await?
                    .into_inner();
                let m = s.message().await?.context("stream ended")?;
                anyhow::ensure!(!m.svids.is_empty(), "no SVID");
                Ok(())
            })
            .await;
            w.add(t0, r, "a workload fetch");

            let csr = csrs.pop().context("out of CSRs")?;
            let t0 = Instant::now();
            let r = bounded("an agent API renewal", SAMPLE_LIMIT, async {
                let mut c = agent_client::connect(
                    self.addr,
                    self.bundle.clone(),
                    TRUST_DOMAIN,
                    Some(&self.ident),
                )
                .await?;
                let r = c
                    .sign_svids(pb::SignSvidsRequest {
                        requests: vec![pb::SvidRequest {
                            entry_id: self.entry_id.clone(),
                            csr,
                        }],
                    })
                    .await?
                    .into_inner();
                anyhow::ensure!(r.results.len() == 1, "one result expected");
                Ok(())
            })
            .await;
            a.add(t0, r, "an agent API renewal");
        }
        Ok((w, a))
    }
}

/// The attack's source address: another host, as far as the server's
/// per-IP cap can tell.
const ATTACK_SOURCE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 2);

/// A TCP connection to `addr` from [`ATTACK_SOURCE`].
async fn connect_from_attacker(
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((ATTACK_SOURCE, 0).into())?;
    socket.connect(addr).await
}

/// The connections the attack holds open (closed when dropped).
#[derive(Default)]
struct Held {
    _tls: Vec<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    _tcp: Vec<tokio::net::TcpStream>,
}

/// Opens up to `tls` idle TLS connections (handshake without a client
/// certificate, then nothing) and `tcp` half-open TCP connections to
/// `addr` from [`ATTACK_SOURCE`], 64 at a time; returns how many of each
/// opened and the held connections. Failures (refused, reset, timed out)
/// are counted out.
async fn open_attack(
    addr: std::net::SocketAddr,
    connector: tokio_rustls::TlsConnector,
    tls: usize,
    tcp: usize,
) -> anyhow::Result<(usize, usize, Held)> {
    let name = ServerName::try_from("sigil-server.invalid")?;
    let mut held = Held::default();
    let (mut tls_open, mut tcp_open) = (0, 0);
    for chunk in (0..tls).collect::<Vec<_>>().chunks(64) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|_| {
                let connector = connector.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let tcp = connect_from_attacker(addr).await.ok()?;
                    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
                        .await
                        .ok()?
                        .ok()
                })
            })
            .collect();
        for t in tasks {
            if let Ok(Some(s)) = t.await {
                tls_open += 1;
                held._tls.push(s);
            }
        }
    }
    for _ in 0..tcp {
        let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(2), connect_from_attacker(addr)).await
        else {
            continue;
        };
        tcp_open += 1;
        held._tcp.push(s);
    }
    Ok((tls_open, tcp_open, held))
}

/// `sigil-test-attacker idle` as another uid against the agent's socket.
struct SocketAttacker {
    child: Child,
    _dir: tempfile::TempDir,
}

impl SocketAttacker {
    /// Starts the attacker (root only; `None` with a note otherwise). It
    /// ends by itself after 300 s at the latest, or when dropped.
    fn start(socket: &std::path::Path, conns: usize) -> anyhow::Result<Option<SocketAttacker>> {
        if !nix::unistd::getuid().is_root() {
            note("flood: not root: no socket attack (it needs a uid of its own)");
            return Ok(None);
        }
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let copy = dir.path().join("sigil-test-attacker");
        std::fs::copy(bin("sigil-test-attacker")?, &copy)?;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
        let child = Command::new(&copy)
            .uid(ATTACKER_UID)
            .gid(ATTACKER_UID)
            .arg("idle")
            .arg(socket)
            .arg(conns.to_string())
            .arg("300")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting sigil-test-attacker")?;
        Ok(Some(SocketAttacker { child, _dir: dir }))
    }
}

impl Drop for SocketAttacker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Open file descriptors of `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}
