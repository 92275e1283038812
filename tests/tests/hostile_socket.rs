//! Issue 21, item 2 (the Workload API socket), as real processes: the
//! socket is mode 0666, so any local user can connect to it. One uid that
//! opens connections and never speaks must not take the agent's file
//! descriptors: past its per-uid cap its new connections are closed at
//! once, connections that never send the HTTP/2 preface or sit idle are
//! closed after their timeouts, and meanwhile a workload of another uid
//! still gets its SVID and the rotated one (the agent keeps renewing).
//!
//! The attacker and the other workload run as uids of their own (root
//! only: `setuid` in the child); the agent runs with `RLIMIT_NOFILE` = 256,
//! set for it alone.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sigil_tests::{ServerOptions, TestAgent, TestServer, bin};

/// The uid of the workload that must keep being served.
const OTHER_UID: u32 = 65534;
/// The uid of the attacker.
const ATTACKER_UID: u32 = 65533;
/// The agent's `RLIMIT_NOFILE`.
const NOFILE: u64 = 256;

/// A copy of the attacker binary that other uids can run.
fn attacker_copy(dir: &Path) -> PathBuf {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("sigil-test-attacker");
    std::fs::copy(bin("sigil-test-attacker"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// `digest` as `OTHER_UID`: `Some(hash)` of the SVID served, else `None`.
fn other_uid_svid(attacker: &Path, socket: &Path) -> Option<String> {
    let out = sigil_tests::run_limited(
        Command::new(attacker)
            .uid(OTHER_UID)
            .gid(OTHER_UID)
            .arg("digest")
            .arg(socket),
        Duration::from_secs(30),
    )
    .0;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    text.strip_prefix("RESULT svid ").map(str::to_string)
}

/// Open file descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn skip_unless_root(name: &str) -> bool {
    if nix::unistd::getuid().is_root() {
        return false;
    }
    eprintln!("{name}: skipped (needs root to run workloads as other uids)");
    true
}

#[test]
fn i21_2_idle_socket_connections_do_not_break_renewal() {
    if skip_unless_root("i21_2_idle_socket_connections_do_not_break_renewal") {
        return;
    }
    let s = TestServer::start(ServerOptions {
        extra: "ca_ttl = \"1h\"\ndefault_x509_svid_ttl = \"12s\"\nagent_svid_ttl = \"8s\"\n".into(),
        ..Default::default()
    })
    .unwrap();
    // Default limits: sized from the agent's RLIMIT_NOFILE.
    let a = TestAgent::start_limited(&s, "", Some(NOFILE)).unwrap();
    let pid = a.pid().unwrap();
    s.register(
        &a,
        "spiffe://example.org/other",
        &format!("unix:uid:{OTHER_UID}"),
    );
    let dir = tempfile::tempdir().unwrap();
    let attacker = attacker_copy(dir.path());
    // The positive control: the other uid is served before the attack.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Some(h) = other_uid_svid(&attacker, &a.socket) {
            break h;
        }
        assert!(Instant::now() < deadline, "no SVID\n{}", a.log_text());
        std::thread::sleep(Duration::from_millis(200));
    };
    let renewals_before = a
        .log_text()
        .matches("agent SVID renewed; reopening the entry stream")
        .count();

    // ~1000 connections of one uid that never speak, topped up as the
    // agent closes them, for 40 s (bounded: the attacker exits then).
    const ATTACK_SECS: u64 = 40;
    let mut flood = Command::new(&attacker)
        .uid(ATTACKER_UID)
        .gid(ATTACKER_UID)
        .arg("idle")
        .arg(&a.socket)
        .arg("1000")
        .arg(ATTACK_SECS.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let attack_end = Instant::now() + Duration::from_secs(ATTACK_SECS);
    // The attack has reached the per-uid cap once the agent says so.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !a.log_text().contains("Workload API connections refused") {
        assert!(
            Instant::now() < deadline,
            "the attacker never reached a connection cap\n{}",
            a.log_text()
        );
        assert!(fd_count(pid) < NOFILE as usize, "fds at the limit");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Under attack: the other uid is served, and a rotated SVID arrives
    // (12 s TTL: renewed at half-life); the agent's fds stay below the
    // limit throughout.
    let mut max_fds = 0;
    let mut served = 0;
    let mut rotated = None;
    while Instant::now() < attack_end - Duration::from_secs(2) {
        max_fds = max_fds.max(fd_count(pid));
        match other_uid_svid(&attacker, &a.socket) {
            Some(h) => {
                served += 1;
                if h != first && rotated.is_none() {
                    rotated = Some(h);
                }
            }
            None => panic!(
                "uid {OTHER_UID} not served under attack (fds {})\n{}",
                fd_count(pid),
                a.log_text()
            ),
        }
        max_fds = max_fds.max(fd_count(pid));
        if rotated.is_some() && served >= 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = flood.kill();
    let mut out = String::new();
    let _ = flood.stdout.take().unwrap().read_to_string(&mut out);
    let _ = flood.wait();
    let log = a.log_text();
    assert!(
        rotated.is_some(),
        "no rotated SVID under attack ({served} served, attacker: {out})\n{log}"
    );
    assert!(
        max_fds < NOFILE as usize - 16,
        "the agent's fds came close to its limit: {max_fds} of {NOFILE}\n{log}"
    );
    let renewals = log
        .matches("agent SVID renewed; reopening the entry stream")
        .count();
    assert!(
        renewals > renewals_before,
        "the agent did not renew its own SVID under attack (8 s TTL)\n{log}"
    );
    assert!(
        log.contains(&format!("uid={ATTACKER_UID}")) && log.contains("reason=\"per_uid\""),
        "the refusal is logged with the uid and the reason\n{log}"
    );
    assert!(!log.contains("Too many open files"), "{log}");
}

/// Client preface and SETTINGS; returns once the agent's SETTINGS came.
fn handshake(s: &mut UnixStream) {
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    let mut h = [0u8; 9];
    s.read_exact(&mut h).unwrap();
    assert_eq!(h[3], 4, "the agent's first frame is SETTINGS");
    let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
}

/// Reads (and drops) whatever arrives until the agent closes `s`; the
/// time that took.
fn until_closed(s: &mut UnixStream, start: Instant) -> Duration {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut b = [0u8; 1024];
    loop {
        match s.read(&mut b) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("not closed within 30 s")
            }
            Err(_) => return start.elapsed(),
        }
    }
}

