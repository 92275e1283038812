//! How admin commands print: human text, or JSON for scripts.

use clap::ValueEnum;
use serde_json::{Value, json};
use sigil_proto::admin_api as pb;
use sigil_proto::format_duration;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

pub fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn ttl_text(secs: i64) -> String {
    if secs == 0 {
        "default".to_string()
    } else {
        format_duration(std::time::Duration::from_secs(secs.unsigned_abs()))
    }
}

/// An entry in the JSON shape that `entry create --data` also reads (it
/// ignores the server-set `id`, `revision` and `created_at`). Times are RFC
/// 3339; `expires_at` is null for an entry that does not expire.
pub fn entry_json(e: &pb::Entry) -> Value {
    json!({
        "id": e.id,
        "spiffe_id": e.spiffe_id,
        "parent_id": e.parent_id,
        "selectors": e.selectors.iter().map(|s| json!({"type": s.r#type, "value": s.value})).collect::<Vec<_>>(),
        "x509_svid_ttl": e.x509_svid_ttl_seconds,
        "jwt_svid_ttl": e.jwt_svid_ttl_seconds,
        "dns_names": e.dns_names,
        "federates_with": e.federates_with,
        "hint": e.hint,
        "admin": e.admin,
        "downstream": e.downstream,
        "expires_at": (e.expires_at != 0).then(|| rfc3339(e.expires_at)),
        "revision": e.revision,
        "created_at": rfc3339(e.created_at),
    })
}

/// An entry as an aligned block of lines.
pub fn entry_text(e: &pb::Entry) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<16}: {v}\n"));
    line("Entry ID", &e.id);
    line("SPIFFE ID", &e.spiffe_id);
    line("Parent ID", &e.parent_id);
    line("Revision", &e.revision.to_string());
    line("X509-SVID TTL", &ttl_text(e.x509_svid_ttl_seconds));
    line("JWT-SVID TTL", &ttl_text(e.jwt_svid_ttl_seconds));
    for s in &e.selectors {
        line("Selector", &format!("{}:{}", s.r#type, s.value));
    }
    for d in &e.dns_names {
        line("DNS name", d);
    }
    for f in &e.federates_with {
        line("Federates with", f);
    }
    if !e.hint.is_empty() {
        line("Hint", &e.hint);
    }
    if e.admin {
        line("Admin", "true");
    }
    if e.downstream {
        line("Downstream", "true");
    }
    if e.expires_at != 0 {
        line("Expires at", &rfc3339(e.expires_at));
    }
    line("Created at", &rfc3339(e.created_at));
    out
}
