//! Node attestation, the part both halves share (DESIGN §3 "Node
//! attestation"): the attestor names on the wire, the form of a join token,
//! and the `x509pop` contract — how the agent's certificate chain is encoded
//! in the payload, which chains the server accepts, which node keys may
//! answer a challenge and exactly which bytes the agent signs. The server and
//! the agent both use these definitions so they cannot drift apart.
//!
//! x509pop payload: the agent's certificate chain, leaf first, as
//! concatenated DER certificates (no length prefixes, no PEM), at most
//! [`X509POP_MAX_CHAIN_CERTS`] certificates and [`X509POP_MAX_CHAIN_BYTES`]
//! bytes. The agent answers a challenge with a signature by the leaf's key
//! over [`x509pop_signed_message`]: [`X509POP_CONTEXT`], the challenge and
//! the channel binding of the TLS connection the attestation runs on (the
//! [`X509POP_EXPORTER_LABEL`] keying material of RFC 8446 §7.5, see
//! [`x509pop_channel_binding`]). The fixed prefix separates these signatures
//! from any other protocol that key may sign for (TLS, code signing, …); the
//! channel binding makes an answer worthless on any other connection, so a
//! man in the middle holding one TLS connection to the agent and another to
//! the server cannot relay it.
//!
//! Which chains are accepted: the leaf must chain through the presented
//! intermediates to one of the operator's CA certificates, every certificate
//! must be valid at the attestation time, the leaf must not be a CA and every
//! intermediate must be one. Extended key usage: a certificate without the
//! extension may be used for anything (RFC 5280 §4.2.1.12); a certificate
//! with it must list `clientAuth` or `anyExtendedKeyUsage`. Proving
//! possession of the key to the server is client authentication, so the rule
//! is the one a TLS server applies to a client certificate: a node
//! certificate an operator issued only for `serverAuth` or code signing was
//! not meant to identify its holder to a peer and is refused.

use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, ED25519, RSA_PKCS1_2048_8192_SHA256,
    VerificationAlgorithm,
};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{ExtendedKeyUsageValidator, KeyPurposeId, KeyPurposeIdIter, KeyUsage};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::pem::certs_from_pem_or_der;

/// Name of the join token attestor on the wire.
pub const JOIN_TOKEN: &str = "join_token";
/// Name of the x509 proof-of-possession attestor on the wire.
pub const X509POP: &str = "x509pop";

/// Longest join token accepted, in bytes.
pub const JOIN_TOKEN_MAX_LEN: usize = 128;

/// Domain-separation prefix of every x509pop signature.
pub const X509POP_CONTEXT: &[u8] = b"sigil x509pop challenge v1\0";
/// Length of the server's x509pop challenge, in bytes.
pub const X509POP_CHALLENGE_LEN: usize = 32;
/// Most certificates an x509pop payload may hold (leaf included).
pub const X509POP_MAX_CHAIN_CERTS: usize = 8;
/// Largest x509pop payload, in bytes.
pub const X509POP_MAX_CHAIN_BYTES: usize = 64 * 1024;
/// Smallest and largest RSA node key accepted, in bits (what ring verifies).
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

/// DER content of the `id-kp-clientAuth` OID, 1.3.6.1.5.5.7.3.2.
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
/// DER content of the `anyExtendedKeyUsage` OID, 2.5.29.37.0.
const EKU_ANY: &[u8] = &[0x55, 0x1d, 0x25, 0x00];

/// Why an x509pop chain, key or trust bundle was refused. Messages name the
/// rule; they never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum X509PopError {
    #[error("x509pop certificate chain is empty: send the node certificate, leaf first")]
    EmptyChain,
    #[error(
        "x509pop certificate chain is {len} bytes, more than the limit of {X509POP_MAX_CHAIN_BYTES}"
    )]
    ChainTooLarge { len: usize },
    #[error(
        "x509pop certificate chain has {count} certificates, more than the limit of {X509POP_MAX_CHAIN_CERTS}"
    )]
    TooManyCerts { count: usize },
    #[error("x509pop certificate chain is not concatenated DER certificates: {reason}")]
    MalformedChain { reason: String },
    #[error(
        "x509pop node key is not supported: {reason} (supported: ECDSA P-256, ECDSA P-384, Ed25519, RSA of 2048 to 8192 bits)"
    )]
    UnsupportedKey { reason: String },
    #[error("the x509pop CA bundle has no certificates: at least one CA certificate is required")]
    NoRoots,
    #[error("x509pop CA bundle certificate {index} cannot be used as a trust anchor: {reason}")]
    BadRoot { index: usize, reason: String },
    #[error("x509pop certificate chain is not trusted: {reason}")]
    Untrusted { reason: String },
}

