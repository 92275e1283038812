//! The admin API's edge: protobuf messages in, validated domain types out
//! (and back). Every refusal names the field, the value and the rule.

use std::time::Duration;

use sigil_proto::admin_api as pb;
use sigil_proto::selector::known::check_known;
use sigil_proto::{Selector, SpiffeId, TrustDomain};

use crate::config::check_svid_ttl;
use crate::entry::{Entry, EntrySpec};

/// Most selectors one entry may carry.
pub const MAX_SELECTORS: usize = 64;
/// Most DNS names one entry or SVID may carry.
pub const MAX_DNS_NAMES: usize = 32;
/// Longest hint, in bytes.
pub const MAX_HINT_LEN: usize = 256;
/// Longest JWT-SVID TTL.
pub const MAX_JWT_TTL: Duration = Duration::from_secs(24 * 3600);

/// What the checks need to know about the server.
#[derive(Debug, Clone)]
pub struct Limits {
    pub trust_domain: TrustDomain,
    pub ca_ttl: Duration,
}

fn err(field: &str, msg: impl std::fmt::Display) -> String {
    format!("{field}: {msg}")
}

/// A SPIFFE ID in the server's trust domain.
pub fn parse_id_in(field: &str, value: &str, limits: &Limits) -> Result<SpiffeId, String> {
    let id = SpiffeId::parse(value).map_err(|e| err(field, e))?;
    if !id.is_member_of(&limits.trust_domain) {
        return Err(err(
            field,
            format!(
                "{id} is not in this server's trust domain {}",
                limits.trust_domain
            ),
        ));
    }
    Ok(id)
}

/// A SPIFFE ID an entry or a minted SVID may carry: in the trust domain, with
/// a path, and not under `/sigil/`, which is reserved for servers and agents.
pub fn parse_workload_id(field: &str, value: &str, limits: &Limits) -> Result<SpiffeId, String> {
    let id = parse_id_in(field, value, limits)?;
    if id.is_trust_domain_id() {
        return Err(err(field, format!("{id} has no path; an SVID needs one")));
    }
    if id.path() == "/sigil" || id.path().starts_with("/sigil/") {
        return Err(err(
            field,
            format!("{id} is under /sigil/, which is reserved for Sigil servers and agents"),
        ));
    }
    Ok(id)
}

/// A DNS name for a SAN: labels of `[a-zA-Z0-9-]` (1–63 bytes, no leading or
/// trailing '-'), at most 253 bytes, optionally starting with `*.`.
pub fn check_dns_name(name: &str) -> Result<(), String> {
    let rule = "must be a DNS name: labels of a-z, A-Z, 0-9 and '-', 1-63 bytes each, \
                253 bytes in all, optionally starting with '*.'";
    let bare = name.strip_prefix("*.").unwrap_or(name);
    let ok = !bare.is_empty()
        && name.len() <= 253
        && bare.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} {rule}"))
    }
}

pub fn check_dns_names(field: &str, names: &[String]) -> Result<(), String> {
    if names.len() > MAX_DNS_NAMES {
        return Err(err(
            field,
            format!(
                "{} names, more than the limit of {MAX_DNS_NAMES}",
                names.len()
            ),
        ));
    }
    for n in names {
        check_dns_name(n).map_err(|m| err(field, m))?;
    }
    Ok(())
}

