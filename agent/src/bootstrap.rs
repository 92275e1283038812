//! How the agent gets its identity at start and when it must attest again:
//! which join token applies (one function, so every source plugs in there),
//! whether a stored identity is kept or replaced (the rule is on [`plan`]),
//! which roots the server is checked against (the bundle the server last
//! sent, stored in `data_dir`, then `trust_bundle_path`; `insecure_bootstrap`
//! only while no bundle is known at all), and attestation retried with
//! bounded, logged backoff until it succeeds or the agent is stopped: a
//! server that is not up yet is no reason to exit (issue 20 items 2, 4, 6).

use std::time::Duration;

use anyhow::Context;
use sigil_proto::clock::Clock;
use sigil_proto::tls::TrustRoots;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cache::TrustBundle;
use crate::config::AgentConfig;
use crate::identity::AgentIdentity;
use crate::lifecycle::{State, spent_by};
use crate::node_attestor::NodeAttestorClient;
use crate::node_attestor::join_token::JoinTokenClient;
use crate::node_attestor::x509pop::X509PopClient;
use crate::persist::StoredIdentity;
use crate::rotation;
use crate::server_client;
use crate::servers::Servers;

/// The attestor for a first attestation: the join token if one was given,
/// else x509pop if configured.
fn attestor(
    cfg: &AgentConfig,
    token: Option<&str>,
) -> anyhow::Result<Option<Box<dyn NodeAttestorClient>>> {
    if let Some(t) = token {
        return Ok(Some(Box::new(JoinTokenClient::new(t.to_string()))));
    }
    x509pop(cfg).transpose()
}

fn x509pop(cfg: &AgentConfig) -> Option<anyhow::Result<Box<dyn NodeAttestorClient>>> {
    let x = cfg.node_attestor.x509pop.as_ref()?;
    Some(
        X509PopClient::load(&x.cert_path, &x.key_path)
            .map(|c| Box::new(c) as Box<dyn NodeAttestorClient>)
            .context("[node_attestor.x509pop]"),
    )
}

/// The attestor for attesting again while running (refused or expired):
/// x509pop if configured, else a join token that `current` was not made
/// from (a spent token cannot attest again). `None`: nothing can.
pub fn reattestor(
    cfg: &AgentConfig,
    token: Option<&str>,
    current: &str,
) -> Option<anyhow::Result<Box<dyn NodeAttestorClient>>> {
    x509pop(cfg).or_else(|| {
        token
            .filter(|t| !spent_by(current, t))
            .map(|t| Ok(Box::new(JoinTokenClient::new(t.to_string())) as _))
    })
}

/// What to do at start.
pub enum Plan {
    /// Keep the stored identity (possibly expired: the lifecycle task then
    /// attests again or reports why it cannot) and its bundle.
    Keep(AgentIdentity, Vec<Vec<u8>>),
    /// Attest, trusting the stored bundle if there is one.
    Attest {
        why: String,
        stored_bundle: Option<Vec<Vec<u8>>>,
        attestor: Box<dyn NodeAttestorClient>,
    },
}

/// Decides between the stored identity and a new attestation. The rule: a
/// stored identity is kept unless `--reset-identity` was given, or a join
/// token was given that the stored agent ID was not made from (a new token
/// means the operator wants this node attested again, e.g. after an evict).
/// A token the stored identity was made from is not spent again, and the log
/// says so.
pub fn plan(
    cfg: &AgentConfig,
    stored: Option<StoredIdentity>,
    token: Option<&str>,
    reset: bool,
) -> anyhow::Result<Plan> {
    let need_attestor = |why: &str| {
        attestor(cfg, token)?.with_context(|| {
            format!(
                "{why}, and there is nothing to attest with: pass --join-token, set join_token, \
                 or configure [node_attestor.x509pop]"
            )
        })
    };
    let Some(s) = stored else {
        return Ok(Plan::Attest {
            why: "no stored identity".into(),
            stored_bundle: None,
            attestor: need_attestor("the agent has no stored identity")?,
        });
    };
    let ident = AgentIdentity::from_parts(s.chain, s.key_pkcs8)
        .context("the stored agent identity (start with --reset-identity to replace it)")?;
    let stored_bundle = (!s.bundle.is_empty()).then_some(s.bundle);
    if reset {
        info!(agent_id = %ident.id, "--reset-identity: attesting again; the stored identity is replaced once that succeeds");
        return Ok(Plan::Attest {
            why: "--reset-identity".into(),
            stored_bundle,
            attestor: need_attestor("--reset-identity was given")?,
        });
    }
    match token {
        Some(t) if !spent_by(ident.id.as_str(), t) => {
            info!(agent_id = %ident.id, "a join token was given that the stored identity was not made from; attesting with it");
            Ok(Plan::Attest {
                why: "a new join token".into(),
                stored_bundle,
                attestor: need_attestor("a new join token was given")?,
            })
        }
        Some(_) => {
            info!(agent_id = %ident.id, not_after = ident.not_after, "restored agent identity; the given join token was already spent by it, so it is not used (give a new one, or --reset-identity, to attest again)");
            Ok(Plan::Keep(ident, stored_bundle.unwrap_or_default()))
        }
        None => {
            info!(agent_id = %ident.id, not_after = ident.not_after, "restored agent identity; not attesting again");
            Ok(Plan::Keep(ident, stored_bundle.unwrap_or_default()))
        }
    }
}

