//! The one task that keeps the agent's own SVID usable: it asks
//! [`decide`](super::decide) what to do, renews (at half life, or within a
//! few seconds when the signing CA is tainted or leaves the bundle), attests
//! again when the server refuses the SVID or it expired and the attestor
//! allows it, and otherwise publishes a stranded [`State`] with its reason.
//! Every state change is logged once and set on the metric.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sigil_proto::clock::Clock;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Decision, Facts, State, decide};
use crate::cache::{TrustBundle, aki, bundle_key_ids};
use crate::config::AgentConfig;
use crate::identity::{AgentIdentity, key_and_csr};
use crate::persist::{DataDir, StoredIdentity};
use crate::rotation;
use crate::server_client::ServerClient;
use crate::sync::OnBundle;

/// Most jitter before a renewal caused by a taint: thousands of agents do
/// not all call at the same instant, and all are done within seconds.
const TAINT_JITTER: Duration = Duration::from_secs(3);
/// How often a stranded agent checks whether the server admits it again
/// (e.g. after an unban), without logging each time.
const STRANDED_RECHECK: Duration = Duration::from_secs(30);

/// The bundle as the lifecycle needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BundleView {
    pub authorities: Vec<Vec<u8>>,
    pub tainted: HashSet<Vec<u8>>,
}

impl BundleView {
    pub fn of(b: &TrustBundle) -> BundleView {
        BundleView {
            authorities: b.x509_authorities.clone(),
            tainted: b.tainted_key_ids.iter().cloned().collect(),
        }
    }
}

/// What the driver works with.
pub struct Driver {
    pub cfg: AgentConfig,
    pub join_token: Option<String>,
    pub client: Arc<ServerClient>,
    pub data: DataDir,
    pub ident_tx: watch::Sender<Arc<AgentIdentity>>,
    pub bundle_rx: watch::Receiver<BundleView>,
    /// Applies a bundle (from a re-attestation) like one from the sync.
    pub on_bundle: Arc<OnBundle>,
    pub state: watch::Sender<State>,
    pub clock: Arc<dyn Clock>,
}

/// Publishes `s`; logs and sets the metric only when it changed.
pub fn set_state(tx: &watch::Sender<State>, s: State) {
    let label = s.label();
    let changed = tx.send_if_modified(|cur| {
        if *cur == s {
            return false;
        }
        *cur = s.clone();
        true
    });
    if changed {
        crate::metrics::identity_state(label);
        match s.readiness() {
            Ok(()) => info!(state = label, "agent identity usable"),
            Err(reason) => warn!(state = label, %reason, "agent identity state changed"),
        }
    }
}

/// A renewal failure: refused by the server, or not (yet) reachable.
enum Failure {
    Refused(String),
    Other(String),
}

impl Driver {
    fn can_reattest(&self, cur: &AgentIdentity) -> bool {
        crate::bootstrap::reattestor(&self.cfg, self.join_token.as_deref(), cur.id.as_str())
            .is_some()
    }

