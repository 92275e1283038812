//! `limit`: what the cryptography allows on these cores, with the libraries
//! Sigil uses. The server's share of one issuance is parsing and verifying
//! a P-256 CSR and signing a leaf ([`csr::csr_public_key`] +
//! [`X509Ca::sign_leaf`], the code the agent API runs); the agent's share is
//! a fresh P-256 key and its CSR (what the agent's cache does). Both run on
//! every core at once for a fixed time.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use sigil_proto::SpiffeId;
use sigil_server::ca::X509Ca;
use sigil_server::ca::csr;
use sigil_server::store::SlotId;

use crate::common::{Ctx, Figure, Report, Target, note};

const S: &str = "limit";

/// The limit of this run.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Server share (CSR verify + leaf sign) per second over all cores.
    pub server_per_sec: f64,
}

impl Limit {
    /// `svids_per_sec` as a fraction of the server-side limit.
    pub fn ratio(&self, svids_per_sec: f64) -> f64 {
        svids_per_sec / self.server_per_sec
    }
}

/// A fresh P-256 key and its CSR, as the agent makes them.
pub fn key_and_csr() -> anyhow::Result<(KeyPair, Vec<u8>)> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr = CertificateParams::default().serialize_request(&key)?;
    Ok((key, csr.der().to_vec()))
}

/// A throwaway P-256 CA, as Sigil's CA signs with.
pub fn test_ca() -> anyhow::Result<X509Ca> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(1);
    let cert = p.self_signed(&key)?;
    Ok(X509Ca::new(SlotId::A, key, vec![cert.der().to_vec()])?)
}

/// Runs `op` on `threads` threads for `window`; operations per second in
/// total.
fn on_all_cores(
    threads: usize,
    window: Duration,
    op: impl Fn(usize) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let counts = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let op = &op;
                s.spawn(move || -> anyhow::Result<u64> {
                    let end = Instant::now() + window;
                    let mut n = 0u64;
                    while Instant::now() < end {
                        op(t * 1_000_003 + n as usize)?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("limit thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<u64>>>()
    })?;
    let secs = t0.elapsed().as_secs_f64();
    Ok(counts.iter().sum::<u64>() as f64 / secs)
}

pub fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<Limit> {
    let window = Duration::from_millis(ctx.size(2000, 400) as u64);
    note(format!(
        "limit: {} cores, {} ms per measurement",
        ctx.cores,
        window.as_millis()
    ));
    let ca = test_ca()?;
    let id = SpiffeId::parse("spiffe://example.org/bench/limit")?;
    let csrs: Vec<Vec<u8>> = (0..256)
        .map(|_| key_and_csr().map(|(_, c)| c))
        .collect::<anyhow::Result<_>>()?;
    let ttl = Duration::from_secs(3600);
    let server = on_all_cores(ctx.cores, window, |i| {
        let key = csr::csr_public_key(&csrs[i % csrs.len()]).map_err(anyhow::Error::msg)?;
        ca.sign_leaf(&id, &[], ttl, &key, SystemTime::now())
            .context("sign_leaf")?;
        Ok(())
    })?;
    let agent = on_all_cores(ctx.cores, window, |_| {
        key_and_csr()?;
        Ok(())
    })?;
    let per_core = |v: f64| v / ctx.cores as f64;
    report.fig(S, "cores", ctx.cores as f64, "cores", Target::None);
    report.fig(
        S,
        "server_sign_per_sec_per_core",
        per_core(server),
        "ops/s",
        Target::None,
    );
    report.fig(
        S,
        "agent_keygen_csr_per_sec_per_core",
        per_core(agent),
        "ops/s",
        Target::None,
    );
    report.add(Figure {
        scenario: S,
        metric: "server_sign_per_sec",
        value: server,
        unit: "ops/s",
        target: Target::None,
        limit_ratio: Some(1.0),
    });
    Ok(Limit {
        server_per_sec: server,
    })
}
