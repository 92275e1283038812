//! The admin API service (`sigil.admin.v1.AdminApi`) on the local admin
//! socket. This file holds the service and the one `impl AdminApi`, which
//! dispatches each method to the file of its resource: [`entries`],
//! [`agents`], [`tokens`], [`ca`] (CA and bundle), [`x509`] and [`jwt`] (minted SVIDs),
//! [`explain`] (entry explain),
//! [`federation`] (relationships and foreign bundles), [`servers`] (the
//! servers sharing the store, issue 17).
//! Protobuf stops in those files; errors become a `Status` in one place
//! ([`error`]): a safe message out, the full chain in the log.

pub mod agents;
pub mod ca;
pub mod client;
pub mod convert;
pub mod entries;
pub mod error;
pub mod explain;
pub mod federation;
pub mod jwt;
pub mod servers;
pub mod socket;
pub mod tokens;
pub mod x509;

use std::sync::Arc;
use std::time::Duration;

use sigil_proto::admin_api::{self as pb, admin_api_server::AdminApi};
use sigil_proto::clock::{Clock, unix_seconds};
use tonic::{Request, Response, Status};

use crate::ca::issuer::Issuer;
use crate::ca::manager::CaManager;
use crate::registry::Registry;
use crate::store::Store;
use convert::Limits;
use error::AdminError;
pub use tokens::hash_token;

/// Response metadata of an `UpdateEntry` that changed nothing (the entry
/// keeps its revision; nothing is written or pushed to agents).
pub const UNCHANGED_METADATA: &str = "sigil-entry-unchanged";

/// Largest admin request accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Server facts the admin service needs.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub limits: Limits,
    pub join_token_ttl: Duration,
    pub bundle_refresh_hint: Duration,
    /// Most entries in one CreateEntries call (`[limits]
    /// max_entries_per_request`).
    pub max_entries_per_request: usize,
}

pub struct AdminService {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    ca: Arc<CaManager>,
    issuer: Arc<Issuer>,
    clock: Arc<dyn Clock>,
    settings: AdminSettings,
    /// Held by every entry write, so a batch's all-or-nothing check and
    /// its write see no other admin write in between.
    writes: Arc<std::sync::Mutex<()>>,
    /// Federation relationships and foreign bundles (issue 16).
    federation: Option<Arc<crate::federation::Federation>>,
}

impl AdminService {
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        ca: Arc<CaManager>,
        issuer: Arc<Issuer>,
        clock: Arc<dyn Clock>,
        settings: AdminSettings,
    ) -> AdminService {
        AdminService {
            store,
            registry,
            ca,
            issuer,
            clock,
            settings,
            writes: Arc::new(std::sync::Mutex::new(())),
            federation: None,
        }
    }

    /// Serves the federation RPCs from `federation`.
    pub fn with_federation(mut self, federation: Arc<crate::federation::Federation>) -> Self {
        self.federation = Some(federation);
        self
    }

    fn now(&self) -> i64 {
        unix_seconds(self.clock.now())
    }

    /// Runs a blocking registry write off the async threads.
    async fn write<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Registry) -> Result<T, AdminError> + Send + 'static,
    {
        let registry = self.registry.clone();
        let writes = self.writes.clone();
        Ok(tokio::task::spawn_blocking(move || {
            let _one_at_a_time = writes.lock().unwrap_or_else(|p| p.into_inner());
            f(registry.as_ref())
        })
        .await
        .map_err(AdminError::task)??)
    }

    /// Runs a blocking store call off the async threads.
    async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, AdminError> + Send + 'static,
    {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(AdminError::task)??)
    }

    /// Fails unless the store answers and the active CA has not expired.
    async fn health(&self) -> Result<pb::HealthcheckResponse, Status> {
        let now = self.now();
        self.blocking(|store| {
            store.get_ca_journal()?;
            Ok(())
        })
        .await?;
        if self.ca.active().not_after() <= now {
            return Err(AdminError::Unavailable("the active CA has expired").into());
        }
        Ok(pb::HealthcheckResponse {
            status: "SERVING".into(),
        })
    }
}

