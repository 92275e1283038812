//! Tests of the sled backend itself: the conformance suite, plus what is
//! particular to sled (the bulk-load row format, lock and open errors).

use std::path::Path;

use super::codec::PARALLEL_DECODE_MIN;
use super::*;
use crate::store::conformance::{StoreFactory, StoreLocation};

/// The bulk-load row reads exactly what `Entry` writes, every field.
#[test]
fn entry_row_decodes_what_entry_encodes() {
    let entry = Entry {
        id: "0123456789abcdef0123456789abcdef".into(),
        spec: EntrySpec {
            spiffe_id: SpiffeId::parse("spiffe://example.org/w").unwrap(),
            parent_id: SpiffeId::parse("spiffe://example.org/p").unwrap(),
            selectors: vec![sigil_proto::Selector::parse("unix:uid:1").unwrap()],
            x509_svid_ttl: 60,
            jwt_svid_ttl: 30,
            dns_names: vec!["w.example.org".into()],
            federates_with: vec![TrustDomain::parse("other.org").unwrap()],
            hint: "h".into(),
            admin: true,
            downstream: true,
            expires_at: Some(99),
        },
        revision: 7,
        created_at: 5,
    };
    let json = serde_json::to_vec(&entry).unwrap();
    let row: EntryRow = serde_json::from_slice(&json).unwrap();
    assert_eq!(Entry::from(row), entry);
    let many: Vec<(sled::IVec, sled::IVec)> = (0..PARALLEL_DECODE_MIN + 3)
        .map(|i| (i.to_string().as_bytes().into(), json.as_slice().into()))
        .collect();
    let decoded = decode_all::<EntryRow>(T_ENTRIES, &many).unwrap();
    assert_eq!(
        decoded.len(),
        many.len(),
        "a parallel decode keeps every record"
    );
}

/// A fresh temporary directory per location; removed when dropped.
struct SledLocation {
    dir: tempfile::TempDir,
}

impl StoreLocation for SledLocation {
    fn open(&self) -> Box<dyn Store> {
        Box::new(SledStore::open(self.dir.path()).expect("open sled store in temp dir"))
    }
}

struct SledFactory;

impl StoreFactory for SledFactory {
    fn fresh(&self) -> Box<dyn StoreLocation> {
        Box::new(SledLocation {
            dir: tempfile::tempdir().expect("create temp dir"),
        })
    }
}

crate::store_conformance_tests!(SledFactory);

#[test]
fn locked_directory_is_reported_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let first = SledStore::open(dir.path()).unwrap();
    let err = SledStore::open(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Io(_)), "{err:?}");
    assert!(msg.contains("in use by another process"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    drop(first);
    // Released on drop: the same directory opens again.
    SledStore::open(dir.path()).unwrap();
}

#[test]
fn regular_file_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"hello").unwrap();
    let err = SledStore::open(&file).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Io(_)), "{err:?}");
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(msg.contains("not a directory"), "{msg}");
}

#[test]
fn garbage_database_is_refused_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("conf"), b"\xff\xfe garbage").unwrap();
    std::fs::write(dir.path().join("db"), vec![0xa5u8; 4096]).unwrap();
    let err = SledStore::open(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
}

#[test]
fn corrupt_record_names_tree_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    store.entries.insert("abc", &b"{not json"[..]).unwrap();
    let err = store.get_entry("abc").unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("entries") && msg.contains("abc"), "{msg}");
    store.meta.insert(K_REVISION, &b"\x01"[..]).unwrap();
    let err = store.entries_revision().unwrap_err();
    assert!(err.to_string().contains(K_REVISION), "{err}");
}

#[test]
fn other_layout_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    store
        .meta
        .insert(K_FORMAT_VERSION, &99u64.to_be_bytes())
        .unwrap();
    drop(store);
    let err = SledStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("version 99"), "{err}");
}

#[test]
fn debug_shows_only_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let shown = format!("{store:?}");
    assert!(shown.starts_with("SledStore { path: "), "{shown}");
    assert!(shown.contains(&format!("{:?}", dir.path())), "{shown}");
}

const CHILD_ENV: &str = "SIGIL_SLED_DURABILITY_CHILD";

/// Write methods checked by [`acknowledged_writes_survive_process_exit`].
const DURABLE_OPS: &[&str] = &[
    "create_entry",
    "update_entry",
    "delete_entry",
    "prune_entry_events",
    "create_join_token",
    "consume_join_token",
    "prune_join_tokens",
    "put_agent",
    "delete_agent",
    "put_bundle",
    "delete_bundle",
    "put_ca_journal",
];

