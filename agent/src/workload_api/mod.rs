//! The SPIFFE Workload API on the agent's Unix socket (DESIGN.md §5): checks
//! the security header, takes the caller's identity from the kernel (peer
//! credentials of the connection, never anything the caller sends), attests
//! it once per call on a blocking thread, and streams the caller's view of
//! the cache's `Snapshot`: the full current state first, then a new full
//! message only when that view changed. Protobuf types stop here; errors map
//! to `Status` in one place (`refuse`).
//!
//! A caller is attested once per call, not again while its stream is open:
//! a stream keeps the selectors it was opened with (as SPIRE's agent does).
//! A process that changes what it is (setuid, exec) after opening a stream
//! keeps receiving what it was attested for until that stream ends; clients
//! reopen streams after every error status, so a new decision is made then.
//! Time is re-checked, though: open SVID streams drop an SVID once it expires
//! even when no new snapshot arrives.
//!
//! JWT-SVIDs are not implemented yet: those methods check the header and
//! their arguments, then answer `Unimplemented`.

pub mod socket;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sigil_proto::workload as pb;
use sigil_proto::workload::spiffe_workload_api_server::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer,
};
use sigil_proto::{Selector, TrustDomain};
use tokio::net::UnixListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::metrics;
use crate::state::{Snapshot, StateRx, WorkloadSvid};
use crate::workload_attestor::{PeerCred, WorkloadAttestError, WorkloadAttestor};

pub use socket::bind_workload_socket;

/// The metadata key every Workload API call must carry, with the value `true`.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";
/// The status message for a caller that matches no entry (clients retry).
pub const NO_IDENTITY: &str = "no identity issued";
/// The status message for a call without the security header.
pub const HEADER_MISSING: &str = "security header missing from request";
/// The status message of the JWT methods.
pub const JWT_UNSUPPORTED: &str = "JWT-SVIDs are not supported yet";

/// Messages queued per stream before the stream task waits for the client.
const STREAM_BUFFER: usize = 2;

/// Bounds on what callers can make the agent do.
#[derive(Debug, Clone)]
pub struct WorkloadApiLimits {
    /// Streams open at once over all connections; more are refused with
    /// `Unavailable`, the load-shedding code after which SPIFFE clients back
    /// off and retry (Workload API §6).
    pub max_concurrent_streams: usize,
    /// Streams (and calls) open at once from one calling process (pid), so
    /// one workload cannot take every slot of `max_concurrent_streams`;
    /// more are refused with `Unavailable`.
    pub max_streams_per_workload: usize,
    /// Largest request accepted (requests are tiny; 4 MiB).
    pub max_decoding_message_bytes: usize,
    /// Largest response sent (many SVIDs with long chains; 16 MiB).
    pub max_encoding_message_bytes: usize,
    /// How often open SVID streams check for expired SVIDs when no new
    /// snapshot arrives.
    pub refresh_interval: Duration,
}

impl Default for WorkloadApiLimits {
    fn default() -> Self {
        WorkloadApiLimits {
            max_concurrent_streams: 10_000,
            max_streams_per_workload: 100,
            max_decoding_message_bytes: 4 * 1024 * 1024,
            max_encoding_message_bytes: 16 * 1024 * 1024,
            refresh_interval: Duration::from_secs(1),
        }
    }
}

/// The current time in Unix seconds (an input, so tests can move it).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

fn system_clock() -> Clock {
    Arc::new(|| time::OffsetDateTime::now_utc().unix_timestamp())
}

/// The Workload API service.
pub struct WorkloadApiService {
    state: StateRx,
    attestor: Arc<dyn WorkloadAttestor>,
    limits: WorkloadApiLimits,
    streams: Arc<Semaphore>,
    /// Open calls per calling pid (see `max_streams_per_workload`).
    per_workload: Arc<std::sync::Mutex<HashMap<i32, usize>>>,
    clock: Clock,
    /// Set to `true` when the server stops: open streams end, so the
    /// graceful shutdown is not held up by streams that never finish.
    stop: Arc<watch::Sender<bool>>,
}

impl WorkloadApiService {
    pub fn new(
        state: StateRx,
        attestor: Arc<dyn WorkloadAttestor>,
        limits: WorkloadApiLimits,
    ) -> WorkloadApiService {
        let permits = limits.max_concurrent_streams.min(Semaphore::MAX_PERMITS);
        WorkloadApiService {
            state,
            attestor,
            limits,
            streams: Arc::new(Semaphore::new(permits)),
            per_workload: Arc::default(),
            clock: system_clock(),
            stop: Arc::new(watch::channel(false).0),
        }
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> WorkloadApiService {
        self.clock = clock;
        self
    }

    /// Everything a call must pass before it is served: the security
    /// header, the kernel's peer credentials, a stream slot, attestation.
    async fn admit<T>(&self, req: &Request<T>, method: &'static str) -> Result<Caller, Status> {
        check_header(req).map_err(|e| refuse(method, None, e))?;
        let cred = peer_cred(req).map_err(|e| refuse(method, None, e))?;
        let workload = WorkloadSlot::take(
            &self.per_workload,
            cred.pid,
            self.limits.max_streams_per_workload,
        )
        .ok_or_else(|| {
            refuse(
                method,
                Some(&cred),
                CallError::TooManyWorkloadStreams(self.limits.max_streams_per_workload),
            )
        })?;
        let global = self
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| refuse(method, Some(&cred), CallError::TooManyStreams))?;
        let permit = StreamPermit {
            _global: global,
            _workload: workload,
        };
        let attestor = self.attestor.clone();
        let selectors = tokio::task::spawn_blocking(move || attestor.attest(&cred))
            .await
            .map_err(|e| refuse(method, Some(&cred), CallError::AttestationTask(e)))?
            .map_err(|e| {
                metrics::workload_attestation("error");
                refuse(method, Some(&cred), CallError::Attestation(e))
            })?;
        metrics::workload_attestation("ok");
        debug!(
            pid = cred.pid,
            uid = cred.uid,
            selectors = selectors.len(),
            method,
            "workload attested"
        );
        Ok(Caller {
            cred,
            selectors,
            permit,
        })
    }

