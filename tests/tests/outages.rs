//! Outages with real processes (DESIGN §7), beyond what agent_e2e.rs covers
//! (a short SIGTERM outage with one long-lived SVID, and one agent restart):
//!
//! - the server killed for longer than a short SVID's whole life while a
//!   workload streams: no stream error, the long-lived SVID keeps being
//!   served, the short one is dropped at its expiry (never served past it),
//!   and after the server returns the agent resyncs on its own, renews the
//!   short one and serves an entry created after the outage;
//! - the agent SIGKILLed repeatedly: the same agent ID each time without a
//!   token, one agent on the server, workloads served again;
//! - the server's data dir full (a small tmpfs) and read-only: writes fail
//!   with a clear error, reads keep working, nothing is lost or corrupt after
//!   space returns and the server restarts. Mounting needs root; skipped with
//!   a message otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sigil_proto::admin_api as pb;
use sigil_proto::workload as wl;
use sigil_tests::{ServerOptions, TestAgent, TestServer, run_bounded, text};

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn entry(s: &TestServer, a: &TestAgent, id: &str, extra: &[&str]) -> String {
    let me = format!("unix:uid:{}", uid());
    let mut args = vec![
        "entry",
        "create",
        "--spiffe-id",
        id,
        "--parent-id",
        &a.agent_id,
        "--selector",
        &me,
    ];
    args.extend_from_slice(extra);
    s.cli_json(&args)["entries"][0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// SPIFFE ID → notAfter of each SVID in a Workload API message.
fn svids(m: &wl::X509svidResponse) -> BTreeMap<String, i64> {
    m.svids
        .iter()
        .map(|s| {
            let (_, c) = x509_parser::parse_x509_certificate(&s.x509_svid).expect("leaf parses");
            (s.spiffe_id.clone(), c.validity().not_after.timestamp())
        })
        .collect()
}

/// One message received on the stream, when.
struct Seen {
    at: i64,
    svids: BTreeMap<String, i64>,
}

/// Reads the stream until `pred` holds on a message (bounded); records
/// every message; any stream error fails the test.
async fn read_until(
    st: &mut tonic::Streaming<wl::X509svidResponse>,
    seen: &mut Vec<Seen>,
    limit: Duration,
    what: &str,
    pred: impl Fn(&BTreeMap<String, i64>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if seen.last().is_some_and(|s| pred(&s.svids)) {
            return;
        }
        match tokio::time::timeout_at(deadline, st.message()).await {
            Err(_) => panic!(
                "{what}: not seen in {limit:?}; last message: {:?}",
                seen.last().map(|s| &s.svids)
            ),
            Ok(Err(status)) => panic!("{what}: the workload's stream failed: {status}"),
            Ok(Ok(None)) => panic!("{what}: the workload's stream ended"),
            Ok(Ok(Some(m))) => seen.push(Seen {
                at: unix_now(),
                svids: svids(&m),
            }),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_outage_longer_than_an_svid_life() {
    // ca_ttl 10m allows SVID TTLs up to 100s (÷6 rule).
    let mut s = TestServer::start(ServerOptions {
        extra: "ca_ttl = \"10m\"\nagent_svid_ttl = \"100s\"\ndefault_x509_svid_ttl = \"90s\"\n"
            .into(),
        bundle_endpoint: false,
        ..Default::default()
    })
    .unwrap();
    let a = TestAgent::start(&s).unwrap();
    const LONG: &str = "spiffe://example.org/long";
    const SHORT: &str = "spiffe://example.org/short";
    const AFTER: &str = "spiffe://example.org/after-outage";
    entry(&s, &a, LONG, &[]);
    entry(&s, &a, SHORT, &["--x509-svid-ttl", "12s"]);

    let mut c = sigil_agent::workload_client::connect(&a.socket)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut st = loop {
        // Until the agent has the entries, the caller has no identity.
        match c.fetch_x509svid(wl::X509svidRequest {}).await {
            Ok(r) => break r.into_inner(),
            Err(e) => {
                assert!(Instant::now() < deadline, "never served: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let mut seen = Vec::new();
    read_until(
        &mut st,
        &mut seen,
        Duration::from_secs(20),
        "both SVIDs",
        |m| m.contains_key(LONG) && m.contains_key(SHORT),
    )
    .await;

    // The server goes away (SIGKILL) for longer than SHORT lives.
    s.kill();
    let down_at = unix_now();
    let outage = Duration::from_secs(25);
    let short_expiry = seen.last().unwrap().svids[SHORT];
    let long_expiry = seen.last().unwrap().svids[LONG];
    assert!(
        long_expiry > down_at + outage.as_secs() as i64 + 5,
        "LONG must outlive the outage"
    );
    // SHORT is dropped once it expires (the agent could not renew it).
    read_until(
        &mut st,
        &mut seen,
        outage,
        "SHORT dropped at its expiry",
        |m| m.contains_key(LONG) && !m.contains_key(SHORT),
    )
    .await;
    let dropped_at = seen.last().unwrap().at;
    assert!(
        dropped_at >= short_expiry - 1 && dropped_at <= short_expiry + 3,
        "SHORT dropped at {dropped_at}, expiry {short_expiry}: not early, and promptly"
    );
    // A workload connecting during the outage gets the cached LONG SVID.
    let mut c2 = sigil_agent::workload_client::connect(&a.socket)
        .await
        .unwrap();
    let fresh = c2
        .fetch_x509svid(wl::X509svidRequest {})
        .await
        .expect("served from the cache during the outage")
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        svids(&fresh).keys().collect::<Vec<_>>(),
        vec![LONG],
        "during the outage: exactly the unexpired cached SVID"
    );
    // Stay down for the rest of the outage; the stream must not fail.
    let rest = Duration::from_secs((down_at + outage.as_secs() as i64 - unix_now()).max(0) as u64);
    if let Ok(r) = tokio::time::timeout(rest, st.message()).await {
        match r {
            Ok(Some(m)) => seen.push(Seen {
                at: unix_now(),
                svids: svids(&m),
            }),
            other => panic!("the stream failed during the outage: {other:?}"),
        }
    }
    // Nothing was ever served past its notAfter.
    for m in &seen {
        for (id, na) in &m.svids {
            assert!(m.at <= *na, "{id} served at {} after its expiry {na}", m.at);
        }
    }
    assert!(
        a.log_text().contains("sync"),
        "the agent logged its sync failures"
    );

    // The server returns; a new entry is created; the open stream gets a
    // renewed SHORT and the new entry without reconnecting.
    s.spawn().unwrap();
    entry(&s, &a, AFTER, &[]);
    read_until(
        &mut st,
        &mut seen,
        Duration::from_secs(60),
        "resync after the outage",
        |m| m.contains_key(LONG) && m.contains_key(SHORT) && m.contains_key(AFTER),
    )
    .await;
    let last = &seen.last().unwrap().svids;
    assert!(last[SHORT] > unix_now(), "the renewed SHORT is valid");
    let agents = s.cli_json(&["agent", "list"]);
    assert_eq!(agents["agents"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_sigkill_restart_keeps_identity_and_reserves_workloads() {
    let s = TestServer::start(ServerOptions {
        bundle_endpoint: false,
        ..Default::default()
    })
    .unwrap();
    let mut a = TestAgent::start(&s).unwrap();
    entry(&s, &a, "spiffe://example.org/w", &[]);
    let tokens_before = s.log_text().matches("node attested").count();
    assert_eq!(tokens_before, 1);
    for round in 0..3 {
        let mut c = sigil_agent::workload_client::connect(&a.socket)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut st = loop {
            match c.fetch_x509svid(wl::X509svidRequest {}).await {
                Ok(r) => break r.into_inner(),
                Err(e) => {
                    assert!(Instant::now() < deadline, "round {round}: not served: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let m = tokio::time::timeout(Duration::from_secs(10), st.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(m.svids[0].spiffe_id, "spiffe://example.org/w");
        // SIGKILL with the stream open: the workload sees the stream end...
        a.kill();
        let r = tokio::time::timeout(Duration::from_secs(10), st.message())
            .await
            .expect("stream ends when the agent dies");
        assert!(!matches!(r, Ok(Some(_))), "{r:?}");
        // ... and the agent comes back without a token, as itself.
        a.spawn(None).unwrap();
    }
    let mut c = sigil_agent::workload_client::connect(&a.socket)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = c.fetch_x509svid(wl::X509svidRequest {}).await {
            let m = r.into_inner().message().await.unwrap().unwrap();
            assert_eq!(m.svids[0].spiffe_id, "spiffe://example.org/w");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not served after the last restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let agents = s.cli_json(&["agent", "list"]);
    let list = agents["agents"].as_array().unwrap();
    assert_eq!(list.len(), 1, "one agent: {agents:#}");
    assert_eq!(list[0]["spiffe_id"], a.agent_id.as_str());
    assert_eq!(
        s.log_text().matches("node attested").count(),
        1,
        "the agent never attested again"
    );
    assert_eq!(a.log_text().matches("restored agent identity").count(), 3);
}

// ---------------------------------------------------------------------------
// Disk full and read-only.

/// A tmpfs of `size` mounted on `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = run_bounded(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(dir),
        );
        if !out.status.success() {
            return Err(text(&out.stderr));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    fn remount(&self, opt: &str) -> Result<(), String> {
        let out = run_bounded(
            Command::new("mount")
                .args(["-o", &format!("remount,{opt}")])
                .arg(&self.0),
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(text(&out.stderr))
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run_bounded(Command::new("umount").arg("-l").arg(&self.0));
    }
}

/// Copies a directory tree (files and dirs; sockets skipped).
fn copy_tree(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        let dst = to.join(e.file_name());
        if t.is_dir() {
            copy_tree(&e.path(), &dst);
        } else if t.is_file() {
            std::fs::copy(e.path(), &dst).unwrap();
            let mode = e.metadata().unwrap().permissions().mode();
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

/// Fills the file system holding `dir` until it refuses more.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![0xA5u8; 64 * 1024];
    loop {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    // Small writes for the last pages.
    while f.write_all(&[0u8; 512]).is_ok() {}
    let _ = f.sync_all();
    p
}

fn create(s: &TestServer, id: &str) -> std::process::Output {
    s.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        id,
        "--parent-id",
        "spiffe://example.org/p",
        "--selector",
        "unix:uid:7",
        "--output",
        "json",
    ])
}

fn listed(s: &TestServer) -> Vec<String> {
    let v = s.cli_json(&["entry", "show"]);
    let mut ids: Vec<String> = v["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("entries in {v:#}"))
        .iter()
        .map(|e| e["spiffe_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_full_and_read_only_data_dir() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: mounting a small tmpfs needs root");
        return;
    }
    let mut s = TestServer::start(ServerOptions {
        bundle_endpoint: false,
        ..Default::default()
    })
    .unwrap();
    // Move the data dir onto a small tmpfs.
    s.stop();
    let saved = s.dir.path().join("saved");
    copy_tree(&s.data_dir, &saved);
    std::fs::remove_dir_all(&s.data_dir).unwrap();
    let fs = match Tmpfs::mount(&s.data_dir, "48m") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("SKIPPED: cannot mount a tmpfs here: {e}");
            return;
        }
    };
    copy_tree(&saved, &s.data_dir);
    s.spawn().unwrap();
    let mut acked = vec![];
    for i in 0..3 {
        let id = format!("spiffe://example.org/before/{i}");
        let out = create(&s, &id);
        assert!(out.status.success(), "{}", text(&out.stderr));
        acked.push(id);
    }

    // Disk full: a write fails with a clear error; reads work.
    let filler = fill(&s.data_dir);
    // sled writes into space its files already hold until it needs more:
    // write (fast, in-process) until the first refusal.
    let mut client = sigil_server::admin::client::connect(&s.socket)
        .await
        .unwrap();
    let mut failure = None;
    for i in 0..50_000 {
        let id = format!("spiffe://example.org/full/{i}");
        let r = client
            .create_entries(pb::CreateEntriesRequest {
                entries: vec![pb::Entry {
                    spiffe_id: id.clone(),
                    parent_id: "spiffe://example.org/p".into(),
                    selectors: vec![pb::Selector {
                        r#type: "unix".into(),
                        value: format!("uid:{i}"),
                    }],
                    hint: "x".repeat(200),
                    ..Default::default()
                }],
                allow_unknown_selectors: false,
            })
            .await;
        match r.map(|r| r.into_inner().results.remove(0).result) {
            Ok(Some(pb::entry_result::Result::Entry(_))) => acked.push(id),
            Ok(Some(pb::entry_result::Result::Error(e))) => {
                failure = Some(format!("item error {}: {}", e.code, e.message));
                break;
            }
            Ok(None) => panic!("empty result"),
            Err(st) => {
                failure = Some(format!("{:?}: {}", st.code(), st.message()));
                break;
            }
        }
    }
    let failure = failure.expect("no write failed on a full disk");
    println!(
        "disk full: {} creates acknowledged, then: {failure}",
        acked.len()
    );
    assert!(
        failure.contains("No space left on device"),
        "the gRPC error must say the disk is full: {failure}"
    );
    // The CLI says so too.
    let out = create(&s, "spiffe://example.org/full/cli");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    println!("disk full: CLI said: {}", err.trim());
    assert!(
        err.contains("No space left on device") && err.contains("store"),
        "the CLI error must say the store is out of space: {err}"
    );
    assert!(
        s.log_text().contains("No space left on device"),
        "the server log says why"
    );
    // Reads keep working.
    let ids = listed(&s);
    for id in &acked {
        assert!(ids.contains(id), "{id} missing while full: {ids:?}");
    }
    s.cli_ok(&["bundle", "show"]);
    s.cli_ok(&["entry", "count"]);
    s.cli_ok(&["healthcheck"]);

    // Space returns; after a restart everything acknowledged is there, the
    // store is whole, and writes work again.
    std::fs::remove_file(&filler).unwrap();
    s.kill();
    s.spawn().unwrap();
    let ids = listed(&s);
    for id in &acked {
        assert!(ids.contains(id), "{id} lost after space returned: {ids:?}");
    }
    let out = create(&s, "spiffe://example.org/after-full");
    assert!(out.status.success(), "{}", text(&out.stderr));
    acked.push("spiffe://example.org/after-full".into());

    // Read-only: a running server cannot have its store remounted read-only
    // (the files are open for writing), so the data dir goes read-only
    // while the server is stopped: it refuses to start, naming the store.
    s.stop();
    fs.remount("ro").expect("remount read-only");
    let start = run_bounded(
        Command::new(sigil_tests::bin("sigil-server"))
            .args(["run", "--config"])
            .arg(&s.config),
    );
    assert!(!start.status.success(), "started on a read-only data dir");
    let err = text(&start.stderr) + &text(&start.stdout);
    println!("read-only: server said: {}", err.trim());
    assert!(
        err.contains("Read-only file system") && err.contains(&s.data_dir.display().to_string()),
        "{err}"
    );
    fs.remount("rw").expect("remount read-write");
    s.spawn().unwrap();
    let ids = listed(&s);
    for id in &acked {
        assert!(ids.contains(id), "{id} lost after read-only: {ids:?}");
    }
    s.stop();
    drop(fs);
}
