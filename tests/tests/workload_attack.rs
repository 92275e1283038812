//! Issue 14, item 2, as real processes: the Workload API attests the
//! process that connected, as it was when the connection was accepted. A
//! connection handed to another process is worth nothing once the process
//! that made it runs another program (exec attack) or is gone and its pid
//! taken by a victim (pid reuse). The attacker is `sigil-test-attacker`;
//! the entry pins a copy of it by `unix:path`.
//!
//! Item 12: one local user cannot take every Workload API slot: past the
//! per-uid cap its extra streams and connections get `Unavailable` while
//! another uid is still served.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sigil_tests::{ServerOptions, TestAgent, TestServer, bin};

const WAIT: Duration = Duration::from_secs(60);

struct Setup {
    _server: TestServer,
    agent: TestAgent,
    pinned: PathBuf,
    _dir: tempfile::TempDir,
}

/// A server, an agent and an entry pinning a copy of the attacker binary
/// by path; returns once that copy, run on its own, receives its SVID.
fn setup() -> Setup {
    let server = TestServer::start(ServerOptions::default()).unwrap();
    let agent = TestAgent::start(&server).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pinned = dir.path().join("pinned-workload");
    std::fs::copy(bin("sigil-test-attacker"), &pinned).unwrap();
    std::fs::set_permissions(&pinned, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pinned = pinned.canonicalize().unwrap();
    server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/pinned",
        "--parent-id",
        &agent.agent_id,
        "--selector",
        &format!("unix:path:{}", pinned.display()),
    ]);
    // The positive control: the pinned program itself is served.
    let deadline = Instant::now() + WAIT;
    loop {
        let out = Command::new(&pinned)
            .arg("call")
            .arg(&agent.socket)
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("RESULT svid") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pinned program never got its SVID\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Setup {
        _server: server,
        agent,
        pinned,
        _dir: dir,
    }
}

/// Runs the attacker in `mode` and returns its `RESULT` line.
fn attack(s: &Setup, mode: &str) -> (String, Child) {
    let mut p = Command::new(bin("sigil-test-attacker"))
        .arg(mode)
        .arg(&s.agent.socket)
        .arg(&s.pinned)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = p.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with("RESULT") {
                let _ = tx.send(line);
                return;
            }
        }
    });
    if mode == "exit" {
        // P exits at once; reap it so its pid is free.
        p.wait().unwrap();
    }
    let line = rx.recv_timeout(WAIT).unwrap_or_else(|_| {
        kill_pinned(&s.pinned);
        panic!("no result from the attacker\n{}", s.agent.log_text())
    });
    (line, p)
}

