//! The `x509pop` node attestor, server half: the agent presents a
//! certificate chain (leaf first) issued under a CA the operator configured,
//! and proves it holds the leaf's private key by signing a fresh random
//! challenge together with the channel binding of the TLS connection the
//! attestation came on, so an answer relayed from another connection fails.
//! Chain rules, payload encoding and the signed bytes are the
//! shared contract in [`sigil_proto::attestation`]; this file adds the
//! leaf checks (not a CA, `digitalSignature` allowed by keyUsage if that
//! extension is present, a supported key), issues the challenge and checks
//! the answer. The agent ID is `spiffe://<td>/sigil/agent/x509pop/<sha256
//! of the leaf DER>`, stable across re-attestation of the same certificate;
//! the selectors are `x509pop:subject:cn:<CN>` and one
//! `x509pop:ca:fingerprint:<sha256>` per CA certificate on the verified path
//! (intermediates and the anchoring root). Its node ban rules (what `agent
//! ban` also bans, so that a re-issued certificate of the node is refused)
//! are the leaf's key, `x509pop:spki:sha256:<sha256 of the
//! SubjectPublicKeyInfo DER>`, and its subject: the CN selector's
//! `x509pop:subject:cn:<CN>` (what node entries match), or
//! `x509pop:subject:dn:<RFC 4514 DN>` for a leaf without a usable CN.

use std::fmt;

use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::UnparsedPublicKey;
use sigil_proto::attestation::{
    ChannelBinding, X509POP, X509POP_CHALLENGE_LEN, X509PopPublicKey, check_x509pop_roots,
    decode_chain, verify_x509pop_chain, x509pop_public_key, x509pop_signed_message,
};
use sigil_proto::pem::certs_from_pem_or_der;
use sigil_proto::{Selector, TrustDomain};
use tracing::debug;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Version;

use super::{AttestError, AttestedNode, ChallengeState, NodeAttestor, Step};

/// The refusal for a wrong answer; the same words whatever went wrong.
const BAD_ANSWER: &str =
    "x509pop challenge failed: signature does not verify with the certificate's key";

/// Admits an agent holding the key of a certificate issued under `roots`.
pub struct X509PopAttestor {
    trust_domain: TrustDomain,
    /// DER CA certificates the operator trusts for node certificates.
    roots: Vec<Vec<u8>>,
    rng: SystemRandom,
}

impl X509PopAttestor {
    /// An attestor trusting the CA certificates in `ca_bundle_pem_or_der`
    /// (PEM CERTIFICATE blocks or concatenated DER). Refuses an empty or
    /// unparseable bundle and certificates that are not CAs.
    pub fn new(
        trust_domain: TrustDomain,
        ca_bundle_pem_or_der: &[u8],
    ) -> Result<Self, AttestError> {
        let bad = |reason: String| AttestError::Internal(format!("x509pop CA bundle: {reason}"));
        let roots = certs_from_pem_or_der(ca_bundle_pem_or_der).map_err(|e| bad(e.to_string()))?;
        check_x509pop_roots(&roots).map_err(|e| bad(e.to_string()))?;
        for (index, der) in roots.iter().enumerate() {
            let cert =
                parse(der).map_err(|reason| bad(format!("certificate {index}: {reason}")))?;
            // Version 1 certificates have no extensions and can only be
            // (old) roots; a v3 certificate must say it is a CA.
            if cert.version() != X509Version::V1 && !cert.is_ca() {
                return Err(bad(format!(
                    "certificate {index} is not a CA certificate (no basicConstraints with cA=true)"
                )));
            }
        }
        Ok(X509PopAttestor {
            trust_domain,
            roots,
            rng: SystemRandom::new(),
        })
    }
}

impl fmt::Debug for X509PopAttestor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509PopAttestor")
            .field("trust_domain", &self.trust_domain)
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| format!("not a valid DER X.509 certificate: {e}"))
}

fn sha256_hex(der: &[u8]) -> String {
    hex::encode(digest(&SHA256, der))
}