    async fn sleep_or_stop(&self, d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = shutdown.changed() => true,
        }
    }

    /// Runs until `shutdown` fires.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut refused: Option<String> = None;
        let mut attempt = 0u32;
        let mut bundle_rx = self.bundle_rx.clone();
        let mut refusals = self.client.refusals();
        loop {
            let cur = self.ident_tx.borrow().clone();
            let view = bundle_rx.borrow_and_update().clone();
            let ids = bundle_key_ids(&view.authorities);
            let signer = cur.chain.first().and_then(|l| aki(l));
            let now = self.clock.now_unix();
            let d = decide(&Facts {
                now,
                not_after: cur.not_after,
                renew_at: rotation::renew_at(&rotation::Issued {
                    not_before: cur.not_before,
                    issued_at: cur.received_at,
                    not_after: cur.not_after,
                    entry_revision: 0,
                    jitter_unit: 0.5,
                }),
                signer: signer.as_deref(),
                bundle_ids: &ids,
                tainted: &view.tainted,
                refused: refused.as_deref(),
                can_reattest: self.can_reattest(&cur),
            });
            let reason = match d {
                Decision::RenewAt(at) => {
                    set_state(&self.state, State::Attested);
                    let wait = Duration::from_secs(u64::try_from(at - now).unwrap_or(0));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => "half_life",
                        // A new bundle may taint or drop the signing CA.
                        r = bundle_rx.changed() => {
                            if r.is_err() { return; }
                            continue;
                        }
                        // A call was refused for who the agent is: ask
                        // the server now (a renewal says why).
                        _ = refusals.changed() => {
                            refusals.borrow_and_update();
                            "server_refusal"
                        }
                        _ = shutdown.changed() => return,
                    }
                }
                Decision::RenewNow(reason) => {
                    let jitter = TAINT_JITTER.mul_f64(self.clock.random_unit().clamp(0.0, 1.0));
                    info!(agent_id = %cur.id, reason, jitter_ms = jitter.as_millis() as u64, "renewing the agent SVID now");
                    if self.sleep_or_stop(jitter, &mut shutdown).await {
                        return;
                    }
                    reason
                }
                Decision::Reattest(why) => {
                    set_state(&self.state, State::Attesting(why.clone()));
                    match self.reattest(&cur).await {
                        Ok(()) => {
                            refused = None;
                            attempt = 0;
                        }
                        Err(e) => {
                            let wait = Duration::from_millis(rotation::backoff_ms(
                                attempt,
                                self.clock.random_unit(),
                            ));
                            attempt = attempt.saturating_add(1);
                            warn!(%why, error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "attesting again failed; retrying");
                            if self.sleep_or_stop(wait, &mut shutdown).await {
                                return;
                            }
                        }
                    }
                    continue;
                }
                Decision::Stranded(s) => {
                    let expired = matches!(s, State::Expired(_));
                    set_state(&self.state, s);
                    tokio::select! {
                        _ = tokio::time::sleep(STRANDED_RECHECK), if !expired => {}
                        r = bundle_rx.changed() => if r.is_err() { return; },
                        _ = shutdown.changed() => return,
                    }
                    if expired {
                        continue;
                    }
                    // Refused: does the server admit it again?
                    "recheck"
                }
            };
            match self.renew().await {
                Ok(ident) => {
                    info!(agent_id = %ident.id, not_after = ident.not_after, reason, "agent SVID renewed");
                    attempt = 0;
                    refused = None;
                    let _ = self.ident_tx.send(Arc::new(ident));
                    set_state(&self.state, State::Attested);
                }
                Err(Failure::Refused(why)) => {
                    debug!(%why, "the server refuses the agent SVID");
                    refused = Some(why);
                }
                Err(Failure::Other(e)) => {
                    // A CA gone from the bundle does not come back: after
                    // a few tries, the server's refusal to shake hands with
                    // an SVID of a revoked CA is a refusal.
                    if reason == "ca_left_bundle" && attempt >= 2 {
                        refused = Some(format!(
                            "its CA is no longer in the trust bundle and renewal fails: {e}"
                        ));
                        continue;
                    }
                    let wait = Duration::from_millis(rotation::backoff_ms(
                        attempt,
                        self.clock.random_unit(),
                    ));
                    attempt = attempt.saturating_add(1);
                    warn!(error = %e, reason, retry_in_ms = wait.as_millis() as u64, "agent SVID renewal failed; retrying");
                    if self.sleep_or_stop(wait, &mut shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    /// Renews the agent SVID and stores it.
    async fn renew(&self) -> Result<AgentIdentity, Failure> {
        let other = |e: anyhow::Error| Failure::Other(format!("{e:#}"));
        let (key, csr) = key_and_csr().map_err(other)?;
        let chain = match self.client.renew_agent(csr).await {
            Ok(c) => c,
            Err(e) => {
                self.client.reset().await;
                return Err(match e.downcast_ref::<tonic::Status>() {
                    Some(s)
                        if matches!(
                            s.code(),
                            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                        ) =>
                    {
                        Failure::Refused(s.message().to_string())
                    }
                    _ => other(e),
                });
            }
        };
        let ident = AgentIdentity::from_parts(chain, key.serialize_der()).map_err(other)?;
        self.data
            .save(&StoredIdentity {
                key_pkcs8: ident.key_pkcs8.clone(),
                chain: ident.chain.clone(),
                bundle: self.bundle_rx.borrow().authorities.clone(),
            })
            .map_err(other)?;
        Ok(ident)
    }

    /// Attests again over the current roots (never insecure), stores the
    /// new identity and bundle, and switches to them.
    async fn reattest(&self, cur: &AgentIdentity) -> anyhow::Result<()> {
        let a =
            crate::bootstrap::reattestor(&self.cfg, self.join_token.as_deref(), cur.id.as_str())
                .ok_or_else(|| anyhow::anyhow!("nothing configured can attest again"))??;
        // The bundle the server last sent, then `trust_bundle_path` (an
        // operator may have refreshed it); never insecure.
        let known = self.bundle_rx.borrow().authorities.clone();
        let mut errors = Vec::new();
        let mut attested = None;
        for (source, tls) in crate::bootstrap::trust_configs(&self.cfg, Some(&known))? {
            let servers = self.client.servers();
            match crate::bootstrap::attest_with(servers, cur.id.as_str(), tls, a.as_ref()).await {
                Ok(done) => {
                    attested = Some(done);
                    break;
                }
                Err(e) => errors.push(format!("with {source}: {e:#}")),
            }
        }
        let (ident, bundle) = attested.ok_or_else(|| anyhow::anyhow!("{}", errors.join("; ")))?;
        self.data.save(&StoredIdentity {
            key_pkcs8: ident.key_pkcs8.clone(),
            chain: ident.chain.clone(),
            bundle: bundle.x509_authorities.clone(),
        })?;
        (self.on_bundle)(&bundle);
        self.client.reset().await;
        let _ = self.ident_tx.send(Arc::new(ident));
        set_state(&self.state, State::Attested);
        Ok(())
    }
}