/// The TLS configs to try for an attestation, in order, each named by its
/// source: the stored bundle, then `trust_bundle_path`; `insecure_bootstrap`
/// only when neither exists.
pub fn trust_configs(
    cfg: &AgentConfig,
    stored_bundle: Option<&[Vec<u8>]>,
) -> anyhow::Result<Vec<(&'static str, rustls::ClientConfig)>> {
    let mut out = Vec::new();
    if let Some(b) = stored_bundle {
        let roots = TrustRoots::new(b.to_vec()).context("the stored bundle")?;
        out.push((
            "the stored bundle",
            server_client::tls_config_for(
                &roots,
                &cfg.trust_domain,
                None,
                sigil_proto::tls::verdict::BundleSource::Synced,
            )?,
        ));
    }
    if let Some(p) = &cfg.trust_bundle_path {
        let bytes =
            std::fs::read(p).with_context(|| format!("trust_bundle_path {}", p.display()))?;
        let certs = sigil_proto::pem::certs_from_pem_or_der(&bytes)
            .with_context(|| format!("trust_bundle_path {}", p.display()))?;
        out.push((
            "trust_bundle_path",
            server_client::tls_config(&TrustRoots::new(certs)?, &cfg.trust_domain, None)?,
        ));
    }
    if out.is_empty() {
        if !cfg.insecure_bootstrap {
            anyhow::bail!("trust_bundle_path is required (insecure_bootstrap is off)");
        }
        out.push((
            "insecure_bootstrap",
            server_client::insecure_bootstrap_config()?,
        ));
    }
    Ok(out)
}

/// One attestation over `tls`, on the first of `servers` that answers (in
/// their try order for `seed`, see [`crate::servers`]). A server that
/// fails the attestation as if down (`Unavailable`) is left for the next
/// at the next try.
pub async fn attest_with(
    servers: &Servers,
    seed: &str,
    tls: rustls::ClientConfig,
    a: &dyn NodeAttestorClient,
) -> anyhow::Result<(AgentIdentity, TrustBundle)> {
    let mut errors = Vec::new();
    for addr in servers.order(seed).await? {
        let (mut client, channel) =
            match server_client::connect_for_attestation(&addr.to_string(), tls.clone()).await {
                Ok(c) => c,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
        servers.connected(addr);
        let attested = server_client::attest(&mut client, &channel, a).await;
        crate::metrics::node_attestation(a.name(), if attested.is_ok() { "ok" } else { "error" });
        if let Err(e) = &attested
            && e.downcast_ref::<server_client::AttestRefused>()
                .is_some_and(|r| crate::servers::is_server_down(r.code))
        {
            servers.mark_down();
        }
        let (ident, bundle) = attested?;
        info!(agent_id = %ident.id, attestor = a.name(), server = %addr, "node attested");
        return Ok((ident, bundle));
    }
    Err(server_client::one_or_all(servers, errors))
}

/// Attests, trying each trust source (from [`trust_configs`]) in turn, until
/// it succeeds (the caller stops it on shutdown). Failures are logged and
/// retried with exponential backoff (1 s doubling to 30 s, jittered);
/// `state` carries the last error for `/ready`. A refusal by the server
/// (not an outage, not a server it cannot verify) is returned.
pub async fn attest_until_done(
    cfg: &AgentConfig,
    servers: &Servers,
    trust: Vec<(&'static str, rustls::ClientConfig)>,
    a: &dyn NodeAttestorClient,
    state: &watch::Sender<State>,
    clock: &dyn Clock,
) -> anyhow::Result<(AgentIdentity, TrustBundle)> {
    if trust
        .iter()
        .any(|(source, _)| *source == "insecure_bootstrap")
    {
        warn!(
            "insecure_bootstrap: trusting the server without a bundle for this first attestation"
        );
    }
    // No identity yet to spread by: a random start among the servers.
    let seed = format!("{}", clock.random_unit());
    let mut attempt = 0u32;
    loop {
        let mut errors = Vec::new();
        for (source, tls) in &trust {
            match attest_with(servers, &seed, tls.clone(), a).await {
                Ok(done) => return Ok(done),
                // The server refused this attestor (a spent or unknown
                // token, a node it does not accept): retrying cannot help,
                // so the start fails with the server's reason.
                Err(e)
                    if e.downcast_ref::<server_client::AttestRefused>()
                        .is_some_and(|r| r.is_final()) =>
                {
                    return Err(e);
                }
                Err(e) => errors.push(format!("with {source}: {e:#}")),
            }
        }
        let wait = Duration::from_millis(rotation::backoff_ms(attempt, clock.random_unit()));
        attempt = attempt.saturating_add(1);
        let why = errors.join("; ");
        warn!(attempt, retry_in_ms = wait.as_millis() as u64, attestor = a.name(), server = %cfg.server_address, error = %why, "node attestation failed; retrying");
        state.send_replace(State::Attesting(why));
        tokio::time::sleep(wait).await;
    }
}
