//! The SPIFFE bundle (SPIFFE Trust Domain and Bundle spec, DESIGN §3
//! "Bundle endpoint"): a trust domain's X.509 and JWT authorities with the
//! publisher's sequence number and refresh hint, and its JWK Set codec
//! ([`encode`], [`decode`]). Decoding is bounded because bundles come from
//! other trust domains; only document-level faults refuse a document, and a
//! key the spec says to ignore, or one that fails validation, is left out of
//! the bundle and reported ([`Decoded::skipped`]). The PEM and DER
//! certificate-list codecs for bundle files are in [`crate::pem`]; the
//! plain signing JWKs of OIDC discovery are [`signing_jwk`].

pub mod endpoint_url;
#[cfg(feature = "bundle-fetch")]
pub mod fetch;
mod jwks;
pub(crate) mod key_params;
mod signing_jwk;
mod skipped;
mod spiffe_bundle;

pub use jwks::{JwksError, MAX_BUNDLE_BYTES, MAX_BUNDLE_KEYS, check_jwt_key, decode, encode};
pub use signing_jwk::{jws_alg, signing_jwk};
pub use skipped::{Decoded, KeyRule, Skipped};
pub use spiffe_bundle::{JwtKey, SpiffeBundle};

#[cfg(test)]
mod tests;
