//! JWT-SVIDs as every Sigil process reads them (JWT-SVID spec, DESIGN §3
//! "JWT-SVID"): parsing a compact JWS within a size limit ([`Token::parse`])
//! and validating it against the bundles a caller may trust ([`validate`]):
//! the signature by the `kid` key of the bundle of the token's trust domain
//! (from `sub`), the `alg` allow-list (ES256/ES384, RS256/384/512,
//! PS256/384/512; never `none` nor HMAC, and the key type must fit the
//! `alg`), `typ` JWT or JOSE if present, `aud` containing the audience, `exp`
//! required and in the future, `nbf` (if present) not in the future, `sub` a
//! SPIFFE ID. Pure functions: time is an argument. Every refusal is a
//! [`JwtError`] naming the value and the rule it breaks. Signatures are
//! checked with ring.

mod error;
mod keys;
mod token;
mod validate;
mod verify;

#[cfg(any(test, feature = "test-pki"))]
pub mod test_sign;
#[cfg(test)]
mod tests;

pub use error::{JwtError, MAX_TOKEN_BYTES};
pub use keys::{JwtKeyRing, JwtKeySet};
pub use token::{Header, Token};
pub use validate::{Validated, validate, validate_with};
pub use verify::{Alg, VerifyKey};
