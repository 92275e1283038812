//! The SPIFFE Workload API on the agent's Unix socket (DESIGN.md §5): checks
//! the security header, takes the caller's identity from the kernel (peer
//! credentials of the connection, never anything the caller sends), attests
//! it once per call on a blocking thread, and streams the caller's view of
//! the cache's `Snapshot`: the full current state first, then a new full
//! message only when that view changed.
//!
//! The caller is the process that connected: its process is recorded when
//! the connection is accepted (`accept`) and each call is attested against
//! that record, refused if the process exited, its pid was reused or it
//! runs another program since (issue 14). Protobuf types stop here; errors map
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
//! JWT-SVIDs are minted on demand through the agent's JWT cache and
//! validated against the bundles the caller may see (`jwt`); they go
//! through the same admission as the X.509 methods. WIT-SVIDs are not
//! issued: those methods check the header, then answer `Unimplemented`.
//!
//! Here: the service, its limits, serving the socket (behind the HTTP/2
//! authority front, with reflection) and the gRPC methods. The record at
//! accept is in `accept`, the connection caps and timeouts in
//! `connection`, admission in
//! `admission`, the error→`Status` mapping in `error`, the stream task and
//! digests in `stream`, the X.509 views in `x509`, the JWT views in `jwt`,
//! the socket file in `socket`.

mod accept;
mod admission;
mod blocking;
mod connection;
mod error;
mod jwt;
pub mod socket;
mod stream;
mod validator;
mod x509;

use accept::AcceptedPeer;
use admission::*;
use error::*;
use jwt::*;
use stream::*;
use x509::*;

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
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::metrics;
use crate::state::{Snapshot, StateRx, WorkloadSvid};
use crate::workload_attestor::{PeerCred, WorkloadAttestError, WorkloadAttestor};

pub use admission::{WorkloadRequest, precheck};
pub use connection::ConnectionLimits;
pub use socket::bind_workload_socket;
pub use validator::DEFAULT_JWT_VALIDATION_CACHE;

/// The metadata key every Workload API call must carry, with the value `true`.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";
/// The status message for a caller that matches no entry (clients retry).
pub const NO_IDENTITY: &str = "no identity issued";
/// The status message for a call without the security header.
pub const HEADER_MISSING: &str = "security header missing from request";
/// The message of every WIT-SVID method (`Unimplemented`).
pub const WIT_UNSUPPORTED: &str = "WIT-SVIDs are not issued by Sigil";

/// Messages queued per stream before the stream task waits for the client.
const STREAM_BUFFER: usize = 2;

/// Default of [`WorkloadApiLimits::max_streams_per_uid`].
pub const DEFAULT_MAX_STREAMS_PER_UID: usize = 1_000;

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
    /// Streams (and calls) open at once from one uid, over all its
    /// processes; more are refused with `Unavailable`. So one local user
    /// cannot take every slot by running many processes. (Connections have
    /// caps of their own, in `connections`.)
    pub max_streams_per_uid: usize,
    /// Largest request accepted (requests are tiny; 4 MiB).
    pub max_decoding_message_bytes: usize,
    /// Largest response sent (many SVIDs with long chains; 16 MiB).
    pub max_encoding_message_bytes: usize,
    /// How often open SVID streams check for expired SVIDs when no new
    /// snapshot arrives.
    pub refresh_interval: Duration,
    /// The socket's connection caps and timeouts.
    pub connections: ConnectionLimits,
}

impl Default for WorkloadApiLimits {
    fn default() -> Self {
        WorkloadApiLimits {
            max_concurrent_streams: 10_000,
            max_streams_per_workload: 100,
            max_streams_per_uid: DEFAULT_MAX_STREAMS_PER_UID,
            max_decoding_message_bytes: 4 * 1024 * 1024,
            max_encoding_message_bytes: 16 * 1024 * 1024,
            refresh_interval: Duration::from_secs(1),
            connections: ConnectionLimits::default(),
        }
    }
}