/// Kills every process running `pinned` (all started by this test).
fn kill_pinned(pinned: &Path) {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read_link(e.path().join("exe")).ok().as_deref() == Some(pinned) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn item2_exec_attack_gets_nothing() {
    let s = setup();
    let (line, mut p) = attack(&s, "exec");
    let _ = p.kill();
    let _ = p.wait();
    kill_pinned(&s.pinned);
    let log = s.agent.log_text();
    assert!(
        line == "RESULT refused",
        "the child of an exec'd caller must get no SVID; got {line:?}\n{log}"
    );
    assert!(
        log.contains("attestation failed") && log.contains("executable changed"),
        "the refusal names the reason\n{log}"
    );
}

#[test]
fn item2_pid_exit_gets_nothing() {
    let s = setup();
    let (line, _p) = attack(&s, "exit");
    kill_pinned(&s.pinned);
    let log = s.agent.log_text();
    // Without root the victim cannot be made to take the pid; the call must
    // still be refused (the process is gone).
    assert!(
        line.ends_with(" refused"),
        "a connection whose process exited must get no SVID; got {line:?}\n{log}"
    );
    if nix::unistd::getuid().is_root() {
        assert!(line.contains("reused=true"), "{line}");
    }
    assert!(log.contains("attestation failed"), "{log}");
}

async fn workload_channel(path: &Path) -> tonic::transport::Channel {
    sigil_tests::workload_channel(path).await.unwrap()
}

/// A connection the agent accepted, retried (bounded) while it closes new
/// ones because earlier connections' slots are not released yet.
async fn connect_when_accepted(path: &Path) -> tonic::transport::Channel {
    let deadline = Instant::now() + WAIT;
    loop {
        match sigil_tests::workload_channel(path).await {
            Ok(ch) => return ch,
            Err(e) => assert!(Instant::now() < deadline, "never accepted: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens `FetchX509SVID` on `ch`: the open stream once its first message
/// (with SVIDs) came, or the refusal.
async fn open_stream(
    ch: &tonic::transport::Channel,
) -> Result<tonic::Streaming<sigil_proto::workload::X509svidResponse>, tonic::Status> {
    let mut c =
        sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(ch.clone());
    let mut req = tonic::Request::new(sigil_proto::workload::X509svidRequest {});
    req.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    let call = async {
        let mut s = c.fetch_x509svid(req).await?.into_inner();
        match s.message().await? {
            Some(m) if !m.svids.is_empty() => Ok(s),
            _ => Err(tonic::Status::unknown("no SVID in the first message")),
        }
    };
    tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in 20 s")))
}

/// The uid the other workload runs as (root tests only).
const OTHER_UID: u32 = 65534;

/// Runs the attacker's `call` mode as `OTHER_UID` from a copy it can read.
fn call_as_other_uid(a: &TestAgent, dir: &Path) -> String {
    let copy = dir.join("other-workload");
    if !copy.exists() {
        std::fs::copy(bin("sigil-test-attacker"), &copy).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    use std::os::unix::process::CommandExt;
    let out = Command::new(&copy)
        .uid(OTHER_UID)
        .gid(OTHER_UID)
        .arg("call")
        .arg(&a.socket)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn item12_per_uid_cap_refuses_one_uid_and_serves_another() {
    const CAP: usize = 3;
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start_with(
        &s,
        &format!("[limits]\nworkload_api_max_streams_per_uid = {CAP}\n"),
    )
    .unwrap();
    s.register_uid(&a, "spiffe://example.org/me");
    let root = nix::unistd::getuid().is_root();
    if root {
        s.cli_ok(&[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/other",
            "--parent-id",
            &a.agent_id,
            "--selector",
            &format!("unix:uid:{OTHER_UID}"),
        ]);
    }
    // Wait for the entry (each attempt's connection is closed again).
    let deadline = Instant::now() + WAIT;
    loop {
        let ch = workload_channel(&a.socket).await;
        if open_stream(&ch).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "no SVID\n{}", a.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // CAP streams from this uid on one connection: served and held. (The
    // probes' connection slots are released asynchronously: connect until
    // one is accepted.)
    let ch = connect_when_accepted(&a.socket).await;
    let mut held = Vec::new();
    for i in 0..CAP {
        held.push(
            open_stream(&ch)
                .await
                .unwrap_or_else(|e| panic!("stream {i}: {e}\n{}", a.log_text())),
        );
    }
    // One more stream from the same uid: Unavailable, naming the uid cap.
    let e = open_stream(&ch).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
    assert!(e.message().contains("from this uid"), "{e}");

    // Connections count too: CAP - 1 more are accepted, the next is closed.
    let mut conns = Vec::new();
    for _ in 1..CAP {
        conns.push(connect_when_accepted(&a.socket).await);
    }
    drop(held);
    // The held streams are gone (the agent notices the resets on its own
    // time), so a stream on an accepted connection is served again ...
    let deadline = Instant::now() + WAIT;
    loop {
        match open_stream(&conns[0]).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "not served again: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... but a connection over the cap is closed at accept: its client
    // sees a transport error, never an SVID.
    // (Closed at accept shows as a failed connect or, when the client's
    // handshake raced the close, as a transport error on the call; a stream
    // refused by the uid's stream cap is also no SVID.)
    if let Ok(over) = sigil_tests::workload_channel(&a.socket).await {
        let e = open_stream(&over).await.unwrap_err();
        assert!(
            matches!(e.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
                && (e.message().contains("transport error")
                    || e.message().contains("from this uid")),
            "{e}"
        );
    }

    // Meanwhile another uid is served.
    if root {
        let dir = tempfile::tempdir().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let got = call_as_other_uid(&a, dir.path());
            if got == "RESULT svid" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "uid {OTHER_UID} not served: {got}\n{}",
                a.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        a.log_text().contains("per-uid connection limit reached"),
        "{}",
        a.log_text()
    );
}
