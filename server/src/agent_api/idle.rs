//! The agent API's idle timeout: a connection with no call in progress for
//! `limits.agent_api_idle_timeout` is closed. [`Activity`] counts one
//! connection's calls in progress (a call lasts until its response body,
//! a stream included, is dropped); [`IdleLayer`] keeps the count for every
//! call, finding the connection's `Activity` in the request's extensions
//! (its connection info); the connection's read side
//! ([`super::listener`]) ends the connection once it has been idle long
//! enough. HTTP/2 pings do not count as activity; an agent's open
//! SyncEntries stream does.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;
use tower::{Layer, Service};

/// Start of the process's idle clock (milliseconds are counted from it).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One connection's calls in progress and when the last one ended.
#[derive(Debug)]
pub struct Activity {
    calls: AtomicUsize,
    idle_since_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            calls: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(now_ms()),
        })
    }

    /// When the connection may be closed if nothing happens before, or
    /// `None` while a call is in progress.
    pub fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.calls.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst));
        Some(epoch() + since + timeout)
    }

    fn begin(self: &Arc<Self>) -> CallGuard {
        self.calls.fetch_add(1, Ordering::SeqCst);
        CallGuard(self.clone())
    }
}

/// One call in progress; ended when dropped.
struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.idle_since_ms.store(now_ms(), Ordering::SeqCst);
        self.0.calls.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its call counted until it is dropped.
struct Tracked {
    inner: tonic::body::Body,
    _call: CallGuard,
}

impl Body for Tracked {
    type Data = <tonic::body::Body as Body>::Data;
    type Error = <tonic::body::Body as Body>::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Finds a call's connection [`Activity`] in its request's extensions.
pub type FindActivity = fn(&http::Extensions) -> Option<Arc<Activity>>;

/// Counts every call on its connection's [`Activity`].
#[derive(Clone, Copy)]
pub struct IdleLayer {
    find: FindActivity,
}

impl IdleLayer {
    pub fn new(find: FindActivity) -> IdleLayer {
        IdleLayer { find }
    }
}

impl<S> Layer<S> for IdleLayer {
    type Service = IdleService<S>;
    fn layer(&self, inner: S) -> IdleService<S> {
        IdleService {
            inner,
            find: self.find,
        }
    }
}

#[derive(Clone)]
pub struct IdleService<S> {
    inner: S,
    find: FindActivity,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for IdleService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let call = (self.find)(req.extensions()).map(|a| a.begin());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(match call {
                Some(c) => resp.map(|inner| tonic::body::Body::new(Tracked { inner, _call: c })),
                None => resp,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_in_progress_holds_the_connection_open() {
        let a = Activity::new();
        let t = Duration::from_secs(5);
        let d0 = a.idle_deadline(t).unwrap();
        let c = a.begin();
        assert_eq!(a.idle_deadline(t), None);
        drop(c);
        assert!(a.idle_deadline(t).unwrap() >= d0);
    }
}
