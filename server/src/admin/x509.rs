//! Admin API: X.509-SVIDs minted for an operator (`x509 mint`): the server
//! generates the key, the [`Issuer`](crate::ca::issuer::Issuer) signs.

use std::time::Duration;

use sigil_proto::admin_api as pb;
use tonic::Status;
use tracing::info;

use super::AdminService;
use super::convert;
use super::error::{AdminError, invalid};

impl AdminService {
    pub(super) fn mint_x509_svid(
        &self,
        r: pb::MintX509SvidRequest,
    ) -> Result<pb::MintX509SvidResponse, Status> {
        let limits = &self.settings.limits;
        let id = convert::parse_workload_id("spiffe_id", &r.spiffe_id, limits).map_err(invalid)?;
        let secs = convert::check_x509_ttl("ttl", r.ttl_seconds, limits).map_err(invalid)?;
        let ttl = (secs != 0).then(|| Duration::from_secs(secs));
        convert::check_dns_names("dns_names", &r.dns_names).map_err(invalid)?;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| AdminError::Internal(e.to_string()))?;
        let leaf = self
            .issuer
            .mint(&id, &r.dns_names, ttl, &key)
            .map_err(AdminError::from)?;
        info!(spiffe_id = %id, serial = %leaf.serial_hex, "X.509-SVID minted");
        Ok(pb::MintX509SvidResponse {
            spiffe_id: id.to_string(),
            cert_chain: sigil_proto::svid_chain::leaf_and_intermediates(&leaf.chain),
            private_key: key.serialize_der(),
            bundle: self.ca.bundle().x509_authorities.clone(),
            expires_at: leaf.not_after,
        })
    }
}
