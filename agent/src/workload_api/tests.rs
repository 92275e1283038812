//! The Workload API's unit tests: a real tonic server on a temp socket,
//! fake attestors and snapshots.

use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use hyper_util::rt::TokioIo;
use sigil_proto::SpiffeId;
use sigil_proto::clock::ManualClock;
use sigil_proto::test_pki::TestCa;
use sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::*;
use crate::workload_attestor::ProcessMark;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

/// Maps the test process's uid to fixed selectors; records who called.
struct FakeAttestor {
    uid: u32,
    selectors: Vec<Selector>,
    seen: Mutex<Vec<PeerCred>>,
}

/// A mark that says nothing: the fakes do not look at processes.
fn no_mark() -> ProcessMark {
    ProcessMark {
        start_time: 0,
        exe: "/fake".into(),
        exe_dev: 0,
        exe_ino: 0,
        exe_local: false,
        pidfd: None,
    }
}

impl WorkloadAttestor for FakeAttestor {
    fn mark(&self, _: &PeerCred) -> Result<ProcessMark, WorkloadAttestError> {
        Ok(no_mark())
    }

    fn attest(
        &self,
        cred: &PeerCred,
        _: &ProcessMark,
    ) -> Result<Vec<Selector>, WorkloadAttestError> {
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

/// An attestor that refuses every caller.
fn failing_attestor() -> FakeAttestor {
    FakeAttestor {
        uid: u32::MAX,
        selectors: Vec::new(),
        seen: Mutex::new(Vec::new()),
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

/// A workload SVID of a test CA, as the cache holds it.
trait SvidOf {
    fn svid(&self, id: &str, selectors: &[&str], not_after: i64) -> Arc<WorkloadSvid>;
}

impl SvidOf for TestCa {
    fn svid(&self, id: &str, selectors: &[&str], not_after: i64) -> Arc<WorkloadSvid> {
        let (leaf, key) = self.leaf(id);
        Arc::new(WorkloadSvid {
            entry_id: format!("entry-{id}"),
            spiffe_id: SpiffeId::parse(id).unwrap(),
            selectors: selectors.iter().map(|s| sel(s)).collect(),
            hint: format!("hint {id}"),
            cert_chain: vec![leaf, self.der.clone()],
            key_pkcs8: key.serialize_der(),
            not_before: 0,
            not_after,
            federates_with: Vec::new(),
            entry_created_at: 0,
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
        federated_jwt: BTreeMap::new(),
        jwt_authorities: Vec::new(),
        tainted_jwt_key_ids: Vec::new(),
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
        Self::start_full(snap, selectors, limits, clock, None).await
    }

    async fn start_full(
        snap: Snapshot,
        selectors: &[&str],
        limits: WorkloadApiLimits,
        clock: Option<Clock>,
        jwt: Option<Arc<crate::cache::JwtCache>>,
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
        if let Some(j) = jwt {
            service = service.with_jwt_cache(j);
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

/// A Workload API client over the Unix socket at `path` (also used by the
/// cache's stream tests).
pub(crate) async fn client_at(path: &Path) -> SpiffeWorkloadApiClient<Channel> {
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

/// One reflection request on a fresh v1 stream; the response.
async fn reflect(
    path: &Path,
    request: tonic_reflection::pb::v1::server_reflection_request::MessageRequest,
) -> Result<tonic_reflection::pb::v1::server_reflection_response::MessageResponse, Status> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
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
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut s = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    Ok(s.message().await?.unwrap().message_response.unwrap())
}

/// Workload Endpoint §7: reflection lists the Workload API (and itself),
/// describes it, and knows nothing of Sigil's other APIs. No security
/// header is needed (grpcurl-style tools send none).
#[tokio::test]
async fn workload_api_reflection_lists_only_the_workload_api() {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let ca = TestCa::new("example.org");
    let h = Harness::start(snapshot(&ca, vec![]), &[]).await;
    let MessageResponse::ListServicesResponse(list) =
        reflect(&h.path, MessageRequest::ListServices(String::new()))
            .await
            .unwrap()
    else {
        panic!("not a service list");
    };
    let mut names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["SpiffeWorkloadAPI"]);

    let MessageResponse::FileDescriptorResponse(files) = reflect(
        &h.path,
        MessageRequest::FileContainingSymbol("SpiffeWorkloadAPI".into()),
    )
    .await
    .unwrap() else {
        panic!("no descriptor for SpiffeWorkloadAPI");
    };
    let workload = files
        .file_descriptor_proto
        .iter()
        .map(|b| {
            <prost_types::FileDescriptorProto as prost::Message>::decode(b.as_slice()).unwrap()
        })
        .find(|f| f.name() == "workload.proto")
        .expect("workload.proto described");
    let methods: Vec<_> = workload.service[0]
        .method
        .iter()
        .map(|m| m.name())
        .collect();
    assert!(methods.contains(&"FetchX509SVID"), "{methods:?}");

    for hidden in ["sigil.admin.v1.AdminApi", "sigil.agent.v1.AgentApi"] {
        let r = reflect(&h.path, MessageRequest::FileContainingSymbol(hidden.into())).await;
        assert!(
            matches!(&r, Err(e) if e.code() == Code::NotFound),
            "{hidden} must not be described: {r:?}"
        );
    }
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
    Arc::get_mut(&mut b).unwrap().federates_with = vec![TrustDomain::parse("other.org").unwrap()];
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
    let service = WorkloadApiService::new(
        rx,
        Arc::new(failing_attestor()),
        WorkloadApiLimits::default(),
    );
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
    let now = Arc::new(ManualClock::at_unix(500));
    let clock: Clock = now.clone();
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

    now.set(UNIX_EPOCH + Duration::from_secs(1000));
    let m = next(&mut s).await.unwrap().unwrap();
    let ids: Vec<_> = m.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(ids, ["spiffe://example.org/b"]);
    assert_quiet(&mut s).await;

    now.set(UNIX_EPOCH + Duration::from_secs(2000));
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
    assert_eq!(
        m.bundles.len(),
        1,
        "no entry of the caller federates with other.org (issue 16)"
    );
    assert_eq!(
        m.bundles["spiffe://example.org"],
        [ca.der.clone(), ca2.der.clone()].concat()
    );
    assert_eq!(split_der(&m.bundles["spiffe://example.org"]).len(), 2);
    // The caller gets an SVID whose entry federates with other.org.
    let mut a = ca.svid("spiffe://example.org/a", &["unix:uid:1"], far());
    Arc::get_mut(&mut a).unwrap().federates_with = vec![TrustDomain::parse("other.org").unwrap()];
    snap.svids.push(a);
    h.state.send(Arc::new(snap.clone())).unwrap();
    let m = next(&mut s).await.unwrap().unwrap();
    assert_eq!(m.bundles.len(), 2);
    assert_eq!(m.bundles["spiffe://other.org"], fed.der);
    h.state.send(Arc::new(snap)).unwrap();
    assert_quiet(&mut s).await;
}

/// The WIT-SVID profile's methods exist and answer `Unimplemented`
/// (after the security header check, like every method).
#[tokio::test]
async fn workload_api_wit_methods_are_unimplemented() {
    let ca = TestCa::new("example.org");
    let h = Harness::start(snapshot(&ca, vec![]), &[]).await;
    let mut c = h.client().await;
    let e = c
        .fetch_witsvid(req(pb::WitsvidRequest::default(), Header::Good))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unimplemented, WIT_UNSUPPORTED)
    );
    let e = c
        .fetch_wit_bundles(req(pb::WitBundlesRequest {}, Header::Good))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unimplemented, WIT_UNSUPPORTED)
    );
    let e = c
        .fetch_witsvid(req(pb::WitsvidRequest::default(), Header::Missing))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}

/// The JWT methods check the header, then their own fields, before
/// anything else.
#[tokio::test]
async fn workload_api_jwt_requests_are_checked_first() {
    let ca = TestCa::new("example.org");
    let h = Harness::start(snapshot(&ca, vec![]), &[]).await;
    let mut c = h.client().await;
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

mod jwt;
mod validator;
