//! The JWT keys a validator trusts, prepared once ([`JwtKeySet`]): per trust
//! domain, each key parsed into a ready [`VerifyKey`] by `kid`. A holder
//! (the agent's Workload API) builds the set when its bundles change and
//! validates every token against it with [`super::validate_with`], so no
//! token pays for parsing a bundle key.

use std::collections::HashMap;
use std::sync::Arc;

use super::verify::VerifyKey;
use crate::bundle::{JwtKey, SpiffeBundle};
use crate::spiffe_id::TrustDomain;

/// One trust domain's JWT keys, ready to verify, by `kid`.
#[derive(Debug, Clone, Default)]
pub struct JwtKeySet {
    keys: HashMap<String, Arc<VerifyKey>>,
}

impl JwtKeySet {
    /// Prepares `keys` (a `kid` named twice keeps the first key, as a
    /// lookup in the bundle's order finds it).
    pub fn new(keys: &[JwtKey]) -> JwtKeySet {
        let mut out = HashMap::with_capacity(keys.len());
        for k in keys {
            out.entry(k.kid.clone())
                .or_insert_with(|| Arc::new(VerifyKey::new(&k.kid, &k.spki_der)));
        }
        JwtKeySet { keys: out }
    }

    /// The key named `kid`.
    pub fn get(&self, kid: &str) -> Option<&Arc<VerifyKey>> {
        self.keys.get(kid)
    }
}

/// The prepared JWT keys of several trust domains.
#[derive(Debug, Clone, Default)]
pub struct JwtKeyRing {
    by_td: HashMap<TrustDomain, JwtKeySet>,
}

impl JwtKeyRing {
    /// Prepares the JWT keys of `bundles` (a trust domain named twice keeps
    /// its first bundle).
    pub fn of_bundles<'a>(bundles: impl IntoIterator<Item = &'a SpiffeBundle>) -> JwtKeyRing {
        let mut ring = JwtKeyRing::default();
        for b in bundles {
            ring.insert(&b.trust_domain, &b.jwt_authorities);
        }
        ring
    }

    /// Adds `td`'s `keys` unless `td` already has a set.
    pub fn insert(&mut self, td: &TrustDomain, keys: &[JwtKey]) {
        self.by_td
            .entry(td.clone())
            .or_insert_with(|| JwtKeySet::new(keys));
    }

    /// The key set of `td`.
    pub fn get(&self, td: &TrustDomain) -> Option<&JwtKeySet> {
        self.by_td.get(td)
    }
}
