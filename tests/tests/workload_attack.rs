//! Issue 14, item 2, as real processes: the Workload API attests the
//! process that connected, as it was when the connection was accepted. A
//! connection handed to another process is worth nothing once the process
//! that made it runs another program (exec attack) or is gone and its pid
//! taken by a victim (pid reuse). The attacker is `sigil-test-attacker`;
//! the entry pins a copy of it by `unix:path`.

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
