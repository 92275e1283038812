//! `sigil-server jwt mint`: a JWT-SVID for use outside the agent (a CI job,
//! a one-off call to a cloud API), signed by the server's active JWT key
//! through the admin socket. Text output is the token alone on one line (so
//! `TOKEN=$(sigil-server jwt mint …)` works); JSON adds the SPIFFE ID,
//! `kid` and times.

use std::time::Duration;

use clap::Subcommand;
use sigil_proto::admin_api as pb;
use sigil_proto::{SpiffeId, parse_duration};

use super::output::{Output, print_json, rfc3339};
use super::{Common, secs, status_msg};
use crate::admin::client::connect;

#[derive(Debug, Subcommand)]
pub enum JwtCommand {
    /// Mint a JWT-SVID signed by the server's active JWT key.
    Mint {
        #[arg(long, value_parser = SpiffeId::parse)]
        spiffe_id: SpiffeId,
        /// An audience of the token (the aud claim); repeat for several.
        #[arg(long, required = true, value_parser = parse_audience)]
        audience: Vec<String>,
        /// Lifetime, at most ca_ttl / 6 (default: default_jwt_svid_ttl, 5m).
        #[arg(long, value_parser = parse_jwt_ttl)]
        ttl: Option<Duration>,
        #[command(flatten)]
        common: Common,
    },
}

fn parse_audience(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("an audience must be a non-empty string".to_string());
    }
    Ok(s.to_string())
}

/// `--ttl`: a duration of at least 1s (omit it for the server's default).
fn parse_jwt_ttl(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err(format!(
            "{s:?} is shorter than 1s (omit --ttl for the server's default_jwt_svid_ttl)"
        ));
    }
    Ok(d)
}

pub async fn run_jwt(cmd: JwtCommand) -> anyhow::Result<()> {
    let JwtCommand::Mint {
        spiffe_id,
        audience,
        ttl,
        common,
    } = cmd;
    let mut c = connect(&common.socket).await?;
    let r = c
        .mint_jwt_svid(pb::MintJwtSvidRequest {
            spiffe_id: spiffe_id.to_string(),
            audience: audience.clone(),
            ttl_seconds: secs(ttl),
        })
        .await
        .map_err(status_msg)?
        .into_inner();
    match common.output {
        Output::Text => println!("{}", r.token),
        Output::Json => print_json(&serde_json::json!({
            "spiffe_id": r.spiffe_id,
            "audience": audience,
            "token": r.token,
            "kid": r.kid,
            "issued_at": rfc3339(r.issued_at),
            "expires_at": rfc3339(r.expires_at),
        }))?,
    }
    Ok(())
}