/// Whether `token` has the form of a join token: 1 to 128 bytes of
/// `[A-Za-z0-9_-]`. Tokens the server generates are 32 lowercase hex digits.
pub fn is_valid_join_token(token: &str) -> bool {
    (1..=JOIN_TOKEN_MAX_LEN).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The bytes an agent signs to answer x509pop challenge `challenge` on the
/// TLS connection whose channel binding is `channel`: [`X509POP_CONTEXT`],
/// the challenge, then the channel binding.
pub fn x509pop_signed_message(challenge: &[u8], channel: &ChannelBinding) -> Vec<u8> {
    let mut message =
        Vec::with_capacity(X509POP_CONTEXT.len() + challenge.len() + X509POP_CHANNEL_BINDING_LEN);
    message.extend_from_slice(X509POP_CONTEXT);
    message.extend_from_slice(challenge);
    message.extend_from_slice(&channel.0);
    message
}

/// The exporter label of the x509pop channel binding (RFC 8446 §7.5).
pub const X509POP_EXPORTER_LABEL: &[u8] = b"EXPORTER-sigil-x509pop";
/// Length of the x509pop channel binding, in bytes.
pub const X509POP_CHANNEL_BINDING_LEN: usize = 32;

/// Keying material exported from one TLS connection: both ends of the
/// connection compute the same value, and no other connection has it.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelBinding(pub [u8; X509POP_CHANNEL_BINDING_LEN]);

impl std::fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secret to the two ends of the connection: never printed.
        f.write_str("ChannelBinding(..)")
    }
}

/// The x509pop channel binding of the TLS connection `conn`:
/// [`X509POP_CHANNEL_BINDING_LEN`] bytes exported with the label
/// [`X509POP_EXPORTER_LABEL`] and no context. Fails before the handshake
/// is complete.
pub fn x509pop_channel_binding<D>(
    conn: &rustls::ConnectionCommon<D>,
) -> Result<ChannelBinding, rustls::Error> {
    conn.export_keying_material(
        [0u8; X509POP_CHANNEL_BINDING_LEN],
        X509POP_EXPORTER_LABEL,
        None,
    )
    .map(ChannelBinding)
}

/// Encodes a certificate chain (DER, leaf first) as an x509pop payload.
pub fn encode_chain(chain: &[Vec<u8>]) -> Vec<u8> {
    chain.concat()
}

/// Decodes an x509pop payload into its DER certificates, leaf first,
/// enforcing the size limits. PEM is not accepted on the wire.
pub fn decode_chain(payload: &[u8]) -> Result<Vec<Vec<u8>>, X509PopError> {
    if payload.is_empty() {
        return Err(X509PopError::EmptyChain);
    }
    if payload.len() > X509POP_MAX_CHAIN_BYTES {
        return Err(X509PopError::ChainTooLarge { len: payload.len() });
    }
    if payload.first() != Some(&0x30) {
        return Err(X509PopError::MalformedChain {
            reason: "the payload does not start with a DER SEQUENCE (0x30)".to_string(),
        });
    }
    let chain = certs_from_pem_or_der(payload).map_err(|e| X509PopError::MalformedChain {
        reason: e.to_string(),
    })?;
    if chain.len() > X509POP_MAX_CHAIN_CERTS {
        return Err(X509PopError::TooManyCerts { count: chain.len() });
    }
    Ok(chain)
}

/// The signature algorithms an x509pop node key answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum X509PopKeyAlg {
    /// ECDSA P-256 with SHA-256, ASN.1 DER signature.
    EcdsaP256Sha256,
    /// ECDSA P-384 with SHA-384, ASN.1 DER signature.
    EcdsaP384Sha384,
    /// Ed25519.
    Ed25519,
    /// RSA PKCS#1 v1.5 with SHA-256, 2048 to 8192-bit modulus.
    RsaPkcs1Sha256,
}

