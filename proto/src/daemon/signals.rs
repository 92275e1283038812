//! The shutdown signal every Sigil daemon stops on: SIGTERM or SIGINT,
//! whichever comes first.

use std::io;

use tokio::signal::unix::{SignalKind, signal};

/// Resolves when SIGTERM or SIGINT arrives. Fails (naming what failed) only
/// if the handlers cannot be installed.
pub async fn shutdown_signal() -> io::Result<()> {
    let install = |kind: SignalKind| {
        signal(kind)
            .map_err(|e| io::Error::new(e.kind(), format!("installing signal handlers: {e}")))
    };
    let mut term = install(SignalKind::terminate())?;
    let mut int = install(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pending_until_a_signal_then_resolves_on_sigterm() {
        let wait = tokio::spawn(shutdown_signal());
        // Let the task install its handlers before the signal is raised, and
        // check it has not resolved without one.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!wait.is_finished());
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), wait)
            .await
            .expect("resolved by SIGTERM")
            .unwrap()
            .unwrap();
    }
}
