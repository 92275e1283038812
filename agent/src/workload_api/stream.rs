//! Streams: what a view renders from a snapshot, the digest that decides
//! whether a message is new, and the task that follows the snapshot for one
//! open stream (full state first, then only on change or expiry).

use super::*;

/// A rendered message and the digest that decides whether it is new.
pub(super) struct Rendered<M> {
    pub(super) msg: M,
    pub(super) digest: [u8; 32],
    /// For the log: the default SPIFFE ID (empty for bundles) and count.
    pub(super) spiffe_id: String,
    pub(super) count: usize,
}

/// What a stream shows its caller of a snapshot.
pub(super) trait StreamView: Send + 'static {
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

/// SHA-256 over length-prefixed fields, in a fixed order (maps sorted), so
/// equal messages have equal digests whatever `HashMap` order they encode in.
pub(super) struct Digest(ring::digest::Context);

impl Digest {
    pub(super) fn new() -> Digest {
        Digest(ring::digest::Context::new(&ring::digest::SHA256))
    }

    pub(super) fn count(&mut self, n: usize) {
        self.0.update(&(n as u64).to_be_bytes());
    }

    pub(super) fn field(&mut self, bytes: &[u8]) {
        self.count(bytes.len());
        self.0.update(bytes);
    }

    pub(super) fn map(&mut self, m: &BTreeMap<String, Vec<u8>>) {
        self.count(m.len());
        for (k, v) in m {
            self.field(k.as_bytes());
            self.field(v);
        }
    }

    pub(super) fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

// ---------------------------------------------------------------------------
// The stream task: one per open stream, following the snapshot.

pub(super) struct StreamTask<V: StreamView> {
    pub(super) method: &'static str,
    pub(super) cred: PeerCred,
    pub(super) selectors: Vec<Selector>,
    pub(super) view: V,
    pub(super) state: StateRx,
    pub(super) snapshot: Arc<Snapshot>,
    /// Digest of the last message sent.
    pub(super) last: [u8; 32],
    pub(super) tx: mpsc::Sender<Result<V::Msg, Status>>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) clock: Clock,
    pub(super) refresh: Duration,
    /// The stream's slot; released when the task ends.
    pub(super) _permit: StreamPermit,
    /// Counted in the open-streams gauge while the task lives.
    pub(super) _open: metrics::OpenStream,
}

/// Sends a new full message whenever the caller's view changes (a new
/// snapshot, or an SVID expiring), never the same message twice. Ends when
/// the client goes away, the server stops, or the view becomes an error
/// (e.g. no identity left), which is sent as the stream's status.
pub(super) async fn run_stream<V: StreamView>(mut t: StreamTask<V>) {
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
            _ = tick.tick() => t.view.stale(t.clock.now_unix()),
        };
        if !changed {
            continue;
        }
        let rendered = match t.view.render(&t.snapshot, &t.selectors, t.clock.now_unix()) {
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
