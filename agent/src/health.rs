//! One notion of the agent's health (issue 22 item 8), the same for `/ready`,
//! `sigil-agent healthcheck` and the `sigil_agent_ready` metric: [`Health::check`]
//! answers `Ok` or the reason. In order, the agent is not ready while its
//! own identity is unusable (attesting, refused, expired: the lifecycle's
//! [`State`]); while its stored trust bundle does not verify the server
//! (stranded, at once: that does not heal by waiting); once it has failed
//! to reach or be served by the server for longer than
//! `server_unreachable_grace` (default 30 s: a restart or a blip does not
//! flap readiness); and until the first entry sync has been served.
//! [`ServerContact`] is where the entry sync records each success and
//! failure, and the bundle refresh records a server it cannot verify.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sigil_proto::clock::Clock;
use tokio::sync::watch;

use crate::lifecycle::State;
use crate::state::StateRx;

/// What is known of the agent's contact with the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contact {
    /// Unix seconds of the first failure since the last success.
    pub failing_since: Option<i64>,
    /// The last failure, for the reason.
    pub last_error: String,
    /// Set when the stored bundle does not verify the server: the reason.
    pub untrusted: Option<String>,
}

/// Records the agent's contact with the server (cheap to clone).
#[derive(Debug, Clone)]
pub struct ServerContact(Arc<watch::Sender<Contact>>);

impl Default for ServerContact {
    fn default() -> Self {
        ServerContact(Arc::new(watch::Sender::new(Contact::default())))
    }
}

impl ServerContact {
    /// The server answered: every failure is over.
    pub fn ok(&self) {
        self.0.send_if_modified(|c| {
            let changed = *c != Contact::default();
            *c = Contact::default();
            changed
        });
    }

    /// A call to the server failed at `now` (Unix seconds) with `error`.
    pub fn failed(&self, now: i64, error: &str) {
        self.0.send_modify(|c| {
            c.failing_since.get_or_insert(now);
            c.last_error = error.to_string();
        });
    }

    /// The stored bundle does not verify the server (`None`: it does).
    pub fn untrusted(&self, why: Option<String>) {
        self.0.send_if_modified(|c| {
            let changed = c.untrusted != why;
            c.untrusted = why;
            changed
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<Contact> {
        self.0.subscribe()
    }

    pub fn get(&self) -> Contact {
        self.0.borrow().clone()
    }
}

/// Everything [`Health::check`] reads.
#[derive(Clone)]
pub struct Health {
    pub identity: watch::Receiver<State>,
    /// `true` once the first sync has been served.
    pub synced: watch::Receiver<bool>,
    pub contact: ServerContact,
    /// The cached SVIDs (for "valid until" in the reason); set once the
    /// cache runs.
    pub snapshot: Arc<OnceLock<StateRx>>,
    pub grace: Duration,
    pub clock: Arc<dyn Clock>,
}

impl Health {
    /// `Ok` when the agent can do its job, else the reason.
    pub fn check(&self) -> Result<(), String> {
        self.identity.borrow().readiness()?;
        let c = self.contact.get();
        if let Some(why) = c.untrusted {
            return Err(format!("stranded: {why}"));
        }
        if let Some(since) = c.failing_since {
            let now = self.clock.now_unix();
            let for_s = now.saturating_sub(since);
            if for_s >= i64::try_from(self.grace.as_secs()).unwrap_or(i64::MAX) {
                let valid = match self.svids_valid_until() {
                    Some(t) => format!("cached SVIDs valid until {}", rfc3339(t)),
                    None => "no cached SVIDs".to_string(),
                };
                return Err(format!(
                    "degraded: the server is unreachable or refusing the agent since {} ({for_s} s, \
                     server_unreachable_grace is {} s): {}; {valid}",
                    rfc3339(since),
                    self.grace.as_secs(),
                    c.last_error
                ));
            }
        }
        if !*self.synced.borrow() {
            return Err("waiting for the first sync".into());
        }
        Ok(())
    }

    fn svids_valid_until(&self) -> Option<i64> {
        let snap = self.snapshot.get()?.borrow().clone();
        snap.svids.iter().map(|s| s.not_after).min()
    }

    /// As a [`sigil_proto::health::Readiness`]; sets `sigil_agent_ready`
    /// each time it is asked.
    pub fn readiness(self) -> sigil_proto::health::Readiness {
        Arc::new(move || {
            let r = self.check();
            crate::metrics::ready(r.is_ok());
            r
        })
    }
}

fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{t} (Unix seconds)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_proto::clock::ManualClock;

    fn health(clock: Arc<ManualClock>, contact: &ServerContact, synced: bool) -> Health {
        Health {
            identity: watch::channel(State::Attested).1,
            synced: watch::channel(synced).1,
            contact: contact.clone(),
            snapshot: Arc::default(),
            grace: Duration::from_secs(30),
            clock,
        }
    }

    #[test]
    fn i22_8_a_blip_does_not_flap_and_a_long_outage_is_not_ready() {
        let clock = Arc::new(ManualClock::at_unix(1_000_000));
        let contact = ServerContact::default();
        let h = health(clock.clone(), &contact, true);
        assert_eq!(h.check(), Ok(()));
        contact.failed(clock.now_unix(), "connection refused");
        clock.advance(Duration::from_secs(29));
        assert_eq!(h.check(), Ok(()), "within the grace");
        contact.failed(clock.now_unix(), "connection refused again");
        clock.advance(Duration::from_secs(1));
        let e = h.check().unwrap_err();
        assert!(
            e.starts_with("degraded:")
                && e.contains("30 s")
                && e.contains("connection refused again"),
            "{e}"
        );
        contact.ok();
        assert_eq!(h.check(), Ok(()));
        contact.untrusted(Some("the stored bundle does not verify the server".into()));
        assert!(h.check().unwrap_err().starts_with("stranded:"));
        contact.ok();
        let not_synced = health(clock, &contact, false);
        assert_eq!(not_synced.check(), Err("waiting for the first sync".into()));
    }
}
