//! The foreign trust domains' bundles the agent holds (federation, issue
//! 16): exactly those the server sends because an entry of this agent
//! federates with them. A bundle is replaced when the server sends a new
//! one, dropped on the server's removal or when a full set leaves it out,
//! and never mixed up with the agent's own trust domain. An empty bundle
//! ("all revoked") is held as such: workloads then validate nothing of that
//! trust domain. Which workload sees which foreign bundle is decided when
//! serving (each SVID's entry names its federated trust domains).

use std::collections::{BTreeMap, BTreeSet};

use sigil_proto::TrustDomain;
use tracing::{info, warn};

use super::{ForeignBundle, TrustBundle};

/// The held foreign bundles, by trust domain.
#[derive(Debug, Default)]
pub(super) struct Federated {
    bundles: BTreeMap<TrustDomain, TrustBundle>,
}

impl Federated {
    /// Applies a new or changed foreign bundle; `own` is the agent's trust
    /// domain, whose bundle never comes this way.
    pub(super) fn set(&mut self, own: &TrustDomain, f: ForeignBundle) {
        if &f.trust_domain == own {
            warn!(trust_domain = %f.trust_domain, "federated bundle for the agent's own trust domain ignored: that bundle only comes as the own bundle");
            return;
        }
        if self.bundles.get(&f.trust_domain) == Some(&f.bundle) {
            return;
        }
        if f.bundle.x509_authorities.is_empty() {
            warn!(trust_domain = %f.trust_domain, sequence = f.bundle.sequence, "federated trust domain published an empty bundle: none of its SVIDs validates until it publishes CAs again");
        } else {
            info!(trust_domain = %f.trust_domain, sequence = f.bundle.sequence, cas = f.bundle.x509_authorities.len(), "federated bundle updated");
        }
        self.bundles.insert(f.trust_domain, f.bundle);
    }

    /// Drops the bundle of `td`.
    pub(super) fn remove(&mut self, td: &TrustDomain) {
        if self.bundles.remove(td).is_some() {
            info!(trust_domain = %td, "federated bundle dropped: no entry of this agent federates with it any more");
        }
    }

    /// Keeps only the bundles of `kept` (the trust domains a full set sent).
    pub(super) fn retain(&mut self, kept: &BTreeSet<TrustDomain>) {
        self.bundles.retain(|td, _| {
            let keep = kept.contains(td);
            if !keep {
                info!(trust_domain = %td, "federated bundle dropped: the server's full set no longer sends it");
            }
            keep
        });
    }

    /// What workloads are served: each trust domain's CA certificates (DER).
    pub(super) fn x509(&self) -> BTreeMap<TrustDomain, Vec<Vec<u8>>> {
        self.bundles
            .iter()
            .map(|(td, b)| (td.clone(), b.x509_authorities.clone()))
            .collect()
    }

    /// Each trust domain's JWT-SVID signing keys.
    pub(super) fn jwt(&self) -> BTreeMap<TrustDomain, Vec<sigil_proto::JwtKey>> {
        self.bundles
            .iter()
            .map(|(td, b)| (td.clone(), b.jwt_authorities.clone()))
            .collect()
    }
}