fn agent_id() -> SpiffeId {
    crate::store::conformance::spiffe_id("/sigil/agent/join_token/x")
}

/// A join-token agent record named `id`.
fn test_agent(id: SpiffeId) -> AttestedAgent {
    AttestedAgent {
        spiffe_id: id,
        attestor: "join_token".to_string(),
        selectors: Vec::new(),
        serial: "01".to_string(),
        previous_serial: None,
        expires_at: 10,
        ca_serial: None,
        banned: false,
        ban_rules: vec![],
        attested_at: 1,
        updated_at: 1,
    }
}

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn bundle(cert: &[u8]) -> BundleRecord {
    BundleRecord {
        trust_domain: td(),
        x509_authorities: vec![cert.to_vec()],
        jwt_authorities: Vec::new(),
        tainted_key_ids: Vec::new(),
        tainted_jwt_key_ids: Vec::new(),
        sequence: 0,
    }
}

fn token(expires_at: i64) -> JoinTokenRecord {
    JoinTokenRecord {
        token_hash: "ab".repeat(32),
        expires_at,
        created_at: 1,
    }
}

/// In the child: prepares the store, then calls `op` as the very last
/// write before the process exits.
fn durable_write(store: &SledStore, op: &str) {
    let spec = |sel: &str| crate::store::conformance::entry_spec("/w", "/agent", &[sel]);
    let agent = test_agent(agent_id());
    let entry = match op {
        "create_entry" | "put_agent" | "put_bundle" | "put_ca_journal" | "create_join_token" => {
            None
        }
        _ => Some(store.create_entry(spec("t:1"), 1).unwrap()),
    };
    let id = entry.map(|e| e.id).unwrap_or_default();
    match op {
        "create_entry" => drop(store.create_entry(spec("t:1"), 1).unwrap()),
        "update_entry" => drop(store.update_entry(&id, spec("t:2")).unwrap()),
        "delete_entry" => drop(store.delete_entry(&id).unwrap()),
        "prune_entry_events" => store.prune_entry_events(1).unwrap(),
        "create_join_token" => store.create_join_token(token(100)).unwrap(),
        "consume_join_token" => {
            store.create_join_token(token(100)).unwrap();
            store.consume_join_token(&"ab".repeat(32), 2).unwrap();
        }
        "prune_join_tokens" => {
            store.create_join_token(token(5)).unwrap();
            assert_eq!(store.prune_join_tokens(10).unwrap(), 1);
        }
        "put_agent" => store.put_agent(&agent).unwrap(),
        "delete_agent" => {
            store.put_agent(&agent).unwrap();
            store.delete_agent(&agent.spiffe_id).unwrap();
        }
        "put_bundle" => drop(store.put_bundle(bundle(b"ca1")).unwrap()),
        "delete_bundle" => {
            store.put_bundle(bundle(b"ca1")).unwrap();
            store.delete_bundle(&td()).unwrap();
        }
        "put_ca_journal" => drop(store.put_ca_journal(&CaJournal::default()).unwrap()),
        other => panic!("unknown op {other}"),
    }
}

/// In the parent, after the child exited: the last write is there.
fn check_durable(store: &SledStore, op: &str) {
    let revision = store.entries_revision().unwrap();
    let token_left = store.consume_join_token(&"ab".repeat(32), 2);
    match op {
        "create_entry" => assert_eq!((revision, store.count_entries().unwrap()), (1, 1)),
        "update_entry" => {
            assert_eq!(revision, 2);
            let all = store.list_entries(&EntryFilter::default()).unwrap();
            assert_eq!(all[0].spec.selectors[0].to_string(), "t:2");
        }
        "delete_entry" => assert_eq!((revision, store.count_entries().unwrap()), (2, 0)),
        "prune_entry_events" => assert_eq!(store.entry_events_since(0).unwrap(), None),
        "create_join_token" => assert!(token_left.is_ok(), "{token_left:?}"),
        "consume_join_token" | "prune_join_tokens" => assert!(
            matches!(token_left, Err(StoreError::NotFound { .. })),
            "{token_left:?}"
        ),
        "put_agent" => assert!(store.get_agent(&agent_id()).unwrap().is_some()),
        "delete_agent" => assert_eq!(store.get_agent(&agent_id()).unwrap(), None),
        "put_bundle" => assert!(store.get_bundle(&td()).unwrap().is_some()),
        "delete_bundle" => assert_eq!(store.get_bundle(&td()).unwrap(), None),
        "put_ca_journal" => assert_eq!(store.get_ca_journal().unwrap().version, 1),
        other => panic!("unknown op {other}"),
    }
}

