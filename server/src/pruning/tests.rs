//! Unit tests of the pruner over a real sled store, driven by a
//! [`ManualClock`]: events leave the log once one retention has passed
//! since a round saw them, never earlier; expired join tokens leave at the
//! next round.

use std::sync::Arc;
use std::time::Duration;

use sigil_proto::clock::{Clock, ManualClock};

use super::*;
use crate::store::conformance::entry_spec;
use crate::store::sled::SledStore;
use crate::store::{JoinTokenRecord, StoreError};

fn token(hash: &str, expires_at: i64) -> JoinTokenRecord {
    JoinTokenRecord {
        token_hash: hash.repeat(32),
        expires_at,
        created_at: 0,
    }
}

#[test]
fn item7_pruner_keeps_one_retention_of_events() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let clock = ManualClock::at_unix(1_700_000_000);
    let pruner = Pruner::new(store.clone(), Duration::from_secs(60));
    let create = |i: u32| {
        store
            .create_entry(entry_spec(&format!("/w/{i}"), "/p", &["t:1"]), 0)
            .unwrap();
    };
    for i in 0..3 {
        create(i);
    }
    let now = clock.now_unix();
    store.create_join_token(token("aa", now + 10)).unwrap();
    store.create_join_token(token("bb", now + 1000)).unwrap();

    assert_eq!(pruner.round(now).unwrap(), Pruned::default());
    clock.advance(Duration::from_secs(30));
    for i in 3..5 {
        create(i);
    }
    let p = pruner.round(clock.now_unix()).unwrap();
    assert_eq!(p.events_upto, 0, "nothing is a retention old yet");
    assert_eq!(p.join_tokens, 1, "the expired token goes at once");
    assert!(matches!(
        store.consume_join_token(&"aa".repeat(32), clock.now_unix()),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store.entry_events_since(0).unwrap().map(|v| v.len()),
        Some(5)
    );

    clock.advance(Duration::from_secs(30));
    let p = pruner.round(clock.now_unix()).unwrap();
    assert_eq!(
        p.events_upto, 3,
        "what the first round saw, a retention ago"
    );
    assert_eq!(store.entry_events_since(2).unwrap(), None);
    assert_eq!(
        store.entry_events_since(3).unwrap().map(|v| v.len()),
        Some(2)
    );

    clock.advance(Duration::from_secs(30));
    let p = pruner.round(clock.now_unix()).unwrap();
    assert_eq!(p.events_upto, 5);
    assert_eq!(store.entry_events_since(5).unwrap(), Some(vec![]));
    assert!(
        store
            .consume_join_token(&"bb".repeat(32), clock.now_unix())
            .is_ok(),
        "an unexpired token stays"
    );
}

#[test]
fn the_interval_is_a_quarter_of_the_retention_within_bounds() {
    assert_eq!(interval(Duration::from_secs(2)), Duration::from_secs(1));
    assert_eq!(interval(Duration::from_secs(120)), Duration::from_secs(30));
    assert_eq!(
        interval(Duration::from_secs(86_400)),
        Duration::from_secs(600)
    );
}
