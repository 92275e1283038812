//! The agent's JWT-SVID signing keys of its own trust domain, as the last
//! sync gave them, stored in their own file under `data_dir` (issue 15):
//! after a restart with the server down, `ValidateJWTSVID` and
//! `FetchJWTBundles` serve these keys at once instead of refusing until the
//! first sync. The file (`jwt_keys.json`) holds the keys as the SPIFFE
//! bundle JWKS (`use: "jwt-svid"`, each with its `kid`) and the tainted
//! `kid`s; it is written atomically (temp file, fsync, rename), so a crash
//! leaves the previous keys or the new ones. Public keys only: nothing in it
//! is secret. A file that does not parse, or names another trust domain, is
//! refused on load with the reason (the agent then starts without keys, as
//! before, and the first sync replaces it).

use std::fs;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sigil_proto::daemon::files::write_atomic;
use sigil_proto::{JwtKey, SpiffeBundle, TrustDomain};

use super::DataDir;

const JWT_KEYS: &str = "jwt_keys.json";

/// The JWT keys an agent serves for its own trust domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredJwtKeys {
    pub jwt_authorities: Vec<JwtKey>,
    pub tainted_jwt_key_ids: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    trust_domain: String,
    /// The SPIFFE bundle JWKS of the keys (JWT keys only).
    jwks: serde_json::Value,
    tainted_jwt_key_ids: Vec<String>,
}

impl DataDir {
    /// The stored JWT keys of `td`, if any are stored.
    pub fn load_jwt_keys(&self, td: &TrustDomain) -> anyhow::Result<Option<StoredJwtKeys>> {
        let path = self.dir.join(JWT_KEYS);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let doc: OnDisk = serde_json::from_slice(&text)
            .with_context(|| format!("{}: not a stored JWT key file", path.display()))?;
        if doc.trust_domain != td.as_str() {
            anyhow::bail!(
                "{}: keys of trust domain {:?}, but this agent is of {:?}",
                path.display(),
                doc.trust_domain,
                td.as_str()
            );
        }
        let decoded = sigil_proto::bundle::decode(td, doc.jwks.to_string().as_bytes())
            .with_context(|| format!("{}: the JWKS", path.display()))?;
        Ok(Some(StoredJwtKeys {
            jwt_authorities: decoded.bundle.jwt_authorities,
            tainted_jwt_key_ids: doc.tainted_jwt_key_ids,
        }))
    }

    /// Replaces the stored JWT keys of `td` (one atomic write).
    pub fn save_jwt_keys(&self, td: &TrustDomain, keys: &StoredJwtKeys) -> anyhow::Result<()> {
        let jwks = sigil_proto::bundle::encode(&SpiffeBundle {
            trust_domain: td.clone(),
            x509_authorities: Vec::new(),
            jwt_authorities: keys.jwt_authorities.clone(),
            sequence: None,
            refresh_hint: None,
        })
        .context("encoding the JWT keys")?;
        let doc = OnDisk {
            trust_domain: td.as_str().to_string(),
            jwks: serde_json::from_str(&jwks).context("the encoded JWKS")?,
            tainted_jwt_key_ids: keys.tainted_jwt_key_ids.clone(),
        };
        let text = serde_json::to_vec_pretty(&doc).context("encoding the JWT key file")?;
        let path = self.dir.join(JWT_KEYS);
        write_atomic(&path, &text, 0o600).with_context(|| format!("writing {}", path.display()))
    }
}

/// Stores the JWT keys of every snapshot the agent publishes whenever they
/// differ from the last stored (`stored`, what was loaded at start), until
/// the snapshot channel closes. A failed write is logged and retried with
/// the next change.
pub async fn follow(data: DataDir, mut state: crate::state::StateRx, mut stored: StoredJwtKeys) {
    loop {
        let now = {
            let s = state.borrow_and_update();
            StoredJwtKeys {
                jwt_authorities: s.jwt_authorities.clone(),
                tainted_jwt_key_ids: s.tainted_jwt_key_ids.clone(),
            }
        };
        // An empty set is what a snapshot holds before the first sync: it
        // never replaces stored keys (the server always has a JWT key).
        if now != stored && !now.jwt_authorities.is_empty() {
            let td = state.borrow().trust_domain.clone();
            match data.save_jwt_keys(&td, &now) {
                Ok(()) => {
                    tracing::debug!(keys = now.jwt_authorities.len(), "JWT keys stored");
                    stored = now;
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "storing the JWT keys failed"),
            }
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str) -> JwtKey {
        sigil_proto::jwt::test_sign::TestJwtKey::es256(kid).jwt_key()
    }

    #[test]
    fn jwt_keys_round_trip_and_refuse_another_trust_domain() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(&dir.path().join("d")).unwrap();
        let td = TrustDomain::parse("a.test").unwrap();
        assert_eq!(data.load_jwt_keys(&td).unwrap(), None);
        let keys = StoredJwtKeys {
            jwt_authorities: vec![key("k1"), key("k2")],
            tainted_jwt_key_ids: vec!["k1".into()],
        };
        data.save_jwt_keys(&td, &keys).unwrap();
        assert_eq!(data.load_jwt_keys(&td).unwrap(), Some(keys));
        let other = TrustDomain::parse("b.test").unwrap();
        let err = format!("{:#}", data.load_jwt_keys(&other).unwrap_err());
        assert!(
            err.contains("\"a.test\"") && err.contains("\"b.test\""),
            "{err}"
        );
    }
}
