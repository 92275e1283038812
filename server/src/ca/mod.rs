//! The X.509 certificate authority: [`X509Ca`] signs SVID leaves with one CA
//! key (parsed once, reused for every signature), [`manager::CaManager`]
//! owns the key slots, the journal in the store and the trust bundle, and
//! [`issuer::Issuer`] decides what is signed (the one signing path).

pub mod csr;
pub mod dependents;
pub mod issuer;
pub mod journal;
pub mod jwt;
pub mod manager;
pub mod profile;
pub mod published;
pub mod rotation;
pub mod startup;
#[cfg(test)]
pub(crate) mod testing;
pub mod union;

use std::time::{Duration, SystemTime};

use rcgen::{Issuer, KeyPair, PublicKeyData};
use rustls_pki_types::CertificateDer;
use sigil_proto::SpiffeId;
use time::OffsetDateTime;

use crate::store::SlotId;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the CA expired at {not_after} (unix seconds) and cannot sign")]
    Expired { not_after: i64 },
    #[error("invalid certificate parameters: {0}")]
    Params(String),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("CA certificate is unusable: {0}")]
    BadCaCert(String),
    #[error("CA key: {0}")]
    Key(#[from] crate::key_manager::KeyError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("upstream CA: {0}")]
    Upstream(#[from] crate::upstream::UpstreamError),
    #[error("{0}")]
    Start(String),
    #[error("randomness unavailable")]
    Random,
    #[error(
        "CA {serial} is not in the published trust bundle yet and must not sign (SPIFFE Trust \
         Domain and Bundle §4.1: new keys are published before use)"
    )]
    NotPublished { serial: String },
}

/// A freshly signed leaf.
#[derive(Debug, Clone)]
pub struct SignedLeaf {
    /// DER: the leaf, then the CA chain (excluding trust anchors).
    pub chain: Vec<Vec<u8>>,
    pub spiffe_id: SpiffeId,
    pub serial_hex: String,
    /// Serial (hex) of the CA that signed it.
    pub ca_serial: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// 16 bytes from the system CSPRNG.
pub fn random16() -> Result<[u8; 16], CaError> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| CaError::Random)?;
    Ok(b)
}

pub(crate) fn unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn odt(unix_secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix_secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// One CA key with its certificate chain, ready to sign.
pub struct X509Ca {
    slot: SlotId,
    issuer: Issuer<'static, KeyPair>,
    /// DER: this CA's certificate first, then upstream intermediates.
    chain: Vec<Vec<u8>>,
    serial_hex: String,
    not_before: i64,
    not_after: i64,
}

impl std::fmt::Debug for X509Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Ca")
            .field("slot", &self.slot)
            .field("serial", &self.serial_hex)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl X509Ca {
    /// Builds a signer from a CA key and its chain (CA cert first).
    pub fn new(slot: SlotId, key: KeyPair, chain: Vec<Vec<u8>>) -> Result<X509Ca, CaError> {
        let first = chain
            .first()
            .ok_or_else(|| CaError::BadCaCert("empty chain".into()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(first)
            .map_err(|e| CaError::BadCaCert(e.to_string()))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::BadCaCert(
                "the CA key does not match the CA certificate".into(),
            ));
        }
        let serial_hex = hex::encode(cert.raw_serial())
            .trim_start_matches("00")
            .to_string();
        let not_before = cert.validity().not_before.timestamp();
        let not_after = cert.validity().not_after.timestamp();
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(first.as_slice()), key)
            .map_err(|e| CaError::BadCaCert(e.to_string()))?;
        Ok(X509Ca {
            slot,
            issuer,
            chain,
            serial_hex,
            not_before,
            not_after,
        })
    }

    pub fn slot(&self) -> SlotId {
        self.slot
    }
    pub fn serial_hex(&self) -> &str {
        &self.serial_hex
    }
    pub fn not_before(&self) -> i64 {
        self.not_before
    }
    pub fn not_after(&self) -> i64 {
        self.not_after
    }
    /// DER: this CA's certificate first, then upstream intermediates.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// Signs an X.509-SVID for `spiffe_id` over `public_key`. The caller has
    /// already decided that this identity may be issued; names and TTL come
    /// from the caller (the entry), never from a CSR.
    pub fn sign_leaf(
        &self,
        spiffe_id: &SpiffeId,
        dns_names: &[String],
        ttl: Duration,
        public_key: &impl PublicKeyData,
        now: SystemTime,
    ) -> Result<SignedLeaf, CaError> {
        let (not_before, not_after) = profile::leaf_validity(
            odt(unix(now)),
            ttl,
            odt(self.not_before),
            odt(self.not_after),
        )?;
        let serial = profile::serial_from_random(random16()?);
        let serial_hex = hex::encode(serial.to_bytes());
        let params = profile::leaf_params(
            spiffe_id,
            dns_names,
            not_before,
            not_after,
            serial,
            &public_key.subject_public_key_info(),
        )?;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let mut chain = Vec::with_capacity(1 + self.chain.len());
        chain.push(cert.der().to_vec());
        chain.extend(self.chain.iter().cloned());
        Ok(SignedLeaf {
            chain,
            spiffe_id: spiffe_id.clone(),
            serial_hex,
            ca_serial: self.serial_hex.clone(),
            not_before: not_before.unix_timestamp(),
            not_after: not_after.unix_timestamp(),
        })
    }
}
