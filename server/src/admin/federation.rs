//! Admin API: federation relationships (create, update, get, list, delete,
//! refresh) and foreign bundles set by hand (set, get, list, delete), issue
//! 16. Relationships declared in `server.toml` are shown as static and
//! cannot be changed here; the server's own trust domain is never a
//! foreign one.

use std::sync::Arc;

use sigil_proto::admin_api as pb;
use sigil_proto::{SpiffeId, TrustDomain};
use tonic::Status;
use tracing::info;

use super::AdminService;
use super::error::AdminError;
use crate::bundle::bundle_jwks;
use crate::federation::bundle_file::{self, BundleFileFormat};
use crate::federation::{Effective, Federation, relationship};
use crate::store::{BundleRecord, EndpointProfile, FederationRecord, StoreError};

fn parse_td(field: &str, v: &str) -> Result<TrustDomain, AdminError> {
    TrustDomain::parse(v).map_err(|e| AdminError::Invalid(format!("{field} {v:?}: {e}")))
}

fn federation_to_pb(e: &Effective, bundle_sequence: u64) -> pb::Federation {
    let r = &e.record;
    pb::Federation {
        trust_domain: r.trust_domain.to_string(),
        bundle_endpoint_url: r.bundle_endpoint_url.clone(),
        bundle_endpoint_profile: r.profile.as_str().to_string(),
        endpoint_spiffe_id: r
            .endpoint_spiffe_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        ca_file: r
            .ca_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        trust_domain_bundle: Vec::new(),
        trust_domain_bundle_format: String::new(),
        r#static: e.is_static,
        created_at: r.created_at,
        updated_at: r.updated_at,
        last_refresh: e.status.last_success_at.unwrap_or(0),
        last_error: e.status.last_error.clone().unwrap_or_default(),
        bundle_sequence,
    }
}

/// The record `f` asks for (not yet checked against the relationship rules).
fn record_from_pb(f: &pb::Federation, now: i64) -> Result<FederationRecord, AdminError> {
    let trust_domain = parse_td("trust_domain", &f.trust_domain)?;
    let profile =
        EndpointProfile::parse(&f.bundle_endpoint_profile).map_err(AdminError::Invalid)?;
    let endpoint_spiffe_id = (!f.endpoint_spiffe_id.is_empty())
        .then(|| {
            SpiffeId::parse(&f.endpoint_spiffe_id).map_err(|e| {
                AdminError::Invalid(format!(
                    "endpoint_spiffe_id {:?}: {e}",
                    f.endpoint_spiffe_id
                ))
            })
        })
        .transpose()?;
    Ok(FederationRecord {
        trust_domain,
        bundle_endpoint_url: f.bundle_endpoint_url.clone(),
        profile,
        endpoint_spiffe_id,
        ca_file: (!f.ca_file.is_empty()).then(|| f.ca_file.clone().into()),
        created_at: now,
        updated_at: now,
    })
}

fn foreign_to_pb(b: &BundleRecord) -> Result<pb::ForeignBundle, AdminError> {
    // Foreign bundles are served with no hint of ours.
    let jwks = bundle_jwks(b, std::time::Duration::ZERO).map_err(AdminError::Internal)?;
    Ok(pb::ForeignBundle {
        trust_domain: b.trust_domain.to_string(),
        x509_authorities: b.x509_authorities.clone(),
        sequence: b.sequence,
        jwks,
    })
}