#[tonic::async_trait]
impl AdminApi for AdminService {
    async fn create_entries(
        &self,
        req: Request<pb::CreateEntriesRequest>,
    ) -> Result<Response<pb::CreateEntriesResponse>, Status> {
        self.create_entries(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_entry(
        &self,
        req: Request<pb::GetEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        self.get_entry(req.into_inner()).map(Response::new)
    }

    type ListEntriesStream = entries::EntryStream;

    async fn list_entries(
        &self,
        req: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<Self::ListEntriesStream>, Status> {
        self.list_entries(req.into_inner()).map(Response::new)
    }

    async fn update_entry(
        &self,
        req: Request<pb::UpdateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let (entry, changed) = self.update_entry(req.into_inner()).await?;
        let mut resp = Response::new(entry);
        if !changed {
            resp.metadata_mut().insert(
                UNCHANGED_METADATA,
                tonic::metadata::MetadataValue::from_static("true"),
            );
        }
        Ok(resp)
    }

    async fn delete_entry(
        &self,
        req: Request<pb::DeleteEntryRequest>,
    ) -> Result<Response<pb::DeleteEntryResponse>, Status> {
        self.delete_entry(req.into_inner()).await.map(Response::new)
    }

    async fn count_entries(
        &self,
        _req: Request<pb::CountEntriesRequest>,
    ) -> Result<Response<pb::CountEntriesResponse>, Status> {
        Ok(Response::new(pb::CountEntriesResponse {
            count: self.registry.count(),
        }))
    }

    async fn get_bundle(
        &self,
        _req: Request<pb::GetBundleRequest>,
    ) -> Result<Response<pb::Bundle>, Status> {
        self.get_bundle().map(Response::new)
    }

    async fn generate_join_token(
        &self,
        req: Request<pb::GenerateJoinTokenRequest>,
    ) -> Result<Response<pb::GenerateJoinTokenResponse>, Status> {
        self.generate_join_token(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn mint_x509_svid(
        &self,
        req: Request<pb::MintX509SvidRequest>,
    ) -> Result<Response<pb::MintX509SvidResponse>, Status> {
        self.mint_x509_svid(req.into_inner()).map(Response::new)
    }

    async fn list_agents(
        &self,
        _req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        self.list_agents().await.map(Response::new)
    }

    async fn get_agent(
        &self,
        req: Request<pb::AgentIdRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        self.get_agent(req.into_inner()).await.map(Response::new)
    }

    async fn evict_agent(
        &self,
        req: Request<pb::AgentIdRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        self.evict_agent(req.into_inner()).await.map(Response::new)
    }

    async fn ban_agent(
        &self,
        req: Request<pb::AgentIdRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        self.set_banned(req.into_inner(), true)
            .await
            .map(Response::new)
    }

    async fn unban_agent(
        &self,
        req: Request<pb::AgentIdRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        self.set_banned(req.into_inner(), false)
            .await
            .map(Response::new)
    }

    async fn show_ca(
        &self,
        req: Request<pb::ShowCaRequest>,
    ) -> Result<Response<pb::CaStatus>, Status> {
        let kind = req.into_inner().kind;
        self.ca_op(ca::Op::Show, &kind).await.map(Response::new)
    }

    async fn prepare_ca(
        &self,
        req: Request<pb::ShowCaRequest>,
    ) -> Result<Response<pb::CaStatus>, Status> {
        let kind = req.into_inner().kind;
        self.ca_op(ca::Op::Prepare, &kind).await.map(Response::new)
    }

    async fn activate_ca(
        &self,
        req: Request<pb::ActivateCaRequest>,
    ) -> Result<Response<pb::CaStatus>, Status> {
        let req = req.into_inner();
        let force = req.force;
        self.ca_op(ca::Op::Activate { force }, &req.kind)
            .await
            .map(Response::new)
    }

    async fn taint_ca(
        &self,
        req: Request<pb::CaSlotRequest>,
    ) -> Result<Response<pb::CaStatus>, Status> {
        let req = req.into_inner();
        let slot = ca::parse_slot(&req.slot)?;
        self.ca_op(ca::Op::Taint(slot), &req.kind)
            .await
            .map(Response::new)
    }

    async fn revoke_ca(
        &self,
        req: Request<pb::RevokeCaRequest>,
    ) -> Result<Response<pb::CaStatus>, Status> {
        let req = req.into_inner();
        let slot = ca::parse_slot(&req.slot)?;
        let force = req.force;
        self.ca_op(ca::Op::Revoke { slot, force }, &req.kind)
            .await
            .map(Response::new)
    }

    // ---- issue 16: federation ----

    async fn create_federation(
        &self,
        req: Request<pb::Federation>,
    ) -> Result<Response<pb::Federation>, Status> {
        self.create_federation(req.into_inner(), false)
            .await
            .map(Response::new)
    }

    async fn update_federation(
        &self,
        req: Request<pb::Federation>,
    ) -> Result<Response<pb::Federation>, Status> {
        self.create_federation(req.into_inner(), true)
            .await
            .map(Response::new)
    }

    async fn get_federation(
        &self,
        req: Request<pb::TrustDomainRequest>,
    ) -> Result<Response<pb::Federation>, Status> {
        self.get_federation(req.into_inner().trust_domain)
            .await
            .map(Response::new)
    }

    async fn list_federations(
        &self,
        _req: Request<pb::ListFederationsRequest>,
    ) -> Result<Response<pb::ListFederationsResponse>, Status> {
        self.list_federations().await.map(Response::new)
    }

    async fn delete_federation(
        &self,
        req: Request<pb::TrustDomainRequest>,
    ) -> Result<Response<pb::Federation>, Status> {
        self.delete_federation(req.into_inner().trust_domain)
            .await
            .map(Response::new)
    }

    async fn refresh_federation(
        &self,
        req: Request<pb::TrustDomainRequest>,
    ) -> Result<Response<pb::Federation>, Status> {
        self.refresh_federation(req.into_inner().trust_domain)
            .await
            .map(Response::new)
    }

    async fn set_foreign_bundle(
        &self,
        req: Request<pb::SetForeignBundleRequest>,
    ) -> Result<Response<pb::ForeignBundle>, Status> {
        self.set_foreign_bundle(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_foreign_bundle(
        &self,
        req: Request<pb::TrustDomainRequest>,
    ) -> Result<Response<pb::ForeignBundle>, Status> {
        self.get_foreign_bundle(req.into_inner().trust_domain)
            .await
            .map(Response::new)
    }

    async fn list_foreign_bundles(
        &self,
        _req: Request<pb::ListForeignBundlesRequest>,
    ) -> Result<Response<pb::ListForeignBundlesResponse>, Status> {
        self.list_foreign_bundles().await.map(Response::new)
    }

    async fn delete_foreign_bundle(
        &self,
        req: Request<pb::TrustDomainRequest>,
    ) -> Result<Response<pb::ForeignBundle>, Status> {
        self.delete_foreign_bundle(req.into_inner().trust_domain)
            .await
            .map(Response::new)
    }

    async fn mint_jwt_svid(
        &self,
        req: Request<pb::MintJwtSvidRequest>,
    ) -> Result<Response<pb::MintJwtSvidResponse>, Status> {
        self.mint_jwt_svid(req.into_inner()).map(Response::new)
    }

    async fn healthcheck(
        &self,
        _req: Request<pb::HealthcheckRequest>,
    ) -> Result<Response<pb::HealthcheckResponse>, Status> {
        self.health().await.map(Response::new)
    }

    async fn explain_entries(
        &self,
        req: Request<pb::ExplainEntriesRequest>,
    ) -> Result<Response<pb::ExplainEntriesResponse>, Status> {
        self.explain_entries(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_servers(
        &self,
        _req: Request<pb::ListServersRequest>,
    ) -> Result<Response<pb::ListServersResponse>, Status> {
        self.list_servers().await.map(Response::new)
    }

    async fn forget_server(
        &self,
        req: Request<pb::ForgetServerRequest>,
    ) -> Result<Response<pb::ServerInfo>, Status> {
        self.forget_server(req.into_inner())
            .await
            .map(Response::new)
    }
}