impl X509PopKeyAlg {
    /// A short name for logs and `Debug`.
    pub fn name(self) -> &'static str {
        match self {
            X509PopKeyAlg::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            X509PopKeyAlg::EcdsaP384Sha384 => "ecdsa-p384-sha384",
            X509PopKeyAlg::Ed25519 => "ed25519",
            X509PopKeyAlg::RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
        }
    }

    /// ring's verification algorithm for signatures by this kind of key.
    pub fn verification_alg(self) -> &'static dyn VerificationAlgorithm {
        match self {
            X509PopKeyAlg::EcdsaP256Sha256 => &ECDSA_P256_SHA256_ASN1,
            X509PopKeyAlg::EcdsaP384Sha384 => &ECDSA_P384_SHA384_ASN1,
            X509PopKeyAlg::Ed25519 => &ED25519,
            X509PopKeyAlg::RsaPkcs1Sha256 => &RSA_PKCS1_2048_8192_SHA256,
        }
    }
}

/// A node certificate's public key, in the form ring verifies with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509PopPublicKey {
    pub alg: X509PopKeyAlg,
    /// The SubjectPublicKeyInfo's key bits: the uncompressed point (ECDSA),
    /// the 32-byte key (Ed25519) or the `RSAPublicKey` DER (RSA).
    pub key: Vec<u8>,
}

/// The public key of the certificate `leaf_der` and the algorithm it signs
/// x509pop answers with, chosen from the SPKI's algorithm OID and curve.
pub fn x509pop_public_key(leaf_der: &[u8]) -> Result<X509PopPublicKey, X509PopError> {
    let unsupported = |reason: String| X509PopError::UnsupportedKey { reason };
    let cert = match X509Certificate::from_der(leaf_der) {
        Ok((_, cert)) => cert,
        Err(e) => {
            return Err(X509PopError::MalformedChain {
                reason: format!("the leaf certificate does not parse: {e}"),
            });
        }
    };
    let spki = cert.public_key();
    let oid = &spki.algorithm.algorithm;
    let key = spki.subject_public_key.data.to_vec();
    let alg = if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| unsupported("EC key without a named curve".to_string()))?;
        if curve == OID_EC_P256 {
            X509PopKeyAlg::EcdsaP256Sha256
        } else if curve == OID_NIST_EC_P384 {
            X509PopKeyAlg::EcdsaP384Sha384
        } else {
            return Err(unsupported(format!("EC curve {}", curve.to_id_string())));
        }
    } else if *oid == OID_SIG_ED25519 {
        X509PopKeyAlg::Ed25519
    } else if *oid == OID_PKCS1_RSAENCRYPTION {
        let bits = match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => modulus_bits(rsa.modulus),
            Ok(_) | Err(_) => {
                return Err(unsupported("malformed RSA public key".to_string()));
            }
        };
        if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
            return Err(unsupported(format!("RSA key of {bits} bits")));
        }
        X509PopKeyAlg::RsaPkcs1Sha256
    } else {
        return Err(unsupported(format!(
            "public key algorithm {}",
            oid.to_id_string()
        )));
    };
    Ok(X509PopPublicKey { alg, key })
}

/// Bit length of a big-endian unsigned integer.
fn modulus_bits(modulus: &[u8]) -> usize {
    let start = modulus
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(modulus.len());
    match modulus.get(start..) {
        Some([first, rest @ ..]) => rest.len() * 8 + (8 - first.leading_zeros() as usize),
        _ => 0,
    }
}

/// Checks that every certificate of an x509pop CA bundle can anchor a chain.
pub fn check_x509pop_roots(roots: &[Vec<u8>]) -> Result<(), X509PopError> {
    let ders: Vec<CertificateDer<'_>> = roots
        .iter()
        .map(|r| CertificateDer::from(r.as_slice()))
        .collect();
    anchors(&ders).map(|_| ())
}

