//! The `sigil-server` command line: the daemon (`run`, `validate`) and the
//! admin commands, which talk to a running server over its admin socket
//! (entries in [`entry`] and [`entry_file`], the CA in [`ca`], minted
//! JWT-SVIDs in [`jwt`]).
//! Exit codes: 0 success, 1 error (one line on stderr), 2 usage error.

pub mod ca;
pub mod entry;
pub mod entry_file;
pub mod explain;
pub mod federation;
pub mod jwt;
pub mod output;
pub mod server;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use sigil_proto::admin_api as pb;
use sigil_proto::{SpiffeId, parse_duration};

use crate::admin::client::connect;
use output::{Output, print_json, rfc3339};

/// Where admin commands find the server when `--socket` is not given.
pub const DEFAULT_ADMIN_SOCKET: &str = "/var/lib/sigil/server/admin.sock";

#[derive(Debug, Parser)]
#[command(name = "sigil-server", version, about = "Sigil SPIFFE identity server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

pub use sigil_proto::daemon::logs::LogFormat;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server daemon.
    Run {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Log filter, e.g. info or sigil_server=debug.
        #[arg(long, env = "SIGIL_LOG", default_value = "info")]
        log_level: String,
        #[arg(long, value_enum, env = "SIGIL_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
        /// If the active CA's key is gone, activate the prepared CA at start
        /// (what `ca activate` does); agents that have not fetched the
        /// bundle since it was prepared must re-bootstrap.
        #[arg(long)]
        activate_prepared: bool,
    },
    /// Check a configuration file without starting the server.
    Validate {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Manage registration entries.
    #[command(subcommand)]
    Entry(entry::EntryCommand),
    /// Show the trust bundle.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Manage join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Mint X.509-SVIDs.
    #[command(subcommand)]
    X509(X509Command),
    /// Mint JWT-SVIDs.
    #[command(subcommand)]
    Jwt(jwt::JwtCommand),
    /// Manage attested agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Show and steer CA rotation.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Check that the server answers and is healthy.
    Healthcheck(Common),
    /// Federate with foreign trust domains (fetch their bundles).
    #[command(subcommand)]
    Federation(federation::FederationCommand),
    /// The servers sharing the store, each with its own CA (issue 17).
    #[command(subcommand)]
    Server(server::ServerCommand),
}

/// Options every admin command takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The server's admin socket.
    #[arg(long, env = "SIGIL_ADMIN_SOCKET", default_value = DEFAULT_ADMIN_SOCKET)]
    pub socket: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// List attested agents.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Show one agent.
    Show {
        #[arg(long, value_parser = SpiffeId::parse)]
        spiffe_id: SpiffeId,
        #[command(flatten)]
        common: Common,
    },
    /// Forget an agent: its next call is refused; it must attest again.
    Evict {
        #[arg(long, value_parser = SpiffeId::parse)]
        spiffe_id: SpiffeId,
        #[command(flatten)]
        common: Common,
    },
    /// Refuse an agent (also re-attestation) until unbanned.
    Ban {
        #[arg(long, value_parser = SpiffeId::parse)]
        spiffe_id: SpiffeId,
        #[command(flatten)]
        common: Common,
    },
    /// Lift a ban.
    Unban {
        #[arg(long, value_parser = SpiffeId::parse)]
        spiffe_id: SpiffeId,
        #[command(flatten)]
        common: Common,
    },
}

fn agent_json(a: &pb::Agent) -> serde_json::Value {
    serde_json::json!({
        "spiffe_id": a.spiffe_id,
        "attestor": a.attestor,
        "selectors": a.selectors.iter().map(|s| format!("{}:{}", s.r#type, s.value)).collect::<Vec<_>>(),
        "serial": a.serial,
        "expires_at": rfc3339(a.expires_at),
        "banned": a.banned,
        "attested_at": rfc3339(a.attested_at),
        "updated_at": rfc3339(a.updated_at),
    })
}

fn print_agents(output: Output, agents: &[pb::Agent]) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(&serde_json::json!({
            "agents": agents.iter().map(agent_json).collect::<Vec<_>>(),
        })),
        Output::Text => {
            if agents.is_empty() {
                println!("Found 0 agents");
            }
            for (i, a) in agents.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                println!("{:<16}: {}", "SPIFFE ID", a.spiffe_id);
                println!("{:<16}: {}", "Attestor", a.attestor);
                for s in &a.selectors {
                    println!("{:<16}: {}:{}", "Selector", s.r#type, s.value);
                }
                println!("{:<16}: {}", "SVID serial", a.serial);
                println!("{:<16}: {}", "SVID expires at", rfc3339(a.expires_at));
                println!("{:<16}: {}", "Banned", a.banned);
                println!("{:<16}: {}", "Attested at", rfc3339(a.attested_at));
            }
            Ok(())
        }
    }
}

