//! Ends a long-lived response stream (an agent's entry sync) when the
//! server shuts down, so the graceful stop of the agent API does not wait
//! for streams that would otherwise never end.

use tokio::sync::{mpsc, watch};

/// Forwards `rx` until it ends or `shutdown` turns `true`; the returned
/// receiver then ends, and with it the response stream. A `shutdown`
/// whose sender is gone never fires. When the returned receiver is dropped
/// (the agent went away) `rx` is dropped at once, so its producer sees the
/// stream closed and releases what it holds (the per-agent stream slot).
pub fn until_shutdown<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
    mut shutdown: watch::Receiver<bool>,
) -> mpsc::Receiver<T> {
    let (tx, out) = mpsc::channel(1);
    tokio::spawn(async move {
        let stop = async move {
            if shutdown.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(stop);
        loop {
            let item = tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
                _ = &mut stop => return,
                _ = tx.closed() => return,
            };
            tokio::select! {
                r = tx.send(item) => if r.is_err() { return },
                _ = &mut stop => return,
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_output_drops_the_input_while_it_is_quiet() {
        let (tx, rx) = mpsc::channel::<u32>(1);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let out = until_shutdown(rx, stop_rx);
        drop(out);
        tokio::time::timeout(std::time::Duration::from_secs(5), tx.closed())
            .await
            .expect("the producer sees the stream closed without sending");
    }

    #[tokio::test]
    async fn the_stream_ends_on_shutdown_and_not_before() {
        let (tx, rx) = mpsc::channel::<u32>(4);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut out = until_shutdown(rx, stop_rx);
        tx.send(1).await.unwrap();
        assert_eq!(out.recv().await, Some(1));
        stop_tx.send(true).unwrap();
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), out.recv()).await;
        assert_eq!(end, Ok(None), "the stream must end on shutdown");
        drop(tx);
    }
}
