//! Validation of a JWT-SVID against the bundles (or prepared keys) a caller trusts, in the
//! order that never trusts an unverified claim for more than finding the
//! key: header rules, `sub` (whose trust domain picks the bundle), the
//! `kid` in that bundle, the signature, then `exp`, `nbf` and `aud`.

use serde_json::{Map, Value};

use super::error::JwtError;
use super::token::Token;
use std::sync::Arc;

use super::keys::{JwtKeyRing, JwtKeySet};
use super::verify::{Alg, VerifyKey};
use crate::bundle::SpiffeBundle;
use crate::spiffe_id::{SpiffeId, TrustDomain};

/// A valid JWT-SVID: its SPIFFE ID and every claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub spiffe_id: SpiffeId,
    pub claims: Map<String, Value>,
    /// The `kid` that signed it.
    pub kid: String,
    /// The key that verified it.
    pub key: Arc<VerifyKey>,
    /// `exp`, and `nbf` if present.
    pub exp: i64,
    pub nbf: Option<i64>,
    /// Every audience of `aud`.
    pub aud: Vec<String>,
}

/// Validates `token` for `audience` at `now` (Unix seconds) against
/// `bundles` (the bundle of the token's trust domain is used; a token of a
/// trust domain with no bundle here is refused). No clock skew is allowed:
/// `exp` must be after `now` and `nbf`, if present, not after it. Parses
/// the bundles' keys on every call: a caller that validates many tokens
/// against the same bundles prepares them once ([`JwtKeyRing`]) and calls
/// [`validate_with`].
pub fn validate<'a>(
    token: &str,
    audience: &str,
    bundles: impl IntoIterator<Item = &'a SpiffeBundle>,
    now: i64,
) -> Result<Validated, JwtError> {
    let ring = JwtKeyRing::of_bundles(bundles);
    validate_with(token, audience, |td| ring.get(td), now)
}

/// [`validate`] with prepared keys: `keys(td)` is the key set of the trust
/// domain `td` if the caller trusts it (`None`: no bundle, refused).
pub fn validate_with<'k>(
    token: &str,
    audience: &str,
    keys: impl FnOnce(&TrustDomain) -> Option<&'k JwtKeySet>,
    now: i64,
) -> Result<Validated, JwtError> {
    let t = Token::parse(token)?;
    let alg = Alg::parse(t.header.alg.as_deref().ok_or(JwtError::MissingAlg)?)?;
    let kid = match t.header.kid.as_deref() {
        Some(k) if !k.is_empty() => k.to_string(),
        _ => return Err(JwtError::MissingKid),
    };
    if let Some(typ) = &t.header.typ
        && typ != "JWT"
        && typ != "JOSE"
    {
        return Err(JwtError::BadTyp { typ: typ.clone() });
    }
    if let Some(crit) = &t.header.crit {
        return Err(JwtError::Critical { crit: crit.clone() });
    }
    let sub = match t.claims.get("sub") {
        None => return Err(JwtError::MissingSub),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(JwtError::ClaimType {
                claim: "sub",
                rule: "a string (a SPIFFE ID)",
            });
        }
    };
    let spiffe_id = SpiffeId::parse(&sub).map_err(|e| JwtError::BadSub {
        sub: sub.clone(),
        reason: e.to_string(),
    })?;
    let td = spiffe_id.trust_domain();
    let set = keys(&td).ok_or_else(|| JwtError::NoBundle {
        trust_domain: td.to_string(),
        sub: sub.clone(),
    })?;
    let key = set.get(&kid).ok_or_else(|| JwtError::UnknownKid {
        kid: kid.clone(),
        trust_domain: td.to_string(),
    })?;
    key.verify(alg, t.signing_input.as_bytes(), &t.signature)?;

    let exp = t.time_claim("exp")?.ok_or(JwtError::MissingExp)?;
    if exp <= now {
        return Err(JwtError::Expired { exp, now });
    }
    let nbf = t.time_claim("nbf")?;
    if let Some(nbf) = nbf
        && nbf > now
    {
        return Err(JwtError::NotYetValid { nbf, now });
    }
    let aud = audiences(&t.claims)?;
    if !aud.iter().any(|a| a == audience) {
        return Err(JwtError::AudienceMismatch {
            aud,
            audience: audience.to_string(),
        });
    }
    Ok(Validated {
        spiffe_id,
        claims: t.claims,
        kid,
        key: key.clone(),
        exp,
        nbf,
        aud,
    })
}

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3), required.
fn audiences(claims: &Map<String, Value>) -> Result<Vec<String>, JwtError> {
    let wrong = JwtError::ClaimType {
        claim: "aud",
        rule: "a string or an array of strings",
    };
    match claims.get("aud") {
        None => Err(JwtError::MissingAud),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or(wrong.clone()))
            .collect(),
        Some(_) => Err(wrong),
    }
}
