//! SPIFFE authentication for rustls: the trust bundle peers must chain to
//! ([`roots`]), certificate verifiers that take the leaf's single URI SAN as
//! its SPIFFE ID and let an [`Authorizer`] decide ([`verify`]), the
//! `ServerConfig`/`ClientConfig` builders every Sigil process uses
//! ([`config`]) and, behind feature `tls-resolver`, a certificate resolver
//! that presents the current SVID of a `watch` channel (`resolver`), and the
//! translation of handshake failures into cause and fix ([`verdict`]) and
//! into the classes a proxy counts ([`peer_result`]); every verifier checks
//! handshake signatures through [`signatures`]. Roots
//! and SVID can both change at run time without rebuilding any config.

pub mod config;
pub mod peer_result;
#[cfg(feature = "tls-resolver")]
pub mod resolver;
pub mod roots;
pub mod signatures;
pub mod verdict;
pub mod verify;

pub use config::{
    client_config, client_config_with_resolver, server_config,
    server_config_allowing_anonymous_clients, server_config_with_resolver,
};
#[cfg(feature = "tls-resolver")]
pub use resolver::{SvidResolver, certified_key};
pub use roots::{TlsError, TrustRoots};
pub use verify::{
    Authorizer, SpiffeClientVerifier, SpiffeServerVerifier, authorize_any_in, authorize_exact,
    authorize_one_of, spiffe_id_from_cert,
};

#[cfg(test)]
mod tests;