async fn run_agent(cmd: AgentCommand) -> anyhow::Result<()> {
    let (common, agents) = match cmd {
        AgentCommand::List { common } => {
            let mut c = connect(&common.socket).await?;
            let r = c
                .list_agents(pb::ListAgentsRequest {})
                .await
                .map_err(status_msg)?
                .into_inner();
            (common, r.agents)
        }
        AgentCommand::Show { spiffe_id, common } => {
            let mut c = connect(&common.socket).await?;
            let a = c
                .get_agent(agent_req(&spiffe_id))
                .await
                .map_err(status_msg)?
                .into_inner();
            (common, vec![a])
        }
        AgentCommand::Evict { spiffe_id, common } => {
            let mut c = connect(&common.socket).await?;
            let a = c
                .evict_agent(agent_req(&spiffe_id))
                .await
                .map_err(status_msg)?
                .into_inner();
            if common.output == Output::Text {
                println!("Evicted {}; it must attest again.", a.spiffe_id);
                return Ok(());
            }
            (common, vec![a])
        }
        AgentCommand::Ban { spiffe_id, common } => {
            let mut c = connect(&common.socket).await?;
            let a = c
                .ban_agent(agent_req(&spiffe_id))
                .await
                .map_err(status_msg)?
                .into_inner();
            (common, vec![a])
        }
        AgentCommand::Unban { spiffe_id, common } => {
            let mut c = connect(&common.socket).await?;
            let a = c
                .unban_agent(agent_req(&spiffe_id))
                .await
                .map_err(status_msg)?
                .into_inner();
            (common, vec![a])
        }
    };
    print_agents(common.output, &agents)
}