impl NodeAttestor for X509PopAttestor {
    fn name(&self) -> &'static str {
        X509POP
    }

    /// Without a channel binding: always refused (see
    /// [`NodeAttestor::begin_bound`]).
    fn begin(&self, payload: &[u8], now: i64) -> Result<Step, AttestError> {
        self.begin_bound(payload, now, None)
    }

    fn begin_bound(
        &self,
        payload: &[u8],
        now: i64,
        channel: Option<&ChannelBinding>,
    ) -> Result<Step, AttestError> {
        let channel = channel.cloned().ok_or_else(|| {
            AttestError::Refused(
                "x509pop needs the channel binding of the TLS connection it runs on, and this                  connection has none"
                    .to_string(),
            )
        })?;
        let chain = decode_chain(payload).map_err(|e| AttestError::Invalid(e.to_string()))?;
        let leaf_der = chain.first().ok_or_else(|| {
            AttestError::Invalid("x509pop certificate chain is empty".to_string())
        })?;
        let leaf = parse(leaf_der).map_err(|reason| {
            AttestError::Invalid(format!("x509pop leaf certificate: {reason}"))
        })?;
        if leaf.is_ca() {
            return Err(AttestError::Refused(
                "x509pop leaf certificate is a CA certificate: present the node's own \
                 certificate first"
                    .to_string(),
            ));
        }
        match leaf.key_usage() {
            Ok(Some(ku)) if !ku.value.digital_signature() => {
                return Err(AttestError::Refused(
                    "x509pop leaf certificate's keyUsage does not allow digitalSignature"
                        .to_string(),
                ));
            }
            Ok(_) => {}
            Err(e) => {
                return Err(AttestError::Invalid(format!(
                    "x509pop leaf certificate has a malformed keyUsage extension: {e}"
                )));
            }
        }
        let key = x509pop_public_key(leaf_der).map_err(|e| AttestError::Refused(e.to_string()))?;
        let now = u64::try_from(now)
            .map_err(|_| AttestError::Internal(format!("attestation time {now} is before 1970")))?;
        let path = verify_x509pop_chain(&chain, &self.roots, now)
            .map_err(|e| AttestError::Refused(e.to_string()))?;

        let fingerprint = sha256_hex(leaf_der);
        let agent_id = self
            .trust_domain
            .spiffe_id(&format!("/sigil/agent/{X509POP}/{fingerprint}"))
            .map_err(|e| AttestError::Internal(format!("x509pop agent SPIFFE ID: {e}")))?;
        let mut selectors = Vec::with_capacity(path.len() + 1);
        let mut cns = leaf.subject().iter_common_name();
        match (cns.next(), cns.next()) {
            (Some(cn), None) => match cn.as_str() {
                Ok(cn) => match Selector::new(X509POP, &format!("subject:cn:{cn}")) {
                    Ok(s) => selectors.push(s),
                    Err(e) => {
                        debug!(agent_id = %agent_id, error = %e, "x509pop CN is not a valid selector; no CN selector");
                    }
                },
                Err(e) => {
                    debug!(agent_id = %agent_id, error = %e, "x509pop CN is not a string; no CN selector");
                }
            },
            (Some(_), Some(_)) => {
                debug!(agent_id = %agent_id, "x509pop leaf has several CNs; no CN selector");
            }
            (None, _) => {}
        }
        let mut ban_rules = vec![format!(
            "{X509POP}:spki:sha256:{}",
            sha256_hex(leaf.public_key().raw)
        )];
        match selectors.first() {
            Some(cn) => ban_rules.push(cn.to_string()),
            None if leaf.subject().iter().next().is_some() => {
                ban_rules.push(format!("{X509POP}:subject:dn:{}", leaf.subject()));
            }
            None => {}
        }
        for ca in &path {
            let s = Selector::new(X509POP, &format!("ca:fingerprint:{}", sha256_hex(ca)))
                .map_err(|e| AttestError::Internal(format!("x509pop CA selector: {e}")))?;
            if !selectors.contains(&s) {
                selectors.push(s);
            }
        }

        let mut challenge = vec![0u8; X509POP_CHALLENGE_LEN];
        self.rng
            .fill(&mut challenge)
            .map_err(|_| AttestError::Internal("the system random generator failed".to_string()))?;
        Ok(Step::Challenge {
            challenge: challenge.clone(),
            state: Box::new(PendingChallenge {
                challenge,
                channel,
                key,
                node: AttestedNode {
                    agent_id,
                    selectors,
                    can_reattest: true,
                    ban_rules,
                },
            }),
        })
    }
}

/// A challenge sent to an agent whose chain already verified.
struct PendingChallenge {
    challenge: Vec<u8>,
    /// The connection the challenge was sent on: the answer must be bound
    /// to it.
    channel: ChannelBinding,
    key: X509PopPublicKey,
    /// What the agent becomes if it answers correctly.
    node: AttestedNode,
}

impl ChallengeState for PendingChallenge {
    fn verify(self: Box<Self>, response: &[u8]) -> Result<Step, AttestError> {
        let message = x509pop_signed_message(&self.challenge, &self.channel);
        UnparsedPublicKey::new(self.key.alg.verification_alg(), &self.key.key)
            .verify(&message, response)
            .map_err(|_| AttestError::Refused(BAD_ANSWER.to_string()))?;
        Ok(Step::Done(self.node))
    }
}

#[cfg(test)]
mod tests;
