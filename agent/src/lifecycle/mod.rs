//! The agent's own identity as a small state machine (issue 20: no agent is
//! ever stranded). [`decide`] is a pure function of what is known about the
//! agent SVID, the bundle and the server's last answer, returning what to do
//! next: renew at half life, renew now (its CA was tainted or left the
//! bundle), attest again (refused or expired, and the attestor allows it), or
//! stay stranded with a reason the operator can act on. [`driver`] is the one
//! task that acts on it; [`State`] is the first part of the agent's health
//! (`crate::health`: `/ready`, `healthcheck`, `sigil_agent_ready`) and is
//! what the `sigil_agent_identity_state` metric reports.

pub mod driver;

use std::collections::HashSet;

/// Why the agent cannot serve with its identity, and cannot fix it alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Attesting (first start, or again after a refusal or expiry).
    Attesting(String),
    /// Holding a usable agent SVID.
    Attested,
    /// The server refuses the agent's SVID (evicted, banned, unknown CA) and
    /// nothing configured can attest again.
    Refused(String),
    /// The agent SVID expired (the server was unreachable through its second
    /// half) and nothing configured can attest again.
    Expired(String),
}

impl State {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            State::Attesting(_) => "attesting",
            State::Attested => "attested",
            State::Refused(_) => "refused",
            State::Expired(_) => "expired",
        }
    }

    /// `Ok` when the identity is usable, else the reason (for `/ready` and
    /// `healthcheck`).
    pub fn readiness(&self) -> Result<(), String> {
        match self {
            State::Attested => Ok(()),
            State::Attesting(why) => Err(format!("attesting: {why}")),
            State::Refused(why) => Err(format!("agent identity refused by the server: {why}")),
            State::Expired(why) => Err(format!("agent SVID expired: {why}")),
        }
    }
}

/// Everything [`decide`] looks at, read at one moment.
#[derive(Debug)]
pub struct Facts<'a> {
    pub now: i64,
    /// The agent SVID's notAfter.
    pub not_after: i64,
    /// When half its life has passed (with jitter).
    pub renew_at: i64,
    /// Key identifier of the CA that signed the agent SVID.
    pub signer: Option<&'a [u8]>,
    /// Subject key identifiers of the current bundle's CAs (empty: unknown).
    pub bundle_ids: &'a HashSet<Vec<u8>>,
    /// Key identifiers the server marked tainted.
    pub tainted: &'a HashSet<Vec<u8>>,
    /// The server's last refusal of this SVID (evicted, banned, ...).
    pub refused: Option<&'a str>,
    /// Whether the agent can attest again by itself (x509pop, or a join
    /// token it has not spent).
    pub can_reattest: bool,
}

/// What to do with the agent's own identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing until this moment (Unix seconds): half life.
    RenewAt(i64),
    /// Renew at once (with a few seconds of jitter): the reason.
    RenewNow(&'static str),
    /// Attest again: the reason.
    Reattest(String),
    /// Nothing the agent can do; the state to report.
    Stranded(State),
}

/// What an operator does for a join-token agent that cannot come back.
pub const JOIN_TOKEN_REMEDY: &str = "generate a join token (`sigil-server token generate`) and \
     restart the agent with it (`sigil-agent run --join-token`), or configure \
     [node_attestor.x509pop] so it attests again by itself";

/// Decides the next step for the agent's own identity.
pub fn decide(f: &Facts<'_>) -> Decision {
    if let Some(why) = f.refused {
        return if f.can_reattest {
            Decision::Reattest(format!("the server refused the agent SVID: {why}"))
        } else {
            Decision::Stranded(State::Refused(format!("{why}; {JOIN_TOKEN_REMEDY}")))
        };
    }
    if f.now >= f.not_after {
        let why = format!(
            "it expired at {} (Unix seconds) before it could be renewed",
            f.not_after
        );
        return if f.can_reattest {
            Decision::Reattest(why)
        } else {
            Decision::Stranded(State::Expired(format!("{why}; {JOIN_TOKEN_REMEDY}")))
        };
    }
    if let Some(k) = f.signer {
        if f.tainted.contains(k) {
            return Decision::RenewNow("ca_tainted");
        }
        if !f.bundle_ids.is_empty() && !f.bundle_ids.contains(k) {
            return Decision::RenewNow("ca_left_bundle");
        }
    }
    Decision::RenewAt(f.renew_at)
}

/// Whether the agent ID `id` was made from `token` (the join-token attestor
/// names agents after the token, or after the first 32 hex digits of its
/// SHA-256).
pub fn spent_by(id: &str, token: &str) -> bool {
    let Some(tail) = id.rsplit_once("/join_token/").map(|(_, t)| t) else {
        return false;
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let hashed = hex::encode(digest.as_ref());
    tail == token || hashed.get(..32) == Some(tail)
}

#[cfg(test)]
mod tests;
