//! Node attestation, server half: proves which node an agent runs on. Each
//! attestor turns the agent's payload (and, for challenge/response
//! attestors, its answers) into an agent SPIFFE ID and node selectors.
//! One implementation per file; the agent API drives them over its
//! bidirectional AttestNode stream. [`from_config`] builds the ones the
//! configuration enables.

pub mod join_token;
pub mod x509pop;

use std::sync::Arc;

use anyhow::Context;
use sigil_proto::attestation::ChannelBinding;
use sigil_proto::{Selector, SpiffeId, TrustDomain};

use crate::config::ServerConfig;
use crate::store::Store;
use join_token::JoinTokenAttestor;
use x509pop::X509PopAttestor;

/// True for an agent ID, `spiffe://<td>/sigil/agent/...` (what every node
/// attestor issues).
pub fn is_agent_id(id: &SpiffeId, td: &TrustDomain) -> bool {
    id.is_member_of(td) && id.path().starts_with("/sigil/agent/")
}

/// A node whose identity has been proven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedNode {
    /// `spiffe://<td>/sigil/agent/<attestor>/<unique>`.
    pub agent_id: SpiffeId,
    /// Node selectors, matched against node entries.
    pub selectors: Vec<Selector>,
    /// True when the same node may attest again (x509pop); false for
    /// single-use proofs (join tokens).
    pub can_reattest: bool,
    /// What identifies the node beyond this one proof, as node ban rules
    /// ([`crate::store::NodeBan`]): banning the agent bans these, and an
    /// attestation matching a banned one is refused. x509pop: the leaf's
    /// key and subject; empty for single-use proofs.
    pub ban_rules: Vec<String>,
}

/// Why attestation failed. Messages are safe to return to the caller: they
/// never contain the secret that was presented.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The proof is malformed (bad encoding, wrong type).
    #[error("invalid attestation payload: {0}")]
    Invalid(String),
    /// The proof is well-formed but not accepted (unknown or used token,
    /// untrusted certificate, failed challenge).
    #[error("attestation refused: {0}")]
    Refused(String),
    /// The attestor itself failed (store, randomness).
    #[error("attestation failed: {0}")]
    Internal(String),
}

/// What the attestor wants next.
pub enum Step {
    /// Attestation is complete.
    Done(AttestedNode),
    /// Send `challenge` to the agent and pass its answer to `state`.
    Challenge {
        challenge: Vec<u8>,
        state: Box<dyn ChallengeState>,
    },
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Done(n) => f.debug_tuple("Done").field(n).finish(),
            Step::Challenge { challenge, .. } => f
                .debug_struct("Challenge")
                .field("challenge_len", &challenge.len())
                .finish_non_exhaustive(),
        }
    }
}

/// The pending half of a challenge/response exchange.
pub trait ChallengeState: Send {
    /// Checks the agent's answer to the challenge.
    fn verify(self: Box<Self>, response: &[u8]) -> Result<Step, AttestError>;
}

/// A server-side node attestor.
pub trait NodeAttestor: Send + Sync + 'static {
    /// The attestor's name on the wire ("join_token", "x509pop").
    fn name(&self) -> &'static str;
    /// Starts attestation from the agent's first payload at `now` (unix
    /// seconds).
    fn begin(&self, payload: &[u8], now: i64) -> Result<Step, AttestError>;
    /// [`NodeAttestor::begin`] on the TLS connection whose channel binding
    /// is `channel` (`None` when it has none). Attestors whose proof is bound
    /// to the connection (x509pop) override this; the others ignore it.
    fn begin_bound(
        &self,
        payload: &[u8],
        now: i64,
        channel: Option<&ChannelBinding>,
    ) -> Result<Step, AttestError> {
        let _ = channel;
        self.begin(payload, now)
    }
}

/// The attestors the configuration enables: join tokens always (redeemed
/// against `store`), x509pop when `[node_attestor.x509pop]` is set.
pub fn from_config(
    cfg: &ServerConfig,
    store: Arc<dyn Store>,
) -> anyhow::Result<Vec<Arc<dyn NodeAttestor>>> {
    let mut attestors: Vec<Arc<dyn NodeAttestor>> = vec![Arc::new(JoinTokenAttestor::new(
        store,
        cfg.trust_domain.clone(),
    ))];
    if let Some(x) = &cfg.node_attestor.x509pop {
        let bytes = std::fs::read(&x.ca_bundle_path).with_context(|| {
            format!(
                "node_attestor.x509pop.ca_bundle_path {}",
                x.ca_bundle_path.display()
            )
        })?;
        attestors.push(Arc::new(
            X509PopAttestor::new(cfg.trust_domain.clone(), &bytes)
                .context("node_attestor.x509pop")?,
        ));
    }
    Ok(attestors)
}
