//! The foreign bundles one sync stream sends (issue 16): exactly those of
//! the trust domains the agent's entries federate with. [`Federated`]
//! tracks each held entry's `federates_with` and the bundle sequence last
//! sent per trust domain, and [`Federated::diff`] says what to send: a
//! bundle that is new or changed, a removal for a trust domain no entry
//! federates with any more or whose bundle was deleted. After a full set
//! or a resume, [`Federated::held`] is sent as the set the agent keeps: a
//! resumed stream starts with nothing recorded as sent, so without it a
//! bundle deleted while the agent was away would stay with the agent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use sigil_proto::TrustDomain;

use crate::entry::Entry;
use crate::federation::foreign::ForeignBundles;
use crate::store::BundleRecord;

/// One federated-bundle message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Send {
    Bundle(Arc<BundleRecord>),
    Removed(TrustDomain),
}

#[derive(Debug, Default)]
pub struct Federated {
    /// Held entry id → the trust domains it federates with (non-empty).
    by_entry: HashMap<String, Vec<TrustDomain>>,
    /// Trust domain → sequence of the bundle the agent was sent.
    sent: BTreeMap<TrustDomain, u64>,
}

impl Federated {
    /// The agent now holds exactly `entries`.
    pub fn set_view(&mut self, entries: &[Arc<Entry>]) {
        self.by_entry.clear();
        for e in entries {
            self.upsert(e);
        }
    }

    pub fn upsert(&mut self, e: &Entry) {
        if e.spec.federates_with.is_empty() {
            self.by_entry.remove(&e.id);
        } else {
            self.by_entry
                .insert(e.id.clone(), e.spec.federates_with.clone());
        }
    }

    pub fn remove(&mut self, id: &str) {
        self.by_entry.remove(id);
    }

    /// A full set starts over: the agent drops what it is not sent again.
    pub fn forget_sent(&mut self) {
        self.sent.clear();
    }

    /// The foreign trust domains the agent was sent and holds now.
    pub fn held(&self) -> Vec<String> {
        self.sent.keys().map(ToString::to_string).collect()
    }

    fn wanted(&self) -> BTreeSet<TrustDomain> {
        self.by_entry.values().flatten().cloned().collect()
    }

    /// What to send now so the agent holds the current bundle of each
    /// wanted trust domain and no other; records it as sent.
    pub fn diff(&mut self, foreign: &ForeignBundles) -> Vec<Send> {
        let wanted = self.wanted();
        let mut out = Vec::new();
        let gone: Vec<TrustDomain> = self
            .sent
            .keys()
            .filter(|td| !wanted.contains(*td))
            .cloned()
            .collect();
        for td in gone {
            self.sent.remove(&td);
            out.push(Send::Removed(td));
        }
        for td in wanted {
            match foreign.get(&td) {
                Some(b) if self.sent.get(&td) != Some(&b.sequence) => {
                    self.sent.insert(td, b.sequence);
                    out.push(Send::Bundle(b));
                }
                Some(_) => {}
                None => {
                    if self.sent.remove(&td).is_some() {
                        out.push(Send::Removed(td));
                    }
                }
            }
        }
        out
    }
}
