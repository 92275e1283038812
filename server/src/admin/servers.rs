//! Admin API: the servers sharing the store (issue 17) — `ListServers`
//! (`sigil-server server list`: instance id, last heartbeat, its CAs and
//! JWT keys, live / stale / forgotten) and `ForgetServer` (`server
//! forget`). The rules are the CA manager's
//! ([`crate::ca::manager::CaManager::forget_server`]).

use sigil_proto::admin_api as pb;
use tonic::Status;

use super::AdminService;
use super::error::{AdminError, invalid};
use crate::ca::CaError;
use crate::ca::manager::servers::{STALE_AFTER_SECS, server_status};
use crate::ca::manager::{CaOpError, state_name};
use crate::ca::rotation::Rotating;
use crate::instance_id::is_valid;
use crate::store::{ServerRecord, StoreError};

fn server_to_pb(r: &ServerRecord, me: &str, now: i64, max_jwt_ttl: i64) -> pb::ServerInfo {
    pb::ServerInfo {
        instance_id: r.instance_id.clone(),
        started_at: r.started_at,
        last_seen: r.last_seen,
        status: server_status(r, now).to_string(),
        this_server: r.instance_id == me,
        cas: r
            .journal
            .slots
            .iter()
            .map(|s| pb::ServerCa {
                serial: s.serial.clone(),
                state: state_name(s.state).to_string(),
                not_after: s.not_after,
                tainted: s.tainted,
            })
            .collect(),
        jwt_keys: r
            .journal
            .jwt_slots
            .iter()
            .map(|s| pb::ServerJwtKey {
                kid: s.kid.clone(),
                state: state_name(s.state).to_string(),
                expires_at: s.retire_at(max_jwt_ttl),
            })
            .collect(),
        forgotten_at: r.forgotten_at.unwrap_or(0),
    }
}

impl AdminService {
    pub(super) async fn list_servers(&self) -> Result<pb::ListServersResponse, Status> {
        let ca = self.ca.clone();
        let (servers, now) = tokio::task::spawn_blocking(move || ca.servers())
            .await
            .map_err(AdminError::task)?
            .map_err(AdminError::from)?;
        let me = self.ca.instance_id();
        let ttl = self.ca.max_jwt_ttl();
        Ok(pb::ListServersResponse {
            servers: servers
                .iter()
                .map(|r| server_to_pb(r, me, now, ttl))
                .collect(),
            stale_after_seconds: STALE_AFTER_SECS,
        })
    }

    pub(super) async fn forget_server(
        &self,
        r: pb::ForgetServerRequest,
    ) -> Result<pb::ServerInfo, Status> {
        if !is_valid(&r.instance_id) {
            return Err(invalid(format!(
                "instance_id {:?}: must be 32 lowercase hex characters (see `server list`)",
                r.instance_id
            )));
        }
        let ca = self.ca.clone();
        let id = r.instance_id.clone();
        let rec = tokio::task::spawn_blocking(move || ca.forget_server(&id, r.force))
            .await
            .map_err(AdminError::task)?
            .map_err(|e| match e {
                CaOpError::Ca(CaError::Store(nf @ StoreError::NotFound { .. })) => {
                    AdminError::Store(nf)
                }
                other => AdminError::from(other),
            })?;
        let now = sigil_proto::clock::unix_seconds(self.clock.now());
        Ok(server_to_pb(
            &rec,
            self.ca.instance_id(),
            now,
            self.ca.max_jwt_ttl(),
        ))
    }
}
