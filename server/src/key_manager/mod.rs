//! Where CA private keys live. A key is named by a key id, generated once and
//! loaded by that id afterwards; key material never leaves this module in a
//! `Debug` or log line (rcgen's `KeyPair` redacts it). CA keys are EC; JWT
//! signing keys may also be RSA ([`rsa_key`]).

pub mod disk;
pub mod memory;
pub mod rsa_key;

use rcgen::KeyPair;
use serde::Deserialize;

/// Key algorithm: CA keys are EC (`ca_key_type`); JWT signing keys may
/// also be RSA (`jwt_key_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum KeyType {
    #[serde(rename = "ec-p256")]
    EcP256,
    #[serde(rename = "ec-p384")]
    EcP384,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

impl KeyType {
    pub fn name(self) -> &'static str {
        match self {
            KeyType::EcP256 => "ec-p256",
            KeyType::EcP384 => "ec-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa2048 | KeyType::Rsa4096)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key {id:?} not found")]
    NotFound { id: String },
    #[error("invalid key id {id:?}: only [a-z0-9-] is allowed")]
    BadId { id: String },
    #[error("key {id:?} is not a usable PKCS#8 EC or RSA key: {message}")]
    Invalid { id: String, message: String },
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("key storage at {path} failed: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A place to keep CA signing keys.
pub trait KeyManager: Send + Sync + 'static {
    /// Generates a new key of `key_type`, stores it under `id` durably and
    /// returns it. Overwrites nothing: an existing `id` is an error.
    fn generate(&self, id: &str, key_type: KeyType) -> Result<KeyPair, KeyError>;
    /// Loads the key stored under `id`.
    fn load(&self, id: &str) -> Result<KeyPair, KeyError>;
    /// Deletes the key; deleting a missing key is not an error.
    fn delete(&self, id: &str) -> Result<(), KeyError>;
    /// Ids of every stored key.
    fn list(&self) -> Result<Vec<String>, KeyError>;
    /// Where the key `id` is kept, for error messages (a file path on disk).
    fn location(&self, id: &str) -> String {
        format!("key {id:?}")
    }
}

pub(crate) fn check_id(id: &str) -> Result<(), KeyError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(KeyError::BadId { id: id.to_string() });
    }
    Ok(())
}

pub(crate) fn algorithm(key_type: KeyType) -> &'static rcgen::SignatureAlgorithm {
    match key_type {
        KeyType::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyType::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyType::Rsa2048 | KeyType::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
    }
}

pub(crate) fn generate(key_type: KeyType) -> Result<KeyPair, KeyError> {
    match key_type {
        KeyType::Rsa2048 => rsa_key::generate(2048),
        KeyType::Rsa4096 => rsa_key::generate(4096),
        _ => KeyPair::generate_for(algorithm(key_type))
            .map_err(|e| KeyError::Generate(e.to_string())),
    }
}

/// Parses PKCS#8 DER of an EC P-256, EC P-384 or RSA key.
pub(crate) fn from_pkcs8(id: &str, der: &[u8]) -> Result<KeyPair, KeyError> {
    let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der);
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_RSA_SHA256,
    ] {
        if let Ok(k) = KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, alg) {
            return Ok(k);
        }
    }
    Err(KeyError::Invalid {
        id: id.to_string(),
        message: "not an EC P-256, EC P-384 or RSA PKCS#8 key".into(),
    })
}