/// Create (`update` false) or replace (`update` true) a stored relationship.
fn put_relationship(
    fed: &Federation,
    f: pb::Federation,
    now: i64,
    update: bool,
) -> Result<pb::Federation, AdminError> {
    let mut rec = record_from_pb(&f, now)?;
    let td = rec.trust_domain.clone();
    relationship::check(&rec, fed.own_trust_domain()).map_err(AdminError::Invalid)?;
    if fed.is_static(&td) {
        return Err(AdminError::Precondition(format!(
            "the relationship with {td} is declared in server.toml ([[federation]]), which wins; \
             change it there"
        )));
    }
    let store = fed.store();
    let old = store.get_federation(&td)?;
    match (&old, update) {
        (Some(_), false) => {
            return Err(AdminError::AlreadyExists(format!(
                "a federation relationship with {td} already exists; use `federation update`"
            )));
        }
        (None, true) => {
            return Err(StoreError::NotFound {
                what: "federation relationship",
                key: td.to_string(),
            }
            .into());
        }
        (Some(o), true) => rec.created_at = o.created_at,
        (None, false) => {}
    }
    let bootstrap = if f.trust_domain_bundle.is_empty() {
        None
    } else {
        let format =
            BundleFileFormat::parse(&f.trust_domain_bundle_format).map_err(AdminError::Invalid)?;
        Some(
            bundle_file::parse(&td, &f.trust_domain_bundle, format)
                .map_err(|m| AdminError::Invalid(format!("trust_domain_bundle: {m}")))?,
        )
    };
    if rec.profile == EndpointProfile::HttpsSpiffe
        && bootstrap.is_none()
        && fed.foreign().get(&td).is_none()
    {
        return Err(AdminError::Invalid(format!(
            "profile https_spiffe checks the endpoint with the bundle of {td}, and none is \
             stored: give the trust domain's bundle (--trust-domain-bundle FILE) or set it \
             first (`sigil-server bundle set --trust-domain {td}`)"
        )));
    }
    if let Some(b) = bootstrap {
        let stored = fed.foreign().put(b)?;
        info!(trust_domain = %td, sequence = stored.sequence, "federation: bundle stored from the operator's file");
    }
    store.put_federation(&rec)?;
    info!(trust_domain = %td, url = %rec.bundle_endpoint_url, profile = rec.profile.as_str(), "federation relationship {}", if update { "updated" } else { "created" });
    fed.reconcile()?;
    show(fed, &td)
}

fn show(fed: &Federation, td: &TrustDomain) -> Result<pb::Federation, AdminError> {
    let e = fed.get(td)?.ok_or_else(|| StoreError::NotFound {
        what: "federation relationship",
        key: td.to_string(),
    })?;
    let seq = fed.foreign().get(td).map_or(0, |b| b.sequence);
    Ok(federation_to_pb(&e, seq))
}

impl AdminService {
    fn federation(&self) -> Result<Arc<Federation>, Status> {
        self.federation
            .clone()
            .ok_or_else(|| AdminError::Unavailable("federation is not running").into())
    }

