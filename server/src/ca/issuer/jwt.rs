//! JWT-SVID signing through the [`Issuer`]: a workload's token (the entry
//! must be authorized for the asking agent, exactly as for X.509) and an
//! operator-minted one. The audience must hold at least one value and no
//! empty one; the TTL is the entry's `jwt_svid_ttl`, or the default, capped
//! at ca_ttl / 6 (the JWT key's TTL is `ca_ttl`, so a token never outlives
//! the key's publication) and at the entry's `expires_at`.

use std::time::Duration;

use sigil_proto::SpiffeId;
use sigil_proto::clock::unix_seconds;
use tracing::error;

use super::{Authorized, IssueError, Issuer, IssuerSettings, measured};
use crate::ca::jwt::SignedJwt;
use crate::config::DEFAULT_JWT_SVID_TTL;
use crate::metrics::SvidKind;
use crate::registry::Registry;
use crate::store::AttestedAgent;

/// Most audiences one token may carry, and the longest audience value.
pub const MAX_AUDIENCES: usize = 32;
pub const MAX_AUDIENCE_LEN: usize = 1024;

/// The JWT-SVID settings of the issuer (`default_jwt_svid_ttl`,
/// `jwt_issuer`; the maximum is ca_ttl / 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtIssueSettings {
    /// For entries without their own `jwt_svid_ttl` and mints without a TTL.
    pub default_ttl: Duration,
    /// ca_ttl / 6.
    pub max_ttl: Duration,
    /// The `iss` claim, if configured.
    pub issuer: Option<String>,
}

impl JwtIssueSettings {
    /// 5m (capped at the X.509 maximum, the same ca_ttl / 6), no `iss`.
    pub fn defaults(x509: &IssuerSettings) -> JwtIssueSettings {
        JwtIssueSettings {
            default_ttl: DEFAULT_JWT_SVID_TTL.min(x509.max_x509_svid_ttl),
            max_ttl: x509.max_x509_svid_ttl,
            issuer: None,
        }
    }
}

/// Refuses an empty audience list, an empty audience, and absurd sizes.
pub fn check_audience(audience: &[String]) -> Result<(), IssueError> {
    if audience.is_empty() {
        return Err(IssueError::BadRequest(
            "audience: a JWT-SVID needs at least one audience (the aud claim)".into(),
        ));
    }
    if audience.len() > MAX_AUDIENCES {
        return Err(IssueError::BadRequest(format!(
            "audience: {} audiences, at most {MAX_AUDIENCES} are allowed",
            audience.len()
        )));
    }
    for (i, a) in audience.iter().enumerate() {
        if a.trim().is_empty() {
            return Err(IssueError::BadRequest(format!(
                "audience[{i}] is empty: every audience must be a non-empty string"
            )));
        }
        if a.len() > MAX_AUDIENCE_LEN {
            return Err(IssueError::BadRequest(format!(
                "audience[{i}] is {} bytes long, at most {MAX_AUDIENCE_LEN} are allowed",
                a.len()
            )));
        }
    }
    Ok(())
}

impl Issuer {
    /// Sets the JWT-SVID settings (default: [`JwtIssueSettings::defaults`]).
    pub fn with_jwt(mut self, jwt: JwtIssueSettings) -> Issuer {
        self.jwt = jwt;
        self
    }

    /// The JWT-SVID settings.
    pub fn jwt_settings(&self) -> &JwtIssueSettings {
        &self.jwt
    }

    /// A JWT-SVID for the workload entry `entry_id` of `agent`, for every
    /// audience in `audience`. Authorized exactly like
    /// [`Issuer::sign_workloads`]: the entry must be the agent's.
    pub fn sign_workload_jwt(
        &self,
        registry: &Registry,
        agent: &AttestedAgent,
        entry_id: &str,
        audience: &[String],
    ) -> Result<SignedJwt, IssueError> {
        measured(SvidKind::Jwt, || {
            let now = unix_seconds(self.clock.now());
            let entry = Authorized::for_agent(registry, agent, now).entry(entry_id)?;
            check_audience(audience)?;
            let mut ttl = entry
                .spec
                .jwt_ttl_or(self.jwt.default_ttl)
                .min(self.jwt.max_ttl);
            if let Some(at) = entry.spec.expires_at {
                ttl = ttl.min(Duration::from_secs(u64::try_from(at - now).unwrap_or(0)));
            }
            self.sign_jwt(&entry.spec.spiffe_id, audience, ttl)
                .inspect_err(|e| {
                    error!(agent_id = %agent.spiffe_id, entry_id = %entry_id, error = %e, "JWT-SVID signing failed");
                })
        })
    }

    /// A JWT-SVID minted by an operator (`jwt mint`): the ID was checked by
    /// the caller; `ttl` of `None` is the default; a TTL above ca_ttl / 6
    /// is refused.
    pub fn mint_jwt(
        &self,
        id: &SpiffeId,
        audience: &[String],
        ttl: Option<Duration>,
    ) -> Result<SignedJwt, IssueError> {
        measured(SvidKind::Jwt, || {
            check_audience(audience)?;
            let ttl = ttl.unwrap_or(self.jwt.default_ttl);
            if ttl.is_zero() || ttl > self.jwt.max_ttl {
                return Err(IssueError::BadRequest(format!(
                    "ttl {} is outside 1s..=ca_ttl / 6 = {} (the JWT key rotates at 5/6 of \
                     its life)",
                    sigil_proto::format_duration(ttl),
                    sigil_proto::format_duration(self.jwt.max_ttl)
                )));
            }
            self.sign_jwt(id, audience, ttl)
        })
    }

    fn sign_jwt(
        &self,
        id: &SpiffeId,
        audience: &[String],
        ttl: Duration,
    ) -> Result<SignedJwt, IssueError> {
        Ok(self.ca.jwt_active().sign(
            id,
            audience,
            self.jwt.issuer.as_deref(),
            ttl,
            self.clock.now(),
        )?)
    }
}

#[cfg(test)]
mod tests;
