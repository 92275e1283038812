//! The bundle endpoint client: one task per federation relationship. It
//! fetches the foreign bundle ([`super::fetch`]), judges it
//! ([`super::accept::judge`]) and applies what it accepts through
//! [`ForeignBundles`] (so agents are pushed it). It polls at the endpoint's
//! `spiffe_refresh_hint`, clamped to the configured floor and ceiling and
//! counted from the start of the last fetch, and after a failure retries with exponential backoff and jitter (never later
//! than the next regular poll). A refusal or failure keeps the last good
//! bundle, is logged with its reason and counted
//! (`sigil_server_federation_refresh_failures_total{trust_domain,reason}`);
//! a success sets `sigil_server_federation_last_refresh_timestamp_seconds`.
//! `federation refresh` asks the task for a fetch now and gets its outcome.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sigil_proto::clock::{Clock, unix_seconds};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::accept::judge;
use super::fetch::{fetch, tls_config};
use super::foreign::ForeignBundles;
use super::refresh::RefreshSettings;
use super::relationship::EndpointUrl;
use crate::store::{BundleRecord, FederationRecord, JwtAuthority};

/// What the last refresh of a relationship did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshStatus {
    /// Unix seconds of the last accepted fetch.
    pub last_success_at: Option<i64>,
    /// Why the last attempt failed; `None` after a success.
    pub last_error: Option<String>,
    /// `spiffe_sequence` of the last accepted document.
    pub remote_sequence: Option<u64>,
}

/// The outcome of one refresh: the stored sequence, or why not.
pub type Outcome = Result<u64, String>;

/// A request for an immediate refresh and where its outcome goes.
pub type RefreshRequest = oneshot::Sender<Outcome>;

pub struct Client {
    pub rel: FederationRecord,
    pub url: EndpointUrl,
    pub foreign: Arc<ForeignBundles>,
    pub clock: Arc<dyn Clock>,
    pub settings: RefreshSettings,
    pub status: Arc<Mutex<RefreshStatus>>,
}

/// Backoff after `attempt` failures: a window of 1 s doubling up to the
/// ceiling, at least half of it plus the jittered rest.
pub fn backoff(attempt: u32, random: f64, ceiling: Duration) -> Duration {
    let window = Duration::from_secs(1)
        .saturating_mul(1u32 << attempt.min(20))
        .min(ceiling);
    window / 2 + (window / 2).mul_f64(random.clamp(0.0, 1.0))
}

impl Client {
    fn status(&self) -> std::sync::MutexGuard<'_, RefreshStatus> {
        // Plain data, never left half written.
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs until the task is aborted (its relationship changed or went).
    pub async fn run(self, mut requests: mpsc::Receiver<RefreshRequest>) {
        let td = self.rel.trust_domain.clone();
        info!(trust_domain = %td, url = %self.rel.bundle_endpoint_url, profile = self.rel.profile.as_str(), "federation: bundle endpoint client started");
        let mut attempt = 0u32;
        let mut pending: Vec<RefreshRequest> = Vec::new();
        loop {
            // The next poll is due `wait` after this fetch started, not
            // after it ended: a slow endpoint does not stretch the period
            // past its refresh hint.
            let started = tokio::time::Instant::now();
            let (outcome, hint) = self.once().await;
            let wait = match &outcome {
                Ok(_) => {
                    attempt = 0;
                    self.settings.clamp(hint)
                }
                Err(_) => {
                    let w = backoff(attempt, self.clock.random_unit(), self.settings.ceiling);
                    attempt = attempt.saturating_add(1);
                    w
                }
            };
            for r in pending.drain(..) {
                let _ = r.send(outcome.clone());
            }
            tokio::select! {
                _ = tokio::time::sleep_until(started + wait) => {}
                r = requests.recv() => match r {
                    Some(r) => pending.push(r),
                    None => return,
                },
            }
        }
    }

    /// One fetch, judged and applied; the refresh hint it gave.
    async fn once(&self) -> (Outcome, Option<Duration>) {
        let td = &self.rel.trust_domain;
        let url = &self.rel.bundle_endpoint_url;
        let stored = self.foreign.get(td);
        let r = async {
            let tls =
                tls_config(&self.rel, stored.as_deref()).map_err(|e| (e.reason, e.message))?;
            let body = fetch(url, &self.url, tls)
                .await
                .map_err(|e| (e.reason, e.message))?;
            // As stored: a restart keeps refusing older documents.
            let last = self.foreign.accepted(td);
            judge(td, last.as_ref(), &body).map_err(|r| (r.reason(), r.to_string()))
        }
        .await;
        let now = unix_seconds(self.clock.now());
        match r {
            Ok(b) => {
                let hint = b.refresh_hint.map(Duration::from_secs);
                let record = BundleRecord {
                    trust_domain: td.clone(),
                    x509_authorities: b.x509_authorities.clone(),
                    jwt_authorities: b
                        .jwt_authorities
                        .iter()
                        .map(|k| JwtAuthority {
                            kid: k.kid.clone(),
                            public_key: k.spki_der.clone(),
                            expires_at: 0,
                        })
                        .collect(),
                    tainted_key_ids: Vec::new(),
                    tainted_jwt_key_ids: Vec::new(),
                    sequence: 0,
                };
                let foreign = self.foreign.clone();
                let remote = b.sequence;
                let put =
                    tokio::task::spawn_blocking(move || foreign.put_fetched(record, remote)).await;
                match put {
                    Ok(Ok(stored)) => {
                        crate::metrics::federation_refreshed(td.as_str(), now);
                        let changed = {
                            let mut st = self.status();
                            let changed = st.remote_sequence != b.sequence;
                            st.last_success_at = Some(now);
                            st.last_error = None;
                            st.remote_sequence = b.sequence.or(st.remote_sequence);
                            changed
                        };
                        if b.is_empty() {
                            warn!(trust_domain = %td, url = %url, "federation: the endpoint published no keys: every SVID of this trust domain is now refused");
                        } else if changed {
                            info!(trust_domain = %td, url = %url, x509_authorities = b.x509_authorities.len(), jwt_authorities = b.jwt_authorities.len(), spiffe_sequence = ?b.sequence, sequence = stored.sequence, "federation: foreign bundle refreshed");
                        }
                        (Ok(stored.sequence), hint)
                    }
                    Ok(Err(e)) => self.failed("store", format!("storing the bundle of {td}: {e}")),
                    Err(e) => self.failed("store", format!("storing the bundle of {td}: {e}")),
                }
            }
            Err((reason, message)) => self.failed(reason, message),
        }
    }

    fn failed(&self, reason: &'static str, message: String) -> (Outcome, Option<Duration>) {
        let td = &self.rel.trust_domain;
        crate::metrics::federation_refresh_failed(td.as_str(), reason);
        warn!(trust_domain = %td, url = %self.rel.bundle_endpoint_url, reason, error = %message, "federation: bundle refresh failed; keeping the last good bundle");
        self.status().last_error = Some(message.clone());
        (Err(message), None)
    }
}
