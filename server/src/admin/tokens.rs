//! Admin API: join tokens. Only the token's SHA-256 is stored; with a
//! SPIFFE ID, a node entry gives every agent attested with the token that
//! ID as an extra one.

use std::time::Duration;

use ring::digest;
use sigil_proto::admin_api as pb;
use tonic::Status;
use tracing::info;

use super::AdminService;
use super::convert;
use super::error::{AdminError, invalid};
use crate::ca::random16;
use crate::config::server_id;
use crate::entry::EntrySpec;
use crate::store::JoinTokenRecord;
use crate::store::join_token_ids::agent_path;

/// Longest join token lifetime.
const MAX_TTL: Duration = Duration::from_secs(30 * 86_400);

/// Lowercase hex SHA-256 of a join token.
pub fn hash_token(token: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, token.as_bytes()))
}

impl AdminService {
    pub(super) async fn generate_join_token(
        &self,
        r: pb::GenerateJoinTokenRequest,
    ) -> Result<pb::GenerateJoinTokenResponse, Status> {
        let ttl = match r.ttl_seconds {
            0 => self.settings.join_token_ttl,
            s if s < 0 => return Err(invalid(format!("ttl: {s} is negative"))),
            s => Duration::from_secs(s.unsigned_abs()),
        };
        if ttl > MAX_TTL {
            return Err(invalid("ttl: more than the limit of 30d".into()));
        }
        let alias = if r.spiffe_id.is_empty() {
            None
        } else {
            Some(
                convert::parse_workload_id("spiffe_id", &r.spiffe_id, &self.settings.limits)
                    .map_err(invalid)?,
            )
        };
        let token = hex::encode(random16().map_err(AdminError::from)?);
        let token_hash = hash_token(&token);
        let agent_id = self
            .settings
            .limits
            .trust_domain
            .spiffe_id(&agent_path(&token_hash))
            .map_err(|e| AdminError::Internal(format!("join token agent ID: {e}")))?;
        let now = self.now();
        let expires_at = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let td = self.settings.limits.trust_domain.clone();
        let record = JoinTokenRecord {
            token_hash: token_hash.clone(),
            expires_at,
            created_at: now,
        };
        let registry = self.registry.clone();
        let entry_id = self
            .blocking(move |store| {
                store.create_join_token(record)?;
                let Some(alias) = alias else {
                    return Ok(String::new());
                };
                // A node entry: every agent attested with this token gets
                // `alias` as an extra ID. The selector carries the token's
                // hash, never the token.
                let selector = sigil_proto::Selector::new("join_token", &token_hash)
                    .map_err(|e| AdminError::Internal(e.to_string()))?;
                let mut spec = EntrySpec {
                    spiffe_id: alias,
                    parent_id: server_id(&td),
                    selectors: vec![selector],
                    x509_svid_ttl: 0,
                    jwt_svid_ttl: 0,
                    dns_names: vec![],
                    federates_with: vec![],
                    hint: String::new(),
                    admin: false,
                    downstream: false,
                    expires_at: None,
                };
                spec.normalize();
                Ok(registry.create(spec, now)?.id)
            })
            .await?;
        info!(expires_at, "join token generated");
        Ok(pb::GenerateJoinTokenResponse {
            token,
            expires_at,
            entry_id,
            agent_id: agent_id.to_string(),
        })
    }
}
