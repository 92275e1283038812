//! `sigil-agent api fetch jwt`, `api validate jwt`, and the JWT bundle half
//! of `api watch`: JWT-SVIDs fetched and validated over the Workload API
//! like a workload would, printed as text or JSON (tokens are printed: that
//! is what the command is for, so it never logs them).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use sigil_proto::workload as wl;
use tracing::{info, warn};

use super::Output;
use super::x509_report::rfc3339;
use crate::{helper, workload_client};

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", s.code(), s.message())
}

/// The claims of a token, unverified (for display only).
pub fn unverified_claims(token: &str) -> Value {
    sigil_proto::jwt::Token::parse(token)
        .map(|t| Value::Object(t.claims))
        .unwrap_or(Value::Null)
}

/// Fetches JWT-SVIDs for `audience` (retrying while no identity is issued
/// yet, until `timeout`).
pub async fn fetch(
    socket: &Path,
    audience: Vec<String>,
    spiffe_id: Option<String>,
    timeout: Duration,
) -> anyhow::Result<wl::JwtsvidResponse> {
    let deadline = tokio::time::Instant::now() + timeout;
    let req = wl::JwtsvidRequest {
        audience,
        spiffe_id: spiffe_id.unwrap_or_default(),
    };
    loop {
        let attempt = async {
            let mut c = workload_client::connect(socket).await?;
            c.fetch_jwtsvid(req.clone())
                .await
                .map(tonic::Response::into_inner)
                .map_err(status)
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

/// Prints fetched JWT-SVIDs: SPIFFE ID, expiry, audience and token.
pub fn print_fetched(r: &wl::JwtsvidResponse, output: Output) -> anyhow::Result<()> {
    anyhow::ensure!(!r.svids.is_empty(), "no JWT-SVIDs in the response");
    let svids: Vec<Value> = r
        .svids
        .iter()
        .map(|s| {
            let claims = unverified_claims(&s.svid);
            json!({
                "spiffe_id": s.spiffe_id,
                "hint": s.hint,
                "audience": claims.get("aud").cloned().unwrap_or(Value::Null),
                "expires_at": claims.get("exp").and_then(Value::as_i64).map(rfc3339),
                "svid": s.svid,
            })
        })
        .collect();
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "svids": svids }))?
        ),
        Output::Text => {
            for s in &svids {
                println!("SPIFFE ID:  {}", s["spiffe_id"].as_str().unwrap_or(""));
                if let Some(h) = s["hint"].as_str().filter(|h| !h.is_empty()) {
                    println!("Hint:       {h}");
                }
                println!("Audience:   {}", s["audience"]);
                println!("Expires at: {}", s["expires_at"].as_str().unwrap_or("?"));
                println!("Token:      {}", s["svid"].as_str().unwrap_or(""));
                println!();
            }
        }
    }
    Ok(())
}

/// Validates `svid` for `audience` through the Workload API and prints the
/// SPIFFE ID and claims; an invalid token is an error naming the reason.
pub async fn validate(
    socket: &Path,
    audience: String,
    svid: String,
    output: Output,
) -> anyhow::Result<()> {
    let mut c = workload_client::connect(socket).await?;
    let r = c
        .validate_jwtsvid(wl::ValidateJwtsvidRequest { audience, svid })
        .await
        .map_err(status)
        .context("the JWT-SVID is not valid")?
        .into_inner();
    let claims = r.claims.map(struct_json).unwrap_or(Value::Null);
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"valid": true, "spiffe_id": r.spiffe_id, "claims": claims})
            )?
        ),
        Output::Text => {
            println!("SVID is valid.");
            println!("SPIFFE ID:  {}", r.spiffe_id);
            println!("Claims:     {}", serde_json::to_string(&claims)?);
        }
    }
    Ok(())
}

fn struct_json(s: prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .into_iter()
            .map(|(k, v)| (k, value_json(v)))
            .collect(),
    )
}

fn value_json(v: prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => b.into(),
        // Whole numbers (exp, iat) print as integers.
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => (n as i64).into(),
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::StringValue(s)) => s.into(),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_json).collect()),
        Some(Kind::StructValue(s)) => struct_json(s),
    }
}

/// The `kid`s of each trust domain's JWK Set.
fn kids(r: &wl::JwtBundlesResponse) -> BTreeMap<String, Vec<String>> {
    r.bundles
        .iter()
        .map(|(td, jwks)| {
            let doc: Value = serde_json::from_slice(jwks).unwrap_or(Value::Null);
            let kids = doc["keys"]
                .as_array()
                .map(|keys| {
                    keys.iter()
                        .filter_map(|k| k["kid"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            (td.clone(), kids)
        })
        .collect()
}

/// Prints every JWT bundle update until the stream cannot be reopened:
/// reconnects with backoff after the first update, gives up (with a
/// warning, the X.509 half of `watch` goes on) if the first never comes.
pub async fn watch_bundles(socket: &Path, output: Output) {
    let mut seen_any = false;
    let mut attempt = 0u32;
    loop {
        let mut last: Option<BTreeMap<String, Vec<String>>> = None;
        let lost = async {
            let mut c = workload_client::connect(socket).await?;
            let mut s = c
                .fetch_jwt_bundles(wl::JwtBundlesRequest {})
                .await
                .map_err(status)?
                .into_inner();
            while let Some(r) = s.message().await.map_err(status)? {
                if attempt > 0 {
                    info!(socket = %socket.display(), attempts = attempt, "JWT bundle stream reconnected");
                    attempt = 0;
                }
                seen_any = true;
                let now = kids(&r);
                if last.as_ref() != Some(&now) {
                    print_bundles(&now, output)?;
                }
                last = Some(now);
            }
            anyhow::Ok(())
        }
        .await;
        let why = match lost {
            Err(e) if !seen_any => {
                warn!(socket = %socket.display(), error = %format!("{e:#}"), "JWT bundles not available; watching X.509 only");
                return;
            }
            Err(e) => format!("{e:#}"),
            Ok(()) => "the agent closed the stream".to_string(),
        };
        let wait = helper::backoff(attempt);
        attempt = attempt.saturating_add(1);
        warn!(socket = %socket.display(), error = %why, attempt, retry_in_ms = wait.as_millis() as u64, "JWT bundle stream lost; reconnecting");
        tokio::time::sleep(wait).await;
    }
}

fn print_bundles(kids: &BTreeMap<String, Vec<String>>, output: Output) -> anyhow::Result<()> {
    let now = rfc3339(time::OffsetDateTime::now_utc().unix_timestamp());
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string(
                &json!({"time": now, "jwt_bundle_changed": true, "jwt_bundles": kids})
            )?
        ),
        Output::Text => {
            for (td, kids) in kids {
                println!(
                    "{now} jwt bundle update: {td}: {} key(s): {}",
                    kids.len(),
                    kids.join(", ")
                );
            }
        }
    }
    Ok(())
}
