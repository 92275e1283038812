//! Validation of a JWT-SVID against the bundles a caller trusts, in the
//! order that never trusts an unverified claim for more than finding the
//! key: header rules, `sub` (whose trust domain picks the bundle), the
//! `kid` in that bundle, the signature, then `exp`, `nbf` and `aud`.

use serde_json::{Map, Value};

use super::error::JwtError;
use super::token::Token;
use super::verify::{Alg, verify};
use crate::bundle::SpiffeBundle;
use crate::spiffe_id::SpiffeId;

/// A valid JWT-SVID: its SPIFFE ID and every claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub spiffe_id: SpiffeId,
    pub claims: Map<String, Value>,
    /// The `kid` that signed it.
    pub kid: String,
}

/// Validates `token` for `audience` at `now` (Unix seconds) against
/// `bundles` (the bundle of the token's trust domain is used; a token of a
/// trust domain with no bundle here is refused). No clock skew is allowed:
/// `exp` must be after `now` and `nbf`, if present, not after it.
pub fn validate<'a>(
    token: &str,
    audience: &str,
    bundles: impl IntoIterator<Item = &'a SpiffeBundle>,
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
    let bundle = bundles
        .into_iter()
        .find(|b| b.trust_domain == td)
        .ok_or_else(|| JwtError::NoBundle {
            trust_domain: td.to_string(),
            sub: sub.clone(),
        })?;
    let key = bundle
        .jwt_authorities
        .iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| JwtError::UnknownKid {
            kid: kid.clone(),
            trust_domain: td.to_string(),
        })?;
    verify(
        alg,
        &kid,
        &key.spki_der,
        t.signing_input.as_bytes(),
        &t.signature,
    )?;

    let exp = t.time_claim("exp")?.ok_or(JwtError::MissingExp)?;
    if exp <= now {
        return Err(JwtError::Expired { exp, now });
    }
    if let Some(nbf) = t.time_claim("nbf")?
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