fn anchors<'a>(roots: &'a [CertificateDer<'a>]) -> Result<Vec<TrustAnchor<'a>>, X509PopError> {
    if roots.is_empty() {
        return Err(X509PopError::NoRoots);
    }
    roots
        .iter()
        .enumerate()
        .map(|(index, der)| {
            webpki::anchor_from_trusted_cert(der).map_err(|e| X509PopError::BadRoot {
                index,
                reason: format!("{e:?}"),
            })
        })
        .collect()
}

/// Verifies the x509pop chain `chain` (DER, leaf first) against the CA
/// certificates `roots` at `now` (unix seconds) with the rules in this
/// module's documentation. Returns the CA certificates of the verified path:
/// the intermediates used, the leaf's issuer first, then the certificate
/// from `roots` that anchored it.
pub fn verify_x509pop_chain(
    chain: &[Vec<u8>],
    roots: &[Vec<u8>],
    now: u64,
) -> Result<Vec<Vec<u8>>, X509PopError> {
    let root_ders: Vec<CertificateDer<'_>> = roots
        .iter()
        .map(|r| CertificateDer::from(r.as_slice()))
        .collect();
    let anchors = anchors(&root_ders)?;
    let Some((leaf, rest)) = chain.split_first() else {
        return Err(X509PopError::EmptyChain);
    };
    let leaf = CertificateDer::from(leaf.as_slice());
    let intermediates: Vec<CertificateDer<'_>> = rest
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let untrusted = |e: webpki::Error| X509PopError::Untrusted {
        reason: describe(&e),
    };
    let end_entity = webpki::EndEntityCert::try_from(&leaf).map_err(untrusted)?;
    let path = end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(now)),
            NodeCertUsage,
            None,
            None,
        )
        .map_err(untrusted)?;
    let mut cas: Vec<Vec<u8>> = path
        .intermediate_certificates()
        .map(|c| c.der().to_vec())
        .collect();
    // `anchor()` refers into `anchors`, which is index-aligned with `roots`.
    let anchor = path.anchor();
    let index = anchors
        .iter()
        .position(|a| std::ptr::eq(a, anchor))
        .ok_or_else(|| X509PopError::Untrusted {
            reason: "the verified path's trust anchor is not one of the configured CAs".to_string(),
        })?;
    let root = roots.get(index).ok_or_else(|| X509PopError::Untrusted {
        reason: "the verified path's trust anchor is not one of the configured CAs".to_string(),
    })?;
    cas.push(root.clone());
    Ok(cas)
}

/// The extended key usage rule of this module's documentation, applied by
/// webpki to every certificate on the path.
struct NodeCertUsage;

impl ExtendedKeyUsageValidator for NodeCertUsage {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let client_auth = KeyPurposeId::new(EKU_CLIENT_AUTH);
        let any = KeyPurposeId::new(EKU_ANY);
        let mut present = Vec::new();
        for id in iter {
            let id = id?;
            if id == client_auth || id == any {
                return Ok(());
            }
            present.push(id.to_decoded_oid());
        }
        if present.is_empty() {
            return Ok(());
        }
        Err(webpki::Error::RequiredEkuNotFoundContext(
            webpki::RequiredEkuNotFoundContext {
                required: KeyUsage::client_auth(),
                present,
            },
        ))
    }
}

/// A readable reason for the common webpki refusals.
fn describe(e: &webpki::Error) -> String {
    use webpki::Error as W;
    match e {
        W::UnknownIssuer => "the chain does not lead to a configured x509pop CA".to_string(),
        W::CertExpired { time, not_after } => format!(
            "a certificate on the chain expired at {} (unix seconds; now {})",
            not_after.as_secs(),
            time.as_secs()
        ),
        W::CertNotValidYet { time, not_before } => format!(
            "a certificate on the chain is not valid before {} (unix seconds; now {})",
            not_before.as_secs(),
            time.as_secs()
        ),
        W::CaUsedAsEndEntity => "the leaf certificate is a CA certificate".to_string(),
        W::EndEntityUsedAsCa => "an intermediate certificate is not a CA certificate".to_string(),
        W::RequiredEkuNotFoundContext(_) => "a certificate on the chain has an extended key \
             usage without clientAuth or anyExtendedKeyUsage"
            .to_string(),
        W::InvalidSignatureForPublicKey => {
            "a certificate signature on the chain does not verify".to_string()
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests;
