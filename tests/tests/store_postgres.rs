//! The PostgreSQL store (issue 17 items 1–2) on a throwaway cluster
//! (`sigil_tests::pg`; skipped with a message when PostgreSQL is not
//! installed, failed under `CI=true`): the whole store conformance suite,
//! then what only a shared database shows — two stores ("two servers") on
//! one database see each other's writes under a gapless revision with
//! concurrent writers on both, a join token raced through both is used
//! exactly once, servers starting together migrate the schema once, a
//! schema newer than the build is refused naming both versions, the pool
//! stays within `max_connections`, and the password comes from
//! `password_file` and never shows in errors, and a store following the
//! log is woken by another store's write (NOTIFY) or, without one, by its
//! catch-up poll.

use std::collections::BTreeSet;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use sigil_server::store::conformance::{StoreFactory, StoreLocation, entry_spec};
use sigil_server::store::postgres::{PgStore, SCHEMA_VERSION};
use sigil_server::store::{JoinTokenRecord, Store, StoreError};
use sigil_tests::pg::{self, PASSWORD_ROLE, PgCluster};

/// A fresh database on the test process's cluster.
struct PgLocation {
    cluster: &'static PgCluster,
    db: String,
}

impl StoreLocation for PgLocation {
    fn open(&self) -> Box<dyn Store> {
        let cfg = self.cluster.store_config(&self.db, 4);
        Box::new(PgStore::open(&cfg).expect("open PostgreSQL store"))
    }
}

