//! The conformance suite every [`Store`] backend must pass. It is ordinary
//! (not `cfg(test)`) code so that any backend, in this crate or another, can
//! run it; like a test, it panics with a message naming what went wrong.
//!
//! A backend provides a [`StoreFactory`]: each call to
//! [`StoreFactory::fresh`] returns a new, empty [`StoreLocation`] (a temp
//! directory, a fresh database schema), and [`StoreLocation::open`] opens
//! the store kept there. Opening the same location again, after the
//! previous store was dropped, must give back the same persistent data; the
//! reopen checks rely on that.
//!
//! Every check is a `pub fn(&dyn StoreLocation)` run on a fresh location
//! and listed in [`CHECKS`]. Run them all with [`run_all`], or get one
//! `#[test]` per check (so failures are named) with
//! [`store_conformance_tests!`](crate::store_conformance_tests):
//!
//! ```ignore
//! sigil_server::store_conformance_tests!(MyFactory);
//! ```
//!
//! This file holds the runner and the macro; the checks live one file per
//! kind of record (entries, events, reopen, tokens, agents, node bans, bundles,
//! federations, journal, concurrency), their fixtures in `fixtures`.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Debug;
use std::sync::Barrier;

use sigil_proto::{Selector, SpiffeId, TrustDomain};

use super::{
    AttestedAgent, BundleRecord, CaJournal, CaSlot, JoinTokenRecord, JwtAuthority, JwtSlot, SlotId,
    SlotState, Store, StoreError, StoreResult,
};
use crate::entry::{Entry, EntryEvent, EntryFilter, EntrySpec};

/// One place where a store keeps its data. Dropping it may delete the data.
pub trait StoreLocation {
    /// Opens the store kept here. Called again after the previous store
    /// was dropped, it must return a store with the same persistent data.
    /// Panics if the store cannot be opened.
    fn open(&self) -> Box<dyn Store>;
}

/// Makes fresh, empty locations for a backend under test.
pub trait StoreFactory {
    /// A new location holding an empty store.
    fn fresh(&self) -> Box<dyn StoreLocation>;
}

/// A conformance check, run on a fresh location.
pub type Check = fn(&dyn StoreLocation);

/// Every check, by name. [`store_conformance_tests!`](crate::store_conformance_tests)
/// makes one test per entry and a test that it covers this whole list.
pub const CHECKS: &[(&str, Check)] = &[
    ("entry_crud", entry_crud),
    ("entry_ids_unique", entry_ids_unique),
    ("entry_revisions", entry_revisions),
    ("entry_update_keeps_identity", entry_update_keeps_identity),
    ("entry_duplicates_refused", entry_duplicates_refused),
    ("entry_unknown_id", entry_unknown_id),
    ("entry_batch_create", entry_batch_create),
    ("entry_list_filters", entry_list_filters),
    ("entry_events", entry_events),
    ("entry_event_pruning", entry_event_pruning),
    ("entry_event_pages_and_moves", entry_event_pages_and_moves),
    ("survives_reopen", survives_reopen),
    ("join_tokens", join_tokens),
    ("agents", agents),
    (
        "item1_agent_swap_never_undoes_a_ban",
        item1_agent_swap_never_undoes_a_ban,
    ),
    (
        "i21_8_node_bans_persist_and_are_checked_atomically",
        i21_8_node_bans_persist_and_are_checked_atomically,
    ),
    ("bundles", bundles),
    ("federations", federations),
    (
        "item4_bundle_sequence_survives_delete_and_reopen",
        item4_bundle_sequence_survives_delete_and_reopen,
    ),
    ("ca_journal", ca_journal),
    ("concurrent_entry_changes", concurrent_entry_changes),
    ("concurrent_duplicate_creates", concurrent_duplicate_creates),
    ("concurrent_token_consume", concurrent_token_consume),
    ("concurrent_ca_journal_writes", concurrent_ca_journal_writes),
    (
        "i16_remote_sequence_survives_reopen",
        i16_remote_sequence_survives_reopen,
    ),
    // ---- servers and the union bundle (issue 17) ----
    (
        "i17_3_server_records_compare_and_swap",
        i17_3_server_records_compare_and_swap,
    ),
    (
        "i17_3_bundle_compare_and_swap",
        i17_3_bundle_compare_and_swap,
    ),
    (
        "i17_3_concurrent_union_bundle_loses_no_update",
        i17_3_concurrent_union_bundle_loses_no_update,
    ),
];

/// Runs every check in [`CHECKS`], each on a fresh location from `factory`.
pub fn run_all(factory: &dyn StoreFactory) {
    for (name, check) in CHECKS {
        eprintln!("store conformance: {name}");
        let location = factory.fresh();
        check(&*location);
    }
}

/// Expands to one `#[test]` per conformance check, each on a fresh location
/// from the factory expression, plus a test that every entry of
/// [`CHECKS`](crate::store::conformance::CHECKS) has its test. Use it inside
/// a `#[cfg(test)] mod`.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(
            @each $factory;
            entry_crud,
            entry_ids_unique,
            entry_revisions,
            entry_update_keeps_identity,
            entry_duplicates_refused,
            entry_unknown_id,
            entry_batch_create,
            entry_list_filters,
            entry_events,
            entry_event_pruning,
            entry_event_pages_and_moves,
            survives_reopen,
            join_tokens,
            agents,
            item1_agent_swap_never_undoes_a_ban,
            i21_8_node_bans_persist_and_are_checked_atomically,
            bundles,
            federations,
            item4_bundle_sequence_survives_delete_and_reopen,
            ca_journal,
            concurrent_entry_changes,
            concurrent_duplicate_creates,
            concurrent_token_consume,
            concurrent_ca_journal_writes,
            i16_remote_sequence_survives_reopen,
            i17_3_server_records_compare_and_swap,
            i17_3_bundle_compare_and_swap,
            i17_3_concurrent_union_bundle_loses_no_update,
        );
    };
    (@each $factory:expr; $($check:ident),+ $(,)?) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;

            $(
                #[test]
                fn $check() {
                    let factory = $factory;
                    let location =
                        $crate::store::conformance::StoreFactory::fresh(&factory);
                    $crate::store::conformance::$check(&*location);
                }
            )+

            #[test]
            fn covers_every_check() {
                let tested = [$(stringify!($check)),+];
                let listed: ::std::vec::Vec<&str> = $crate::store::conformance::CHECKS
                    .iter()
                    .map(|(name, _)| *name)
                    .collect();
                assert_eq!(tested.as_slice(), listed.as_slice());
            }
        }
    };
}

mod agents;
mod bundles;
mod concurrency;
mod entries;
mod events;
mod federations;
mod fixtures;
mod journal;
mod node_bans;
mod remote_sequence;
mod reopen;
mod servers;
mod tokens;

pub use agents::*;
pub use bundles::*;
pub use concurrency::*;
pub use entries::*;
pub use events::*;
pub use federations::*;
pub use fixtures::{TRUST_DOMAIN, entry_spec, spiffe_id};
pub use journal::*;
pub use node_bans::*;
pub use remote_sequence::*;
pub use reopen::*;
pub use servers::*;
pub use tokens::*;
