//! The CA manager's JWT key operations: installing a new signing key (only
//! once the bundle publishes its `kid`: a key is in every bundle before it
//! signs), and the operator commands `ca prepare|activate|taint|revoke
//! --kind jwt`.

use std::sync::Arc;

use super::CaManager;
use crate::ca::CaError;
use crate::ca::jwt::JwtSigner;
use crate::store::BundleRecord;

/// Refuses a JWT key the bundle does not publish yet.
pub(super) fn check_jwt_published(
    bundle: &BundleRecord,
    signer: &JwtSigner,
) -> Result<(), CaError> {
    if bundle.jwt_authorities.iter().any(|a| a.kid == signer.kid()) {
        Ok(())
    } else {
        Err(CaError::NotPublished {
            serial: format!("JWT key {}", signer.kid()),
        })
    }
}

impl CaManager {
    /// Makes `signer` (if a step produced one) the JWT key that signs; it
    /// must already be in the published bundle.
    pub(super) fn install_jwt(&self, signer: Option<JwtSigner>) -> Result<(), CaError> {
        let Some(s) = signer else {
            return Ok(());
        };
        check_jwt_published(&self.bundle(), &s)?;
        *self.jwt_active.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
        Ok(())
    }
}
