//! `sigil-agent api …`: the Workload API used like a workload would.
//! `fetch x509` prints this process's SVIDs ([`x509_report`]) and can write
//! the default SVID's files; `fetch jwt` and `validate jwt` fetch and check
//! JWT-SVIDs (`jwt`); `watch` prints every update of the X.509-SVID
//! stream, saying whether the SVIDs, the bundle or both changed (text, or
//! one JSON object per line), and, once the first X.509 update is printed,
//! every JWT bundle update too (one line per trust domain, or a JSON object
//! with `jwt_bundle_changed`); when a stream is lost after its first
//! update (the agent restarted) it reconnects with backoff, logging each
//! attempt, instead of exiting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use sigil_proto::parse_duration;
use sigil_proto::workload as wl;
use tracing::{info, warn};

use super::jwt;
use super::x509_report::{Report, rfc3339, split_certs};
use super::{LogFormat, Output, init_logs};
use crate::{helper, workload_client};

#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Fetch SVIDs.
    #[command(subcommand)]
    Fetch(FetchCommand),
    /// Validate SVIDs through the Workload API.
    #[command(subcommand)]
    Validate(ValidateCommand),
    /// Print every X.509-SVID and bundle update until interrupted;
    /// reconnects (with backoff) when the agent restarts.
    Watch {
        #[arg(long)]
        socket: Option<PathBuf>,
        /// `json`: one JSON object per update, one per line.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        #[arg(long, env = "SIGIL_LOG", default_value = "info")]
        log_level: String,
        #[arg(long, value_enum, env = "SIGIL_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum FetchCommand {
    /// Fetch this process's X.509-SVIDs: SPIFFE ID, serial, validity and
    /// chain of each, then the bundle's CAs.
    X509 {
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Write svid.pem (leaf, then intermediates), svid_key.pem (0600)
        /// and bundle.pem for the default SVID into DIR.
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        /// Keep retrying while no identity is issued yet.
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        timeout: Duration,
    },
    /// Fetch this process's JWT-SVIDs for the audience(s): SPIFFE ID,
    /// audience, expiry and token of each.
    Jwt {
        #[arg(long)]
        socket: Option<PathBuf>,
        /// An audience of the token (`aud`); repeat for several.
        #[arg(long, required = true)]
        audience: Vec<String>,
        /// Only this identity (one of the caller's).
        #[arg(long)]
        spiffe_id: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        /// Keep retrying while no identity is issued yet.
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        timeout: Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum ValidateCommand {
    /// Validate a JWT-SVID for an audience: prints its SPIFFE ID and
    /// claims, or fails with the reason it is invalid.
    Jwt {
        #[arg(long)]
        socket: Option<PathBuf>,
        #[arg(long)]
        audience: String,
        /// The token (compact JWS).
        #[arg(long)]
        svid: String,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", s.code(), s.message())
}

/// The X.509-SVID stream of one new connection.
async fn open_stream(socket: &Path) -> anyhow::Result<tonic::Streaming<wl::X509svidResponse>> {
    let mut c = workload_client::connect(socket).await?;
    Ok(c.fetch_x509svid(wl::X509svidRequest {})
        .await
        .map_err(status)?
        .into_inner())
}

async fn fetch_first(socket: &Path, timeout: Duration) -> anyhow::Result<wl::X509svidResponse> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let attempt = async {
            open_stream(socket)
                .await?
                .message()
                .await
                .map_err(status)?
                .context("the stream ended without a message")
        }
        .await;
        match attempt {
            Ok(r) => return Ok(r),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => anyhow::bail!("{e:#}"),
        }
    }
}

/// Runs one `api` command.
pub async fn run(cmd: ApiCommand) -> anyhow::Result<()> {
    match cmd {
        ApiCommand::Fetch(FetchCommand::X509 {
            socket,
            write,
            output,
            timeout,
        }) => {
            let path = workload_client::socket_path(socket)?;
            let r = fetch_first(&path, timeout).await?;
            fetch_x509(&r, write.as_deref(), output)
        }
        ApiCommand::Fetch(FetchCommand::Jwt {
            socket,
            audience,
            spiffe_id,
            output,
            timeout,
        }) => {
            let path = workload_client::socket_path(socket)?;
            let r = jwt::fetch(&path, audience, spiffe_id, timeout).await?;
            jwt::print_fetched(&r, output)
        }
        ApiCommand::Validate(ValidateCommand::Jwt {
            socket,
            audience,
            svid,
            output,
        }) => {
            let path = workload_client::socket_path(socket)?;
            jwt::validate(&path, audience, svid, output).await
        }
        ApiCommand::Watch {
            socket,
            output,
            log_level,
            log_format,
        } => {
            init_logs(&log_level, log_format)?;
            let path = workload_client::socket_path(socket)?;
            watch(&path, output).await
        }
    }
}

fn fetch_x509(
    r: &wl::X509svidResponse,
    write: Option<&Path>,
    output: Output,
) -> anyhow::Result<()> {
    let first = r.svids.first().context("no SVIDs in the response")?;
    let report = Report::from_response(r)?;
    let mut files = Vec::new();
    if let Some(dir) = write {
        let chain = split_certs(&first.x509_svid, "certificate chain")?;
        let bundle = split_certs(&first.bundle, "bundle")?;
        let key = pem::encode(&pem::Pem::new("PRIVATE KEY", first.x509_svid_key.clone()));
        files = sigil_proto::daemon::files::write_svid_files(
            dir,
            sigil_proto::pem::to_pem(&chain).as_bytes(),
            key.as_bytes(),
            sigil_proto::pem::to_pem(&bundle).as_bytes(),
        )?;
    }
    match output {
        Output::Json => {
            let mut v = serde_json::to_value(&report)?;
            v["files"] = serde_json::json!(files);
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Text => {
            print!("{}", report.text());
            for f in &files {
                println!("Wrote {}", f.display());
            }
        }
    }
    Ok(())
}

/// Streams updates from `socket`, printing each; reconnects after the
/// first update was seen, exits with the error before that (a wrong
/// socket or no identity is reported, not retried forever).
async fn watch(socket: &Path, output: Output) -> anyhow::Result<()> {
    let mut seen_any = false;
    let mut attempt = 0u32;
    let mut jwt_watch = None;
    loop {
        // After a reconnect everything is printed again.
        let mut last: Option<Report> = None;
        let lost = async {
            let mut s = open_stream(socket).await?;
            while let Some(r) = s.message().await.map_err(status)? {
                let report = Report::from_response(&r)?;
                if attempt > 0 {
                    info!(socket = %socket.display(), attempts = attempt, "reconnected to the Workload API");
                    attempt = 0;
                }
                seen_any = true;
                print_update(&report, last.as_ref(), output)?;
                last = Some(report);
                // JWT bundles once the first X.509 update is out, so that
                // update comes first and a stream cap takes the X.509 one.
                if jwt_watch.is_none() {
                    let socket = socket.to_path_buf();
                    jwt_watch = Some(tokio::spawn(async move {
                        jwt::watch_bundles(&socket, output).await;
                    }));
                }
            }
            anyhow::Ok(())
        }
        .await;
        let why = match lost {
            Err(e) if !seen_any => return Err(e),
            Err(e) => format!("{e:#}"),
            Ok(()) => "the agent closed the stream".to_string(),
        };
        let wait = helper::backoff(attempt);
        attempt = attempt.saturating_add(1);
        warn!(
            socket = %socket.display(),
            error = %why,
            attempt,
            retry_in_ms = wait.as_millis() as u64,
            "Workload API stream lost; reconnecting"
        );
        tokio::time::sleep(wait).await;
    }
}

/// One update: what changed since `last` (everything when `None`).
fn print_update(report: &Report, last: Option<&Report>, output: Output) -> anyhow::Result<()> {
    let svids_changed = last.is_none_or(|l| l.svids != report.svids);
    let bundle_changed = last.is_none_or(|l| {
        l.bundle != report.bundle || l.federated_bundles != report.federated_bundles
    });
    let now = rfc3339(time::OffsetDateTime::now_utc().unix_timestamp());
    match output {
        Output::Json => {
            let mut v = serde_json::to_value(report)?;
            v["time"] = now.into();
            v["svids_changed"] = svids_changed.into();
            v["bundle_changed"] = bundle_changed.into();
            println!("{}", serde_json::to_string(&v)?);
        }
        Output::Text => {
            if svids_changed || !bundle_changed {
                println!("{now} update: {} SVID(s)", report.svids.len());
                for s in &report.svids {
                    println!(
                        "  {} serial {} not before {} not after {}",
                        s.spiffe_id, s.serial, s.not_before, s.not_after
                    );
                }
            }
            if bundle_changed {
                print!("{now} bundle update: {}", report.bundle_text());
            }
        }
    }
    Ok(())
}
