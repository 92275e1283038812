//! The server's own X.509-SVID (`spiffe://<td>/sigil/server`), signed by the
//! active CA, presented by the bundle endpoint (profile `https_spiffe`) and
//! the agent API. It is renewed at half its life, or at once when the active
//! CA changes, and swapped into TLS without a restart: every renewal is
//! sent on a `watch` channel that [`ServerSvid::resolver`]s present.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sigil_proto::SpiffeId;
use sigil_proto::tls::{SvidResolver, certified_key};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::ca::issuer::{IssueError, Issuer};
use crate::ca::{CaError, unix};

struct Current {
    key: Arc<CertifiedKey>,
    ca_serial: String,
    /// When it was issued (notBefore is backdated; lifetimes count from here).
    issued_at: i64,
    not_after: i64,
}

/// The current server SVID; [`ServerSvid::resolver`] presents it in TLS.
pub struct ServerSvid {
    id: SpiffeId,
    ttl: Duration,
    issuer: Arc<Issuer>,
    current: RwLock<Current>,
    /// The chain and key of `current`, for the resolvers.
    presented: watch::Sender<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for ServerSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSvid").field("id", &self.id).finish()
    }
}

fn issue(id: &SpiffeId, ttl: Duration, issuer: &Issuer) -> Result<Current, IssueError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CaError::Sign(e.to_string()))?;
    let leaf = issuer.sign_server(id, ttl, &key)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let chain = leaf.chain.into_iter().map(CertificateDer::from).collect();
    Ok(Current {
        key: certified_key(chain, &der).map_err(|e| CaError::Sign(e.to_string()))?,
        ca_serial: leaf.ca_serial,
        issued_at: unix(issuer.clock().now()),
        not_after: leaf.not_after,
    })
}

impl ServerSvid {
    pub fn new(
        id: SpiffeId,
        ttl: Duration,
        issuer: Arc<Issuer>,
    ) -> Result<Arc<ServerSvid>, IssueError> {
        let current = issue(&id, ttl, &issuer)?;
        let presented = watch::channel(current.key.clone()).0;
        Ok(Arc::new(ServerSvid {
            id,
            ttl,
            issuer,
            current: RwLock::new(current),
            presented,
        }))
    }

    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// When the SVID now presented expires (Unix seconds).
    pub fn not_after(&self) -> i64 {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .not_after
    }

    /// Renews if half the SVID's life has passed or the active CA changed.
    /// Returns how long until the next check is due.
    pub fn renew_if_due(&self) -> Duration {
        let now = unix(self.issuer.clock().now());
        let (due_at, ca_changed) = {
            let c = self.current.read().unwrap_or_else(|p| p.into_inner());
            // Half the life it had when issued, and never within a second.
            let half = (c.issued_at + (c.not_after - c.issued_at) / 2).max(c.issued_at + 1);
            (half, c.ca_serial != self.issuer.active_ca_serial())
        };
        if now < due_at && !ca_changed {
            return Duration::from_secs(u64::try_from(due_at - now).unwrap_or(1).clamp(1, 5));
        }
        match issue(&self.id, self.ttl, &self.issuer) {
            Ok(c) => {
                info!(spiffe_id = %self.id, not_after = c.not_after, "server SVID renewed");
                self.presented.send_replace(c.key.clone());
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = c;
                Duration::from_secs(1)
            }
            Err(e) => {
                warn!(error = %e, "server SVID renewal failed; retrying");
                Duration::from_secs(1)
            }
        }
    }

    /// Keeps the SVID fresh until `shutdown` fires.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let me = self.clone();
            let wait = tokio::task::spawn_blocking(move || me.renew_if_due())
                .await
                .unwrap_or(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// A TLS certificate resolver that presents the current SVID at each
    /// handshake, renewals included.
    pub fn resolver(&self) -> SvidResolver {
        SvidResolver::new(self.presented.subscribe())
    }
}
