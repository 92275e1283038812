//! Admin API: JWT-SVIDs minted for an operator (`jwt mint`), signed by the
//! [`Issuer`](crate::ca::issuer::Issuer) like every other token: the SPIFFE
//! ID is a workload ID of this trust domain, the audience list non-empty,
//! the TTL at most ca_ttl / 6 (0: `default_jwt_svid_ttl`).

use std::time::Duration;

use sigil_proto::admin_api as pb;
use tonic::Status;
use tracing::info;

use super::AdminService;
use super::convert;
use super::error::{AdminError, invalid};

impl AdminService {
    pub(super) fn mint_jwt_svid(
        &self,
        r: pb::MintJwtSvidRequest,
    ) -> Result<pb::MintJwtSvidResponse, Status> {
        let limits = &self.settings.limits;
        let id = convert::parse_workload_id("spiffe_id", &r.spiffe_id, limits).map_err(invalid)?;
        let secs = u64::try_from(r.ttl_seconds).map_err(|_| {
            invalid(format!(
                "ttl_seconds: {} is negative (0 means the server's default_jwt_svid_ttl)",
                r.ttl_seconds
            ))
        })?;
        let ttl = (secs != 0).then(|| Duration::from_secs(secs));
        let jwt = self
            .issuer
            .mint_jwt(&id, &r.audience, ttl)
            .map_err(AdminError::from)?;
        // The token is a credential: its kid and expiry are logged, never it.
        info!(spiffe_id = %id, kid = %jwt.kid, expires_at = jwt.expires_at, audiences = r.audience.len(), "JWT-SVID minted");
        Ok(pb::MintJwtSvidResponse {
            spiffe_id: jwt.spiffe_id.to_string(),
            token: jwt.token,
            kid: jwt.kid,
            issued_at: jwt.issued_at,
            expires_at: jwt.expires_at,
        })
    }
}
