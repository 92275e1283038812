//! The cache feeding a real Workload API server on a temp socket: what an
//! already open stream receives when the cache changes what a caller may
//! have (issue 14 item 8).

use std::path::PathBuf;

use sigil_proto::workload as wpb;

use super::*;
use crate::workload_api::tests::client_at;
use crate::workload_api::{SECURITY_HEADER, WorkloadApiLimits, WorkloadApiService, serve};
use crate::workload_attestor::{PeerCred, ProcessMark, WorkloadAttestError, WorkloadAttestor};

pub(super) const WAIT: Duration = Duration::from_secs(5);

/// Gives every caller the same selectors.
struct FixedAttestor(Vec<Selector>);

impl WorkloadAttestor for FixedAttestor {
    fn mark(&self, _: &PeerCred) -> Result<ProcessMark, WorkloadAttestError> {
        Ok(ProcessMark {
            start_time: 0,
            exe: "/fake".into(),
            exe_dev: 0,
            exe_ino: 0,
            exe_local: false,
            pidfd: None,
        })
    }

    fn attest(&self, _: &PeerCred, _: &ProcessMark) -> Result<Vec<Selector>, WorkloadAttestError> {
        Ok(self.0.clone())
    }
}

/// Serves the cache's snapshots on a temp socket; the caller is `selectors`.
pub(super) async fn serve_cache(
    rx: watch::Receiver<Arc<Snapshot>>,
    clock: Arc<ManualClock>,
    selectors: &[&str],
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let attestor = Arc::new(FixedAttestor(selectors.iter().map(|s| sel(s)).collect()));
    let limits = WorkloadApiLimits {
        refresh_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let service = WorkloadApiService::new(rx, attestor, limits).with_clock(clock);
    let p = path.clone();
    tokio::spawn(async move { serve(&p, service, std::future::pending()).await });
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::UnixStream::connect(&path).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (dir, path)
}

pub(super) async fn open_stream(path: PathBuf) -> tonic::Streaming<wpb::X509svidResponse> {
    let mut req = tonic::Request::new(wpb::X509svidRequest {});
    req.metadata_mut()
        .insert(SECURITY_HEADER, "true".parse().unwrap());
    client_at(&path)
        .await
        .fetch_x509svid(req)
        .await
        .unwrap()
        .into_inner()
}

fn ids(m: &wpb::X509svidResponse) -> Vec<String> {
    m.svids.iter().map(|s| s.spiffe_id.clone()).collect()
}

/// Issue 14 item 8, on the wire: a caller with a stream open when one of its
/// entries is narrowed past it receives the narrowed set at once, while the
/// signer is down and no re-issue can happen.
#[tokio::test]
async fn item8_an_open_stream_receives_the_narrowed_set() {
    let mut h = harness();
    h.event(SyncEvent::Full(vec![
        entry("a", &["unix:uid:1"], 1),
        entry("b", &["unix:uid:1"], 1),
    ]))
    .await;
    let (_dir, path) = serve_cache(h.rx.clone(), h.clock.clone(), &["unix:uid:1"]).await;
    let mut s = open_stream(path).await;
    let first = tokio::time::timeout(WAIT, s.message())
        .await
        .expect("first message")
        .unwrap()
        .unwrap();
    assert_eq!(
        ids(&first),
        ["spiffe://example.org/a", "spiffe://example.org/b"]
    );

    h.signer.set_down(true);
    h.event(SyncEvent::Upsert(entry(
        "b",
        &["unix:uid:1", "unix:gid:2"],
        2,
    )))
    .await;
    let narrowed = tokio::time::timeout(WAIT, s.message())
        .await
        .expect("the open stream did not receive the narrowed set")
        .unwrap()
        .unwrap();
    assert_eq!(ids(&narrowed), ["spiffe://example.org/a"]);
}
