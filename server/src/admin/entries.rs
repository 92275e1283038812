//! Admin API: registration entries — create (all or nothing per batch),
//! get, list, update, delete — and the shared-hint warning.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use sigil_proto::admin_api as pb;
use sigil_proto::{SpiffeId, TrustDomain};
use tokio_stream::Stream;
use tonic::Status;
use tracing::{info, warn};

use super::AdminService;
use super::convert;
use super::error::{AdminError, invalid, item_error};
use crate::entry::{Entry, EntryFilter, EntrySpec};
use crate::federation::foreign::ForeignBundles;
use crate::registry::Registry;
use crate::store::StoreError;

pub type EntryStream = Pin<Box<dyn Stream<Item = Result<pb::Entry, Status>> + Send>>;

/// Why each entry of a create batch is refused before anything is written:
/// invalid, a duplicate of an earlier entry of the batch, or already stored.
/// Linear in the batch plus the stored children of the parents it names.
fn batch_refusals(
    items: &[Result<EntrySpec, String>],
    registry: &Registry,
) -> Vec<Option<AdminError>> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    // Per parent: identity key → id of every stored child entry.
    let mut stored: HashMap<String, HashMap<String, String>> = HashMap::new();
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Err(m) => Some(AdminError::Invalid(m.clone())),
            Ok(spec) => {
                let key = spec.identity_key();
                if let Some(j) = seen.get(&key) {
                    return Some(AdminError::AlreadyExists(format!(
                        "entry {i}: duplicates entry {j} of this batch (same spiffe_id, \
                         parent_id and selectors)"
                    )));
                }
                seen.insert(key.clone(), i);
                let children = stored.entry(spec.parent_id.to_string()).or_insert_with(|| {
                    let filter = EntryFilter {
                        parent_id: Some(spec.parent_id.clone()),
                        ..Default::default()
                    };
                    registry
                        .list(&filter)
                        .iter()
                        .map(|e| (e.spec.identity_key(), e.id.clone()))
                        .collect()
                });
                children.get(&key).map(|id| {
                    AdminError::AlreadyExists(format!(
                        "entry {i}: entry already exists: {id} (same spiffe_id, parent_id \
                         and selectors)"
                    ))
                })
            }
        })
        .collect()
}

/// Logs, for each of `entries`, the stored entries that share its hint and
/// can match the same workload (see [`EntrySpec::shares_hint_with`]).
fn warn_shared_hints(registry: &Registry, entries: &[Arc<Entry>]) {
    let mut siblings: HashMap<String, Vec<Arc<Entry>>> = HashMap::new();
    for e in entries.iter().filter(|e| !e.spec.hint.is_empty()) {
        let family = siblings
            .entry(e.spec.parent_id.to_string())
            .or_insert_with(|| {
                registry.list(&EntryFilter {
                    parent_id: Some(e.spec.parent_id.clone()),
                    ..Default::default()
                })
            });
        let others: Vec<&str> = family
            .iter()
            .filter(|o| o.id != e.id && e.spec.shares_hint_with(&o.spec))
            .map(|o| o.id.as_str())
            .collect();
        if !others.is_empty() {
            warn!(
                entry_id = %e.id,
                hint = %e.spec.hint,
                others = %others.join(","),
                "entries with the same hint can match one workload; the Workload API sends the \
                 hint with the first SVID only (hints are unique within a response)"
            );
        }
    }
}

fn error_result(e: &AdminError, index: Option<usize>) -> pb::EntryResult {
    pb::EntryResult {
        result: Some(pb::entry_result::Result::Error(item_error(e, index))),
    }
}

/// Creates the valid specs of `items` (which nothing refused) in one store
/// batch; one result per item, in order.
fn create_all(
    registry: &Registry,
    items: Vec<Result<EntrySpec, String>>,
    now: i64,
) -> Result<Vec<pb::EntryResult>, AdminError> {
    // The valid specs go to the store in one batch (one flush); their
    // outcomes come back in the same order.
    let specs: Vec<EntrySpec> = items
        .iter()
        .filter_map(|i| i.as_ref().ok().cloned())
        .collect();
    let mut created = registry.create_many(specs, now)?.into_iter();
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item.map(|_| created.next()) {
            Err(m) => error_result(&AdminError::Invalid(m), None),
            // Invariant: create_many returns one outcome per spec.
            Ok(None) => error_result(
                &AdminError::Internal("no outcome from the store".into()),
                Some(i),
            ),
            Ok(Some(Ok(e))) => {
                info!(entry_id = %e.id, spiffe_id = %e.spec.spiffe_id, revision = e.revision, "entry created");
                pb::EntryResult {
                    result: Some(pb::entry_result::Result::Entry(convert::entry_to_pb(&e))),
                }
            }
            Ok(Some(Err(e))) => error_result(&e.into(), Some(i)),
        })
        .collect())
}

/// Every trust domain `spec` federates with beyond `had` must have a
/// stored bundle (and not be the server's own): an entry must not promise
/// workloads a trust they would not get.
fn check_federates(
    foreign: Option<&ForeignBundles>,
    spec: &EntrySpec,
    had: &[TrustDomain],
) -> Result<(), String> {
    for td in spec.federates_with.iter().filter(|td| !had.contains(td)) {
        if foreign.is_some_and(|f| f.own_trust_domain() == td) {
            return Err(format!(
                "federates_with {td}: that is this server's own trust domain, whose bundle \
                 every workload gets anyway"
            ));
        }
        if foreign.and_then(|f| f.get(td)).is_none() {
            return Err(format!(
                "federates_with {td}: no bundle of {td} is stored; create a federation \
                 relationship (`sigil-server federation create --trust-domain {td} …`) or set \
                 its bundle (`sigil-server bundle set --trust-domain {td}`) first"
            ));
        }
    }
    Ok(())
}

