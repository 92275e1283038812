//! `proxy` (issue 18): what `sigil-agent proxy` costs. One agent, an entry
//! for this uid, an echo backend behind an inbound proxy and an outbound
//! proxy dialling it; the baseline is a direct rustls mTLS client and echo
//! server in this process with the same SVID. Figures: the latency added
//! per request (64-byte echo on one open connection, through outbound +
//! inbound, minus the direct mTLS round trip; p50 and p99), and new mTLS
//! handshakes per second (a new connection, one byte echoed, closed; 8 at
//! a time) through the proxies against the direct baseline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sigil_proto::SpiffeId;
use sigil_proto::tls::{
    SpiffeClientVerifier, SpiffeServerVerifier, TrustRoots, authorize_exact, client_config,
    server_config,
};
use sigil_proto::workload as wpb;
use sigil_tests::proxy::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{Ctx, Report, Target, bounded, ms, note, percentile};
use crate::procs::{Agent, Server, TRUST_DOMAIN, bin, entry};

const S: &str = "proxy";
/// Concurrent connections in the handshake figure.
const PARALLEL: usize = 8;

async fn echo(mut s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn plain_echo() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(echo(s));
        }
    });
    Ok(addr)
}

/// This process's SVID (chain, PKCS#8 key) and bundle.
async fn own_svid(agent: &Agent) -> anyhow::Result<(Vec<Vec<u8>>, Vec<u8>, Vec<Vec<u8>>)> {
    let mut c = sigil_agent::workload_client::connect(&agent.socket).await?;
    let mut s = c
        .fetch_x509svid(wpb::X509svidRequest {})
        .await?
        .into_inner();
    let r = s.message().await?.context("no SVID")?;
    let svid = r.svids.into_iter().next().context("no SVID")?;
    Ok((
        sigil_proto::pem::certs_from_pem_or_der(&svid.x509_svid)?,
        svid.x509_svid_key,
        sigil_proto::pem::certs_from_pem_or_der(&svid.bundle)?,
    ))
}

type BoxFut = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Conn>> + Send>>;
/// Opens one connection to the echo server, through the proxies or direct.
type Dial = Arc<dyn Fn() -> BoxFut + Send + Sync>;

/// A connection of either kind.
pub type Conn = Box<dyn sigil_agent::proxy::pipe::Io>;

/// Round trips of 64 bytes on one connection: latencies in ms.
async fn round_trips(dial: &Dial, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut c = dial().await?;
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n + n / 10 {
        let t = Instant::now();
        c.write_all(&msg).await?;
        c.read_exact(&mut back).await?;
        out.push(ms(t.elapsed()));
    }
    // The first tenth warms up.
    Ok(out.split_off(n / 10))
}

