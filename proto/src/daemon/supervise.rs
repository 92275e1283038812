//! Task supervision for a daemon: its long-running tasks run under one
//! name each until the shutdown signal or the first task to end, whichever
//! comes first; then every task is told to stop (one `watch` flag) and, on
//! a signal, given a grace period to do so. A task that ends on its own is a
//! failure (they run until told to stop) and is reported by name. The
//! daemons' runtime is made here too, the same for both.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{Id, JoinSet};

/// How long the tasks get to stop after the shutdown signal.
pub const GRACE: Duration = Duration::from_secs(10);

/// Why a supervised daemon stopped other than by a signal, except a task's
/// own error, which is returned as it is (see [`Supervisor::run`]).
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    #[error("{0}")]
    Signal(std::io::Error),
    #[error("the {daemon} task {task:?} stopped unexpectedly")]
    Ended {
        daemon: &'static str,
        task: &'static str,
    },
    #[error("the {daemon} task {task:?} panicked: {error}")]
    Panicked {
        daemon: &'static str,
        task: &'static str,
        error: tokio::task::JoinError,
    },
}

/// A daemon's named tasks and the flag that tells them all to stop.
pub struct Supervisor<E> {
    daemon: &'static str,
    tasks: JoinSet<Result<(), E>>,
    names: HashMap<Id, &'static str>,
    shutdown: watch::Sender<bool>,
}

impl<E: Send + 'static> Supervisor<E> {
    /// `daemon` names the process in failures ("server", "agent");
    /// `shutdown` is the flag the tasks watch (set to `true` to stop).
    pub fn new(daemon: &'static str, shutdown: watch::Sender<bool>) -> Self {
        Supervisor {
            daemon,
            tasks: JoinSet::new(),
            names: HashMap::new(),
            shutdown,
        }
    }

    /// Runs `task` under `name`.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let id = self.tasks.spawn(task).id();
        self.names.insert(id, name);
    }

    /// Waits for `signal` (normally [`super::signals::shutdown_signal`]) or
    /// the first task to end. On the signal, stops every task, waits up to
    /// `grace` for them and returns `Ok`. When a task ends first, stops the
    /// others (without waiting) and returns its error, or [`Stopped`] if it
    /// returned `Ok` or panicked; the task's name is logged either way.
    pub async fn run<S>(mut self, signal: S, grace: Duration) -> Result<(), E>
    where
        S: Future<Output = std::io::Result<()>>,
        E: From<Stopped>,
    {
        tokio::select! {
            r = signal => {
                r.map_err(|e| E::from(Stopped::Signal(e)))?;
                tracing::info!("shutting down");
            }
            Some(r) = self.tasks.join_next_with_id() => {
                let _ = self.shutdown.send(true);
                let (id, outcome) = match r {
                    Ok((id, outcome)) => (id, Ok(outcome)),
                    Err(e) => (e.id(), Err(e)),
                };
                let task = self.names.get(&id).copied().unwrap_or("unnamed");
                let daemon = self.daemon;
                return match outcome {
                    Ok(Ok(())) => Err(Stopped::Ended { daemon, task }.into()),
                    Ok(Err(e)) => {
                        tracing::error!(task, "{daemon} task failed");
                        Err(e)
                    }
                    Err(error) => Err(Stopped::Panicked { daemon, task, error }.into()),
                };
            }
        }
        let _ = self.shutdown.send(true);
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = self.tasks.len(),
                "tasks did not stop in {}s",
                grace.as_secs()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// The daemons' tokio runtime: multi-threaded, I/O and timers on.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
