//! `sigil-server server list` and `server forget` (issue 17): the servers
//! sharing the store, each with its own CA, and forgetting one that is gone
//! for good (its CAs and JWT keys leave the bundle when they expire).

use clap::Subcommand;
use sigil_proto::admin_api as pb;

use super::output::{Output, print_json, rfc3339};
use super::{Common, status_msg};
use crate::admin::client::connect;

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// List the servers sharing the store: instance id, last heartbeat,
    /// their CAs and JWT keys, live / stale / forgotten.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Forget a server that is gone for good. Refused for the server that
    /// answers and, without --force, for one seen recently.
    Forget {
        /// The server's instance id (see `server list`).
        instance_id: String,
        /// Also forget a server seen recently (it may still run).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        common: Common,
    },
}

fn server_json(s: &pb::ServerInfo) -> serde_json::Value {
    serde_json::json!({
        "instance_id": s.instance_id,
        "status": s.status,
        "this_server": s.this_server,
        "started_at": rfc3339(s.started_at),
        "last_seen": rfc3339(s.last_seen),
        "last_seen_unix": s.last_seen,
        "forgotten_at": (s.forgotten_at != 0).then(|| rfc3339(s.forgotten_at)),
        "cas": s.cas.iter().map(|c| serde_json::json!({
            "serial": c.serial,
            "state": c.state,
            "not_after": rfc3339(c.not_after),
            "tainted": c.tainted,
        })).collect::<Vec<_>>(),
        "jwt_keys": s.jwt_keys.iter().map(|k| serde_json::json!({
            "kid": k.kid,
            "state": k.state,
            "expires_at": rfc3339(k.expires_at),
        })).collect::<Vec<_>>(),
    })
}

fn print_servers(output: Output, servers: &[pb::ServerInfo]) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(&serde_json::json!({
            "servers": servers.iter().map(server_json).collect::<Vec<_>>(),
        })),
        Output::Text => {
            for (i, s) in servers.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                let me = if s.this_server { " (this server)" } else { "" };
                println!("{:<12}: {}{me}", "Instance", s.instance_id);
                println!("{:<12}: {}", "Status", s.status);
                println!("{:<12}: {}", "Last seen", rfc3339(s.last_seen));
                for c in &s.cas {
                    let t = if c.tainted { ", tainted" } else { "" };
                    println!(
                        "{:<12}: {} ({}{t}), expires {}",
                        "CA",
                        c.serial,
                        c.state,
                        rfc3339(c.not_after)
                    );
                }
                for k in &s.jwt_keys {
                    println!(
                        "{:<12}: {} ({}), in bundle until {}",
                        "JWT key",
                        k.kid,
                        k.state,
                        rfc3339(k.expires_at)
                    );
                }
            }
            Ok(())
        }
    }
}

pub async fn run(cmd: ServerCommand) -> anyhow::Result<()> {
    match cmd {
        ServerCommand::List { common } => {
            let mut c = connect(&common.socket).await?;
            let r = c
                .list_servers(pb::ListServersRequest {})
                .await
                .map_err(status_msg)?
                .into_inner();
            print_servers(common.output, &r.servers)
        }
        ServerCommand::Forget {
            instance_id,
            force,
            common,
        } => {
            let mut c = connect(&common.socket).await?;
            let s = c
                .forget_server(pb::ForgetServerRequest { instance_id, force })
                .await
                .map_err(status_msg)?
                .into_inner();
            print_servers(common.output, &[s])
        }
    }
}
