//! `sigil-agent diagnose`: why an mTLS connection fails, as one verdict
//! line plus the evidence. `--cert` judges a chain a peer presents against
//! a bundle file or this workload's own bundles from the Workload API, an
//! allow-list and a check time; `--connect` handshakes with a peer using
//! this workload's own SVID and judges what it presented, whether it asked
//! for a client certificate and whether it accepted ours. Certificates
//! are read in [`facts`], judged in [`judge`] (pure functions over the
//! verdicts of `sigil_proto::tls::verdict`), probed in [`connect`], and
//! printed in [`report`]. Exit 0 only when the connection would succeed.

pub mod connect;
pub mod facts;
pub mod inputs;
pub mod judge;
pub mod report;

use std::path::PathBuf;

use sigil_proto::clock::{Clock, SystemClock, unix_seconds};
use sigil_proto::tls::verdict::{Diagnosis, PeerVerdict, Verdict};
use sigil_proto::{SpiffeId, TrustDomain};

use judge::{Role, judge};
use report::{Output, Report};

/// The command's flags.
#[derive(Debug, clap::Args)]
pub struct DiagnoseArgs {
    /// PEM (or DER) chain a peer presents, leaf first.
    #[arg(long, value_name = "FILE", required_unless_present = "connect")]
    pub cert: Option<PathBuf>,
    /// CA certificates to check --cert against (default: this workload's
    /// bundles from the Workload API).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub bundle: Option<PathBuf>,
    /// The Workload API socket (default: SPIFFE_ENDPOINT_SOCKET, then
    /// /run/sigil/agent.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// SPIFFE IDs the peer may have (repeatable; none: any of the bundle's
    /// trust domains).
    #[arg(long = "allow", value_name = "ID", value_parser = SpiffeId::parse)]
    pub allow: Vec<SpiffeId>,
    /// Check time, RFC 3339 (default: now).
    #[arg(long, value_name = "TIME", value_parser = parse_time, requires = "cert")]
    pub at: Option<i64>,
    /// What --cert is used as: a TLS client's certificate or a server's.
    #[arg(long = "as", value_enum, default_value = "client", requires = "cert")]
    pub role: Role,
    /// Trust domains the bundle is for, when its CAs carry no spiffe://
    /// URI SAN (repeatable).
    #[arg(long = "trust-domain", value_parser = TrustDomain::parse)]
    pub trust_domains: Vec<TrustDomain>,
    /// Handshake with HOST:PORT using this workload's SVID.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "cert")]
    pub connect: Option<String>,
    /// With --connect: the SPIFFE ID the server must have.
    #[arg(long, value_name = "ID", value_parser = SpiffeId::parse, requires = "connect")]
    pub server_id: Option<SpiffeId>,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

fn parse_time(s: &str) -> Result<i64, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time (2026-01-31T12:00:00Z): {e}"))
}

/// Runs the diagnosis and prints it; `Ok(true)` when the connection would
/// succeed.
pub async fn run(args: DiagnoseArgs) -> anyhow::Result<bool> {
    let now = unix_seconds(SystemClock.now());
    let report = match (&args.cert, &args.connect) {
        (Some(cert), _) => {
            let chain = inputs::read_certs(cert, "--cert")?;
            let mut trust = match &args.bundle {
                Some(b) => inputs::trust_from_file(b)?,
                None => inputs::own_svid(args.socket.clone()).await?.trust,
            };
            trust.domains.extend(args.trust_domains.iter().cloned());
            let at = args.at.unwrap_or(now);
            Report::of_cert(judge(&chain, &trust, &args.allow, args.role, at), at)
        }
        (None, Some(addr)) => {
            let own = inputs::own_svid(args.socket.clone()).await?;
            let mut trust = own.trust.clone();
            trust.domains.extend(args.trust_domains.iter().cloned());
            let probe = connect::probe(addr, &own).await?;
            let allow: Vec<SpiffeId> = args
                .server_id
                .iter()
                .cloned()
                .chain(args.allow.iter().cloned())
                .collect();
            let finding = (!probe.server_chain.is_empty())
                .then(|| judge(&probe.server_chain, &trust, &allow, Role::Server, now));
            Report::of_connect(
                verdict_of_connect(&probe, finding.as_ref()),
                finding,
                probe,
                now,
            )
        }
        (None, None) => anyhow::bail!("give --cert FILE or --connect HOST:PORT"),
    };
    report.print(args.output)?;
    Ok(report.ok())
}

/// The one verdict of a `--connect`, most fundamental first: transport,
/// the server's certificate, no client certificate requested, our SVID
/// refused.
pub fn verdict_of_connect(
    probe: &connect::Probe,
    finding: Option<&judge::Finding>,
) -> Option<Diagnosis> {
    if let Some(d) = &probe.transport
        && d.verdict != Verdict::Peer(PeerVerdict::RefusedUs)
    {
        return Some(d.clone());
    }
    if let Some(d) = finding.and_then(|f| f.diagnosis.clone()) {
        return Some(d);
    }
    if probe.transport.is_none() && !probe.client_cert_requested {
        return Some(Diagnosis::new(
            Verdict::Peer(PeerVerdict::NoClientCertRequested),
            format!(
                "{} completed the handshake without requesting a client certificate: it \
                 authenticates no client (mTLS is off or optional)",
                probe.address
            ),
        ));
    }
    if probe.accepted_us == Some(false) {
        return Some(Diagnosis::new(
            Verdict::Peer(PeerVerdict::RefusedUs),
            probe
                .refusal
                .clone()
                .unwrap_or_else(|| format!("{} refused this workload's SVID", probe.address)),
        ));
    }
    None
}

#[cfg(test)]
mod tests;