    /// A receiver positioned at the current snapshot, and that snapshot.
    fn current(&self) -> (StateRx, Arc<Snapshot>) {
        let mut state = self.state.clone();
        let snapshot = state.borrow_and_update().clone();
        (state, snapshot)
    }

    /// Sends `first` at once and starts the task that follows the snapshot.
    fn start_stream<V: StreamView>(
        &self,
        method: &'static str,
        caller: Caller,
        view: V,
        state: StateRx,
        snapshot: Arc<Snapshot>,
        first: Rendered<V::Msg>,
    ) -> ReceiverStream<Result<V::Msg, Status>> {
        metrics::workload_call(method, tonic::Code::Ok);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        // Cannot fail: the channel is new, open and has room.
        let _ = tx.try_send(Ok(first.msg));
        tokio::spawn(run_stream(StreamTask {
            method,
            cred: caller.cred,
            selectors: caller.selectors,
            view,
            state,
            snapshot,
            last: first.digest,
            tx,
            stop: self.stop.subscribe(),
            clock: self.clock.clone(),
            refresh: self.limits.refresh_interval,
            _permit: caller.permit,
            _open: metrics::OpenStream::counted(),
        }));
        ReceiverStream::new(rx)
    }
}

/// Serves the Workload API on a new socket at `socket_path` until
/// `shutdown` completes, then removes the socket (if it is still ours).
pub async fn serve(
    socket_path: &Path,
    service: WorkloadApiService,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener = bind_workload_socket(socket_path)
        .with_context(|| format!("socket_path {}", socket_path.display()))?;
    let ours = socket::socket_identity(socket_path);
    info!(socket = %socket_path.display(), "Workload API listening");
    let result = serve_listener(listener, service, shutdown).await;
    if ours.is_some() && socket::socket_identity(socket_path) == ours {
        let _ = std::fs::remove_file(socket_path);
    }
    result.context("Workload API server")
}

/// Serves the Workload API on an already bound listener until `shutdown`
/// completes; open streams are ended (`Unavailable`) when it does.
pub async fn serve_listener(
    listener: UnixListener,
    service: WorkloadApiService,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let stop = service.stop.clone();
    let limits = service.limits.clone();
    let api = SpiffeWorkloadApiServer::new(service)
        .max_decoding_message_size(limits.max_decoding_message_bytes)
        .max_encoding_message_size(limits.max_encoding_message_bytes);
    tonic::transport::Server::builder()
        .add_service(api)
        // Behind the HTTP/2 front: any `:authority` a client sends is
        // accepted (gRPC C-core sends the percent-encoded socket path).
        .serve_with_incoming_shutdown(sigil_proto::unix_h2::incoming(listener), async move {
            shutdown.await;
            stop.send_replace(true);
        })
        .await
}

/// An admitted caller: who it is, its selectors, and its stream slot.
struct Caller {
    cred: PeerCred,
    selectors: Vec<Selector>,
    permit: StreamPermit,
}

/// A call's share of the global and the per-workload stream limits; both
/// are given back when it is dropped.
struct StreamPermit {
    _global: OwnedSemaphorePermit,
    _workload: WorkloadSlot,
}

/// One open call of a calling process, counted in `per_workload`.
struct WorkloadSlot {
    counts: Arc<std::sync::Mutex<HashMap<i32, usize>>>,
    pid: i32,
}