fn agent_req(id: &SpiffeId) -> pb::AgentIdRequest {
    pb::AgentIdRequest {
        spiffe_id: id.to_string(),
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BundleFormat {
    /// PEM CA certificates (what an agent's trust_bundle_path holds).
    Pem,
    /// The SPIFFE bundle: a JWK Set, as the bundle endpoint serves it
    /// (`spiffe` is SPIRE's name for it).
    #[value(alias = "spiffe")]
    Jwks,
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Print the trust domain's bundle (or a foreign one's).
    Show {
        #[arg(long, value_enum, default_value = "pem")]
        format: BundleFormat,
        /// A foreign trust domain (default: this server's own).
        #[arg(long, value_parser = sigil_proto::TrustDomain::parse)]
        trust_domain: Option<sigil_proto::TrustDomain>,
        #[command(flatten)]
        common: Common,
    },
    /// Store a foreign trust domain's bundle by hand.
    Set {
        #[command(flatten)]
        args: federation::BundleSetArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Every foreign trust domain's bundle.
    List {
        #[arg(long, value_enum, default_value = "pem")]
        format: BundleFormat,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a foreign trust domain's bundle (agents drop it).
    Delete {
        #[arg(long, value_parser = sigil_proto::TrustDomain::parse)]
        trust_domain: sigil_proto::TrustDomain,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Generate a single-use join token for a node agent.
    Generate {
        /// Lifetime of the token, 1s to 30d (default: the server's
        /// join_token_ttl, 10m).
        #[arg(long, value_parser = parse_token_ttl)]
        ttl: Option<Duration>,
        /// Also give agents attested with this token this SPIFFE ID (a node
        /// entry), so workload entries can use it as their parent.
        #[arg(long, value_parser = SpiffeId::parse)]
        spiffe_id: Option<SpiffeId>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
pub enum X509Command {
    /// Mint an X.509-SVID with a new key, for use outside the agent.
    Mint {
        #[arg(long, value_parser = SpiffeId::parse)]
        spiffe_id: SpiffeId,
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        #[arg(long = "dns-name")]
        dns_names: Vec<String>,
        /// Write svid.pem, svid_key.pem (0600) and bundle.pem into DIR
        /// instead of printing them.
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
}

/// A join token's `--ttl`: 1s to 30d. `0s` is refused (on the wire 0
/// means the server's default, which omitting the flag asks for).
fn parse_token_ttl(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(30 * 86_400) {
        return Err(
            "a join token TTL must be from 1s to 30d (omit --ttl for the server's \
             join_token_ttl)"
                .to_string(),
        );
    }
    Ok(d)
}

pub(crate) fn secs(d: Option<Duration>) -> i64 {
    d.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Turns a gRPC error into a one-line message.
pub(crate) fn status_msg(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", code_name(s.code()), s.message())
}

fn code_name(c: tonic::Code) -> &'static str {
    match c {
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::NotFound => "not found",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::FailedPrecondition => "refused",
        _ => "server error",
    }
}

/// Runs an admin command.
pub async fn run_admin(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { .. } | Command::Validate { .. } => {
            anyhow::bail!("not an admin command")
        }
        Command::Entry(cmd) => entry::run(cmd).await,
        Command::Agent(cmd) => run_agent(cmd).await,
        Command::Ca(cmd) => ca::run_ca(cmd).await,
        Command::Jwt(cmd) => jwt::run_jwt(cmd).await,
        Command::Federation(cmd) => federation::run(cmd).await,
        Command::Server(cmd) => server::run(cmd).await,
        Command::Bundle(BundleCommand::Show {
            format,
            trust_domain: None,
            common,
        }) => {
            let mut c = connect(&common.socket).await?;
            let b = c
                .get_bundle(pb::GetBundleRequest {})
                .await
                .map_err(status_msg)?
                .into_inner();
            let pem = sigil_proto::pem::to_pem(&b.x509_authorities);
            match (common.output, format) {
                (Output::Text, BundleFormat::Pem) => print!("{pem}"),
                (Output::Text, BundleFormat::Jwks) => println!("{}", b.jwks),
                (Output::Json, _) => {
                    let jwks: serde_json::Value =
                        serde_json::from_str(&b.jwks).context("server sent invalid JWKS")?;
                    print_json(&serde_json::json!({
                        "trust_domain": b.trust_domain,
                        "sequence": b.sequence,
                        "refresh_hint_seconds": b.refresh_hint_seconds,
                        "pem": pem,
                        "jwks": jwks,
                    }))?;
                }
            }
            Ok(())
        }
        Command::Bundle(cmd) => federation::run_bundle(cmd).await,
        Command::Token(TokenCommand::Generate {
            ttl,
            spiffe_id,
            common,
        }) => {
            let mut c = connect(&common.socket).await?;
            let r = c
                .generate_join_token(pb::GenerateJoinTokenRequest {
                    ttl_seconds: secs(ttl),
                    spiffe_id: spiffe_id.map(|s| s.to_string()).unwrap_or_default(),
                })
                .await
                .map_err(status_msg)?
                .into_inner();
            // The ID an agent attested with this token gets: the token's
            // hash, never the token.
            let agent_path = crate::store::join_token_ids::agent_path(
                &crate::store::join_token_ids::sha256_hex(&r.token),
            );
            match common.output {
                Output::Text => {
                    println!("Token: {}", r.token);
                    println!(
                        "Agent ID: {} (the --parent-id of its workload entries)",
                        r.agent_id
                    );
                    println!("Expires at: {}", rfc3339(r.expires_at));
                    if !r.entry_id.is_empty() {
                        println!("Node entry: {}", r.entry_id);
                    }
                }
                Output::Json => print_json(&serde_json::json!({
                    "token": r.token,
                    "agent_id": r.agent_id,
                    "agent_id_path": agent_path,
                    "expires_at": rfc3339(r.expires_at),
                    "entry_id": (!r.entry_id.is_empty()).then_some(r.entry_id),
                }))?,
            }
            Ok(())
        }
        Command::X509(X509Command::Mint {
            spiffe_id,
            ttl,
            dns_names,
            write,
            common,
        }) => {
            for n in &dns_names {
                crate::admin::convert::check_dns_name(n)
                    .map_err(|m| anyhow::anyhow!("--dns-name {m}"))?;
            }
            let mut c = connect(&common.socket).await?;
            let r = c
                .mint_x509_svid(pb::MintX509SvidRequest {
                    spiffe_id: spiffe_id.to_string(),
                    ttl_seconds: secs(ttl),
                    dns_names,
                })
                .await
                .map_err(status_msg)?
                .into_inner();
            let svid_pem = sigil_proto::pem::to_pem(&r.cert_chain);
            let key_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", r.private_key.clone()));
            let bundle_pem = sigil_proto::pem::to_pem(&r.bundle);
            let expires = rfc3339(r.expires_at);
            match write {
                Some(dir) => {
                    let written = sigil_proto::daemon::files::write_svid_files(
                        &dir,
                        svid_pem.as_bytes(),
                        key_pem.as_bytes(),
                        bundle_pem.as_bytes(),
                    )?;
                    match common.output {
                        Output::Text => {
                            println!("SPIFFE ID: {}", r.spiffe_id);
                            println!("Expires at: {expires}");
                            for f in &written {
                                println!("Wrote {}", f.display());
                            }
                        }
                        Output::Json => print_json(&serde_json::json!({
                            "spiffe_id": r.spiffe_id,
                            "expires_at": expires,
                            "files": written,
                        }))?,
                    }
                }
                None => match common.output {
                    Output::Text => {
                        println!("SPIFFE ID: {}", r.spiffe_id);
                        println!("Expires at: {expires}");
                        print!("{svid_pem}{key_pem}{bundle_pem}");
                    }
                    Output::Json => print_json(&serde_json::json!({
                        "spiffe_id": r.spiffe_id,
                        "expires_at": expires,
                        "svid_pem": svid_pem,
                        "key_pem": key_pem,
                        "bundle_pem": bundle_pem,
                    }))?,
                },
            }
            Ok(())
        }
        Command::Healthcheck(common) => {
            let mut c = connect(&common.socket).await?;
            let r = c
                .healthcheck(pb::HealthcheckRequest {})
                .await
                .map_err(status_msg)?
                .into_inner();
            match common.output {
                Output::Text => println!("Server is healthy ({}).", r.status),
                Output::Json => print_json(&serde_json::json!({ "status": r.status }))?,
            }
            Ok(())
        }
    }
}