/// `what` was closed `took` after its start: at `timeout`, not much later.
fn closed_in_time(what: &str, took: Duration, timeout: Duration, a: &TestAgent) {
    assert!(
        took >= timeout - Duration::from_millis(200) && took < timeout + Duration::from_secs(5),
        "{what} closed after {took:?} (timeout {timeout:?})\n{}",
        a.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn i21_2_idle_connection_is_closed_after_the_timeout() {
    const IDLE: Duration = Duration::from_secs(3);
    const PREFACE: Duration = Duration::from_secs(2);
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start_with(
        &s,
        "[limits]\nworkload_api_idle_timeout = \"3s\"\nworkload_api_preface_timeout = \"2s\"\n",
    )
    .unwrap();
    s.register_uid(&a, "spiffe://example.org/me");

    // A stream is held: its connection is not idle (opened first, so
    // the checks below run while it is held).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut held = loop {
        let ch = sigil_tests::workload_channel(&a.socket).await.unwrap();
        let mut c =
            sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(ch);
        let mut req = tonic::Request::new(sigil_proto::workload::X509svidRequest {});
        req.metadata_mut()
            .insert("workload.spiffe.io", "true".parse().unwrap());
        if let Ok(r) = c.fetch_x509svid(req).await {
            let mut st = r.into_inner();
            if let Ok(Some(m)) = st.message().await
                && !m.svids.is_empty()
            {
                break st;
            }
        }
        assert!(Instant::now() < deadline, "no SVID\n{}", a.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let held_since = Instant::now();

    // No preface: closed after the preface timeout.
    let start = Instant::now();
    let mut silent = UnixStream::connect(&a.socket).unwrap();
    let took = tokio::task::spawn_blocking(move || until_closed(&mut silent, start))
        .await
        .unwrap();
    closed_in_time("a connection without the preface", took, PREFACE, &a);

    // Preface and SETTINGS, then no call: closed after the idle timeout.
    let start = Instant::now();
    let mut quiet = UnixStream::connect(&a.socket).unwrap();
    let took = tokio::task::spawn_blocking(move || {
        handshake(&mut quiet);
        until_closed(&mut quiet, start)
    })
    .await
    .unwrap();
    closed_in_time("an idle connection", took, IDLE, &a);

    // The held stream outlived several idle timeouts and is still open:
    // nothing arrives (the SVID lives an hour) and nothing ends it.
    let rest = (IDLE * 3).saturating_sub(held_since.elapsed());
    let r = tokio::time::timeout(rest.max(IDLE), held.message()).await;
    assert!(
        r.is_err(),
        "a connection holding a stream was closed or ended: {r:?}\n{}",
        a.log_text()
    );
    let log = a.log_text();
    assert!(log.contains("reason=\"preface_timeout\""), "{log}");
    assert!(log.contains("reason=\"idle_timeout\""), "{log}");
}