impl AdminService {
    fn check_federates(&self, spec: &EntrySpec, had: &[TrustDomain]) -> Result<(), String> {
        let foreign = self.federation.as_ref().map(|f| f.foreign().as_ref());
        check_federates(foreign, spec, had)
    }

    pub(super) async fn create_entries(
        &self,
        req: pb::CreateEntriesRequest,
    ) -> Result<pb::CreateEntriesResponse, Status> {
        let now = self.now();
        let (entries, allow_unknown) = (req.entries, req.allow_unknown_selectors);
        let max = self.settings.max_entries_per_request;
        if entries.len() > max {
            warn!(
                entries = entries.len(),
                limit = max,
                "CreateEntries refused: too many entries in one request"
            );
            return Err(invalid(format!(
                "{} entries in one request, more than the limit of {max} \
                 (limits.max_entries_per_request); split the request",
                entries.len()
            )));
        }
        let items: Vec<Result<EntrySpec, String>> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                convert::entry_spec(e, &self.settings.limits, now, allow_unknown)
                    .and_then(|spec| self.check_federates(&spec, &[]).map(|()| spec))
                    .map_err(|m| format!("entry {i}: {m}"))
            })
            .collect();
        let results = self
            .write(move |registry| {
                // All or nothing: an invalid entry, two entries of the batch
                // with the same identity, or an entry that already exists
                // refuses the whole batch before anything is written, so a
                // refused entry file is never half-applied.
                let refusals = batch_refusals(&items, registry);
                let Some(first) = refusals.iter().position(Option::is_some) else {
                    return create_all(registry, items, now);
                };
                Ok(refusals
                    .into_iter()
                    .map(|r| {
                        let e = r.unwrap_or_else(|| {
                            AdminError::Aborted(format!(
                                "not created: entry {first} of this batch was refused, so no \
                                 entry of the batch was created"
                            ))
                        });
                        error_result(&e, None)
                    })
                    .collect())
            })
            .await?;
        let created: Vec<_> = results
            .iter()
            .filter_map(|r| match &r.result {
                Some(pb::entry_result::Result::Entry(e)) => self.registry.get(&e.id),
                _ => None,
            })
            .collect();
        warn_shared_hints(&self.registry, &created);
        Ok(pb::CreateEntriesResponse { results })
    }

    pub(super) fn get_entry(&self, req: pb::GetEntryRequest) -> Result<pb::Entry, Status> {
        let e = self.registry.get(&req.id).ok_or_else(|| {
            AdminError::from(StoreError::NotFound {
                what: "entry",
                key: req.id.clone(),
            })
        })?;
        Ok(convert::entry_to_pb(&e))
    }

    pub(super) fn list_entries(&self, r: pb::ListEntriesRequest) -> Result<EntryStream, Status> {
        let parse = |field: &str, v: &str| -> Result<Option<SpiffeId>, Status> {
            if v.is_empty() {
                return Ok(None);
            }
            SpiffeId::parse(v)
                .map(Some)
                .map_err(|e| invalid(format!("{field}: {e}")))
        };
        let filter = EntryFilter {
            spiffe_id: parse("by_spiffe_id", &r.by_spiffe_id)?,
            parent_id: parse("by_parent_id", &r.by_parent_id)?,
            selectors: convert::parse_selectors("by_selectors", &r.by_selectors)
                .map_err(invalid)?,
        };
        let items: Vec<Result<pb::Entry, Status>> = self
            .registry
            .list(&filter)
            .iter()
            .map(|e| Ok(convert::entry_to_pb(e)))
            .collect();
        Ok(Box::pin(tokio_stream::iter(items)))
    }

    /// The entry as it now is, and whether the update changed it (an
    /// update to the same content writes nothing and keeps the revision).
    pub(super) async fn update_entry(
        &self,
        u: pb::UpdateEntryRequest,
    ) -> Result<(pb::Entry, bool), Status> {
        let limits = self.settings.limits.clone();
        let now = self.now();
        let foreign = self.federation.as_ref().map(|f| f.foreign().clone());
        let (e, changed) = self
            .write(move |registry| {
                let cur = registry.get(&u.id).ok_or_else(|| StoreError::NotFound {
                    what: "entry",
                    key: u.id.clone(),
                })?;
                let mut spec = cur.spec.clone();
                convert::apply_update(&mut spec, &u, &limits, now).map_err(AdminError::Invalid)?;
                check_federates(foreign.as_deref(), &spec, &cur.spec.federates_with)
                    .map_err(AdminError::Invalid)?;
                let e = registry.update(&u.id, spec)?;
                let changed = e.revision != cur.revision;
                Ok((e, changed))
            })
            .await?;
        if changed {
            info!(entry_id = %e.id, revision = e.revision, "entry updated");
            warn_shared_hints(&self.registry, &[Arc::new(e.clone())]);
        } else {
            info!(entry_id = %e.id, revision = e.revision, "entry unchanged: the update asked for what is stored");
        }
        Ok((convert::entry_to_pb(&e), changed))
    }

    pub(super) async fn delete_entry(
        &self,
        req: pb::DeleteEntryRequest,
    ) -> Result<pb::DeleteEntryResponse, Status> {
        let id = req.id;
        let e = self
            .write(move |registry| Ok(registry.delete(&id)?))
            .await?;
        info!(entry_id = %e.id, "entry deleted");
        Ok(pb::DeleteEntryResponse {})
    }
}
