//! `sigil-agent helper`: for programs that only read certificate files
//! (nginx, PostgreSQL, HAProxy). It is a Workload API client like any other
//! workload: it streams `FetchX509SVID` from the agent's socket, and on every
//! update that changes its SVID or bundle it publishes `svid.pem` (leaf
//! first, then intermediates), `svid_key.pem` (PKCS#8), `bundle.pem` and
//! `federated_bundle.pem` (the CAs of the trust domains the SVID's entry
//! federates with; with `include_federated_domains` also appended to
//! `bundle.pem`) as one consistent set ([`files`]), then reloads the
//! consumer once ([`reload`]). With `jwt_svids` / `jwt_bundle_file_name`
//! configured it also writes a JWT-SVID per audience for that SVID's SPIFFE
//! ID (fetched again at half the token's life) and the JWT bundle (followed
//! on the `FetchJWTBundles` stream), in the same set (`jwt`).
//! When the agent is down or has no identity for it yet
//! (`PermissionDenied` "no identity issued") it retries with bounded
//! exponential backoff. `--once` writes the first update and exits, for
//! init containers.

pub mod config;
pub mod files;
mod jwt;
pub mod jwt_config;
pub mod pid_file;
pub mod reload;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use sigil_proto::workload as wl;
use tracing::{debug, info, warn};

use crate::workload_client;
use config::HelperConfig;
use files::OutFile;

/// The first retry waits this long; each failure doubles it.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Retries never wait longer than this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The wait before retry number `attempt` (0-based): 250 ms doubling up to
/// 5 s. No jitter: one helper per consumer does not make a herd.
pub fn backoff(attempt: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(8))
        .min(BACKOFF_MAX)
}

/// How the helper runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Write the first update, reload, and return.
    pub once: bool,
    /// `--once`: overrides `once_timeout`.
    pub timeout: Option<Duration>,
}

/// The SVID chosen for the files, in the form they are written.
struct Material {
    spiffe_id: String,
    chain: Vec<Vec<u8>>,
    key_pkcs8: Vec<u8>,
    bundle: Vec<Vec<u8>>,
    /// The federated trust domains' CAs, in trust domain order.
    federated: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Picks the SVID with `hint`, or the first (default) one.
fn select(mut resp: wl::X509svidResponse, hint: Option<&str>) -> anyhow::Result<Material> {
    let ids: Vec<String> = resp.svids.iter().map(|s| s.spiffe_id.clone()).collect();
    let svids = std::mem::take(&mut resp.svids);
    let svid = match hint {
        None => svids.into_iter().next(),
        Some(h) => svids.into_iter().find(|s| s.hint == h),
    }
    .with_context(|| match hint {
        None => "the Workload API sent an update without SVIDs".to_string(),
        Some(h) => format!("no SVID has hint {h:?} (SVIDs: {ids:?})"),
    })?;
    let chain = sigil_proto::pem::certs_from_pem_or_der(&svid.x509_svid)
        .context("the agent sent an invalid certificate chain")?;
    let bundle = sigil_proto::pem::certs_from_pem_or_der(&svid.bundle)
        .context("the agent sent an invalid bundle")?;
    if chain.is_empty() || bundle.is_empty() || svid.x509_svid_key.is_empty() {
        anyhow::bail!("the agent sent an SVID without a certificate, key or bundle");
    }
    // Sorted by trust domain ID, so an unchanged set writes the same files.
    let mut federated_tds: Vec<(String, Vec<u8>)> = resp.federated_bundles.into_iter().collect();
    federated_tds.sort();
    let mut federated = Vec::new();
    for (td, der) in federated_tds {
        // An empty bundle (every CA of that trust domain revoked) is no CA.
        if !der.is_empty() {
            federated.extend(
                sigil_proto::pem::certs_from_pem_or_der(&der)
                    .with_context(|| format!("the agent sent an invalid bundle for {td}"))?,
            );
        }
    }
    Ok(Material {
        spiffe_id: svid.spiffe_id,
        chain,
        key_pkcs8: svid.x509_svid_key,
        bundle,
        federated,
    })
}

struct Helper {
    cfg: HelperConfig,
    socket: PathBuf,
    /// What was last published, to write only on change.
    last: Option<Published>,
}

/// The contents of a published set: leaf, bundle, federated CAs, and the
/// JWT material.
type Published = (Vec<u8>, Vec<Vec<u8>>, Vec<Vec<u8>>, jwt::JwtState);

enum Outcome {
    /// `--once` is done.
    Done,
}

impl Helper {
    /// Writes the set and reloads. Returns false when nothing changed.
    async fn publish(&mut self, m: &Material, jwt: &jwt::JwtState) -> anyhow::Result<bool> {
        let mut jwt_files = jwt.clone();
        // When to refresh is not part of what is written.
        jwt_files.refresh_at = None;
        let state = (
            m.chain[0].clone(),
            m.bundle.clone(),
            m.federated.clone(),
            jwt_files,
        );
        if self.last.as_ref() == Some(&state) {
            return Ok(false);
        }
        let c = &self.cfg;
        let svid_pem = sigil_proto::pem::to_pem(&m.chain);
        let federated_pem = sigil_proto::pem::to_pem(&m.federated);
        let mut bundle_pem = sigil_proto::pem::to_pem(&m.bundle);
        if c.include_federated_domains {
            bundle_pem.push_str(&federated_pem);
        }
        let key_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", m.key_pkcs8.clone()));
        let mut set = vec![
            OutFile {
                name: &c.svid_file_name,
                contents: svid_pem.as_bytes(),
                mode: c.cert_file_mode,
            },
            OutFile {
                name: &c.svid_key_file_name,
                contents: key_pem.as_bytes(),
                mode: c.key_file_mode,
            },
            OutFile {
                name: &c.svid_bundle_file_name,
                contents: bundle_pem.as_bytes(),
                mode: c.cert_file_mode,
            },
            OutFile {
                name: &c.federated_bundle_file_name,
                contents: federated_pem.as_bytes(),
                mode: c.cert_file_mode,
            },
        ];
        set.extend(jwt.files(c));
        let version = files::publish(&c.cert_dir, &set)
            .with_context(|| format!("writing the files in {}", c.cert_dir.display()))?;
        self.last = Some(state);
        let (serial, not_after) = leaf_facts(&m.chain[0]);
        info!(
            spiffe_id = %m.spiffe_id,
            serial = %serial,
            not_after = %not_after,
            dir = %c.cert_dir.display(),
            version = %version.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
            "wrote SVID files"
        );
        match reload::reload(&c.reload).await {
            Ok(reload::Reloaded::Nothing) => {}
            Ok(reload::Reloaded::Command { code }) => {
                info!(serial = %serial, exit_code = ?code, "reload command succeeded");
            }
            Ok(reload::Reloaded::Signalled { pid, signal }) => {
                info!(serial = %serial, pid, signal = %signal, "signalled the consumer");
            }
            Err(e) => warn!(serial = %serial, error = %e, "reload failed"),
        }
        Ok(true)
    }

