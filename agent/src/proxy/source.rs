//! The proxy's identity, kept current from the Workload API: it streams
//! `FetchX509SVID` from the agent's socket like any workload and, on every
//! update, swaps in the new SVID (presented from the next handshake on, by a
//! [`SvidResolver`]) and the new trust bundles (one [`TrustRoots`] per trust
//! domain: its own and every federated one the update carries). Connections
//! already open keep the TLS session they have. When the stream fails the
//! last SVID and bundles stay in use and the stream is retried with the
//! helper's bounded backoff.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::Context;
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::CertifiedKey;
use sigil_proto::spiffe_id::{SpiffeId, TrustDomain};
use sigil_proto::tls::{SvidResolver, TrustRoots, certified_key};
use sigil_proto::workload as wl;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::workload_client;

/// The trust bundles, one per trust domain, replaced as a whole on update.
#[derive(Clone, Default)]
pub struct BundleSet {
    inner: Arc<RwLock<Arc<HashMap<TrustDomain, TrustRoots>>>>,
}

impl BundleSet {
    /// The roots for peers of `td`, if a bundle is held for it.
    pub fn roots_for(&self, td: &TrustDomain) -> Option<TrustRoots> {
        // The lock guards an Arc swap only: a poisoned lock is consistent.
        let map = self
            .inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        map.get(td).cloned()
    }

    /// Installs `bundles` (trust domain → DER CA certificates); the
    /// [`TrustRoots`] of a trust domain already held is updated in place.
    pub fn set(&self, bundles: HashMap<TrustDomain, Vec<Vec<u8>>>) -> anyhow::Result<()> {
        let old = self
            .inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut next = HashMap::with_capacity(bundles.len());
        for (td, certs) in bundles {
            let roots = match old.get(&td) {
                Some(r) => {
                    r.set(certs)
                        .with_context(|| format!("the bundle of {td}"))?;
                    r.clone()
                }
                None => TrustRoots::new(certs).with_context(|| format!("the bundle of {td}"))?,
            };
            next.insert(td, roots);
        }
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        Ok(())
    }

    /// The trust domains held, sorted (for logs).
    pub fn trust_domains(&self) -> Vec<String> {
        let map = self
            .inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut v: Vec<String> = map.keys().map(|t| t.as_str().to_string()).collect();
        v.sort();
        v
    }
}

impl std::fmt::Debug for BundleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleSet")
            .field("trust_domains", &self.trust_domains())
            .finish()
    }
}

/// What is known of the SVID presented now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidFacts {
    pub spiffe_id: SpiffeId,
    /// Unix seconds.
    pub not_after: i64,
    pub serial: String,
}

/// The proxy's current SVID and bundles.
#[derive(Clone)]
pub struct Identity {
    pub resolver: SvidResolver,
    pub bundles: BundleSet,
    pub facts: watch::Receiver<SvidFacts>,
}

/// One Workload API update, ready to install.
struct Update {
    key: Arc<CertifiedKey>,
    facts: SvidFacts,
    bundles: HashMap<TrustDomain, Vec<Vec<u8>>>,
}

/// A federated bundle's key: a trust domain ID (`spiffe://td`) or name.
fn federated_td(key: &str) -> Option<TrustDomain> {
    TrustDomain::parse(key.strip_prefix("spiffe://").unwrap_or(key)).ok()
}

fn update(resp: wl::X509svidResponse) -> anyhow::Result<Update> {
    let svid = resp
        .svids
        .into_iter()
        .next()
        .context("the Workload API sent an update without SVIDs")?;
    let id = SpiffeId::parse(&svid.spiffe_id)
        .with_context(|| format!("the agent sent an invalid SPIFFE ID {:?}", svid.spiffe_id))?;
    let chain = sigil_proto::pem::certs_from_pem_or_der(&svid.x509_svid)
        .context("the agent sent an invalid certificate chain")?;
    let bundle = sigil_proto::pem::certs_from_pem_or_der(&svid.bundle)
        .context("the agent sent an invalid bundle")?;
    let leaf = chain.first().context("the agent sent an empty chain")?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf).context("the agent sent an unparsable leaf")?;
    let facts = SvidFacts {
        spiffe_id: id.clone(),
        not_after: cert.validity().not_after.timestamp(),
        serial: hex::encode(cert.raw_serial()),
    };
    let key = PrivateKeyDer::Pkcs8(svid.x509_svid_key.into());
    let key = certified_key(chain.into_iter().map(Into::into).collect(), &key)
        .context("the agent sent an unusable key")?;
    let mut bundles = HashMap::new();
    for (k, v) in resp.federated_bundles {
        match (
            federated_td(&k),
            sigil_proto::pem::certs_from_pem_or_der(&v),
        ) {
            (Some(td), Ok(certs)) if !certs.is_empty() => {
                bundles.insert(td, certs);
            }
            _ => warn!(trust_domain = %k, "ignoring an unusable federated bundle"),
        }
    }
    // The own trust domain's bundle always wins over a federated one.
    bundles.insert(id.trust_domain(), bundle);
    Ok(Update {
        key,
        facts,
        bundles,
    })
}

