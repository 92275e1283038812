//! Supervision: the first failure, a task ending or panicking (by name),
//! the signal and the grace period.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

#[derive(Debug, PartialEq)]
enum TestError {
    Own(&'static str),
    Stopped(String),
}

impl From<Stopped> for TestError {
    fn from(s: Stopped) -> Self {
        TestError::Stopped(s.to_string())
    }
}

/// A task that runs until told to stop, then records that it was told.
async fn until_stopped(
    mut rx: watch::Receiver<bool>,
    stopped: Arc<AtomicBool>,
) -> Result<(), TestError> {
    let _ = rx.changed().await;
    stopped.store(true, Ordering::SeqCst);
    Ok(())
}

fn never() -> impl Future<Output = std::io::Result<()>> {
    std::future::pending()
}

#[tokio::test]
async fn first_failure_stops_the_others_and_is_returned() {
    let (tx, rx) = watch::channel(false);
    let mut s = Supervisor::new("test", tx);
    let stopped = Arc::new(AtomicBool::new(false));
    s.spawn("waiter", until_stopped(rx.clone(), stopped.clone()));
    s.spawn("failing", async { Err(TestError::Own("boom")) });
    assert_eq!(s.run(never(), GRACE).await, Err(TestError::Own("boom")));
    // The flag is set for the others (they are aborted with the set when
    // `run` returns, as before).
    assert!(*rx.borrow());
    assert!(!stopped.load(Ordering::SeqCst) || *rx.borrow());
}

#[tokio::test]
async fn a_task_that_ends_is_reported_by_name() {
    let (tx, rx) = watch::channel(false);
    let mut s = Supervisor::new("agent", tx);
    s.spawn("waiter", until_stopped(rx, Arc::default()));
    s.spawn("sync", async { Ok(()) });
    assert_eq!(
        s.run(never(), GRACE).await,
        Err(TestError::Stopped(
            "the agent task \"sync\" stopped unexpectedly".into()
        ))
    );
}

#[tokio::test]
async fn a_panicking_task_is_reported_by_name() {
    let (tx, _rx) = watch::channel(false);
    let mut s = Supervisor::<TestError>::new("server", tx);
    s.spawn("ca upkeep", async { panic!("bad invariant") });
    let e = s.run(never(), GRACE).await.unwrap_err();
    let TestError::Stopped(m) = e else {
        panic!("{e:?}")
    };
    assert!(
        m.starts_with("the server task \"ca upkeep\" panicked: "),
        "{m}"
    );
}

#[tokio::test]
async fn the_signal_stops_every_task_and_waits_for_them() {
    let (tx, rx) = watch::channel(false);
    let mut s = Supervisor::new("test", tx);
    let a = Arc::new(AtomicBool::new(false));
    let b = Arc::new(AtomicBool::new(false));
    s.spawn("a", until_stopped(rx.clone(), a.clone()));
    s.spawn("b", until_stopped(rx, b.clone()));
    s.run(async { Ok(()) }, GRACE).await.unwrap();
    // Drained before run returned.
    assert!(a.load(Ordering::SeqCst) && b.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_task_ignoring_the_flag_costs_only_the_grace_period() {
    let (tx, _rx) = watch::channel(false);
    let mut s = Supervisor::<TestError>::new("test", tx);
    s.spawn("stuck", std::future::pending());
    let started = std::time::Instant::now();
    s.run(async { Ok(()) }, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_signal_handler_failure_is_returned() {
    let (tx, _rx) = watch::channel(false);
    let mut s = Supervisor::<TestError>::new("test", tx);
    s.spawn("stuck", std::future::pending());
    let e = s
        .run(
            async { Err(std::io::Error::other("installing signal handlers: nope")) },
            GRACE,
        )
        .await
        .unwrap_err();
    assert_eq!(
        e,
        TestError::Stopped("installing signal handlers: nope".into())
    );
}