struct PgFactory(&'static PgCluster);

impl StoreFactory for PgFactory {
    fn fresh(&self) -> Box<dyn StoreLocation> {
        Box::new(PgLocation {
            cluster: self.0,
            db: self.0.create_database(),
        })
    }
}

// One test per conformance check; each returns at once (skipped) when
// PostgreSQL is not installed outside CI.
sigil_server::store_conformance_tests!({
    let Some(cluster) = pg::cluster() else { return };
    PgFactory(cluster)
});

/// Longest the log readers of the two-server test keep following it.
const READER_LIMIT: Duration = Duration::from_secs(120);

/// Longest a follower may take to report another server's write.
const FOLLOW_LIMIT: Duration = Duration::from_secs(10);

/// Two stores on one new database, as two servers would have.
fn two_servers(cluster: &PgCluster, max_connections: usize) -> (PgStore, PgStore, String) {
    let db = cluster.create_database();
    let cfg = cluster.store_config(&db, max_connections);
    let a = PgStore::open(&cfg).expect("open store A");
    let b = PgStore::open(&cfg).expect("open store B");
    (a, b, db)
}

/// Item 2/4: writers on both stores at once (creates and updates, 4
/// threads each) while a reader on each store follows the event log: every
/// change gets its own revision with no gap, each reader only ever sees a
/// gapless prefix of the log (never N+1 before N), and each store sees the
/// other's writes.
#[test]
fn i17_2_two_servers_share_a_gapless_revision_under_concurrent_writers() {
    let Some(cluster) = pg::cluster() else { return };
    let (a, b, _) = two_servers(cluster, 8);
    let stores: [&PgStore; 2] = [&a, &b];
    const WRITERS_PER_STORE: usize = 4;
    const CHANGES: usize = 30;
    let done = AtomicBool::new(false);
    let barrier = Barrier::new(2 * WRITERS_PER_STORE + 2);
    let (written, followed) = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..2 * WRITERS_PER_STORE)
            .map(|t| {
                let (s, barrier) = (stores[t % 2], &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let mut revisions = Vec::new();
                    let mut mine: Option<String> = None;
                    for i in 0..CHANGES {
                        // Every third change updates this thread's entry.
                        let e = match (&mine, i % 3) {
                            (Some(id), 2) => {
                                let spec =
                                    entry_spec(&format!("/t{t}"), "/p", &[&format!("t:{i}")]);
                                s.update_entry(id, spec).expect("concurrent update")
                            }
                            _ => {
                                let spec = entry_spec(&format!("/t{t}/w{i}"), "/p", &["t:1"]);
                                let e = s.create_entry(spec, 1).expect("concurrent create");
                                if mine.is_none() {
                                    let spec = entry_spec(&format!("/t{t}"), "/p", &["t:0"]);
                                    let first = s.create_entry(spec, 1).expect("create");
                                    revisions.push(first.revision);
                                    mine = Some(first.id);
                                }
                                e
                            }
                        };
                        revisions.push(e.revision);
                    }
                    revisions
                })
            })
            .collect();
        let readers: Vec<_> = stores
            .iter()
            .map(|s| {
                let (barrier, done) = (&barrier, &done);
                scope.spawn(move || {
                    barrier.wait();
                    let mut seen = 0u64;
                    let mut polls = 0;
                    let deadline = Instant::now() + READER_LIMIT;
                    loop {
                        let finished = done.load(Ordering::SeqCst);
                        assert!(
                            Instant::now() < deadline,
                            "writers still busy after {READER_LIMIT:?}"
                        );
                        let current = s.entries_revision().expect("revision");
                        let events = s
                            .entry_events_since(seen)
                            .expect("events (a gap is reported as Corrupt)")
                            .expect("no pruning");
                        for (ev, want) in events.iter().zip(seen + 1..) {
                            assert_eq!(ev.revision(), want, "a reader saw a gap after {seen}");
                        }
                        seen += events.len() as u64;
                        assert!(
                            seen >= current,
                            "the revision said {current} but the log reached only {seen}"
                        );
                        polls += 1;
                        if finished {
                            return (seen, polls);
                        }
                    }
                })
            })
            .collect();
        // Every writer joined (a failed one too) before the readers are
        // told to stop, so a failure ends the test instead of hanging it.
        let written: Vec<_> = writers.into_iter().map(|h| h.join()).collect();
        done.store(true, Ordering::SeqCst);
        let followed: Vec<(u64, usize)> = readers
            .into_iter()
            .map(|h| h.join().expect("reader thread"))
            .collect();
        let written: Vec<u64> = written
            .into_iter()
            .flat_map(|r| r.expect("writer thread"))
            .collect();
        (written, followed)
    });
    let total = written.len() as u64;
    let unique: BTreeSet<u64> = written.iter().copied().collect();
    assert_eq!(
        unique,
        (1..=total).collect::<BTreeSet<u64>>(),
        "every change through either store gets its own revision, with no gap"
    );
    for (name, s) in [("A", &a), ("B", &b)] {
        assert_eq!(
            s.entries_revision().expect("revision"),
            total,
            "store {name}"
        );
        assert_eq!(
            s.entry_events_since(0)
                .expect("events")
                .map(|v| v.len() as u64),
            Some(total),
            "store {name} sees every change in its log"
        );
    }
    for (seen, polls) in &followed {
        assert_eq!(*seen, total, "each reader followed the whole log");
        assert!(*polls > 1, "the readers ran while the writers did");
    }
    let on_a = a.list_entries(&Default::default()).expect("list A");
    let on_b = b.list_entries(&Default::default()).expect("list B");
    assert_eq!(on_a, on_b, "both servers see the same entries");
    assert_eq!(
        on_a.len(),
        2 * WRITERS_PER_STORE * (CHANGES - CHANGES / 3 + 1)
    );
}

