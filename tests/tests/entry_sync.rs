//! Entry sync against a real `sigil-server` (issue 14 items 6 and 7): a
//! resume tells the agent to drop every entry it may no longer have (moved
//! to another parent, deleted, expired), an open stream drops an entry when
//! it expires, the event log and expired join tokens are pruned on a
//! schedule, a resume from before the retained log gets the full set, and a
//! resume far behind is answered with the full set instead of every event.

use std::time::{Duration, Instant};

use sigil_proto::agent_api as pb;
use sigil_server::agent_api::sync::{EVENT_PAGE, RESUME_MAX_EVENTS};
use sigil_server::store::sled::SledStore;
use sigil_server::store::{Store, StoreError};
use sigil_tests::agent_client::{AgentIdentity, key_and_csr};
use sigil_tests::sync_stream::{SyncStream, attested_agent, create_entries};
use sigil_tests::{ServerOptions, TestServer};

/// How long a pushed change or a short resume may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(10);

/// A server whose event log keeps two seconds (pruned every second).
fn short_retention_server() -> TestServer {
    TestServer::start(ServerOptions {
        extra: "\n[limits]\nentry_event_retention = \"2s\"\n".into(),
        ..ServerOptions::default()
    })
    .unwrap()
}

/// The agent's full set: its revision and entry ids.
async fn full_set(s: &TestServer, who: &AgentIdentity) -> (u64, Vec<String>) {
    let mut st = SyncStream::open(s, who, 0).await;
    assert!(
        st.wait_for(ARRIVAL, |st| st.full_revision().is_some())
            .await,
        "no full set: {:?}",
        st.got
    );
    let mut ids = st.page_ids();
    ids.sort();
    (st.full_revision().unwrap_or_default(), ids)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn unix_now() -> i64 {
    sigil_proto::clock::unix_seconds(std::time::SystemTime::now())
}

/// Waits (bounded) until the server logs a pruning of the event log up to
/// `upto` or beyond.
fn wait_pruned(s: &TestServer, upto: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = s.log_text();
        let pruned = log
            .split("events_pruned_upto=")
            .skip(1)
            .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .filter_map(|n| n.parse::<u64>().ok())
            .max();
        if pruned.is_some_and(|p| p >= upto) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the event log was not pruned up to {upto} within 30s (last: {pruned:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn item6_moved_entry_is_deleted_on_resume() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = attested_agent(&s).await;
    let b = attested_agent(&s).await;
    let ids = create_entries(&s, &a.id, "a", 3, None);
    let (moved, deleted, kept) = (&ids[0], &ids[1], &ids[2]);
    let (since, held) = full_set(&s, &a).await;
    assert_eq!(held, sorted(ids.clone()));

    // While A is offline: one entry moves to B, one is deleted, B gets one.
    s.cli_ok(&["entry", "update", "--entry-id", moved, "--parent-id", &b.id]);
    s.cli_ok(&["entry", "delete", "--entry-id", deleted]);
    let bs = create_entries(&s, &b.id, "b", 1, None);

    let mut st = SyncStream::open(&s, &a, since).await;
    let both = sorted(vec![moved.clone(), deleted.clone()]);
    assert!(
        st.wait_for(ARRIVAL, |st| sorted(st.deleted()) == both)
            .await,
        "A must be told to drop the moved ({moved}) and the deleted ({deleted}) entry; deleted: {:?}",
        st.deleted()
    );
    assert_eq!(st.pages(), 0, "a resume, not the full set");
    assert!(st.upserted().is_empty(), "{:?}", st.got);
    assert!(!st.deleted().contains(kept));

    // B, resuming from the same revision, gets the moved entry and its own.
    let mut st = SyncStream::open(&s, &b, since).await;
    let want = sorted(vec![moved.clone(), bs[0].clone()]);
    assert!(
        st.wait_for(ARRIVAL, |st| sorted(st.upserted()) == want)
            .await,
        "{:?}",
        st.got
    );
    assert!(st.deleted().is_empty(), "{:?}", st.got);
}

#[tokio::test(flavor = "multi_thread")]
async fn item6_expired_entry_is_deleted() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = attested_agent(&s).await;
    let expires_at = unix_now() + 4;
    let expiring = create_entries(&s, &a.id, "exp", 1, Some(expires_at)).remove(0);
    let kept = create_entries(&s, &a.id, "kept", 1, None).remove(0);

    // An agent online at the expiry is told at once.
    let mut open = SyncStream::open(&s, &a, 0).await;
    assert!(
        open.wait_for(ARRIVAL, |st| st.full_revision().is_some())
            .await
    );
    let since = open.full_revision().unwrap_or_default();
    assert_eq!(
        sorted(open.page_ids()),
        sorted(vec![expiring.clone(), kept.clone()])
    );
    open.clear();
    assert!(
        open.wait_for(Duration::from_secs(15), |st| st.deleted()
            == vec![expiring.clone()])
            .await,
        "the open stream must send Deleted when the entry expires: {:?}",
        open.got
    );
    assert!(unix_now() >= expires_at, "not before it expired");

    // An agent offline across the expiry is told on resume.
    let mut st = SyncStream::open(&s, &a, since).await;
    assert!(
        st.wait_for(ARRIVAL, |st| st.deleted() == vec![expiring.clone()])
            .await,
        "a resume after the expiry must send Deleted: {:?}",
        st.got
    );
    // Never sent again in a full set, and never signed.
    let (_, held) = full_set(&s, &a).await;
    assert_eq!(held, vec![kept.clone()]);
    let mut c = s.agent_client(Some(&a)).await.unwrap();
    let results = c
        .sign_svids(pb::SignSvidsRequest {
            requests: vec![pb::SvidRequest {
                entry_id: expiring.clone(),
                csr: key_and_csr().1,
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(
        matches!(results[0].result, Some(pb::svid_result::Result::Error(_))),
        "an expired entry was signed: {results:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn item7_events_and_join_tokens_are_pruned_on_schedule() {
    let mut s = short_retention_server();
    let a = attested_agent(&s).await;
    create_entries(&s, &a.id, "w", 3, None);
    let expiring = s.cli_json(&["token", "generate", "--ttl", "1s"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let lasting = s.cli_json(&["token", "generate"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (revision, _) = full_set(&s, &a).await;
    wait_pruned(&s, revision);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s.log_text().contains("join_tokens_pruned=1") {
        assert!(
            Instant::now() < deadline,
            "the expired join token was not pruned within 30s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    s.stop();

    let store = SledStore::open(&s.data_dir.join("store")).unwrap();
    assert_eq!(
        store.entry_events_since(0).unwrap(),
        None,
        "events older than the retention are gone"
    );
    let now = unix_now();
    let gone = store.consume_join_token(&sha256_hex(&expiring), now);
    assert!(
        matches!(gone, Err(StoreError::NotFound { .. })),
        "the expired join token must have been removed: {gone:?}"
    );
    assert!(
        store.consume_join_token(&sha256_hex(&lasting), now).is_ok(),
        "an unexpired token stays"
    );
}

fn sha256_hex(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn item7_resume_older_than_the_log_gets_a_full_sync() {
    let s = short_retention_server();
    let a = attested_agent(&s).await;
    let ids = create_entries(&s, &a.id, "w", 2, None);
    let (since, _) = full_set(&s, &a).await;
    s.cli_ok(&["entry", "delete", "--entry-id", &ids[0]]);
    let added = create_entries(&s, &a.id, "x", 1, None);
    let (now, _) = full_set(&s, &a).await;
    wait_pruned(&s, now);

    for from in [since, now + 1000] {
        let mut st = SyncStream::open(&s, &a, from).await;
        assert!(
            st.wait_for(ARRIVAL, |st| st.full_revision().is_some())
                .await,
            "resume from {from} must get the full set: {:?}",
            st.got
        );
        assert_eq!(
            sorted(st.page_ids()),
            sorted(vec![ids[1].clone(), added[0].clone()])
        );
        assert!(st.deleted().is_empty() && st.upserted().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn item7_resume_is_bounded() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = attested_agent(&s).await;
    // Revision 0 asks for the full set: start from one entry.
    let seed = create_entries(&s, &a.id, "seed", 1, None);
    let (since, held) = full_set(&s, &a).await;
    assert_eq!(held, seed);

    // More than one page of events, within the bound: changes, in order.
    let n = EVENT_PAGE + 100;
    let first = create_entries(&s, &a.id, "p", n, None);
    let mut st = SyncStream::open(&s, &a, since).await;
    assert!(
        st.wait_for(ARRIVAL, |st| st.upserted().len() >= n).await,
        "resume over {n} events: {} changes",
        st.upserted().len()
    );
    assert_eq!(sorted(st.upserted()), sorted(first.clone()));
    assert_eq!(st.pages(), 0);

    // More events than a resume reads: the full set, in pages.
    let more = RESUME_MAX_EVENTS as usize + 1 - n;
    let mut all = seed;
    all.extend(first);
    all.extend(create_entries(&s, &a.id, "q", more / 2, None));
    all.extend(create_entries(&s, &a.id, "r", more - more / 2, None));
    let mut st = SyncStream::open(&s, &a, since).await;
    assert!(
        st.wait_for(Duration::from_secs(60), |st| st.full_revision().is_some())
            .await,
        "a resume {} events behind must get the full set, got {} changes",
        RESUME_MAX_EVENTS + 1,
        st.upserted().len()
    );
    assert!(st.pages() > 1, "paged");
    assert_eq!(sorted(st.page_ids()), sorted(all));
    assert!(st.upserted().is_empty() && st.deleted().is_empty());
}
