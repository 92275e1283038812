//! Admission of a Workload API call: the security header and the request's
//! own fields (checked before anything else), the caller's peer credentials
//! as recorded at accept (`accept`), its share of the global, per-uid
//! and per-process stream limits, and its one attestation.

use super::*;

/// An admitted caller: who it is, its selectors, and its stream slot.
pub(super) struct Caller {
    pub(super) cred: PeerCred,
    pub(super) selectors: Vec<Selector>,
    pub(super) permit: StreamPermit,
}

/// A call's share of the global, the per-uid and the per-workload stream
/// limits; all are given back when it is dropped.
pub(super) struct StreamPermit {
    /// The connection is not idle while the call or stream lasts.
    pub(super) _call: Option<super::connection::ActiveCall>,
    pub(super) _global: OwnedSemaphorePermit,
    pub(super) _uid: CountSlot<u32>,
    pub(super) _workload: CountSlot<i32>,
}

/// Open things (calls, connections) per key (a pid, a uid).
pub(super) type Counts<K> = Arc<std::sync::Mutex<HashMap<K, usize>>>;

/// One open thing counted under `key` in `counts`; uncounted when dropped.
pub(super) struct CountSlot<K: std::hash::Hash + Eq + Copy> {
    counts: Counts<K>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Copy> CountSlot<K> {
    /// Counts one more for `key`, or `None` if it has `max` already.
    pub(super) fn take(counts: &Counts<K>, key: K, max: usize) -> Option<CountSlot<K>> {
        let mut map = counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(CountSlot {
            counts: counts.clone(),
            key,
        })
    }
}

impl<K: std::hash::Hash + Eq + Copy> Drop for CountSlot<K> {
    fn drop(&mut self) {
        let mut map = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl WorkloadApiService {
    /// The one attestation of a call: every configured attestor inside one
    /// bracket (`workload_attestor::Attestors`) that refuses unless the
    /// process is still the one recorded at accept. Without blocking when
    /// procfs and memory suffice (the usual case), else on a blocking
    /// thread after a turn (`blocking`), which the blocking task keeps until
    /// it is done.
    pub(super) async fn attest(
        &self,
        method: &'static str,
        cred: PeerCred,
        peer: &AcceptedPeer,
    ) -> Result<Vec<Selector>, Status> {
        let refused = |e: WorkloadAttestError| {
            metrics::workload_attestation("error");
            refuse(method, Some(&cred), CallError::Attestation(e))
        };
        if peer.exited() {
            return Err(refused(WorkloadAttestError::Changed {
                pid: cred.pid,
                reason: "the process that connected has exited (pidfd)",
            }));
        }
        let accepted = peer
            .mark
            .as_ref()
            .as_ref()
            .map_err(|e| refused(e.clone()))?;
        let selectors = match self.attestor.attest_now(&cred, accepted) {
            Some(found) => found,
            None => {
                let turn = self.blocking.turn(cred.uid).await;
                let (attestor, accepted) = (self.attestor.clone(), accepted.clone());
                tokio::task::spawn_blocking(move || {
                    let _turn = turn;
                    attestor.attest(&cred, &accepted)
                })
                .await
                .map_err(|e| refuse(method, Some(&cred), CallError::AttestationTask(e)))?
            }
        }
        .map_err(refused)?;
        // The bracket's last check (the pidfd, or without one the start
        // time) caught an exit or a pid reused while the attestors ran.
        metrics::workload_attestation("ok");
        debug!(
            pid = cred.pid,
            uid = cred.uid,
            selectors = selectors.len(),
            method,
            "workload attested"
        );
        Ok(selectors)
    }
}

/// Exactly one `workload.spiffe.io: true`.
pub(super) fn check_header<T>(req: &Request<T>) -> Result<(), CallError> {
    check_metadata(req.metadata())
}

pub(super) fn check_metadata(metadata: &MetadataMap) -> Result<(), CallError> {
    let mut values = metadata.get_all(SECURITY_HEADER).iter();
    let Some(first) = values.next() else {
        return Err(CallError::HeaderMissing);
    };
    if values.next().is_some() {
        return Err(CallError::HeaderRepeated);
    }
    if first.as_encoded_bytes() != b"true" {
        return Err(CallError::HeaderValue);
    }
    Ok(())
}

/// The checks of a `FetchJWTSVID` request's own fields.
pub(super) fn check_jwt_svid_request(r: &pb::JwtsvidRequest) -> Result<(), CallError> {
    if r.audience.is_empty() {
        return Err(CallError::BadRequest("audience must not be empty"));
    }
    Ok(())
}

/// The checks of a `ValidateJWTSVID` request's own fields.
pub(super) fn check_validate_request(r: &pb::ValidateJwtsvidRequest) -> Result<(), CallError> {
    if r.audience.is_empty() {
        return Err(CallError::BadRequest("audience must not be empty"));
    }
    if r.svid.is_empty() {
        return Err(CallError::BadRequest("svid must not be empty"));
    }
    Ok(())
}

/// A decoded Workload API request, for [`precheck`].
#[derive(Debug, Clone)]
pub enum WorkloadRequest {
    X509Svid(pb::X509svidRequest),
    X509Bundles(pb::X509BundlesRequest),
    JwtSvid(pb::JwtsvidRequest),
    JwtBundles(pb::JwtBundlesRequest),
    ValidateJwtSvid(pb::ValidateJwtsvidRequest),
}

/// Every check a call passes before the caller's identity is looked at: the
/// security header, then the request's own fields, with the status the
/// handler answers. Pure (no I/O, no state); the handlers run the same
/// checks. Exposed for fuzzing and tests.
pub fn precheck(metadata: &MetadataMap, request: &WorkloadRequest) -> Result<(), Status> {
    let status = |e: CallError| refuse("precheck", None, e);
    check_metadata(metadata).map_err(status)?;
    match request {
        WorkloadRequest::JwtSvid(r) => check_jwt_svid_request(r).map_err(status),
        WorkloadRequest::ValidateJwtSvid(r) => check_validate_request(r).map_err(status),
        WorkloadRequest::X509Svid(_)
        | WorkloadRequest::X509Bundles(_)
        | WorkloadRequest::JwtBundles(_) => Ok(()),
    }
}

/// Who called, as recorded when the connection was accepted; without a
/// pid there is nothing to attest, so the call is refused (fail closed).
pub(super) fn accepted_peer<T>(req: &Request<T>) -> Result<(PeerCred, AcceptedPeer), CallError> {
    let peer = req
        .extensions()
        .get::<AcceptedPeer>()
        .ok_or(CallError::NoPeerCred)?;
    let cred = peer.cred.ok_or(CallError::NoPeerCred)?;
    Ok((cred, peer.clone()))
}