impl WorkloadSlot {
    /// Counts one more call for `pid`, or `None` if it has `max` already.
    fn take(
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

/// The hints of one response's SVIDs, unique as the Workload API requires
/// (§5.2.1): the first SVID with a hint keeps it, later SVIDs with the same
/// hint are sent with none, and that is logged. Empty hints are no hints.
fn unique_hints(svids: &[Arc<WorkloadSvid>]) -> Vec<String> {
    let mut seen = HashSet::new();
    svids
        .iter()
        .map(|s| {
            if s.hint.is_empty() || seen.insert(s.hint.as_str()) {
                return s.hint.clone();
            }
            warn!(
                entry_id = %s.entry_id,
                spiffe_id = %s.spiffe_id,
                hint = %s.hint,
                "hint already used by an earlier SVID of this response; sent without it"
            );
            String::new()
        })
        .collect()
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

/// Why a call is refused or a stream ends. Mapped to `Status` in `refuse`.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("security header missing from request")]
    HeaderMissing,
    #[error("security header workload.spiffe.io must be sent exactly once")]
    HeaderRepeated,
    #[error("security header workload.spiffe.io must have the value \"true\"")]
    HeaderValue,
    #[error("the calling process could not be identified (no peer credentials or pid)")]
    NoPeerCred,
    #[error("too many open Workload API streams; retry later")]
    TooManyStreams,
    #[error("too many open Workload API streams from this process (limit {0}); retry later")]
    TooManyWorkloadStreams(usize),
    #[error("workload attestation failed")]
    Attestation(#[source] WorkloadAttestError),
    #[error("workload attestation did not complete")]
    AttestationTask(#[source] tokio::task::JoinError),
    #[error("no identity issued")]
    NoIdentity,
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("JWT-SVIDs are not supported yet")]
    JwtUnsupported,
    #[error("the agent is shutting down")]
    ShuttingDown,
}

/// The one place errors become statuses: a safe message out, the detail
/// (with pid and uid) in the log.
fn refuse(method: &'static str, cred: Option<&PeerCred>, e: CallError) -> Status {
    let status = refuse_status(method, cred, e);
    metrics::workload_call(method, status.code());
    status
}

fn refuse_status(method: &'static str, cred: Option<&PeerCred>, e: CallError) -> Status {
    let pid = cred.map_or(-1, |c| i64::from(c.pid));
    let uid = cred.map_or(-1, |c| i64::from(c.uid));
    match &e {
        CallError::HeaderMissing | CallError::HeaderRepeated | CallError::HeaderValue => {
            debug!(method, error = %e, "Workload API call refused: security header");
            Status::invalid_argument(e.to_string())
        }
        CallError::BadRequest(_) => {
            debug!(pid, uid, method, error = %e, "Workload API call refused: bad request");
            Status::invalid_argument(e.to_string())
        }
        CallError::NoPeerCred => {
            warn!(
                method,
                "Workload API call refused: caller has no peer credentials"
            );
            Status::permission_denied(e.to_string())
        }
        CallError::TooManyStreams => {
            warn!(
                pid,
                uid, method, "Workload API call refused: stream limit reached"
            );
            // Load shedding: standard clients back off and retry.
            Status::unavailable(e.to_string())
        }
        CallError::TooManyWorkloadStreams(limit) => {
            warn!(
                pid,
                uid, method, limit, "Workload API call refused: per-workload stream limit reached"
            );
            Status::unavailable(e.to_string())
        }
        CallError::Attestation(source) => {
            warn!(pid, uid, method, error = %source, "Workload API call refused: attestation failed");
            Status::permission_denied(e.to_string())
        }
        CallError::AttestationTask(source) => {
            warn!(pid, uid, method, error = %source, "Workload API call refused: attestation task failed");
            Status::unavailable(e.to_string())
        }
        CallError::NoIdentity => {
            info!(pid, uid, method, "Workload API caller matches no entry");
            Status::permission_denied(NO_IDENTITY)
        }
        CallError::JwtUnsupported => {
            debug!(pid, uid, method, "Workload API JWT method called");
            Status::unimplemented(JWT_UNSUPPORTED)
        }
        CallError::ShuttingDown => {
            debug!(pid, uid, method, "Workload API stream ended: shutting down");
            Status::unavailable(e.to_string())
        }
    }
}

/// Exactly one `workload.spiffe.io: true`.
fn check_header<T>(req: &Request<T>) -> Result<(), CallError> {
    check_metadata(req.metadata())
}

fn check_metadata(metadata: &MetadataMap) -> Result<(), CallError> {
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
fn check_jwt_svid_request(r: &pb::JwtsvidRequest) -> Result<(), CallError> {
    if r.audience.is_empty() {
        return Err(CallError::BadRequest("audience must not be empty"));
    }
    Ok(())
}

/// The checks of a `ValidateJWTSVID` request's own fields.
fn check_validate_request(r: &pb::ValidateJwtsvidRequest) -> Result<(), CallError> {
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
fn peer_cred<T>(req: &Request<T>) -> Result<PeerCred, CallError> {
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

// ---------------------------------------------------------------------------
// Views: what one stream sends, computed from a snapshot.

/// A rendered message and the digest that decides whether it is new.
struct Rendered<M> {
    msg: M,
    digest: [u8; 32],
    /// For the log: the default SPIFFE ID (empty for bundles) and count.
    spiffe_id: String,
    count: usize,
}

/// What a stream shows its caller of a snapshot.
trait StreamView: Send + 'static {
    type Msg: Send + 'static;
    /// The full message for `snapshot` at `now`, or why the stream ends.
    fn render(
        &mut self,
        snapshot: &Snapshot,
        selectors: &[Selector],
        now: i64,
    ) -> Result<Rendered<Self::Msg>, CallError>;
    /// Whether time alone may have changed the message since the last render.
    fn stale(&self, _now: i64) -> bool {
        false
    }
}

/// A caller's X.509-SVIDs. Remembers the SVIDs last matched, so the timer
/// re-renders only when one of them has expired.
#[derive(Default)]
struct SvidView {
    matched: Vec<Arc<WorkloadSvid>>,
}

impl StreamView for SvidView {
    type Msg = pb::X509svidResponse;

    fn render(
        &mut self,
        snapshot: &Snapshot,
        selectors: &[Selector],
        now: i64,
    ) -> Result<Rendered<Self::Msg>, CallError> {
        let matched = snapshot.svids_for(selectors, now);
        let Some(default) = matched.first() else {
            return Err(CallError::NoIdentity);
        };
        let spiffe_id = default.spiffe_id.as_str().to_string();
        let bundle = snapshot.bundle.concat();
        let federated: BTreeMap<String, Vec<u8>> = matched
            .iter()
            .flat_map(|s| s.federates_with.iter())
            .filter(|td| **td != snapshot.trust_domain)
            .collect::<BTreeSet<&TrustDomain>>()
            .into_iter()
            .filter_map(|td| {
                snapshot
                    .federated
                    .get(td)
                    .map(|certs| (td_id(td), certs.concat()))
            })
            .collect();

        let mut d = Digest::new();
        d.count(matched.len());
        let hints = unique_hints(&matched);
        let mut svids = Vec::with_capacity(matched.len());
        for (s, hint) in matched.iter().zip(hints) {
            let svid = pb::X509svid {
                spiffe_id: s.spiffe_id.as_str().to_string(),
                x509_svid: s.cert_chain.concat(),
                x509_svid_key: s.key_pkcs8.clone(),
                bundle: bundle.clone(),
                hint,
            };
            d.field(svid.spiffe_id.as_bytes());
            d.field(&svid.x509_svid);
            d.field(&svid.x509_svid_key);
            d.field(&svid.bundle);
            d.field(svid.hint.as_bytes());
            svids.push(svid);
        }
        d.map(&federated);
        let count = svids.len();
        self.matched = matched;
        Ok(Rendered {
            msg: pb::X509svidResponse {
                svids,
                crl: Vec::new(),
                federated_bundles: federated.into_iter().collect(),
            },
            digest: d.finish(),
            spiffe_id,
            count,
        })
    }

    fn stale(&self, now: i64) -> bool {
        self.matched.iter().any(|s| s.not_after <= now)
    }
}

/// The X.509 bundles: the own trust domain's and every federated one.
struct BundleView;

impl StreamView for BundleView {
    type Msg = pb::X509BundlesResponse;

    fn render(
        &mut self,
        snapshot: &Snapshot,
        _: &[Selector],
        _: i64,
    ) -> Result<Rendered<Self::Msg>, CallError> {
        let mut bundles: BTreeMap<String, Vec<u8>> = snapshot
            .federated
            .iter()
            .map(|(td, certs)| (td_id(td), certs.concat()))
            .collect();
        bundles.insert(td_id(&snapshot.trust_domain), snapshot.bundle.concat());
        let mut d = Digest::new();
        d.map(&bundles);
        let count = bundles.len();
        Ok(Rendered {
            msg: pb::X509BundlesResponse {
                crl: Vec::new(),
                bundles: bundles.into_iter().collect::<HashMap<_, _>>(),
            },
            digest: d.finish(),
            spiffe_id: String::new(),
            count,
        })
    }
}

/// `spiffe://<td>`, the key of bundle maps.
fn td_id(td: &TrustDomain) -> String {
    td.id().as_str().to_string()
}

/// SHA-256 over length-prefixed fields, in a fixed order (maps sorted), so
/// equal messages have equal digests whatever `HashMap` order they encode in.
struct Digest(ring::digest::Context);

impl Digest {
    fn new() -> Digest {
        Digest(ring::digest::Context::new(&ring::digest::SHA256))
    }

    fn count(&mut self, n: usize) {
        self.0.update(&(n as u64).to_be_bytes());
    }

    fn field(&mut self, bytes: &[u8]) {
        self.count(bytes.len());
        self.0.update(bytes);
    }

    fn map(&mut self, m: &BTreeMap<String, Vec<u8>>) {
        self.count(m.len());
        for (k, v) in m {
            self.field(k.as_bytes());
            self.field(v);
        }
    }

    fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

// ---------------------------------------------------------------------------
// The stream task: one per open stream, following the snapshot.

struct StreamTask<V: StreamView> {
    method: &'static str,
    cred: PeerCred,
    selectors: Vec<Selector>,
    view: V,
    state: StateRx,
    snapshot: Arc<Snapshot>,
    /// Digest of the last message sent.
    last: [u8; 32],
    tx: mpsc::Sender<Result<V::Msg, Status>>,
    stop: watch::Receiver<bool>,
    clock: Clock,
    refresh: Duration,
    /// The stream's slot; released when the task ends.
    _permit: StreamPermit,
    /// Counted in the open-streams gauge while the task lives.
    _open: metrics::OpenStream,
}

/// Sends a new full message whenever the caller's view changes (a new
/// snapshot, or an SVID expiring), never the same message twice. Ends when
/// the client goes away, the server stops, or the view becomes an error
/// (e.g. no identity left), which is sent as the stream's status.
async fn run_stream<V: StreamView>(mut t: StreamTask<V>) {
    let mut tick = tokio::time::interval_at(Instant::now() + t.refresh, t.refresh);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let changed = tokio::select! {
            () = t.tx.closed() => {
                debug!(pid = t.cred.pid, uid = t.cred.uid, method = t.method, "Workload API stream closed by the workload");
                return;
            }
            _ = t.stop.wait_for(|stop| *stop) => {
                let _ = t.tx.try_send(Err(refuse(t.method, Some(&t.cred), CallError::ShuttingDown)));
                return;
            }
            r = t.state.changed() => {
                if r.is_err() {
                    // The cache task is gone: the agent is stopping.
                    let _ = t.tx.try_send(Err(refuse(t.method, Some(&t.cred), CallError::ShuttingDown)));
                    return;
                }
                t.snapshot = t.state.borrow_and_update().clone();
                true
            }
            _ = tick.tick() => t.view.stale((t.clock)()),
        };
        if !changed {
            continue;
        }
        let rendered = match t.view.render(&t.snapshot, &t.selectors, (t.clock)()) {
            Ok(r) => r,
            Err(e) => {
                let status = refuse(t.method, Some(&t.cred), e);
                tokio::select! {
                    _ = t.tx.send(Err(status)) => {}
                    _ = t.stop.wait_for(|stop| *stop) => {}
                }
                return;
            }
        };
        if rendered.digest == t.last {
            continue;
        }
        t.last = rendered.digest;
        info!(
            pid = t.cred.pid,
            uid = t.cred.uid,
            spiffe_id = %rendered.spiffe_id,
            count = rendered.count,
            method = t.method,
            "Workload API update sent"
        );
        tokio::select! {
            r = t.tx.send(Ok(rendered.msg)) => if r.is_err() { return },
            _ = t.stop.wait_for(|stop| *stop) => {
                let _ = t.tx.try_send(Err(refuse(t.method, Some(&t.cred), CallError::ShuttingDown)));
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The gRPC methods.

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApiService {
    type FetchX509SVIDStream = ReceiverStream<Result<pb::X509svidResponse, Status>>;
    type FetchX509BundlesStream = ReceiverStream<Result<pb::X509BundlesResponse, Status>>;
    type FetchJWTBundlesStream = tokio_stream::Empty<Result<pb::JwtBundlesResponse, Status>>;

    async fn fetch_x509svid(
        &self,
        req: Request<pb::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        const METHOD: &str = "FetchX509SVID";
        let caller = self.admit(&req, METHOD).await?;
        let (state, snapshot) = self.current();
        let mut view = SvidView::default();
        let first = view
            .render(&snapshot, &caller.selectors, (self.clock)())
            .map_err(|e| refuse(METHOD, Some(&caller.cred), e))?;
        info!(
            pid = caller.cred.pid,
            uid = caller.cred.uid,
            spiffe_id = %first.spiffe_id,
            count = first.count,
            "X.509-SVID stream opened"
        );
        Ok(Response::new(self.start_stream(
            METHOD, caller, view, state, snapshot, first,
        )))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<pb::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        const METHOD: &str = "FetchX509Bundles";
        let caller = self.admit(&req, METHOD).await?;
        let (state, snapshot) = self.current();
        let mut view = BundleView;
        let first = view
            .render(&snapshot, &caller.selectors, (self.clock)())
            .map_err(|e| refuse(METHOD, Some(&caller.cred), e))?;
        info!(
            pid = caller.cred.pid,
            uid = caller.cred.uid,
            count = first.count,
            "X.509 bundle stream opened"
        );
        Ok(Response::new(self.start_stream(
            METHOD, caller, view, state, snapshot, first,
        )))
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<pb::JwtsvidRequest>,
    ) -> Result<Response<pb::JwtsvidResponse>, Status> {
        const METHOD: &str = "FetchJWTSVID";
        check_header(&req).map_err(|e| refuse(METHOD, None, e))?;
        check_jwt_svid_request(req.get_ref()).map_err(|e| refuse(METHOD, None, e))?;
        Err(refuse(METHOD, None, CallError::JwtUnsupported))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<pb::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        const METHOD: &str = "FetchJWTBundles";
        check_header(&req).map_err(|e| refuse(METHOD, None, e))?;
        Err(refuse(METHOD, None, CallError::JwtUnsupported))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<pb::ValidateJwtsvidRequest>,
    ) -> Result<Response<pb::ValidateJwtsvidResponse>, Status> {
        const METHOD: &str = "ValidateJWTSVID";
        check_header(&req).map_err(|e| refuse(METHOD, None, e))?;
        check_validate_request(req.get_ref()).map_err(|e| refuse(METHOD, None, e))?;
        Err(refuse(METHOD, None, CallError::JwtUnsupported))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicI64, Ordering};

    use hyper_util::rt::TokioIo;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    use sigil_proto::SpiffeId;
    use sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
    use tonic::Code;
    use tonic::transport::{Channel, Endpoint};

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);
    const QUIET: Duration = Duration::from_millis(300);

    /// Maps the test process's uid to fixed selectors; records who called.
    struct FakeAttestor {
        uid: u32,
        selectors: Vec<Selector>,
        seen: Mutex<Vec<PeerCred>>,
    }

    impl WorkloadAttestor for FakeAttestor {
        fn attest(&self, cred: &PeerCred) -> Result<Vec<Selector>, WorkloadAttestError> {
            self.seen.lock().unwrap().push(*cred);
            if cred.uid == self.uid {
                Ok(self.selectors.clone())
            } else {
                Err(WorkloadAttestError::Unavailable {
                    pid: cred.pid,
                    reason: "unknown uid".into(),
                })
            }
        }
    }

    struct FailingAttestor;

    impl WorkloadAttestor for FailingAttestor {
        fn attest(&self, cred: &PeerCred) -> Result<Vec<Selector>, WorkloadAttestError> {
            Err(WorkloadAttestError::PidReused { pid: cred.pid })
        }
    }

    fn my_uid() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    fn td() -> TrustDomain {
        TrustDomain::parse("example.org").unwrap()
    }

    /// A test CA of `trust_domain`, issuing leaves with URI SANs.
    struct TestCa {
        der: Vec<u8>,
        issuer: Issuer<'static, KeyPair>,
    }

    impl TestCa {
        fn new(trust_domain: &str) -> TestCa {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.subject_alt_names = vec![SanType::URI(
                format!("spiffe://{trust_domain}").try_into().unwrap(),
            )];
            let der = p.self_signed(&key).unwrap().der().to_vec();
            TestCa {
                der,
                issuer: Issuer::new(p, key),
            }
        }

        /// (leaf DER, PKCS#8 key DER)
        fn leaf(&self, id: &str) -> (Vec<u8>, Vec<u8>) {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
            let cert = p.signed_by(&key, &self.issuer).unwrap();
            (cert.der().to_vec(), key.serialize_der())
        }

        fn svid(&self, id: &str, selectors: &[&str], not_after: i64) -> Arc<WorkloadSvid> {
            let (leaf, key) = self.leaf(id);
            Arc::new(WorkloadSvid {
                entry_id: format!("entry-{id}"),
                spiffe_id: SpiffeId::parse(id).unwrap(),
                selectors: selectors.iter().map(|s| sel(s)).collect(),
                hint: format!("hint {id}"),
                cert_chain: vec![leaf, self.der.clone()],
                key_pkcs8: key,
                not_before: 0,
                not_after,
                federates_with: Vec::new(),
            })
        }
    }

    fn far() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp() + 3600
    }

    fn snapshot(ca: &TestCa, svids: Vec<Arc<WorkloadSvid>>) -> Snapshot {
        Snapshot {
            trust_domain: td(),
            bundle: vec![ca.der.clone()],
            federated: BTreeMap::new(),
            svids,
        }
    }

    struct Harness {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        state: watch::Sender<Arc<Snapshot>>,
        attestor: Arc<FakeAttestor>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        server: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    impl Harness {
        async fn start(snap: Snapshot, selectors: &[&str]) -> Harness {
            Self::start_with(
                snap,
                selectors,
                WorkloadApiLimits {
                    refresh_interval: Duration::from_millis(50),
                    ..Default::default()
                },
                None,
            )
            .await
        }

        async fn start_with(
            snap: Snapshot,
            selectors: &[&str],
            limits: WorkloadApiLimits,
            clock: Option<Clock>,
        ) -> Harness {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("run/agent.sock");
            let (state, rx) = watch::channel(Arc::new(snap));
            let attestor = Arc::new(FakeAttestor {
                uid: my_uid(),
                selectors: selectors.iter().map(|s| sel(s)).collect(),
                seen: Mutex::new(Vec::new()),
            });
            let mut service = WorkloadApiService::new(rx, attestor.clone(), limits);
            if let Some(c) = clock {
                service = service.with_clock(c);
            }
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let p = path.clone();
            let server = tokio::spawn(async move {
                serve(&p, service, async move {
                    let _ = stop_rx.await;
                })
                .await
            });
            let deadline = Instant::now() + WAIT;
            while tokio::net::UnixStream::connect(&path).await.is_err() {
                assert!(Instant::now() < deadline, "server did not start");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Harness {
                _dir: dir,
                path,
                state,
                attestor,
                stop: Some(stop_tx),
                server,
            }
        }

        async fn client(&self) -> SpiffeWorkloadApiClient<Channel> {
            client_at(&self.path).await
        }
    }

    /// A Workload API client over the Unix socket at `path`.
    async fn client_at(path: &Path) -> SpiffeWorkloadApiClient<Channel> {
        let p = path.to_path_buf();
        let channel = Endpoint::from_static("http://workload-api.invalid")
            .connect_with_connector(tower::service_fn(move |_| {
                let p = p.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
                }
            }))
            .await
            .unwrap();
        SpiffeWorkloadApiClient::new(channel)
    }

    #[derive(Clone, Copy, Debug)]
    enum Header {
        Good,
        Missing,
        False,
        Twice,
    }

    fn req<T>(msg: T, h: Header) -> Request<T> {
        let mut r = Request::new(msg);
        let md = r.metadata_mut();
        match h {
            Header::Good => {
                md.insert(SECURITY_HEADER, "true".parse().unwrap());
            }
            Header::Missing => {}
            Header::False => {
                md.insert(SECURITY_HEADER, "false".parse().unwrap());
            }
            Header::Twice => {
                md.append(SECURITY_HEADER, "true".parse().unwrap());
                md.append(SECURITY_HEADER, "true".parse().unwrap());
            }
        }
        r
    }

    fn jwt_req() -> pb::JwtsvidRequest {
        pb::JwtsvidRequest {
            audience: vec!["db".into()],
            spiffe_id: String::new(),
        }
    }

    fn validate_req() -> pb::ValidateJwtsvidRequest {
        pb::ValidateJwtsvidRequest {
            audience: "db".into(),
            svid: "a.b.c".into(),
        }
    }

    /// The status of each of the five methods called with header `h`.
    async fn all_methods(
        c: &mut SpiffeWorkloadApiClient<Channel>,
        h: Header,
    ) -> Vec<(&'static str, Status)> {
        vec![
            (
                "FetchX509SVID",
                c.fetch_x509svid(req(pb::X509svidRequest {}, h))
                    .await
                    .unwrap_err(),
            ),
            (
                "FetchX509Bundles",
                c.fetch_x509_bundles(req(pb::X509BundlesRequest {}, h))
                    .await
                    .unwrap_err(),
            ),
            (
                "FetchJWTSVID",
                c.fetch_jwtsvid(req(jwt_req(), h)).await.unwrap_err(),
            ),
            (
                "FetchJWTBundles",
                c.fetch_jwt_bundles(req(pb::JwtBundlesRequest {}, h))
                    .await
                    .unwrap_err(),
            ),
            (
                "ValidateJWTSVID",
                c.validate_jwtsvid(req(validate_req(), h))
                    .await
                    .unwrap_err(),
            ),
        ]
    }

    /// Splits concatenated DER certificates.
    fn split_der(mut der: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !der.is_empty() {
            let (rest, _) = x509_parser::parse_x509_certificate(der).unwrap();
            out.push(der[..der.len() - rest.len()].to_vec());
            der = rest;
        }
        out
    }

    fn uri_san(der: &[u8]) -> String {
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        san.value
            .general_names
            .iter()
            .find_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
            .unwrap()
    }

    fn assert_key_matches_leaf(svid: &pb::X509svid) {
        let chain = split_der(&svid.x509_svid);
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        let spki = leaf.public_key().subject_public_key.data.to_vec();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &svid.x509_svid_key,
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        use ring::signature::KeyPair as _;
        assert_eq!(
            key.public_key().as_ref(),
            spki.as_slice(),
            "key does not match the leaf"
        );
    }

    async fn next<T>(s: &mut tonic::Streaming<T>) -> Result<Option<T>, Status> {
        tokio::time::timeout(WAIT, s.message())
            .await
            .expect("no stream message in time")
    }

    async fn assert_quiet<T: std::fmt::Debug>(s: &mut tonic::Streaming<T>) {
        if let Ok(m) = tokio::time::timeout(QUIET, s.message()).await {
            panic!("unexpected stream message: {m:?}");
        }
    }

    #[tokio::test]
    async fn workload_api_security_header_is_checked_on_every_method() {
        let ca = TestCa::new("example.org");
        let h = Harness::start(
            snapshot(
                &ca,
                vec![ca.svid("spiffe://example.org/a", &["unix:uid:1"], far())],
            ),
            &["unix:uid:1"],
        )
        .await;
        let mut c = h.client().await;
        for (header, expect) in [
            (Header::Missing, HEADER_MISSING),
            (
                Header::False,
                "security header workload.spiffe.io must have the value \"true\"",
            ),
            (
                Header::Twice,
                "security header workload.spiffe.io must be sent exactly once",
            ),
        ] {
            for (method, status) in all_methods(&mut c, header).await {
                assert_eq!(
                    status.code(),
                    Code::InvalidArgument,
                    "{method} {header:?}: {status:?}"
                );
                assert_eq!(status.message(), expect, "{method} {header:?}");
            }
        }
        assert!(
            h.attestor.seen.lock().unwrap().is_empty(),
            "attested before the header check"
        );
    }

    /// Workload API §5.2.1: hints are unique among one response's SVIDs.
    /// Three entries share "db", one has none: the first keeps the hint.
    #[tokio::test]
    async fn workload_api_hints_are_unique_within_a_response() {
        let ca = TestCa::new("example.org");
        let uid = format!("unix:uid:{}", my_uid());
        let with_hint = |id: &str, hint: &str| {
            let mut s = ca.svid(id, &[&uid], far());
            Arc::get_mut(&mut s).unwrap().hint = hint.to_string();
            s
        };
        let snap = snapshot(
            &ca,
            vec![
                with_hint("spiffe://example.org/a", "db"),
                with_hint("spiffe://example.org/b", ""),
                with_hint("spiffe://example.org/c", "db"),
                with_hint("spiffe://example.org/d", "web"),
                with_hint("spiffe://example.org/e", ""),
                with_hint("spiffe://example.org/f", "db"),
            ],
        );
        let h = Harness::start(snap, &[&uid]).await;
        let mut c = h.client().await;
        let mut s = c
            .fetch_x509svid(req(pb::X509svidRequest {}, Header::Good))
            .await
            .unwrap()
            .into_inner();
        let m = next(&mut s).await.unwrap().unwrap();
        let got: Vec<(&str, &str)> = m
            .svids
            .iter()
            .map(|s| (s.spiffe_id.as_str(), s.hint.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("spiffe://example.org/a", "db"),
                ("spiffe://example.org/b", ""),
                ("spiffe://example.org/c", ""),
                ("spiffe://example.org/d", "web"),
                ("spiffe://example.org/e", ""),
                ("spiffe://example.org/f", ""),
            ]
        );
    }

    #[tokio::test]
    async fn workload_api_serves_exactly_the_matching_svids_default_first() {
        let ca = TestCa::new("example.org");
        let fed_ca = TestCa::new("other.org");
        let uid = format!("unix:uid:{}", my_uid());
        let a = ca.svid("spiffe://example.org/a", &[&uid], far());
        let mut b = ca.svid("spiffe://example.org/b", &[&uid, "unix:gid:7"], far());
        Arc::get_mut(&mut b).unwrap().federates_with =
            vec![TrustDomain::parse("other.org").unwrap()];
        let other = ca.svid("spiffe://example.org/other", &["unix:uid:424242"], far());
        let mut snap = snapshot(&ca, vec![a.clone(), b.clone(), other]);
        snap.federated.insert(
            TrustDomain::parse("other.org").unwrap(),
            vec![fed_ca.der.clone()],
        );
        snap.federated.insert(
            TrustDomain::parse("unrelated.org").unwrap(),
            vec![fed_ca.der.clone()],
        );
        let h = Harness::start(snap, &[&uid, "unix:gid:7", "unix:user:test"]).await;
        let mut c = h.client().await;
        let mut s = c
            .fetch_x509svid(req(pb::X509svidRequest {}, Header::Good))
            .await
            .unwrap()
            .into_inner();
        let m = next(&mut s).await.unwrap().unwrap();
        let ids: Vec<_> = m.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
        assert_eq!(ids, ["spiffe://example.org/a", "spiffe://example.org/b"]);
        for (got, want) in m.svids.iter().zip([&a, &b]) {
            assert_eq!(
                got.x509_svid,
                want.cert_chain.concat(),
                "chain is the concatenated DER, leaf first"
            );
            assert_eq!(split_der(&got.x509_svid).len(), 2);
            assert_eq!(uri_san(&split_der(&got.x509_svid)[0]), got.spiffe_id);
            assert_eq!(got.x509_svid_key, want.key_pkcs8);
            assert_eq!(got.bundle, ca.der, "bundle is the own trust domain's CAs");
            assert_eq!(got.hint, want.hint);
            assert_key_matches_leaf(got);
        }
        assert!(m.crl.is_empty());
        assert_eq!(
            m.federated_bundles.len(),
            1,
            "only trust domains the caller's SVIDs federate with"
        );
        assert_eq!(m.federated_bundles["spiffe://other.org"], fed_ca.der);

        // Identity from the kernel: this process.
        let seen = h.attestor.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].pid, std::process::id() as i32);
        assert_eq!(seen[0].uid, my_uid());
    }

    #[tokio::test]
    async fn workload_api_caller_missing_a_selector_gets_no_identity() {
        let ca = TestCa::new("example.org");
        let uid = format!("unix:uid:{}", my_uid());
        let snap = snapshot(
            &ca,
            vec![ca.svid("spiffe://example.org/a", &[&uid, "unix:gid:7"], far())],
        );
        let h = Harness::start(snap, &[&uid]).await;
        let mut c = h.client().await;
        let e = c
            .fetch_x509svid(req(pb::X509svidRequest {}, Header::Good))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(e.message(), NO_IDENTITY);
    }

    #[tokio::test]
    async fn workload_api_attestation_failure_is_permission_denied() {
        let ca = TestCa::new("example.org");
        let (_tx, rx) = watch::channel(Arc::new(snapshot(&ca, vec![])));
        let service =
            WorkloadApiService::new(rx, Arc::new(FailingAttestor), WorkloadApiLimits::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = bind_workload_socket(&path).unwrap();
        let server = tokio::spawn(serve_listener(listener, service, std::future::pending()));
        let mut c = client_at(&path).await;
        let e = c
            .fetch_x509svid(req(pb::X509svidRequest {}, Header::Good))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(e.message(), "workload attestation failed");
        assert!(
            !e.message().contains("pid"),
            "no detail leaks to the caller"
        );
        let e = c
            .fetch_x509_bundles(req(pb::X509BundlesRequest {}, Header::Good))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        server.abort();
    }

    #[tokio::test]
    async fn workload_api_stream_sends_on_change_only() {
        let ca = TestCa::new("example.org");
        let uid = format!("unix:uid:{}", my_uid());
        let a = ca.svid("spiffe://example.org/a", &[&uid], far());
        let h = Harness::start(snapshot(&ca, vec![a.clone()]), &[&uid]).await;
        let mut c = h.client().await;
        let mut s = c
            .fetch_x509svid(req(pb::X509svidRequest {}, Header::Good))
            .await
            .unwrap()
            .into_inner();
        let first = next(&mut s).await.unwrap().unwrap();
        assert_eq!(first.svids.len(), 1);

        // A new SVID: exactly one new message, with it.
        let b = ca.svid("spiffe://example.org/b", &[&uid], far());
        h.state
            .send(Arc::new(snapshot(&ca, vec![a.clone(), b.clone()])))
            .unwrap();
        let second = next(&mut s).await.unwrap().unwrap();
        let ids: Vec<_> = second.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
        assert_eq!(ids, ["spiffe://example.org/a", "spiffe://example.org/b"]);
        assert_quiet(&mut s).await;

        // The same content in a new snapshot: nothing.
        h.state
            .send(Arc::new(snapshot(&ca, vec![a.clone(), b.clone()])))
            .unwrap();
        assert_quiet(&mut s).await;

        // A change that does not concern this caller: nothing either.
        let other = ca.svid("spiffe://example.org/other", &["unix:uid:424242"], far());
        h.state
            .send(Arc::new(snapshot(&ca, vec![a.clone(), b.clone(), other])))
            .unwrap();
        assert_quiet(&mut s).await;

        // A rotated SVID (same ID, new cert and key) is sent.
        let a2 = ca.svid("spiffe://example.org/a", &[&uid], far());
        h.state
            .send(Arc::new(snapshot(&ca, vec![a2.clone(), b.clone()])))
            .unwrap();
        let third = next(&mut s).await.unwrap().unwrap();
        assert_eq!(third.svids[0].x509_svid, a2.cert_chain.concat());
        assert_key_matches_leaf(&third.svids[0]);

        // Every identity gone: the stream ends with "no identity issued".
        h.state.send(Arc::new(snapshot(&ca, vec![]))).unwrap();
        let e = next(&mut s).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(e.message(), NO_IDENTITY);
    }

    #[tokio::test]
    async fn workload_api_expired_svids_are_dropped_on_the_timer() {
        let ca = TestCa::new("example.org");
        let uid = format!("unix:uid:{}", my_uid());
        let now = Arc::new(AtomicI64::new(500));
        let clock: Clock = {
            let now = now.clone();
            Arc::new(move || now.load(Ordering::SeqCst))
        };
        let a = ca.svid("spiffe://example.org/a", &[&uid], 1000);
        let b = ca.svid("spiffe://example.org/b", &[&uid], 2000);
        let limits = WorkloadApiLimits {
            refresh_interval: Duration::from_millis(50),
            ..Default::default()
        };
        let h = Harness::start_with(snapshot(&ca, vec![a, b]), &[&uid], limits, Some(clock)).await;
        let mut c = h.client().await;
        let mut s = c
            .fetch_x509svid(req(pb::X509svidRequest {}, Header::Good))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(next(&mut s).await.unwrap().unwrap().svids.len(), 2);
        assert_quiet(&mut s).await;

        now.store(1000, Ordering::SeqCst);
        let m = next(&mut s).await.unwrap().unwrap();
        let ids: Vec<_> = m.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
        assert_eq!(ids, ["spiffe://example.org/b"]);
        assert_quiet(&mut s).await;

        now.store(2000, Ordering::SeqCst);
        let e = next(&mut s).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(e.message(), NO_IDENTITY);
    }

    #[tokio::test]
    async fn workload_api_bundles_stream() {
        let ca = TestCa::new("example.org");
        let ca2 = TestCa::new("example.org");
        let fed = TestCa::new("other.org");
        // Bundles need an attestable caller but no matching entry.
        let h = Harness::start(snapshot(&ca, vec![]), &["unix:uid:1"]).await;
        let mut c = h.client().await;
        let mut s = c
            .fetch_x509_bundles(req(pb::X509BundlesRequest {}, Header::Good))
            .await
            .unwrap()
            .into_inner();
        let m = next(&mut s).await.unwrap().unwrap();
        assert_eq!(m.bundles.len(), 1);
        assert_eq!(m.bundles["spiffe://example.org"], ca.der);
        assert!(m.crl.is_empty());

        // Same content, new snapshot: nothing.
        h.state.send(Arc::new(snapshot(&ca, vec![]))).unwrap();
        assert_quiet(&mut s).await;

        // A new CA in the bundle and a federated trust domain.
        let mut snap = snapshot(&ca, vec![]);
        snap.bundle.push(ca2.der.clone());
        snap.federated.insert(
            TrustDomain::parse("other.org").unwrap(),
            vec![fed.der.clone()],
        );
        h.state.send(Arc::new(snap.clone())).unwrap();
        let m = next(&mut s).await.unwrap().unwrap();
        assert_eq!(m.bundles.len(), 2);
        assert_eq!(
            m.bundles["spiffe://example.org"],
            [ca.der.clone(), ca2.der.clone()].concat()
        );
        assert_eq!(split_der(&m.bundles["spiffe://example.org"]).len(), 2);
        assert_eq!(m.bundles["spiffe://other.org"], fed.der);
        h.state.send(Arc::new(snap)).unwrap();
        assert_quiet(&mut s).await;
    }

    #[tokio::test]
    async fn workload_api_jwt_methods_are_unimplemented() {
        let ca = TestCa::new("example.org");
        let h = Harness::start(snapshot(&ca, vec![]), &[]).await;
        let mut c = h.client().await;
        let e = c
            .fetch_jwtsvid(req(jwt_req(), Header::Good))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::Unimplemented, JWT_UNSUPPORTED)
        );
        let e = c
            .fetch_jwt_bundles(req(pb::JwtBundlesRequest {}, Header::Good))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::Unimplemented, JWT_UNSUPPORTED)
        );
        let e = c
            .validate_jwtsvid(req(validate_req(), Header::Good))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::Unimplemented, JWT_UNSUPPORTED)
        );

        let e = c
            .fetch_jwtsvid(req(pb::JwtsvidRequest::default(), Header::Good))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("audience"), "{e:?}");
        // The header is checked first.
        let e = c
            .fetch_jwtsvid(req(pb::JwtsvidRequest::default(), Header::Missing))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::InvalidArgument, HEADER_MISSING)
        );
        let e = c
            .validate_jwtsvid(req(
                pb::ValidateJwtsvidRequest {
                    audience: String::new(),
                    svid: "a.b.c".into(),
                },
                Header::Good,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = c
            .validate_jwtsvid(req(
                pb::ValidateJwtsvidRequest {
                    audience: "db".into(),
                    svid: String::new(),
                },
                Header::Good,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("svid"), "{e:?}");
    }

    #[tokio::test]
    async fn workload_api_stream_limit() {
        let ca = TestCa::new("example.org");
        let limits = WorkloadApiLimits {
            max_concurrent_streams: 1,
            refresh_interval: Duration::from_millis(50),
            ..Default::default()
        };
        let h = Harness::start_with(snapshot(&ca, vec![]), &[], limits, None).await;
        let mut c = h.client().await;
        let mut s = c
            .fetch_x509_bundles(req(pb::X509BundlesRequest {}, Header::Good))
            .await
            .unwrap()
            .into_inner();
        next(&mut s).await.unwrap().unwrap();
        let e = c
            .fetch_x509_bundles(req(pb::X509BundlesRequest {}, Header::Good))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        // Closing the stream frees the slot.
        drop(s);
        let deadline = Instant::now() + WAIT;
        loop {
            match c
                .fetch_x509_bundles(req(pb::X509BundlesRequest {}, Header::Good))
                .await
            {
                Ok(_) => break,
                Err(e) if e.code() == Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("slot not freed: {e:?}"),
            }
        }
    }

    #[tokio::test]
    async fn workload_api_shutdown_ends_open_streams_and_removes_the_socket() {
        let ca = TestCa::new("example.org");
        let uid = format!("unix:uid:{}", my_uid());
        let mut h = Harness::start(
            snapshot(&ca, vec![ca.svid("spiffe://example.org/a", &[&uid], far())]),
            &[&uid],
        )
        .await;
        let mut c = h.client().await;
        let mut s = c
            .fetch_x509svid(req(pb::X509svidRequest {}, Header::Good))
            .await
            .unwrap()
            .into_inner();
        next(&mut s).await.unwrap().unwrap();
        h.stop.take().unwrap().send(()).unwrap();
        let e = next(&mut s).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        tokio::time::timeout(WAIT, &mut h.server)
            .await
            .expect("server did not stop with a stream open")
            .unwrap()
            .unwrap();
        assert!(!h.path.exists(), "socket removed on shutdown");
    }
}
