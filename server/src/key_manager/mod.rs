//! Where CA private keys live. A key is named by a key id, generated once and
//! loaded by that id afterwards; key material never leaves this module in a
//! `Debug` or log line (rcgen's `KeyPair` redacts it).

pub mod disk;
pub mod memory;

use rcgen::KeyPair;
use serde::Deserialize;

/// CA key algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum KeyType {
    #[serde(rename = "ec-p256")]
    EcP256,
    #[serde(rename = "ec-p384")]
    EcP384,
}

impl KeyType {
    pub fn name(self) -> &'static str {
        match self {
            KeyType::EcP256 => "ec-p256",
            KeyType::EcP384 => "ec-p384",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key {id:?} not found")]
    NotFound { id: String },
    #[error("invalid key id {id:?}: only [a-z0-9-] is allowed")]
    BadId { id: String },
    #[error("key {id:?} is not a usable PKCS#8 EC key: {message}")]
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
    }
}

pub(crate) fn generate(key_type: KeyType) -> Result<KeyPair, KeyError> {
    KeyPair::generate_for(algorithm(key_type)).map_err(|e| KeyError::Generate(e.to_string()))
}

/// Parses PKCS#8 DER of an EC P-256 or P-384 key.
pub(crate) fn from_pkcs8(id: &str, der: &[u8]) -> Result<KeyPair, KeyError> {
    let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der);
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
    ] {
        if let Ok(k) = KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, alg) {
            return Ok(k);
        }
    }
    Err(KeyError::Invalid {
        id: id.to_string(),
        message: "not an EC P-256 or P-384 PKCS#8 key".into(),
    })
}
