//! Why a JWT-SVID is refused: one variant per rule, each message naming
//! the offending value and the rule.

use super::token::MAX_TOKEN_BYTES;

/// Why a token is not a valid JWT-SVID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token is {len} bytes, more than the limit of {MAX_TOKEN_BYTES}")]
    TooLarge { len: usize },
    #[error("token is not a compact JWS (header.payload.signature): {reason}")]
    Malformed { reason: String },
    #[error("token {part} is not valid base64url without padding: {reason}")]
    BadBase64 { part: &'static str, reason: String },
    #[error("token {part} is not a JSON object: {reason}")]
    BadJson { part: &'static str, reason: String },
    #[error("token header has no \"alg\" (required)")]
    MissingAlg,
    #[error("token alg \"none\" is refused: a JWT-SVID must be signed")]
    AlgNone,
    #[error("token alg {alg:?} is refused: HMAC algorithms are never accepted for JWT-SVIDs")]
    AlgHmac { alg: String },
    #[error(
        "token alg {alg:?} is not allowed (allowed: ES256, ES384, RS256, RS384, RS512, PS256, \
         PS384, PS512)"
    )]
    AlgNotAllowed { alg: String },
    #[error("token header has no \"kid\" (required for JWT-SVIDs)")]
    MissingKid,
    #[error("token typ {typ:?} is refused (a JWT-SVID's typ, if present, is \"JWT\" or \"JOSE\")")]
    BadTyp { typ: String },
    #[error("token header has \"crit\" {crit}: no JWS extension is understood, so it is refused")]
    Critical { crit: String },
    #[error("token claim {claim:?} has the wrong type: {rule}")]
    ClaimType {
        claim: &'static str,
        rule: &'static str,
    },
    #[error("token has no \"sub\" claim (required: the SPIFFE ID)")]
    MissingSub,
    #[error("token sub {sub:?} is not a SPIFFE ID: {reason}")]
    BadSub { sub: String, reason: String },
    #[error("no bundle for trust domain {trust_domain} of token sub {sub:?}")]
    NoBundle { trust_domain: String, sub: String },
    #[error("token kid {kid:?} is not a JWT authority of trust domain {trust_domain}")]
    UnknownKid { kid: String, trust_domain: String },
    #[error("key {kid:?} cannot be used: {reason}")]
    BadKey { kid: String, reason: String },
    #[error("token alg {alg} does not fit key {kid:?}, a {key_type} key")]
    KeyAlgMismatch {
        alg: &'static str,
        kid: String,
        key_type: &'static str,
    },
    #[error("token signature does not verify with key {kid:?} ({alg})")]
    BadSignature { kid: String, alg: &'static str },
    #[error("token has no \"exp\" claim (required for JWT-SVIDs)")]
    MissingExp,
    #[error("token expired: exp {exp} is not after now ({now})")]
    Expired { exp: i64, now: i64 },
    #[error("token is not valid yet: nbf {nbf} is after now ({now})")]
    NotYetValid { nbf: i64, now: i64 },
    #[error("token has no \"aud\" claim (required for JWT-SVIDs)")]
    MissingAud,
    #[error("token aud {aud:?} does not contain the audience {audience:?}")]
    AudienceMismatch { aud: Vec<String>, audience: String },
}