/// Each write method, as the last write of a child process that then
/// exits without dropping the store (so sled's flush on drop never
/// runs): what it acknowledged must be on disk.
#[test]
fn acknowledged_writes_survive_process_exit() {
    if let Ok(job) = std::env::var(CHILD_ENV) {
        let (op, dir) = job.split_once(':').unwrap();
        let store = SledStore::open(Path::new(dir)).unwrap();
        durable_write(&store, op);
        // Skip every destructor, including sled's final flush.
        std::process::exit(0);
    }
    let exe = std::env::current_exe().unwrap();
    for op in DURABLE_OPS {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(&exe)
            .args([
                "--exact",
                "store::sled::tests::acknowledged_writes_survive_process_exit",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{op}:{}", dir.path().display()))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{op}: child failed: {status}");
        let store = SledStore::open(dir.path()).unwrap();
        check_durable(&store, op);
    }
}

/// Makes the next flush of `store` fail.
fn fail_next_flush(store: &SledStore) {
    store
        .failing_flushes
        .store(1, std::sync::atomic::Ordering::SeqCst);
}

/// `result` is the error of a write whose flush failed, saying so.
#[track_caller]
fn not_stored<T: std::fmt::Debug>(result: StoreResult<T>, what: &str) {
    let err = result.expect_err(what);
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Io(_)), "{what}: {err:?}");
    assert!(msg.contains("was not stored"), "{what}: {msg}");
}

fn journal_with(serial: &str) -> CaJournal {
    CaJournal {
        version: 0,
        slots: vec![crate::ca::journal::CaSlot {
            slot: crate::ca::journal::SlotId::A,
            state: crate::ca::journal::SlotState::Active,
            key_id: "ca-a".to_string(),
            cert_chain: vec![serial.as_bytes().to_vec()],
            serial: serial.to_string(),
            not_before: 1,
            not_after: 2,
            tainted: false,
            tainted_at: None,
        }],
        jwt_slots: Vec::new(),
    }
}

