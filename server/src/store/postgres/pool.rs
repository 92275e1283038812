//! The PostgreSQL store's connections: a bounded pool of `tokio-postgres`
//! clients and the bridge from the synchronous [`Store`](crate::store::Store)
//! trait to them.
//!
//! The bridge: the store owns a small tokio runtime (one worker thread)
//! that drives every connection's socket I/O (each connection is a task
//! there). A store call takes a client from the pool and polls the call's
//! future on the *calling* thread with [`block_on`], which parks the thread
//! between wake-ups and gives up at a deadline. A client's futures only talk
//! to their connection task through channels, so they need no runtime of
//! their own; and unlike a nested `Runtime::block_on` (or the synchronous
//! `postgres` crate, which is that), this works from any thread, including
//! an async task's worker thread that calls the store directly — some
//! callers do, as they do with sled, whose flushes block too.
//!
//! The pool holds at most `max_connections` clients; a caller waits for a
//! free one up to the call timeout. A client whose call did not finish (the
//! deadline passed) or whose connection closed is dropped, never reused.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::UnboundedSender;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::{StoreError, StoreResult};

/// What a pool needs to open a connection.
pub(super) struct Connector {
    pub config: tokio_postgres::Config,
    /// `None`: no TLS.
    pub tls: Option<MakeRustlsConnect>,
    pub statement_timeout: Duration,
    /// `host/dbname`, for messages.
    pub label: String,
}

pub(super) struct Pool {
    /// Drives the connections; `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    connector: Arc<Connector>,
    max: usize,
    /// Longest a store call (waiting for a client included) may take.
    call_timeout: Duration,
    state: Mutex<PoolState>,
    freed: Condvar,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Client>,
    /// Clients that exist (idle, in use or connecting).
    open: usize,
}

/// A client taken from the pool; back into it on drop if `healthy`.
pub(super) struct Conn<'a> {
    pool: &'a Pool,
    client: Option<Client>,
    healthy: bool,
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let mut st = self.pool.lock();
        match self.client.take() {
            Some(c) if self.healthy && !c.is_closed() => st.idle.push(c),
            _ => st.open -= 1,
        }
        drop(st);
        self.pool.freed.notify_one();
    }
}

