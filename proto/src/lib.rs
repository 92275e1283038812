//! The contract every Sigil process shares: the SPIFFE Workload API and
//! Sigil's agent and admin APIs (generated at build time), and the SPIFFE
//! types those APIs speak (IDs, selectors, the X.509-SVID profile, the
//! bundle and its JWKS and PEM codecs, the TLS verifiers). No I/O and no
//! daemons live here by default; features add what both daemons share
//! (`health`, `daemon`, `clock`, `tls-resolver`) and test certificates
//! (`test-pki`).

/// The SPIFFE Workload API. Its .proto has no package, so the service path is
/// `/SpiffeWorkloadAPI/<Method>`.
pub mod workload {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("_");
}

/// The messages both of Sigil's own APIs speak (`sigil.types.v1`): one
/// `Entry`, `Selector` and `ItemError`, re-exported by each API's module.
pub mod types {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("sigil.types.v1");
}

/// Sigil's agent ↔ server API.
pub mod agent_api {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("sigil.agent.v1");
    pub use crate::types::{Entry, ItemError, Selector};
}

/// Sigil's admin API (local socket only).
pub mod admin_api {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("sigil.admin.v1");
    pub use crate::types::{Entry, ItemError, Selector};
}

pub mod attestation;
pub mod bundle;
#[cfg(feature = "clock")]
pub mod clock;
#[cfg(feature = "daemon")]
pub mod daemon;

/// CSRs an agent sends in one `SignSvids` call, and so the least a server's
/// `limits.max_csrs_per_request` may be (a lower one would refuse every full
/// batch). One constant for both sides of the wire.
pub const CSR_BATCH: usize = 500;
/// The encoded `FileDescriptorSet` of every .proto above, so tests can
/// enumerate the generated services and methods.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sigil_descriptor.bin"));

/// The encoded `FileDescriptorSet` of the Workload API alone (and what it
/// imports), which gRPC reflection on the agent's socket serves.
pub const WORKLOAD_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/workload_descriptor.bin"));

pub mod duration;
pub mod endpoint;
#[cfg(feature = "health")]
pub mod health;
pub mod jwt;
#[cfg(feature = "net")]
pub mod net;
pub mod pem;
pub mod selector;
pub mod spiffe_id;
pub mod svid_chain;
pub mod svid_profile;
#[cfg(any(test, feature = "test-pki"))]
pub mod test_pki;
pub mod tls;
#[cfg(feature = "daemon")]
pub mod unix_h2;

pub use bundle::{JwksError, JwtKey, SpiffeBundle};
pub use duration::{DurationError, format_duration, parse_duration};
pub use selector::{Selector, SelectorError};
pub use spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};
pub use svid_profile::{CaInfo, LeafInfo, ProfileError, check_leaf, check_signing_cert};
pub use tls::{Authorizer, SpiffeClientVerifier, SpiffeServerVerifier, TrustRoots};
