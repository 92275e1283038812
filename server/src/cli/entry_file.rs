//! Entry files (`entry create --data`): the SPIFFE-style JSON shape that
//! `entry show --output json` also prints, read into admin API entries. The
//! fields the server sets are accepted and ignored; times are RFC 3339 (or
//! unix seconds); any bad entry refuses the whole file.

use anyhow::Context;
use serde::Deserialize;
use sigil_proto::admin_api as pb;
use sigil_proto::{Selector, SpiffeId, TrustDomain, parse_duration};
use time::format_description::well_known::Rfc3339;

use super::secs;
use crate::admin::convert::check_dns_name;

/// An `--expires-at` value: an RFC 3339 time, or `never` (0: no expiry,
/// which clears it in `entry update`).
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    if s == "never" {
        return Ok(0);
    }
    time::OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| {
            format!("{s:?} is not an RFC 3339 time like 2026-12-31T23:59:59Z (or never): {e}")
        })
}

/// A time in an entry file: RFC 3339 (as `entry show --output json`
/// writes it) or unix seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TimeJson {
    Unix(i64),
    Text(String),
}

/// A TTL in an entry file: seconds (as SPIRE writes them) or a duration.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TtlJson {
    Seconds(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectorJson {
    r#type: String,
    value: String,
}

/// One entry of an entry file. The fields the server sets (`id`,
/// `revision`, `created_at`) are accepted and ignored, so that `entry show
/// --output json` can be fed back to `entry create --data`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryJson {
    #[serde(default, rename = "id")]
    _id: serde::de::IgnoredAny,
    #[serde(default, rename = "revision")]
    _revision: serde::de::IgnoredAny,
    #[serde(default, rename = "created_at")]
    _created_at: serde::de::IgnoredAny,
    spiffe_id: String,
    parent_id: String,
    selectors: Vec<SelectorJson>,
    x509_svid_ttl: Option<TtlJson>,
    jwt_svid_ttl: Option<TtlJson>,
    #[serde(default)]
    dns_names: Vec<String>,
    #[serde(default)]
    federates_with: Vec<String>,
    #[serde(default)]
    hint: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    downstream: bool,
    expires_at: Option<TimeJson>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    entries: Vec<EntryJson>,
}

fn time_secs(t: Option<&TimeJson>) -> Result<i64, String> {
    match t {
        None => Ok(0),
        Some(TimeJson::Unix(s)) => Ok(*s),
        Some(TimeJson::Text(s)) => parse_rfc3339(s).map_err(|m| format!("expires_at: {m}")),
    }
}

fn ttl_secs(field: &str, t: Option<&TtlJson>) -> Result<i64, String> {
    match t {
        None => Ok(0),
        Some(TtlJson::Seconds(s)) if *s >= 0 => Ok(*s),
        Some(TtlJson::Seconds(s)) => Err(format!("{field}: {s} is negative")),
        Some(TtlJson::Text(s)) => parse_duration(s)
            .map(|d| secs(Some(d)))
            .map_err(|e| format!("{field}: {e}")),
    }
}

/// Parses and checks an entry file; any bad entry refuses the whole file so
/// that nothing is half-applied.
pub fn parse_entry_file(bytes: &[u8]) -> anyhow::Result<Vec<pb::Entry>> {
    let file: EntryFile = serde_json::from_slice(bytes).context("invalid entry JSON")?;
    let mut out = Vec::with_capacity(file.entries.len());
    for (i, e) in file.entries.iter().enumerate() {
        let ctx = |m: String| anyhow::anyhow!("entry {i}: {m}");
        SpiffeId::parse(&e.spiffe_id).map_err(|x| ctx(format!("spiffe_id: {x}")))?;
        SpiffeId::parse(&e.parent_id).map_err(|x| ctx(format!("parent_id: {x}")))?;
        if e.selectors.is_empty() {
            return Err(ctx("selectors: at least one selector is required".into()));
        }
        for (j, s) in e.selectors.iter().enumerate() {
            Selector::new(&s.r#type, &s.value).map_err(|x| ctx(format!("selectors[{j}]: {x}")))?;
        }
        for d in &e.dns_names {
            check_dns_name(d).map_err(|m| ctx(format!("dns_names: {m}")))?;
        }
        for t in &e.federates_with {
            TrustDomain::parse(t).map_err(|x| ctx(format!("federates_with: {x}")))?;
        }
        out.push(pb::Entry {
            spiffe_id: e.spiffe_id.clone(),
            parent_id: e.parent_id.clone(),
            selectors: e
                .selectors
                .iter()
                .map(|s| pb::Selector {
                    r#type: s.r#type.clone(),
                    value: s.value.clone(),
                })
                .collect(),
            x509_svid_ttl_seconds: ttl_secs("x509_svid_ttl", e.x509_svid_ttl.as_ref())
                .map_err(ctx)?,
            jwt_svid_ttl_seconds: ttl_secs("jwt_svid_ttl", e.jwt_svid_ttl.as_ref()).map_err(ctx)?,
            dns_names: e.dns_names.clone(),
            federates_with: e.federates_with.clone(),
            hint: e.hint.clone(),
            admin: e.admin,
            downstream: e.downstream,
            expires_at: time_secs(e.expires_at.as_ref()).map_err(ctx)?,
            ..Default::default()
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_file_accepts_spire_style_and_refuses_bad_entries_whole() {
        let ok = br#"{"entries":[{"spiffe_id":"spiffe://td/a","parent_id":"spiffe://td/p",
            "selectors":[{"type":"unix","value":"uid:1"}],"x509_svid_ttl":600},
            {"spiffe_id":"spiffe://td/b","parent_id":"spiffe://td/p",
            "selectors":[{"type":"unix","value":"uid:2"}],"x509_svid_ttl":"10m"}]}"#;
        let v = parse_entry_file(ok).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].x509_svid_ttl_seconds, 600);
        for (bad, needle) in [
            (&br#"{"entries":[{"spiffe_id":"spiffe://td/a/","parent_id":"spiffe://td/p","selectors":[{"type":"unix","value":"uid:1"}]}]}"#[..], "entry 0: spiffe_id"),
            (br#"{"entries":[{"spiffe_id":"spiffe://td/a","parent_id":"spiffe://td/p","selectors":[]}]}"#, "at least one"),
            (br#"{"entries":[{"spiffe_id":"spiffe://td/a","parent_id":"spiffe://td/p","selectors":[{"type":"Unix","value":"x"}]}]}"#, "selectors[0]"),
            (br#"{"entries":[{"spiffe_id":"spiffe://td/a","parent_id":"spiffe://td/p","selectors":[{"type":"unix","value":"x"}],"x509_svid_ttl":"5y"}]}"#, "x509_svid_ttl"),
            (br#"{"entries":[{"spiffe_id":"spiffe://td/a","parent_id":"spiffe://td/p","selectors":[{"type":"unix","value":"x"}],"colour":"red"}]}"#, "colour"),
            (b"not json", "invalid entry JSON"),
        ] {
            let e = format!("{:#}", parse_entry_file(bad).unwrap_err());
            assert!(e.contains(needle), "expected {needle:?} in {e:?}");
        }
    }
}
