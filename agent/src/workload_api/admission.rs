//! Admission of a Workload API call: the security header and the request's
//! own fields (checked before anything else), the caller's peer credentials,
//! and its share of the global and per-process stream limits.

use super::*;

/// An admitted caller: who it is, its selectors, and its stream slot.
pub(super) struct Caller {
    pub(super) cred: PeerCred,
    pub(super) selectors: Vec<Selector>,
    pub(super) permit: StreamPermit,
}

/// A call's share of the global and the per-workload stream limits; both
/// are given back when it is dropped.
pub(super) struct StreamPermit {
    pub(super) _global: OwnedSemaphorePermit,
    pub(super) _workload: WorkloadSlot,
}

/// One open call of a calling process, counted in `per_workload`.
pub(super) struct WorkloadSlot {
    pub(super) counts: Arc<std::sync::Mutex<HashMap<i32, usize>>>,
    pub(super) pid: i32,
}

impl WorkloadSlot {
    /// Counts one more call for `pid`, or `None` if it has `max` already.
    pub(super) fn take(
        counts: &Arc<std::sync::Mutex<HashMap<i32, usize>>>,
        pid: i32,
        max: usize,
    ) -> Option<WorkloadSlot> {
        let mut map = counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(pid).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(WorkloadSlot {
            counts: counts.clone(),
            pid,
        })
    }
}

impl Drop for WorkloadSlot {
    fn drop(&mut self) {
        let mut map = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.pid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.pid);
            }
        }
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

/// The kernel's account of the caller; without a pid there is nothing to
/// attest, so the call is refused (fail closed).
pub(super) fn peer_cred<T>(req: &Request<T>) -> Result<PeerCred, CallError> {
    let ucred = req
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|i| i.peer_cred)
        .ok_or(CallError::NoPeerCred)?;
    match ucred.pid() {
        Some(pid) if pid > 0 => Ok(PeerCred {
            pid,
            uid: ucred.uid(),
            gid: ucred.gid(),
        }),
        // 0: the peer lives in a pid namespace we cannot see into.
        _ => Err(CallError::NoPeerCred),
    }
}