/// Item 2/4: a join token consumed through both stores at once (8 threads,
/// 4 per store, 20 rounds) is used exactly once; the others get NotFound.
#[test]
fn i17_2_join_token_raced_through_two_servers_is_used_once() {
    let Some(cluster) = pg::cluster() else { return };
    let (a, b, _) = two_servers(cluster, 4);
    let stores: [&PgStore; 2] = [&a, &b];
    for round in 0..20 {
        let hash = format!("race{round}");
        stores[round % 2]
            .create_join_token(JoinTokenRecord {
                token_hash: hash.clone(),
                expires_at: 5000,
                created_at: 1000,
            })
            .expect("create token");
        let barrier = Barrier::new(8);
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let (s, barrier, hash) = (stores[t % 2], &barrier, &hash);
                    scope.spawn(move || {
                        barrier.wait();
                        s.consume_join_token(hash, 2000)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            winners, 1,
            "round {round}: exactly one consume succeeds: {results:?}"
        );
        for r in results.iter().filter(|r| r.is_err()) {
            assert!(
                matches!(r, Err(StoreError::NotFound { .. })),
                "round {round}: a losing consume is NotFound: {r:?}"
            );
        }
    }
}

/// Item 2: servers starting together on a new database migrate it once
/// (under the advisory lock); all of them open.
#[test]
fn i17_2_servers_starting_together_migrate_once() {
    let Some(cluster) = pg::cluster() else { return };
    for _ in 0..3 {
        let db = cluster.create_database();
        let cfg = cluster.store_config(&db, 2);
        let barrier = Barrier::new(6);
        let opened: Vec<Result<PgStore, StoreError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    let (cfg, barrier) = (&cfg, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        PgStore::open(cfg)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        for r in &opened {
            assert!(r.is_ok(), "a concurrent start failed: {r:?}");
        }
        let version = cluster
            .psql(&db, "SELECT version FROM sigil_schema")
            .expect("schema version");
        assert_eq!(version, SCHEMA_VERSION.to_string());
    }
}

/// Item 2: a schema newer than this build is refused, naming both versions.
#[test]
fn i17_2_newer_schema_is_refused_naming_both_versions() {
    let Some(cluster) = pg::cluster() else { return };
    let db = cluster.create_database();
    let cfg = cluster.store_config(&db, 2);
    drop(PgStore::open(&cfg).expect("first open migrates"));
    cluster
        .psql(&db, "UPDATE sigil_schema SET version = 99")
        .expect("bump the schema version");
    let e = PgStore::open(&cfg).expect_err("a newer schema must be refused");
    let msg = e.to_string();
    assert!(
        msg.contains("schema version 99") && msg.contains(&format!("version {SCHEMA_VERSION}")),
        "{msg}"
    );
}

/// Item 1: the pool never holds more than `max_connections` connections,
/// even with more threads than that calling at once.
#[test]
fn i17_1_pool_stays_within_max_connections() {
    let Some(cluster) = pg::cluster() else { return };
    let (a, _b, db) = two_servers(cluster, 2);
    drop(_b);
    let peak = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (a, peak, cluster, db) = (&a, &peak, cluster, &db);
            scope.spawn(move || {
                for i in 0..10 {
                    let spec = entry_spec(&format!("/pool/{t}/{i}"), "/p", &["t:1"]);
                    a.create_entry(spec, 1).expect("create");
                    if t == 0 {
                        let n: usize = cluster
                            .psql(
                                "postgres",
                                &format!(
                                    "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
                                     AND application_name = 'sigil-server'"
                                ),
                            )
                            .expect("count connections")
                            .parse()
                            .expect("a number");
                        peak.fetch_max(n, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&peak),
        "store A held {peak} connections at once, max_connections is 2"
    );
    assert_eq!(a.count_entries().expect("count"), 80);
}

/// Item 1: the password comes from `password_file` (a role that must give
/// one); a wrong one fails with an error that does not contain it.
#[test]
fn i17_1_password_from_password_file_never_in_errors() {
    let Some(cluster) = pg::cluster() else { return };
    let db = cluster.create_database();
    let secret = "correct-horse-battery-staple";
    cluster
        .psql(
            "postgres",
            &format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PASSWORD_ROLE}') \
                 THEN CREATE ROLE {PASSWORD_ROLE} LOGIN; END IF; END $$; \
                 ALTER ROLE {PASSWORD_ROLE} PASSWORD '{secret}'"
            ),
        )
        .expect("create the password role");
    cluster
        .psql(
            &db,
            &format!("ALTER DATABASE {db} OWNER TO {PASSWORD_ROLE}"),
        )
        .expect("hand the database over");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pg-password");
    let mut cfg = cluster.store_config(&db, 2);
    cfg.connection_string = format!(
        "host=127.0.0.1 port={} user={PASSWORD_ROLE} dbname={db}",
        cluster.port
    );
    cfg.password_file = Some(file.clone());

    std::fs::write(&file, "not-the-password\n").expect("write password file");
    let e = PgStore::open(&cfg).expect_err("a wrong password is refused");
    let msg = e.to_string();
    assert!(
        msg.contains(&db) && !msg.contains("not-the-password"),
        "the error names the database, never the password: {msg}"
    );

    std::fs::write(&file, format!("{secret}\n")).expect("write password file");
    let s = PgStore::open(&cfg).expect("the password from the file is used");
    s.create_entry(entry_spec("/pw", "/p", &["t:1"]), 1)
        .expect("write as the password role");
    let shown = format!("{s:?} {cfg:?}");
    assert!(!shown.contains(secret), "Debug shows no password: {shown}");
}

/// Waits (bounded) until the follower reports at least `revision`.
fn wait_revision(rt: &tokio::runtime::Runtime, rx: &mut watch::Receiver<u64>, revision: u64) {
    rt.block_on(async {
        tokio::time::timeout(FOLLOW_LIMIT, rx.wait_for(|r| *r >= revision))
            .await
            .map(|r| r.map(|_| ()))
    })
    .unwrap_or_else(|_| {
        panic!("the follower did not report revision {revision} within {FOLLOW_LIMIT:?}")
    })
    .expect("the follower is running");
}

/// Item 5 (wake-up part): a server following the log is woken by another
/// server's entry write through NOTIFY, long before its catch-up poll
/// (an hour) would come.
#[test]
fn i17_5_follower_is_woken_by_another_servers_write() {
    let Some(cluster) = pg::cluster() else { return };
    let (a, b, _) = two_servers(cluster, 2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rx = b
        .follow_revisions(Duration::from_secs(3600))
        .expect("follow on B");
    for i in 0..5 {
        let spec = entry_spec(&format!("/follow/{i}"), "/p", &["t:1"]);
        let e = a.create_entry(spec, 1).expect("create on A");
        wait_revision(&rt, &mut rx, e.revision);
        let events = b
            .entry_events_since(e.revision - 1)
            .expect("events on B")
            .expect("no pruning");
        assert_eq!(events.len(), 1, "B reads the change it was woken for");
    }
}

/// Item 5 (safety net): a change that sends no notification (made outside
/// Sigil here) is still reported by the catch-up poll.
#[test]
fn i17_5_follower_catches_up_by_polling_without_a_notification() {
    let Some(cluster) = pg::cluster() else { return };
    let (_a, b, db) = two_servers(cluster, 2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rx = b
        .follow_revisions(Duration::from_millis(200))
        .expect("follow on B");
    cluster
        .psql(
            &db,
            "UPDATE sigil_meta SET value = value + 7 WHERE name = 'entries_revision'",
        )
        .expect("raise the revision without NOTIFY");
    wait_revision(&rt, &mut rx, 7);
}

/// Item 1 end to end: a real `sigil-server` with `[store.postgres]` keeps
/// its entries in PostgreSQL (not in `data_dir`): an entry created through
/// the admin CLI is a row there and is still listed after a restart.
#[test]
fn i17_1_server_runs_on_store_postgres() {
    let Some(cluster) = pg::cluster() else { return };
    let db = cluster.create_database();
    let extra = format!(
        "[store.postgres]\nconnection_string = \"{}\"\nmax_connections = 4\n",
        cluster.connection_string(&db)
    );
    let mut server = sigil_tests::TestServer::start(sigil_tests::ServerOptions {
        extra,
        ..Default::default()
    })
    .expect("server on PostgreSQL starts");
    server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/pg-workload",
        "--parent-id",
        "spiffe://example.org/sigil/agent/x",
        "--selector",
        "unix:uid:1",
    ]);
    let rows = cluster
        .psql(&db, "SELECT count(*) FROM sigil_entries")
        .expect("count rows");
    assert_eq!(rows, "1", "the entry is a row in PostgreSQL");
    server.stop();
    server.spawn().expect("server restarts on PostgreSQL");
    let count = server.cli_json(&["entry", "count"])["count"].as_u64();
    assert_eq!(count, Some(1), "the entry is there after a restart");
}