/// New connections per second, `PARALLEL` at a time, for `span`.
async fn handshakes(dial: &Dial, span: Duration) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..PARALLEL {
        let dial = dial.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < span {
                let mut c = dial().await?;
                c.write_all(b"x").await?;
                let mut b = [0u8; 1];
                c.read_exact(&mut b).await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

pub async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let server = Server::start().await?;
    let agent = Agent::start(&server).await?;
    let uid = nix::unistd::getuid().as_raw();
    let id = format!("spiffe://{TRUST_DOMAIN}/bench/proxy");
    server
        .create_entries(
            vec![entry(
                &id,
                &agent.agent_id,
                &[("unix", &format!("uid:{uid}"))],
            )],
            1,
        )
        .await?;
    let (chain, key, bundle) = bounded("the bench SVID", Duration::from_secs(30), async {
        loop {
            if let Ok(x) = own_svid(&agent).await {
                return Ok(x);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?;

    // Through the proxies.
    let backend = plain_echo().await?;
    let dir = tempfile::tempdir()?;
    let in_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let out_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let h1 = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let h2 = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let sock = agent.socket.display().to_string();
    let agent_bin = bin("sigil-agent")?;
    let d = dir.path().to_path_buf();
    let (inbound, outbound) = tokio::task::spawn_blocking(move || {
        let i = Proxy::start(
            &agent_bin,
            &d,
            "inbound",
            &format!(
                "agent_address = \"unix://{sock}\"\n[[inbound]]\nlisten = \"{in_addr}\"\n\
                      backend = \"{backend}\"\nallow = [\"spiffe://{TRUST_DOMAIN}/bench/proxy\"]\n"
            ),
            h1,
            None,
        )?;
        let o = Proxy::start(
            &agent_bin,
            &d,
            "outbound",
            &format!(
                "agent_address = \"unix://{sock}\"\n[[outbound]]\nlisten = \"{out_addr}\"\n\
                      target = \"{in_addr}\"\nserver_id = \"spiffe://{TRUST_DOMAIN}/bench/proxy\"\n"
            ),
            h2,
            None,
        )?;
        anyhow::Ok((i, o))
    })
    .await??;
    let proxied: Dial = Arc::new(move || {
        Box::pin(async move {
            let s = TcpStream::connect(out_addr).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s) as Conn)
        })
    });

    // The direct rustls <-> rustls baseline, same SVID.
    let sid = SpiffeId::parse(&id)?;
    let roots = TrustRoots::new(bundle)?;
    let certs: Vec<CertificateDer<'static>> = chain.into_iter().map(Into::into).collect();
    let pkey = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.clone()));
    let scfg = server_config(
        certs.clone(),
        pkey(),
        Arc::new(SpiffeClientVerifier::new(
            roots.clone(),
            authorize_exact(sid.clone()),
        )),
    )?;
    let ccfg = client_config(
        Arc::new(SpiffeServerVerifier::new(roots, authorize_exact(sid))),
        Some((certs, pkey())),
    )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(scfg));
    let tls_l = TcpListener::bind("127.0.0.1:0").await?;
    let tls_addr = tls_l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = tls_l.accept().await {
            let _ = s.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(t) = acceptor.accept(s).await {
                    echo(t).await;
                }
            });
        }
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ccfg));
    let direct: Dial = Arc::new(move || {
        let connector = connector.clone();
        Box::pin(async move {
            let s = TcpStream::connect(tls_addr).await?;
            s.set_nodelay(true)?;
            let t = connector
                .connect(ServerName::try_from("bench.invalid")?, s)
                .await?;
            Ok(Box::new(t) as Conn)
        })
    });

    let n = ctx.size(5_000, 1_000);
    let span = Duration::from_secs(if ctx.quick { 3 } else { 10 });
    let limit = Duration::from_secs(120);
    let mut base = bounded("direct round trips", limit, round_trips(&direct, n)).await?;
    let mut prox = bounded("proxied round trips", limit, round_trips(&proxied, n)).await?;
    let base_hs = bounded("direct handshakes", limit, handshakes(&direct, span)).await?;
    let prox_hs = bounded("proxied handshakes", limit, handshakes(&proxied, span)).await?;
    let (b50, b99) = (percentile(&mut base, 50.0), percentile(&mut base, 99.0));
    let (p50, p99) = (percentile(&mut prox, 50.0), percentile(&mut prox, 99.0));
    note(format!(
        "proxy: direct mTLS round trip p50 {b50:.3} ms p99 {b99:.3} ms; through both proxies \
         p50 {p50:.3} ms p99 {p99:.3} ms; handshakes/s direct {base_hs:.0}, proxied {prox_hs:.0}"
    ));
    report.fig(
        S,
        "added_latency_p50",
        (p50 - b50).max(0.0),
        "ms",
        Target::None,
    );
    report.fig(
        S,
        "added_latency_p99",
        (p99 - b99).max(0.0),
        "ms",
        Target::AtMost(1.0),
    );
    report.fig(S, "handshakes_per_s", prox_hs, "1/s", Target::None);
    report.fig(S, "handshakes_baseline_per_s", base_hs, "1/s", Target::None);
    report.fig(
        S,
        "handshakes_vs_baseline",
        prox_hs / base_hs.max(1e-9),
        "ratio",
        Target::AtLeast(0.5),
    );
    drop((inbound, outbound));
    Ok(())
}
