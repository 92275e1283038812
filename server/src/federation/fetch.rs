//! One fetch of a foreign bundle endpoint: TLS as the relationship's
//! profile says (`https_web`: the web PKI of `ca_file` or the system roots
//! file, with host name verification; `https_spiffe`: the stored bundle of
//! the foreign trust domain and exactly `endpoint_spiffe_id`, through
//! `sigil_proto::tls`), then the bounded `GET` the agent's bundle refresh
//! uses too ([`sigil_proto::bundle::fetch`]).

use std::path::Path;
use std::sync::Arc;

use sigil_proto::bundle::fetch::web_roots;
pub use sigil_proto::bundle::fetch::{FETCH_TIMEOUT, FetchError, fetch};
use sigil_proto::tls::{SpiffeServerVerifier, TrustRoots, authorize_exact, client_config};

use crate::store::{BundleRecord, EndpointProfile, FederationRecord};

/// The roots `https_web` uses without `ca_file`.
pub const SYSTEM_ROOTS_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn fail(reason: &'static str, message: String) -> FetchError {
    FetchError { reason, message }
}

/// The TLS client config for `rel`; `https_spiffe` needs the stored bundle
/// of its trust domain.
pub fn tls_config(
    rel: &FederationRecord,
    stored: Option<&BundleRecord>,
) -> Result<rustls::ClientConfig, FetchError> {
    let td = &rel.trust_domain;
    let mut cfg = match rel.profile {
        EndpointProfile::HttpsSpiffe => {
            let id = rel
                .endpoint_spiffe_id
                .clone()
                .ok_or_else(|| fail("config", format!("federation {td}: no endpoint_spiffe_id")))?;
            let certs = stored
                .map(|b| b.x509_authorities.clone())
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    fail(
                        "config",
                        format!(
                            "no X.509 authority of {td} is stored to check its https_spiffe \
                             endpoint with: set one with `sigil-server bundle set --trust-domain \
                             {td}` or create the relationship with --trust-domain-bundle"
                        ),
                    )
                })?;
            let roots = TrustRoots::new(certs)
                .map_err(|e| fail("config", format!("the stored bundle of {td}: {e}")))?;
            let verifier = SpiffeServerVerifier::new(roots, authorize_exact(id));
            client_config(Arc::new(verifier), None)
                .map_err(|e| fail("config", format!("TLS client for {td}: {e}")))?
        }
        EndpointProfile::HttpsWeb => {
            let file = rel
                .ca_file
                .clone()
                .unwrap_or_else(|| SYSTEM_ROOTS_FILE.into());
            web_config(&file)?
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

fn web_config(file: &Path) -> Result<rustls::ClientConfig, FetchError> {
    web_roots(file).map_err(|e| fail("config", format!("ca_file {}: {e}", file.display())))
}
