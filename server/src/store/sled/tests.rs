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

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn bundle(cert: &[u8]) -> BundleRecord {
    BundleRecord {
        trust_domain: td(),
        x509_authorities: vec![cert.to_vec()],
        jwt_authorities: Vec::new(),
        tainted_key_ids: Vec::new(),
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
    let agent = AttestedAgent {
        spiffe_id: agent_id(),
        attestor: "join_token".to_string(),
        selectors: Vec::new(),
        serial: "01".to_string(),
        previous_serial: None,
        expires_at: 10,
        ca_serial: None,
        banned: false,
        attested_at: 1,
        updated_at: 1,
    };
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