    /// Runs `f` on the federation off the async threads (inside the
    /// runtime, so it may start client tasks).
    async fn on_federation<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Federation) -> Result<T, AdminError> + Send + 'static,
    {
        let fed = self.federation()?;
        let writes = self.writes.clone();
        Ok(tokio::task::spawn_blocking(move || {
            let _one_at_a_time = writes.lock().unwrap_or_else(|p| p.into_inner());
            f(&fed)
        })
        .await
        .map_err(AdminError::task)??)
    }

    pub(super) async fn create_federation(
        &self,
        f: pb::Federation,
        update: bool,
    ) -> Result<pb::Federation, Status> {
        let now = self.now();
        let rt = tokio::runtime::Handle::current();
        self.on_federation(move |fed| {
            let _rt = rt.enter();
            put_relationship(fed, f, now, update)
        })
        .await
    }

    pub(super) async fn get_federation(&self, td: String) -> Result<pb::Federation, Status> {
        self.on_federation(move |fed| show(fed, &parse_td("trust_domain", &td)?))
            .await
    }

    pub(super) async fn list_federations(&self) -> Result<pb::ListFederationsResponse, Status> {
        self.on_federation(|fed| {
            let federations = fed
                .list()?
                .iter()
                .map(|e| {
                    let seq = fed
                        .foreign()
                        .get(&e.record.trust_domain)
                        .map_or(0, |b| b.sequence);
                    federation_to_pb(e, seq)
                })
                .collect();
            Ok(pb::ListFederationsResponse { federations })
        })
        .await
    }

    pub(super) async fn delete_federation(&self, td: String) -> Result<pb::Federation, Status> {
        let rt = tokio::runtime::Handle::current();
        self.on_federation(move |fed| {
            let _rt = rt.enter();
            let td = parse_td("trust_domain", &td)?;
            if fed.is_static(&td) {
                return Err(AdminError::Precondition(format!(
                    "the relationship with {td} is declared in server.toml ([[federation]]); \
                     remove it there"
                )));
            }
            let shown = show(fed, &td)?;
            fed.store().delete_federation(&td)?;
            fed.reconcile()?;
            info!(trust_domain = %td, "federation relationship deleted (its bundle is kept: `bundle delete` removes it)");
            Ok(shown)
        })
        .await
    }

    pub(super) async fn refresh_federation(&self, td: String) -> Result<pb::Federation, Status> {
        let td = parse_td("trust_domain", &td)?;
        let fed = self.federation()?;
        match fed.refresh(&td).await {
            None => Err(AdminError::from(StoreError::NotFound {
                what: "federation relationship",
                key: td.to_string(),
            })
            .into()),
            Some(Err(why)) => Err(AdminError::Precondition(format!(
                "refreshing the bundle of {td} failed (the last good bundle is kept): {why}"
            ))
            .into()),
            Some(Ok(_)) => self.get_federation(td.to_string()).await,
        }
    }

    pub(super) async fn set_foreign_bundle(
        &self,
        r: pb::SetForeignBundleRequest,
    ) -> Result<pb::ForeignBundle, Status> {
        self.on_federation(move |fed| {
            let td = parse_td("trust_domain", &r.trust_domain)?;
            if &td == fed.own_trust_domain() {
                return Err(AdminError::Invalid(format!(
                    "trust_domain {td} is this server's own: its bundle is managed by the CA \
                     (`sigil-server ca`)"
                )));
            }
            let format = BundleFileFormat::parse(&r.format).map_err(AdminError::Invalid)?;
            let b = bundle_file::parse(&td, &r.bundle, format)
                .map_err(|m| AdminError::Invalid(format!("bundle: {m}")))?;
            let stored = fed.foreign().put(b)?;
            info!(trust_domain = %td, sequence = stored.sequence, "foreign bundle set by hand");
            foreign_to_pb(&stored)
        })
        .await
    }

    pub(super) async fn get_foreign_bundle(&self, td: String) -> Result<pb::ForeignBundle, Status> {
        self.on_federation(move |fed| {
            let td = parse_td("trust_domain", &td)?;
            let b = fed.foreign().get(&td).ok_or_else(|| StoreError::NotFound {
                what: "foreign bundle",
                key: td.to_string(),
            })?;
            foreign_to_pb(&b)
        })
        .await
    }

    pub(super) async fn list_foreign_bundles(
        &self,
    ) -> Result<pb::ListForeignBundlesResponse, Status> {
        self.on_federation(|fed| {
            let bundles = fed
                .foreign()
                .list()
                .iter()
                .map(|b| foreign_to_pb(b))
                .collect::<Result<_, _>>()?;
            Ok(pb::ListForeignBundlesResponse { bundles })
        })
        .await
    }

    pub(super) async fn delete_foreign_bundle(
        &self,
        td: String,
    ) -> Result<pb::ForeignBundle, Status> {
        self.on_federation(move |fed| {
            let td = parse_td("trust_domain", &td)?;
            if &td == fed.own_trust_domain() {
                return Err(AdminError::Invalid(format!(
                    "trust_domain {td} is this server's own: its bundle cannot be deleted"
                )));
            }
            let b = fed.foreign().get(&td).ok_or_else(|| StoreError::NotFound {
                what: "foreign bundle",
                key: td.to_string(),
            })?;
            let shown = foreign_to_pb(&b)?;
            fed.foreign().delete(&td)?;
            info!(trust_domain = %td, "foreign bundle deleted; agents drop it");
            Ok(shown)
        })
        .await
    }
}
