//! A compact JWS taken apart, unverified: the header members a JWT-SVID
//! uses, the claims as a JSON object, the signing input and the signature.
//! Nothing here trusts the token; [`super::validate`] does the checking.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::error::JwtError;

/// Largest token parsed, in bytes (16 KiB: a JWT-SVID is a few hundred
/// bytes; SPIRE's and the Go library's limits are of this order).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The JOSE header members a JWT-SVID is judged by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `alg`, as written (checked against the allow-list by [`super::Alg::parse`]).
    pub alg: Option<String>,
    pub kid: Option<String>,
    pub typ: Option<String>,
    /// `crit`, as JSON, if present.
    pub crit: Option<String>,
}

/// A parsed, unverified compact JWS.
#[derive(Debug, Clone)]
pub struct Token {
    pub header: Header,
    pub claims: Map<String, Value>,
    /// `base64url(header) "." base64url(payload)`: what was signed.
    pub signing_input: String,
    pub signature: Vec<u8>,
}

impl Token {
    /// Takes `token` apart: at most [`MAX_TOKEN_BYTES`], three base64url
    /// parts, a header and a payload that are JSON objects.
    pub fn parse(token: &str) -> Result<Token, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::TooLarge { len: token.len() });
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed {
                reason: format!("{} parts, not 3", token.split('.').count()),
            });
        };
        let header = object("header", &b64("header", h)?)?;
        let claims = object("payload", &b64("payload", p)?)?;
        let signature = b64("signature", s)?;
        let member = |name: &str| -> Result<Option<String>, JwtError> {
            match header.get(name) {
                None => Ok(None),
                Some(Value::String(v)) => Ok(Some(v.clone())),
                Some(other) => Err(JwtError::Malformed {
                    reason: format!("header member {name:?} is {other}, not a string"),
                }),
            }
        };
        let header = Header {
            alg: member("alg")?,
            kid: member("kid")?,
            typ: member("typ")?,
            crit: header.get("crit").map(Value::to_string),
        };
        Ok(Token {
            header,
            claims,
            signing_input: format!("{h}.{p}"),
            signature,
        })
    }

    /// An integer claim (`exp`, `iat`, `nbf`): `None` when absent. JSON
    /// numbers with a fraction are accepted and truncated (NumericDate
    /// allows them).
    pub fn time_claim(&self, claim: &'static str) -> Result<Option<i64>, JwtError> {
        match self.claims.get(claim) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                .map(Some)
                .ok_or(JwtError::ClaimType {
                    claim,
                    rule: "a NumericDate (seconds since the epoch)",
                }),
            Some(_) => Err(JwtError::ClaimType {
                claim,
                rule: "a NumericDate (seconds since the epoch)",
            }),
        }
    }
}

fn b64(part: &'static str, s: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|e| JwtError::BadBase64 {
        part,
        reason: e.to_string(),
    })
}

fn object(part: &'static str, bytes: &[u8]) -> Result<Map<String, Value>, JwtError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(JwtError::BadJson {
            part,
            reason: format!("found {}", kind(&other)),
        }),
        Err(e) => Err(JwtError::BadJson {
            part,
            reason: e.to_string(),
        }),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
