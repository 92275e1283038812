//! The agent's own identity: its key and agent SVID, as one value that is
//! swapped whole on renewal.

use sigil_proto::SpiffeId;

pub struct AgentIdentity {
    pub id: SpiffeId,
    /// PKCS#8 DER; generated on this agent.
    pub key_pkcs8: Vec<u8>,
    /// DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// Lowercase hex serial of the leaf.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    /// Unix seconds: when this process got (or loaded) the SVID; renewal
    /// counts the lifetime from here, not from the backdated notBefore.
    pub received_at: i64,
}

impl std::fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("id", &self.id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl AgentIdentity {
    /// Reads the identity from a chain and key; checks that the key matches.
    pub fn from_parts(chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> anyhow::Result<AgentIdentity> {
        let leaf = chain
            .first()
            .ok_or_else(|| anyhow::anyhow!("empty agent SVID chain"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| anyhow::anyhow!("agent SVID unreadable: {e}"))?;
        let id = sigil_proto::tls::spiffe_id_from_cert(leaf)?;
        let key = rcgen::KeyPair::try_from(key_pkcs8.as_slice())
            .map_err(|e| anyhow::anyhow!("agent key unreadable: {e}"))?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            anyhow::bail!("agent key does not match the agent SVID");
        }
        Ok(AgentIdentity {
            id,
            key_pkcs8,
            serial: hex::encode(cert.raw_serial())
                .trim_start_matches("00")
                .to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            received_at: time::OffsetDateTime::now_utc().unix_timestamp(),
            chain,
        })
    }
}

/// A fresh P-256 key and a CSR (DER) for it. Names in the CSR are ignored by
/// the server; only the key matters.
pub fn key_and_csr() -> anyhow::Result<(rcgen::KeyPair, Vec<u8>)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    // The server takes nothing from a CSR but its key: an empty subject
    // (rcgen's default is a placeholder CN).
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    Ok((key, csr.der().to_vec()))
}
