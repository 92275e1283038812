//! Names the peer of a refused agent API handshake: the client verifier
//! notes the certificate it refused ([`note`]) and the accept task logs it
//! with the verdict ([`log_refused`]): SPIFFE ID, serial, issuer, cause
//! and fix, never the certificate itself.
//!
//! The note lives in a thread-local: rustls calls the verifier inside the
//! poll of the handshake future, and that same poll returns the error to
//! the accept task, so note and error meet on one thread with no other task
//! in between. [`log_refused`] always takes (clears) the note.

use std::cell::RefCell;
use std::net::SocketAddr;

use rustls_pki_types::UnixTime;
use sigil_proto::tls::verdict::{self, RefusedClient};

thread_local! {
    static REFUSED: RefCell<Option<RefusedClient>> = const { RefCell::new(None) };
}

/// Notes that the client certificate `end_entity` was refused with `err`.
pub fn note(end_entity: &[u8], err: &rustls::Error, now: UnixTime) {
    let refused = verdict::diagnose_client_cert(err, end_entity, now);
    REFUSED.with(|r| *r.borrow_mut() = Some(refused));
}

fn take() -> Option<RefusedClient> {
    REFUSED.with(|r| r.borrow_mut().take())
}

/// Logs the refused handshake from `remote` that failed with `err`, naming
/// the certificate the verifier refused when it was one.
pub fn log_refused(remote: SocketAddr, err: &std::io::Error) {
    let noted = take();
    let is_cert_error = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
    match noted {
        Some(RefusedClient { diagnosis, facts }) if is_cert_error => {
            let (id, serial, issuer) = facts
                .map(|f| (f.spiffe_id, f.serial, f.issuer))
                .unwrap_or_else(|| ("-".into(), "-".into(), "-".into()));
            tracing::info!(
                %remote,
                verdict = diagnosis.verdict.code(),
                peer_id = %id,
                serial = %serial,
                issuer = %issuer,
                cause = %diagnosis.detail,
                fix = diagnosis.verdict.fix(),
                "agent API TLS handshake refused"
            );
        }
        _ => tracing::info!(%remote, error = %err, "agent API TLS handshake refused"),
    }
}