/// Connects to the Workload API at `socket`, waits for the first SVID and
/// keeps the returned [`Identity`] current from then on (in a task).
pub async fn start(socket: PathBuf) -> anyhow::Result<Identity> {
    let mut attempt = 0u32;
    loop {
        match first(&socket).await {
            Ok((identity, stream, senders)) => {
                tokio::spawn(follow(socket, identity.bundles.clone(), senders, stream));
                return Ok(identity);
            }
            Err(e) => {
                let wait = crate::helper::backoff(attempt);
                warn!(socket = %socket.display(), error = format!("{e:#}"), retry_in = ?wait,
                      "no SVID from the Workload API yet; retrying");
                attempt = attempt.saturating_add(1);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

type Stream = tonic::Streaming<wl::X509svidResponse>;

struct Senders {
    key: watch::Sender<Arc<CertifiedKey>>,
    facts: watch::Sender<SvidFacts>,
}

async fn open(socket: &std::path::Path) -> anyhow::Result<Stream> {
    let mut client = workload_client::connect(socket).await?;
    Ok(client
        .fetch_x509svid(wl::X509svidRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
        .into_inner())
}

async fn next(stream: &mut Stream) -> anyhow::Result<wl::X509svidResponse> {
    stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
        .context("the Workload API closed the stream")
}

async fn first(socket: &std::path::Path) -> anyhow::Result<(Identity, Stream, Senders)> {
    let mut stream = open(socket).await?;
    let u = update(next(&mut stream).await?)?;
    let bundles = BundleSet::default();
    bundles.set(u.bundles)?;
    info!(spiffe_id = %u.facts.spiffe_id, serial = %u.facts.serial,
          trust_domains = ?bundles.trust_domains(), "proxy SVID received");
    let (key_tx, key_rx) = watch::channel(u.key);
    let (facts_tx, facts_rx) = watch::channel(u.facts);
    Ok((
        Identity {
            resolver: SvidResolver::new(key_rx),
            bundles,
            facts: facts_rx,
        },
        stream,
        Senders {
            key: key_tx,
            facts: facts_tx,
        },
    ))
}

/// Installs every further update; reopens the stream when it fails.
async fn follow(socket: PathBuf, bundles: BundleSet, senders: Senders, stream: Stream) {
    let mut stream = Some(stream);
    let mut attempt = 0u32;
    loop {
        let s = match stream.as_mut() {
            Some(s) => s,
            None => match open(&socket).await {
                Ok(s) => stream.insert(s),
                Err(e) => {
                    retry(&mut attempt, &e).await;
                    continue;
                }
            },
        };
        match next(s).await.and_then(update) {
            Ok(u) => {
                attempt = 0;
                if let Err(e) = bundles.set(u.bundles) {
                    warn!(error = format!("{e:#}"), "keeping the previous bundles");
                    continue;
                }
                if u.facts != *senders.facts.borrow() {
                    info!(spiffe_id = %u.facts.spiffe_id, serial = %u.facts.serial,
                          trust_domains = ?bundles.trust_domains(),
                          "proxy SVID rotated; new handshakes use it");
                }
                senders.key.send_replace(u.key);
                senders.facts.send_replace(u.facts);
            }
            Err(e) => {
                stream = None;
                retry(&mut attempt, &e).await;
            }
        }
    }
}

async fn retry(attempt: &mut u32, e: &anyhow::Error) {
    let wait = crate::helper::backoff(*attempt);
    warn!(error = format!("{e:#}"), retry_in = ?wait,
          "Workload API stream failed; keeping the current SVID and retrying");
    *attempt = attempt.saturating_add(1);
    tokio::time::sleep(wait).await;
}