    /// One stream: connect, then publish every update until the stream
    /// fails. Resets `attempt` once the stream delivers. With JWT files
    /// configured, the set is published once it is complete (tokens and
    /// bundle), and again when the tokens are due or the bundle changes.
    async fn stream(&mut self, once: bool, attempt: &mut u32) -> anyhow::Result<Outcome> {
        let mut client = workload_client::connect(&self.socket).await?;
        let mut stream = client
            .fetch_x509svid(wl::X509svidRequest {})
            .await
            .map_err(status_error)?
            .into_inner();
        let mut bundles = match self.cfg.jwt.bundle_file_name {
            Some(_) => Some(
                client
                    .fetch_jwt_bundles(wl::JwtBundlesRequest {})
                    .await
                    .map_err(status_error)?
                    .into_inner(),
            ),
            None => None,
        };
        let mut jwt = jwt::JwtState::default();
        let mut latest_bundles: Option<wl::JwtBundlesResponse> = None;
        let mut material: Option<Material> = None;
        loop {
            let refresh_at = jwt.refresh_at;
            tokio::select! {
                r = stream.message() => {
                    let resp = r.map_err(status_error)?.context("the Workload API closed the stream")?;
                    *attempt = 0;
                    match select(resp, self.cfg.hint.as_deref()) {
                        Ok(m) => material = Some(m),
                        Err(e) => {
                            warn!(
                                error = format!("{e:#}"),
                                "no usable SVID in the update; waiting for the next one"
                            );
                            continue;
                        }
                    }
                }
                r = next_bundles(&mut bundles) => {
                    let resp = r.map_err(status_error)?.context("the Workload API closed the JWT bundle stream")?;
                    latest_bundles = Some(resp);
                }
                () = sleep_until(refresh_at) => {}
            }
            let Some(m) = &material else { continue };
            if let Some(b) = latest_bundles.take()
                && !jwt.take_bundle(b, &m.spiffe_id)
            {
                warn!(spiffe_id = %m.spiffe_id, "the JWT bundle update has no bundle for the SVID's trust domain");
            }
            if jwt.tokens_due(&self.cfg, &m.spiffe_id) {
                jwt.fetch_tokens(&mut client, &self.cfg, &m.spiffe_id)
                    .await?;
            }
            if !jwt.complete(&self.cfg) {
                continue;
            }
            let changed = self.publish(m, &jwt).await?;
            if !changed {
                debug!("update leaves the files unchanged");
            }
            if once {
                return Ok(Outcome::Done);
            }
        }
    }
}

/// The next JWT bundles update, or never when the stream is not open.
async fn next_bundles(
    s: &mut Option<tonic::Streaming<wl::JwtBundlesResponse>>,
) -> Result<Option<wl::JwtBundlesResponse>, tonic::Status> {
    match s {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever when there is nothing to refresh.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A Workload API refusal, with its code kept for [`retryable`].
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
struct Refusal {
    code: tonic::Code,
    message: String,
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::Error::new(Refusal {
        code: s.code(),
        message: s.message().to_string(),
    })
}

/// Whether a Workload API client may retry after `code` (Workload API §6
/// and Appendix A): `InvalidArgument` (the request itself is wrong) and
/// `Unimplemented` (the agent does not offer the call) never get better by
/// retrying; everything else (`Unavailable`, `PermissionDenied` "no identity
/// issued", a dropped connection) may.
pub fn retryable(code: tonic::Code) -> bool {
    !matches!(
        code,
        tonic::Code::InvalidArgument | tonic::Code::Unimplemented
    )
}

/// Serial (hex) and notAfter (RFC 3339) of a leaf, for the log.
fn leaf_facts(der: &[u8]) -> (String, String) {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => (
            hex::encode(c.raw_serial()),
            c.validity()
                .not_after
                .to_datetime()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        ),
        Err(_) => (String::new(), String::new()),
    }
}

/// The Workload API socket: `agent_address`, else `SPIFFE_ENDPOINT_SOCKET`,
/// else the agent's default.
pub fn socket(cfg: &HelperConfig) -> anyhow::Result<PathBuf> {
    match &cfg.agent_address {
        Some(p) => Ok(p.clone()),
        None => workload_client::socket_path(None),
    }
}

/// Runs the helper until SIGTERM/SIGINT, or with `--once` until the first
/// update is written (error if none arrives in time).
pub async fn run(cfg: HelperConfig, opts: Options) -> anyhow::Result<()> {
    let socket = socket(&cfg)?;
    let once_timeout = opts.timeout.unwrap_or(cfg.once_timeout);
    info!(
        socket = %socket.display(),
        dir = %cfg.cert_dir.display(),
        once = opts.once,
        "helper starting"
    );
    let mut helper = Helper {
        cfg,
        socket: socket.clone(),
        last: None,
    };
    // Shared with the retry loop; the lock is never held across an await.
    let last_error = std::sync::Mutex::new(String::from("no answer yet"));
    let work = retry_loop(&mut helper, opts.once, &last_error);
    let deadline = async {
        if opts.once {
            tokio::time::sleep(once_timeout).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = work => r,
        r = sigil_proto::daemon::signals::shutdown_signal() => {
            r?;
            info!("helper shutting down");
            Ok(())
        }
        () = deadline => {
            let last = last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default();
            anyhow::bail!(
                "no X.509-SVID from the Workload API at {} within {} (last error: {last})",
                socket.display(),
                sigil_proto::format_duration(once_timeout)
            )
        }
    }
}

async fn retry_loop(
    helper: &mut Helper,
    once: bool,
    last_error: &std::sync::Mutex<String>,
) -> anyhow::Result<()> {
    let mut attempt = 0u32;
    loop {
        match helper.stream(once, &mut attempt).await {
            Ok(Outcome::Done) => return Ok(()),
            Err(e) => {
                let refusal = e.chain().find_map(|c| c.downcast_ref::<Refusal>());
                if let Some(r) = refusal.filter(|r| !retryable(r.code)) {
                    anyhow::bail!(
                        "the Workload API refused the request ({r}); retrying cannot help, \
                         so the helper stops"
                    );
                }
                let wait = backoff(attempt);
                let msg = format!("{e:#}");
                if msg.contains("no identity issued") {
                    info!(retry_in = ?wait, "no identity issued yet; retrying");
                } else {
                    warn!(error = %msg, retry_in = ?wait, "Workload API stream failed; retrying");
                }
                if let Ok(mut last) = last_error.lock() {
                    *last = msg;
                }
                attempt = attempt.saturating_add(1);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Checks a helper config file the way `run` would load it.
pub fn validate(path: &Path) -> anyhow::Result<HelperConfig> {
    Ok(HelperConfig::load(path)?)
}

#[cfg(test)]
mod federated_tests;
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_retryable_codes_are_retried() {
        use tonic::Code;
        for code in [Code::InvalidArgument, Code::Unimplemented] {
            assert!(!retryable(code), "{code:?}");
        }
        for code in [
            Code::Unavailable,
            Code::PermissionDenied,
            Code::Unknown,
            Code::Internal,
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
        ] {
            assert!(retryable(code), "{code:?}");
        }
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(5), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