/// What time it is (an input, so tests can move it).
pub type Clock = Arc<dyn sigil_proto::clock::Clock>;

/// The Workload API service.
pub struct WorkloadApiService {
    state: StateRx,
    attestor: Arc<dyn WorkloadAttestor>,
    limits: WorkloadApiLimits,
    streams: Arc<Semaphore>,
    /// Open calls per calling pid (see `max_streams_per_workload`).
    per_workload: Counts<i32>,
    /// Open calls per calling uid (see `max_streams_per_uid`).
    per_uid_streams: Counts<u32>,
    /// Open connections per uid (see `connections`).
    per_uid_connections: Counts<u32>,
    clock: Clock,
    /// Set to `true` when the server stops: open streams end, so the
    /// graceful shutdown is not held up by streams that never finish.
    stop: Arc<watch::Sender<bool>>,
    /// The agent's readiness; a bundle stream of a not-ready agent carries
    /// the reason in the [`NOT_READY_HEADER`] header (for `healthcheck`).
    readiness: Option<sigil_proto::health::Readiness>,
    /// Mints and caches JWT-SVIDs; `None`: `FetchJWTSVID` answers
    /// `Unavailable`.
    jwt: Option<Arc<crate::cache::JwtCache>>,
    /// `ValidateJWTSVID`: prepared keys and verified tokens.
    validator: Arc<validator::JwtValidator>,
    /// Turns for attestations on a blocking thread.
    blocking: Arc<blocking::BlockingTurns>,
}