pub fn parse_selectors(field: &str, sels: &[pb::Selector]) -> Result<Vec<Selector>, String> {
    if sels.len() > MAX_SELECTORS {
        return Err(err(
            field,
            format!(
                "{} selectors, more than the limit of {MAX_SELECTORS}",
                sels.len()
            ),
        ));
    }
    sels.iter()
        .map(|s| Selector::new(&s.r#type, &s.value).map_err(|e| err(field, e)))
        .collect()
}

/// Checks every selector against the selectors Sigil's attestors produce
/// (types and value syntax, see [`check_known`]): one that can never match
/// is refused. A type no attestor produces passes only with
/// `allow_unknown` (`allow_unknown_selectors`, `--allow-unknown-selector`).
pub fn check_known_selectors(
    field: &str,
    sels: &[Selector],
    allow_unknown: bool,
) -> Result<(), String> {
    for s in sels {
        match check_known(s) {
            Err(e) if !(allow_unknown && e.is_unknown_type()) => return Err(err(field, e)),
            _ => {}
        }
    }
    Ok(())
}

/// Entry fields the API stores but no part of Sigil acts on yet: refused
/// when set, rather than stored and silently ignored.
fn refuse_unimplemented(jwt_svid_ttl: bool, admin: bool, downstream: bool) -> Result<(), String> {
    let refusal = if jwt_svid_ttl {
        "jwt_svid_ttl (--jwt-svid-ttl): Sigil does not issue JWT-SVIDs yet, so the TTL would \
         be stored and do nothing; omit it"
    } else if admin {
        "admin (--admin): admin entries are not implemented yet (their SVIDs would grant no \
         admin access); omit it"
    } else if downstream {
        "downstream (--downstream): downstream servers are not implemented yet (their SVIDs \
         could not sign); omit it"
    } else {
        return Ok(());
    };
    Err(refusal.to_string())
}

/// An X.509-SVID TTL in seconds: 0 (server default) or 1s..=ca_ttl/6.
pub fn check_x509_ttl(field: &str, secs: i64, limits: &Limits) -> Result<u64, String> {
    let secs = u64::try_from(secs).map_err(|_| err(field, format!("{secs} is negative")))?;
    if secs > 0 {
        check_svid_ttl(field, Duration::from_secs(secs), limits.ca_ttl)?;
    }
    Ok(secs)
}

fn check_jwt_ttl(field: &str, secs: i64) -> Result<u64, String> {
    let secs = u64::try_from(secs).map_err(|_| err(field, format!("{secs} is negative")))?;
    if Duration::from_secs(secs) > MAX_JWT_TTL {
        return Err(err(field, format!("{secs}s is more than the limit of 24h")));
    }
    Ok(secs)
}

fn check_hint(hint: &str) -> Result<(), String> {
    if hint.len() > MAX_HINT_LEN {
        return Err(err("hint", format!("more than {MAX_HINT_LEN} bytes")));
    }
    if hint.chars().any(char::is_control) {
        return Err(err("hint", "control characters are not allowed"));
    }
    Ok(())
}

fn parse_federates(list: &[String]) -> Result<Vec<TrustDomain>, String> {
    list.iter()
        .map(|t| TrustDomain::parse(t).map_err(|e| err("federates_with", e)))
        .collect()
}

/// Validates a full entry (create); `allow_unknown`: see
/// [`check_known_selectors`].
pub fn entry_spec(
    e: &pb::Entry,
    limits: &Limits,
    now: i64,
    allow_unknown: bool,
) -> Result<EntrySpec, String> {
    let spiffe_id = parse_workload_id("spiffe_id", &e.spiffe_id, limits)?;
    let parent_id = parse_id_in("parent_id", &e.parent_id, limits)?;
    let selectors = parse_selectors("selectors", &e.selectors)?;
    check_known_selectors("selectors", &selectors, allow_unknown)?;
    let jwt_svid_ttl = check_jwt_ttl("jwt_svid_ttl", e.jwt_svid_ttl_seconds)?;
    refuse_unimplemented(jwt_svid_ttl != 0, e.admin, e.downstream)?;
    let mut spec = EntrySpec {
        spiffe_id,
        parent_id,
        selectors,
        x509_svid_ttl: check_x509_ttl("x509_svid_ttl", e.x509_svid_ttl_seconds, limits)?,
        jwt_svid_ttl,
        dns_names: e.dns_names.clone(),
        federates_with: parse_federates(&e.federates_with)?,
        hint: e.hint.clone(),
        admin: e.admin,
        downstream: e.downstream,
        expires_at: (e.expires_at != 0).then_some(e.expires_at),
    };
    check_spec(&spec, now)?;
    spec.normalize();
    Ok(spec)
}

/// Rules that involve more than one field; shared by create and update.
pub fn check_spec(spec: &EntrySpec, now: i64) -> Result<(), String> {
    if spec.selectors.is_empty() {
        return Err(err(
            "selectors",
            "at least one selector is required (e.g. unix:uid:1000)",
        ));
    }
    if spec.spiffe_id == spec.parent_id {
        return Err(err("parent_id", "an entry cannot be its own parent"));
    }
    check_dns_names("dns_names", &spec.dns_names)?;
    check_hint(&spec.hint)?;
    if let Some(at) = spec.expires_at
        && at <= now
    {
        return Err(err(
            "expires_at",
            format!("{at} (unix seconds) is in the past"),
        ));
    }
    Ok(())
}

/// Applies the fields an update request sets to `spec`.
pub fn apply_update(
    spec: &mut EntrySpec,
    u: &pb::UpdateEntryRequest,
    limits: &Limits,
    now: i64,
) -> Result<(), String> {
    if let Some(v) = &u.spiffe_id {
        spec.spiffe_id = parse_workload_id("spiffe_id", v, limits)?;
    }
    if let Some(v) = &u.parent_id {
        spec.parent_id = parse_id_in("parent_id", v, limits)?;
    }
    if let Some(v) = &u.selectors {
        spec.selectors = parse_selectors("selectors", &v.selectors)?;
        check_known_selectors("selectors", &spec.selectors, u.allow_unknown_selectors)?;
    }
    if let Some(v) = u.x509_svid_ttl_seconds {
        spec.x509_svid_ttl = check_x509_ttl("x509_svid_ttl", v, limits)?;
    }
    if let Some(v) = u.jwt_svid_ttl_seconds {
        spec.jwt_svid_ttl = check_jwt_ttl("jwt_svid_ttl", v)?;
    }
    // Setting one of these to its default (0, empty, false) is allowed: it
    // clears what an older server stored.
    refuse_unimplemented(
        u.jwt_svid_ttl_seconds.is_some_and(|v| v != 0),
        u.admin == Some(true),
        u.downstream == Some(true),
    )?;
    if let Some(v) = &u.dns_names {
        spec.dns_names = v.values.clone();
    }
    if let Some(v) = &u.federates_with {
        spec.federates_with = parse_federates(&v.values)?;
    }
    if let Some(v) = &u.hint {
        spec.hint = v.clone();
    }
    if let Some(v) = u.admin {
        spec.admin = v;
    }
    if let Some(v) = u.downstream {
        spec.downstream = v;
    }
    if let Some(v) = u.expires_at {
        spec.expires_at = (v != 0).then_some(v);
    }
    check_spec(spec, now)?;
    // The rule holds for the entry as it will be stored, whatever the update
    // changes: an entry created under a longer ca_ttl is refused until its
    // TTL is lowered (in this update or an earlier one).
    if spec.x509_svid_ttl > 0 {
        check_svid_ttl(
            &format!("entry {}: x509_svid_ttl", u.id),
            Duration::from_secs(spec.x509_svid_ttl),
            limits.ca_ttl,
        )?;
    }
    spec.normalize();
    Ok(())
}

pub fn selector_to_pb(s: &Selector) -> pb::Selector {
    pb::Selector {
        r#type: s.ty().to_string(),
        value: s.value().to_string(),
    }
}

pub fn entry_to_pb(e: &Entry) -> pb::Entry {
    pb::Entry {
        id: e.id.clone(),
        spiffe_id: e.spec.spiffe_id.to_string(),
        parent_id: e.spec.parent_id.to_string(),
        selectors: e.spec.selectors.iter().map(selector_to_pb).collect(),
        x509_svid_ttl_seconds: i64::try_from(e.spec.x509_svid_ttl).unwrap_or(i64::MAX),
        jwt_svid_ttl_seconds: i64::try_from(e.spec.jwt_svid_ttl).unwrap_or(i64::MAX),
        dns_names: e.spec.dns_names.clone(),
        federates_with: e
            .spec
            .federates_with
            .iter()
            .map(ToString::to_string)
            .collect(),
        hint: e.spec.hint.clone(),
        admin: e.spec.admin,
        downstream: e.spec.downstream,
        expires_at: e.spec.expires_at.unwrap_or(0),
        revision: e.revision,
        created_at: e.created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            trust_domain: TrustDomain::parse("example.org").unwrap(),
            ca_ttl: Duration::from_secs(6 * 3600),
        }
    }

    fn good() -> pb::Entry {
        pb::Entry {
            spiffe_id: "spiffe://example.org/web".into(),
            parent_id: "spiffe://example.org/sigil/agent/join_token/abc".into(),
            selectors: vec![pb::Selector {
                r#type: "unix".into(),
                value: "uid:1000".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn accepts_a_good_entry() {
        let s = entry_spec(&good(), &limits(), 0, false).unwrap();
        assert_eq!(s.spiffe_id.as_str(), "spiffe://example.org/web");
    }

    #[test]
    fn refusals_name_field_and_rule() {
        type Mutate = Box<dyn Fn(&mut pb::Entry)>;
        let cases: Vec<(Mutate, &str)> = vec![
            (
                Box::new(|e| e.spiffe_id = "spiffe://example.org/a/".into()),
                "spiffe_id",
            ),
            (
                Box::new(|e| e.spiffe_id = "spiffe://other.org/a".into()),
                "trust domain",
            ),
            (
                Box::new(|e| e.spiffe_id = "spiffe://example.org".into()),
                "no path",
            ),
            (
                Box::new(|e| e.spiffe_id = "spiffe://example.org/sigil/x".into()),
                "reserved",
            ),
            (
                Box::new(|e| e.parent_id = "spiffe://EXAMPLE.org/x".into()),
                "parent_id",
            ),
            (Box::new(|e| e.selectors.clear()), "at least one selector"),
            (
                Box::new(|e| e.selectors[0].r#type = "UNIX".into()),
                "[a-z0-9_-]+",
            ),
            (Box::new(|e| e.x509_svid_ttl_seconds = 7200), "ca_ttl / 6"),
            (Box::new(|e| e.x509_svid_ttl_seconds = -1), "negative"),
            (
                Box::new(|e| e.dns_names = vec!["bad_name".into()]),
                "DNS name",
            ),
            (Box::new(|e| e.hint = "a\nb".into()), "control"),
            (Box::new(|e| e.expires_at = 5), "in the past"),
            (
                Box::new(|e| e.federates_with = vec!["A B".into()]),
                "federates_with",
            ),
            (
                Box::new(|e| e.selectors[0].value = "uid:root".into()),
                "unix:user:root",
            ),
            (
                Box::new(|e| e.selectors[0].r#type = "uinx".into()),
                "did you mean unix?",
            ),
            (
                Box::new(|e| e.jwt_svid_ttl_seconds = 300),
                "does not issue JWT-SVIDs yet",
            ),
            (Box::new(|e| e.admin = true), "admin entries are not"),
            (
                Box::new(|e| e.downstream = true),
                "downstream servers are not",
            ),
        ];
        for (mutate, needle) in cases {
            let mut e = good();
            mutate(&mut e);
            let m = entry_spec(&e, &limits(), 10, false).unwrap_err();
            assert!(m.contains(needle), "expected {needle:?} in {m:?}");
        }
    }

    #[test]
    fn i20_7_update_cannot_exceed_ca_ttl_over_6() {
        // Created under ca_ttl 24h with a 4h TTL; ca_ttl is now 6h (limit 1h).
        let mut created = good();
        created.x509_svid_ttl_seconds = 4 * 3600;
        let wide = Limits {
            ca_ttl: Duration::from_secs(24 * 3600),
            ..limits()
        };
        let stored = entry_spec(&created, &wide, 0, false).unwrap();
        let hint_only = pb::UpdateEntryRequest {
            id: "e-123".into(),
            hint: Some("web".into()),
            ..Default::default()
        };
        let mut spec = stored.clone();
        let m = apply_update(&mut spec, &hint_only, &limits(), 0).unwrap_err();
        assert!(
            m.contains("e-123") && m.contains("4h") && m.contains("ca_ttl / 6 = 1h"),
            "names the entry, the value and the limit: {m}"
        );
        // Lowering the TTL in the same update passes.
        let lower = pb::UpdateEntryRequest {
            x509_svid_ttl_seconds: Some(1800),
            ..hint_only
        };
        let mut spec = stored;
        apply_update(&mut spec, &lower, &limits(), 0).unwrap();
        assert_eq!(spec.x509_svid_ttl, 1800);
    }

    #[test]
    fn dns_names() {
        for ok in ["a", "web.example.org", "*.example.org", "x-1.y"] {
            check_dns_name(ok).unwrap();
        }
        for bad in ["", "*.", "a..b", "-a", "a-", "a_b", "a b", &"a".repeat(64)] {
            assert!(check_dns_name(bad).is_err(), "{bad:?}");
        }
    }
}