impl Pool {
    pub(super) fn new(connector: Connector, max: usize) -> StoreResult<Pool> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sigil-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(format!("cannot start the PostgreSQL I/O thread: {e}")))?;
        Ok(Pool {
            runtime: Some(runtime),
            call_timeout: connector.statement_timeout + Duration::from_secs(5),
            connector: Arc::new(connector),
            max,
            state: Mutex::new(PoolState::default()),
            freed: Condvar::new(),
        })
    }

    /// How this pool connects (for a connection of its own, outside it).
    pub(super) fn connector(&self) -> Arc<Connector> {
        self.connector.clone()
    }

    pub(super) fn label(&self) -> &str {
        &self.connector.label
    }

    /// The handle of the I/O runtime (for tasks such as a listener).
    pub(super) fn handle(&self) -> StoreResult<tokio::runtime::Handle> {
        self.runtime
            .as_ref()
            .map(|r| r.handle().clone())
            .ok_or_else(|| StoreError::Io("the PostgreSQL store is closing".into()))
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // The state is two plain fields, consistent after every statement:
        // a panic elsewhere leaves nothing half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `op` on a pooled client, on this thread, within the call
    /// timeout. `what` names the operation in errors.
    pub(super) fn run<T>(
        &self,
        what: &str,
        op: impl AsyncFnOnce(&mut Client) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let deadline = Instant::now() + self.call_timeout;
        let mut conn = self.get(deadline)?;
        let Some(client) = conn.client.as_mut() else {
            return Err(StoreError::Io(
                "PostgreSQL pool handed out no client".into(),
            ));
        };
        match block_on(op(client), deadline) {
            Some(result) => {
                conn.healthy = true;
                result
            }
            None => Err(StoreError::Unreachable(format!(
                "PostgreSQL at {}: {what} did not finish within {}s (statement_timeout + 5s)",
                self.label(),
                self.call_timeout.as_secs()
            ))),
        }
    }

    /// A client: an idle one, a new one if fewer than `max` exist, or the
    /// next one freed before `deadline`.
    fn get(&self, deadline: Instant) -> StoreResult<Conn<'_>> {
        let mut st = self.lock();
        loop {
            if let Some(c) = st.idle.pop() {
                if c.is_closed() {
                    st.open -= 1;
                    continue;
                }
                return Ok(self.conn(c));
            }
            if st.open < self.max {
                st.open += 1;
                drop(st);
                return match self.connect(deadline) {
                    Ok(c) => Ok(self.conn(c)),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Io(format!(
                    "PostgreSQL at {}: all {} connections (store.postgres.max_connections) \
                     stayed busy for {}s",
                    self.label(),
                    self.max,
                    self.call_timeout.as_secs()
                )));
            }
            st = self
                .freed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn conn(&self, client: Client) -> Conn<'_> {
        Conn {
            pool: self,
            client: Some(client),
            healthy: false,
        }
    }

    /// Opens a connection on the I/O runtime and sets its timeouts.
    fn connect(&self, deadline: Instant) -> StoreResult<Client> {
        let connector = self.connector.clone();
        let task = self
            .handle()?
            .spawn(async move { connector.connect(None).await });
        match block_on(task, deadline) {
            Some(Ok(result)) => result,
            Some(Err(e)) => Err(StoreError::Unreachable(format!(
                "PostgreSQL at {}: connecting failed: {e}",
                self.label()
            ))),
            None => Err(StoreError::Unreachable(format!(
                "PostgreSQL at {}: connecting did not finish within {}s",
                self.label(),
                self.call_timeout.as_secs()
            ))),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.lock().idle.clear();
        if let Some(rt) = self.runtime.take() {
            // Never blocks, so a store may be dropped on an async thread.
            rt.shutdown_background();
        }
    }
}

impl Connector {
    /// A new connection (its I/O spawned as a task on the current
    /// runtime) with the statement and lock timeouts set. The server's
    /// asynchronous messages (notifications) go to `messages`, if given.
    pub(super) async fn connect(
        &self,
        messages: Option<UnboundedSender<AsyncMessage>>,
    ) -> StoreResult<Client> {
        let failed = |e: tokio_postgres::Error| {
            StoreError::Unreachable(format!(
                "PostgreSQL at {}: connecting failed: {}",
                self.label,
                error_chain(&e)
            ))
        };
        let client = match &self.tls {
            Some(tls) => {
                let (client, conn) = self.config.connect(tls.clone()).await.map_err(failed)?;
                tokio::spawn(drive(conn, self.label.clone(), messages));
                client
            }
            None => {
                let (client, conn) = self.config.connect(NoTls).await.map_err(failed)?;
                tokio::spawn(drive(conn, self.label.clone(), messages));
                client
            }
        };
        let ms = self.statement_timeout.as_millis();
        client
            .batch_execute(&format!(
                "SET statement_timeout = {ms}; SET lock_timeout = {ms}; \
                 SET idle_in_transaction_session_timeout = {ms}"
            ))
            .await
            .map_err(failed)?;
        Ok(client)
    }
}

/// Runs a connection's I/O until it closes, handing its asynchronous
/// messages to `messages` (dropped without one).
async fn drive<S, T>(
    mut conn: Connection<S, T>,
    label: String,
    messages: Option<UnboundedSender<AsyncMessage>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            Some(Ok(m)) => {
                if let Some(tx) = &messages {
                    // A follower that is gone no longer needs them.
                    let _ = tx.send(m);
                }
            }
            Some(Err(e)) => {
                tracing::warn!(database = %label, error = %error_chain(&e),
                    "PostgreSQL connection closed");
                return;
            }
            None => return,
        }
    }
}

/// An error and its causes, `: `-separated.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` on this thread until it completes (`Some`) or `deadline`
/// passes (`None`; the future is dropped, which cancels it).
pub(super) fn block_on<F: Future>(fut: F, deadline: Instant) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        // A wake-up unparks; a spurious one only costs a poll.
        thread::park_timeout(deadline - now);
    }
}