/// Response header of `FetchX509Bundles` naming why the agent is not ready
/// (its own identity refused or expired); absent when it is.
pub const NOT_READY_HEADER: &str = "sigil-agent-not-ready";

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
            per_uid_streams: Arc::default(),
            per_uid_connections: Arc::default(),
            clock: Arc::new(sigil_proto::clock::SystemClock),
            stop: Arc::new(watch::channel(false).0),
            readiness: None,
            jwt: None,
            validator: Arc::new(validator::JwtValidator::new(DEFAULT_JWT_VALIDATION_CACHE)),
            blocking: Arc::default(),
        }
    }

    /// Serves JWT-SVIDs from `cache`.
    pub fn with_jwt_cache(mut self, cache: Arc<crate::cache::JwtCache>) -> WorkloadApiService {
        self.jwt = Some(cache);
        self
    }

    /// Reports the agent's readiness to `healthcheck` (see
    /// [`NOT_READY_HEADER`]).
    pub fn with_readiness(mut self, r: sigil_proto::health::Readiness) -> WorkloadApiService {
        self.readiness = Some(r);
        self
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> WorkloadApiService {
        self.clock = clock;
        self
    }

    /// Everything a call must pass before it is served: the security
    /// header, the kernel's peer credentials, a stream slot, attestation.
    async fn admit<T>(&self, req: &Request<T>, method: &'static str) -> Result<Caller, Status> {
        // The connection is busy (not idle) from here until the call or
        // the stream it opens ends.
        let call = req
            .extensions()
            .get::<AcceptedPeer>()
            .map(AcceptedPeer::active);
        check_header(req).map_err(|e| refuse(method, None, e))?;
        let (cred, peer) = accepted_peer(req).map_err(|e| refuse(method, None, e))?;
        let limits = &self.limits;
        let workload = CountSlot::take(
            &self.per_workload,
            cred.pid,
            limits.max_streams_per_workload,
        )
        .ok_or_else(|| {
            refuse(
                method,
                Some(&cred),
                CallError::TooManyWorkloadStreams(limits.max_streams_per_workload),
            )
        })?;
        let uid = CountSlot::take(&self.per_uid_streams, cred.uid, limits.max_streams_per_uid)
            .ok_or_else(|| {
                refuse(
                    method,
                    Some(&cred),
                    CallError::TooManyUidStreams(limits.max_streams_per_uid),
                )
            })?;
        let global = self
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| refuse(method, Some(&cred), CallError::TooManyStreams))?;
        let permit = StreamPermit {
            _call: call,
            _global: global,
            _uid: uid,
            _workload: workload,
        };
        let selectors = self.attest(method, cred, &peer).await?;
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

    /// Renders a bundle view for `caller` and opens its stream.
    fn open_bundle_stream<V: StreamView>(
        &self,
        method: &'static str,
        caller: Caller,
        mut view: V,
    ) -> Result<ReceiverStream<Result<V::Msg, Status>>, Status> {
        let (state, snapshot) = self.current();
        let first = view
            .render(&snapshot, &caller.selectors, self.clock.now_unix())
            .map_err(|e| refuse(method, Some(&caller.cred), e))?;
        info!(
            pid = caller.cred.pid,
            uid = caller.cred.uid,
            count = first.count,
            method,
            "bundle stream opened"
        );
        Ok(self.start_stream(method, caller, view, state, snapshot, first))
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
    let listener = bind(socket_path)?;
    serve_bound(socket_path, listener, service, shutdown).await
}

/// Binds the Workload API socket (before the agent attests, so a path it
/// cannot use fails before a join token is spent).
pub fn bind(socket_path: &Path) -> anyhow::Result<UnixListener> {
    bind_workload_socket(socket_path)
        .with_context(|| format!("socket_path {}", socket_path.display()))
}

/// Serves on the socket [`bind`] made at `socket_path`, then removes it (if
/// it is still ours).
pub async fn serve_bound(
    socket_path: &Path,
    listener: UnixListener,
    service: WorkloadApiService,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let ours = socket::socket_identity(socket_path);
    let c = &service.limits.connections;
    info!(
        socket = %socket_path.display(),
        max_connections = c.max_connections,
        max_connections_per_uid = c.max_connections_per_uid,
        idle_timeout_s = c.idle_timeout.as_secs(),
        preface_timeout_s = c.preface_timeout.as_secs(),
        "Workload API listening"
    );
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(u64::MAX);
    if c.fds_needed() > nofile {
        warn!(
            max_connections = c.max_connections,
            fds_needed = c.fds_needed(),
            nofile,
            "limits.workload_api_max_connections allows more file descriptors than RLIMIT_NOFILE: \
             a flood of connections can exhaust them (2 per connection + 128 reserved)"
        );
    }
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
) -> anyhow::Result<()> {
    let stop = service.stop.clone();
    let limits = service.limits.clone();
    let incoming = accept::incoming(
        listener,
        service.attestor.clone(),
        accept::Caps::new(limits.connections, service.per_uid_connections.clone()),
    );
    let api = SpiffeWorkloadApiServer::new(service)
        .max_decoding_message_size(limits.max_decoding_message_bytes)
        .max_encoding_message_size(limits.max_encoding_message_bytes);
    // gRPC server reflection (Workload Endpoint §7), both protocol
    // versions, describing the Workload API and nothing else of Sigil's.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sigil_proto::WORKLOAD_FILE_DESCRIPTOR_SET)
            .with_service_name("SpiffeWorkloadAPI")
    };
    let reflection_v1 = reflection()
        .build_v1()
        .context("the Workload API reflection service")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("the Workload API reflection service")?;
    tonic::transport::Server::builder()
        .add_service(api)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        // Behind the HTTP/2 front: any `:authority` a client sends is
        // accepted (gRPC C-core sends the percent-encoded socket path).
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            stop.send_replace(true);
        })
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The gRPC methods.

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApiService {
    type FetchX509SVIDStream = ReceiverStream<Result<pb::X509svidResponse, Status>>;
    type FetchX509BundlesStream = ReceiverStream<Result<pb::X509BundlesResponse, Status>>;
    type FetchJWTBundlesStream = ReceiverStream<Result<pb::JwtBundlesResponse, Status>>;
    type FetchWITSVIDStream = tokio_stream::Empty<Result<pb::WitsvidResponse, Status>>;
    type FetchWITBundlesStream = tokio_stream::Empty<Result<pb::WitBundlesResponse, Status>>;

    async fn fetch_x509svid(
        &self,
        req: Request<pb::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        const METHOD: &str = "FetchX509SVID";
        let caller = self.admit(&req, METHOD).await?;
        let (state, snapshot) = self.current();
        let mut view = SvidView::default();
        let first = view
            .render(&snapshot, &caller.selectors, self.clock.now_unix())
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
        let mut resp = Response::new(self.open_bundle_stream(METHOD, caller, BundleView)?);
        if let Some(Err(why)) = self.readiness.as_ref().map(|r| r()) {
            // Header values are visible ASCII: anything else becomes '?'.
            let ascii: String = why
                .chars()
                .map(|c| {
                    if c == ' ' || c.is_ascii_graphic() {
                        c
                    } else {
                        '?'
                    }
                })
                .collect();
            if let Ok(v) = ascii.parse() {
                resp.metadata_mut().insert(NOT_READY_HEADER, v);
            }
        }
        Ok(resp)
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<pb::JwtsvidRequest>,
    ) -> Result<Response<pb::JwtsvidResponse>, Status> {
        const METHOD: &str = "FetchJWTSVID";
        check_header(&req).map_err(|e| refuse(METHOD, None, e))?;
        check_jwt_svid_request(req.get_ref()).map_err(|e| refuse(METHOD, None, e))?;
        let caller = self.admit(&req, METHOD).await?;
        let refused = |e| refuse(METHOD, Some(&caller.cred), e);
        let cache = self.jwt.as_ref().ok_or_else(|| {
            refused(CallError::MintFailed(
                "this agent has no server to mint JWT-SVIDs with".into(),
            ))
        })?;
        let (_, snapshot) = self.current();
        let svids = jwt_svids(
            cache,
            &snapshot,
            &caller.selectors,
            req.get_ref(),
            self.clock.now_unix(),
        )
        .await
        .map_err(refused)?;
        info!(
            pid = caller.cred.pid,
            uid = caller.cred.uid,
            spiffe_id = %svids.first().map_or("", |s| s.spiffe_id.as_str()),
            count = svids.len(),
            "JWT-SVIDs served"
        );
        metrics::workload_call(METHOD, tonic::Code::Ok);
        Ok(Response::new(pb::JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<pb::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        const METHOD: &str = "FetchJWTBundles";
        let caller = self.admit(&req, METHOD).await?;
        Ok(Response::new(self.open_bundle_stream(
            METHOD,
            caller,
            JwtBundleView,
        )?))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<pb::ValidateJwtsvidRequest>,
    ) -> Result<Response<pb::ValidateJwtsvidResponse>, Status> {
        const METHOD: &str = "ValidateJWTSVID";
        check_header(&req).map_err(|e| refuse(METHOD, None, e))?;
        check_validate_request(req.get_ref()).map_err(|e| refuse(METHOD, None, e))?;
        let caller = self.admit(&req, METHOD).await?;
        let (_, snapshot) = self.current();
        let resp = (self.validator)
            .validate(
                &snapshot,
                &caller.selectors,
                req.get_ref(),
                self.clock.now_unix(),
            )
            .map_err(|e| refuse(METHOD, Some(&caller.cred), e))?;
        debug!(
            pid = caller.cred.pid,
            uid = caller.cred.uid,
            spiffe_id = %resp.spiffe_id,
            "JWT-SVID validated"
        );
        metrics::workload_call(METHOD, tonic::Code::Ok);
        Ok(Response::new(resp))
    }

    async fn fetch_witsvid(
        &self,
        req: Request<pb::WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        const METHOD: &str = "FetchWITSVID";
        check_header(&req).map_err(|e| refuse(METHOD, None, e))?;
        Err(refuse(METHOD, None, CallError::WitUnsupported))
    }

    async fn fetch_wit_bundles(
        &self,
        req: Request<pb::WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        const METHOD: &str = "FetchWITBundles";
        check_header(&req).map_err(|e| refuse(METHOD, None, e))?;
        Err(refuse(METHOD, None, CallError::WitUnsupported))
    }
}

#[cfg(test)]
pub(crate) mod tests;