/// Issue 14 item 11: a write whose flush fails is absent everywhere: not
/// listed, a retry does not meet it (no `AlreadyExists`), and it does not
/// appear after the store is reopened. For every kind of record.
#[test]
fn item11_failed_flush_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |sel: &str| crate::store::conformance::entry_spec("/w", "/agent", &[sel]);
    let all = EntryFilter::default;
    let agent = test_agent(agent_id());
    let made = {
        let store = SledStore::open(dir.path()).unwrap();

        // Entries: create, batch create, update, delete.
        fail_next_flush(&store);
        not_stored(store.create_entry(spec("t:1"), 1), "create_entry");
        assert_eq!(
            store.list_entries(&all()).unwrap(),
            vec![],
            "failed create listed"
        );
        assert_eq!(store.count_entries().unwrap(), 0);
        let made = store
            .create_entry(spec("t:1"), 1)
            .expect("a retry after the failed create is stored");
        fail_next_flush(&store);
        not_stored(
            store.create_entries(vec![spec("t:2"), spec("t:3")], 1),
            "create_entries",
        );
        fail_next_flush(&store);
        not_stored(store.update_entry(&made.id, spec("t:9")), "update_entry");
        fail_next_flush(&store);
        not_stored(store.delete_entry(&made.id), "delete_entry");
        let listed = store.list_entries(&all()).unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!((&listed[0].id, &listed[0].spec), (&made.id, &made.spec));
        // The event log has no gap: a resume from 0 still works.
        assert!(store.entry_events_since(0).unwrap().is_some());
        store
            .create_entry(spec("t:2"), 1)
            .expect("batch item retried");
        store.delete_entry(&listed[0].id).expect("delete retried");
        let made = store.create_entry(spec("t:1"), 1).unwrap();

        // Agents: put, swap, delete.
        fail_next_flush(&store);
        not_stored(store.put_agent(&agent), "put_agent");
        assert_eq!(store.get_agent(&agent.spiffe_id).unwrap(), None);
        store.put_agent(&agent).unwrap();
        let banned = AttestedAgent {
            banned: true,
            ..agent.clone()
        };
        fail_next_flush(&store);
        not_stored(store.swap_agent(Some(&agent), &banned), "swap_agent");
        fail_next_flush(&store);
        not_stored(store.delete_agent(&agent.spiffe_id), "delete_agent");
        assert_eq!(
            store.get_agent(&agent.spiffe_id).unwrap(),
            Some(agent.clone())
        );

        // Join tokens: create, consume.
        fail_next_flush(&store);
        not_stored(store.create_join_token(token(100)), "create_join_token");
        store.create_join_token(token(100)).expect("token retried");
        fail_next_flush(&store);
        not_stored(store.consume_join_token(&"ab".repeat(32), 2), "consume");

        // Bundles: put (new and changed), delete.
        fail_next_flush(&store);
        not_stored(store.put_bundle(bundle(b"ca1")), "put_bundle");
        assert_eq!(store.get_bundle(&td()).unwrap(), None);
        store.put_bundle(bundle(b"ca1")).unwrap();
        fail_next_flush(&store);
        not_stored(store.put_bundle(bundle(b"ca2")), "put_bundle changed");
        fail_next_flush(&store);
        not_stored(store.delete_bundle(&td()), "delete_bundle");
        let b = store.get_bundle(&td()).unwrap().unwrap();
        assert_eq!(b.x509_authorities, vec![b"ca1".to_vec()]);

        // CA journal.
        let j = store.put_ca_journal(&journal_with("0a")).unwrap();
        fail_next_flush(&store);
        let next = CaJournal {
            version: j.version,
            ..journal_with("0b")
        };
        not_stored(store.put_ca_journal(&next), "put_ca_journal");
        let now = store.get_ca_journal().unwrap();
        assert_eq!(now.slots, j.slots, "failed journal write undone");
        assert!(
            now.version > j.version,
            "the journal version never goes back"
        );
        made
    };

    // Reopened: what was undone is absent, what was retried is there once.
    let store = SledStore::open(dir.path()).unwrap();
    let mut specs: Vec<_> = store
        .list_entries(&EntryFilter::default())
        .unwrap()
        .into_iter()
        .map(|e| e.spec)
        .collect();
    specs.sort_by_key(|s| s.selectors[0].to_string());
    assert_eq!(specs, vec![made.spec.clone(), spec("t:2")]);
    assert_eq!(store.get_entry(&made.id).unwrap().unwrap().spec, made.spec);
    assert_eq!(store.get_agent(&agent.spiffe_id).unwrap(), Some(agent));
    store
        .consume_join_token(&"ab".repeat(32), 2)
        .expect("the token whose use failed is still there, once");
    let b = store.get_bundle(&td()).unwrap().unwrap();
    assert_eq!(b.x509_authorities, vec![b"ca1".to_vec()]);
    assert_eq!(
        store.get_ca_journal().unwrap().slots,
        journal_with("0a").slots
    );
}

/// The join-token ID migration renames old-form agents and re-parents
/// their entries (new revisions, events) once; opening the store again
/// changes nothing (hash-form IDs are never hashed again).
#[test]
fn join_token_migration_runs_once() {
    use crate::store::join_token_ids::{agent_path, sha256_hex};
    let dir = tempfile::tempdir().unwrap();
    let old = crate::store::conformance::spiffe_id("/sigil/agent/join_token/tok1");
    let new = crate::store::conformance::spiffe_id(&agent_path(&sha256_hex("tok1")));
    {
        let store = SledStore::open(dir.path()).unwrap();
        let agent = test_agent(old.clone());
        store.put_agent(&agent).unwrap();
        let path = old.path().to_string();
        let spec = crate::store::conformance::entry_spec("/w", &path, &["t:1"]);
        store.create_entry(spec, 1).unwrap();
        // As an earlier build left it: not marked migrated.
        store.meta.remove(migrate::K_JOIN_TOKEN_IDS_HASHED).unwrap();
        store.flush().unwrap();
    }
    let migrated = |store: &SledStore| {
        let agents = store.list_agents().unwrap();
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0].spiffe_id, new);
        let entries = store.list_entries(&EntryFilter::default()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].spec.parent_id, new);
        let by_id = EntryFilter {
            spiffe_id: Some(entries[0].spec.spiffe_id.clone()),
            ..EntryFilter::default()
        };
        assert_eq!(
            store.list_entries(&by_id).unwrap(),
            entries,
            "index follows"
        );
        (entries[0].revision, store.entries_revision().unwrap())
    };
    let first = migrated(&SledStore::open(dir.path()).unwrap());
    assert_eq!(first, (2, 2), "the re-parented entry has a new revision");
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(migrated(&store), first, "a second open changes nothing");
    let events = store.entry_events_since(1).unwrap().unwrap();
    assert!(matches!(&events[..], [EntryEvent::Upserted(e)] if e.spec.parent_id == new));
}
