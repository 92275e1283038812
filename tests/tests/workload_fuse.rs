//! Issue 15 (ValidateJWTSVID throughput) moved workload attestation onto
//! the Workload API's async workers when it needs nothing but procfs and
//! memory. A caller chooses where its executable lives, and a user can run
//! one from a FUSE mount whose daemon never answers: anything the agent
//! then asks of that file (open, `stat` past the attribute cache,
//! `statfs`) waits forever. Done on an async worker — or at accept — a few
//! such calls would stall the Workload API for every other workload; done
//! on a blocking thread per call, a few hundred would take every thread of
//! the blocking pool, which every accept needs.
//!
//! As real processes: `sigil-test-attacker hold`, run as another uid from
//! a FUSE mount served by this test (`sigil_tests::stall_fs`), makes one
//! call (so the agent knows the executable); then the filesystem stops
//! answering and the attacker opens 48 connections and calls on all of
//! them at once. Every connection must be accepted (the server's SETTINGS
//! arrive: the accept asks the executable's filesystem nothing), the
//! agent must not hold more blocking threads than one uid's turns
//! (`workload_api::blocking`, 16), and this workload must get its SVID
//! call after call while the attacker's calls are held. Once the
//! filesystem answers again every held call gets its SVID. Needs root
//! (mount(2) of FUSE, `setpriv`) and /dev/fuse, as CI has; elsewhere the
//! test says so and is skipped (under CI it fails).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sigil_proto::workload as wpb;
use sigil_tests::stall_fs::StallFs;
use sigil_tests::{ServerOptions, TestAgent, TestServer, bin, command_as};

/// Calls the attacker holds at once: more than the agent has async
/// workers, and than one uid's turns on blocking threads, many times over.
const HELD: usize = 48;
/// Blocking attestations one uid may have at once (the agent's
/// `workload_api::blocking::PER_UID`).
const PER_UID_TURNS: usize = 16;
/// The attacker's uid.
const ATTACKER_UID: u32 = 65533;
/// How long another workload's call may take while they are held.
const SERVED_WITHIN: Duration = Duration::from_secs(5);

fn can_mount_fuse() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root: cannot mount FUSE".into());
    }
    if !std::path::Path::new("/dev/fuse").exists() {
        return Err("no /dev/fuse".into());
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return Err("no setpriv".into());
    }
    Ok(())
}

/// Threads of process `pid` waiting in the kernel's FUSE code (their
/// `wchan`), and every `wchan` seen with its count (for the message).
fn in_fuse(pid: u32) -> (usize, std::collections::BTreeMap<String, usize>) {
    let mut seen = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let wchan = std::fs::read_to_string(task.unwrap().path().join("wchan")).unwrap_or_default();
        *seen.entry(wchan).or_insert(0) += 1;
    }
    let n = seen
        .iter()
        .filter(|(w, _)| w.contains("fuse") || w.contains("request_wait_answer"))
        .map(|(_, n)| n)
        .sum();
    (n, seen)
}

/// One `FetchX509SVID` over a new connection: `Ok(elapsed)` once its first
/// message carries an SVID.
async fn fetch_once(socket: &std::path::Path) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut c = sigil_agent::workload_client::connect(socket).await?;
    let mut s = c
        .fetch_x509svid(wpb::X509svidRequest {})
        .await?
        .into_inner();
    let m = s
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
    anyhow::ensure!(!m.svids.is_empty(), "no SVID in the first message");
    Ok(t0.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_whose_fuse_executable_never_answers_stalls_no_one_else() {
    if let Err(why) = can_mount_fuse() {
        assert!(std::env::var_os("CI").is_none(), "{why} (required in CI)");
        eprintln!("skipped: {why}");
        return;
    }
    let server = TestServer::start(ServerOptions::default()).unwrap();
    let agent = TestAgent::start(&server).unwrap();
    let uid = nix::unistd::getuid().as_raw();
    for (name, uid) in [("fuse-test", uid), ("fuse-attacker", ATTACKER_UID)] {
        server.cli_ok(&[
            "entry",
            "create",
            "--spiffe-id",
            &format!("spiffe://example.org/{name}"),
            "--parent-id",
            &agent.agent_id,
            "--selector",
            &format!("unix:uid:{uid}"),
        ]);
    }
    // The other workload (this test) is served before anything is held.
    let deadline = Instant::now() + Duration::from_secs(60);
    while fetch_once(&agent.socket).await.is_err() {
        assert!(Instant::now() < deadline, "no SVID\n{}", agent.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mnt = tempfile::tempdir().unwrap();
    let fs = StallFs::mount(mnt.path(), "held-workload", &bin("sigil-test-attacker")).unwrap();
    let mut attacker = command_as(fs.exe(), Some(ATTACKER_UID))
        .arg("hold")
        .arg(&agent.socket)
        .arg(HELD.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = attacker.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(ready, "READY");

    // The daemon stops answering; the attacker connects 48 times and
    // calls on each connection.
    let agent_pid = agent.pid().expect("agent pid");
    fs.stall(true);
    let mut stdin = attacker.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();
    drop(stdin);
    let shaken = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the attacker reports its handshakes");
    assert_eq!(
        shaken,
        format!("HANDSHAKEN {HELD}"),
        "connections from a program on a stalled filesystem were not all accepted (the \
         accept waits on that filesystem)\n{}",
        agent.log_text()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs.held() == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing ever waited on the stalled FUSE filesystem: the attack did not happen\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give every held call time to reach the agent and be stuck there.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (stuck, wchans) = in_fuse(agent_pid);
    assert!(
        (1..=PER_UID_TURNS).contains(&stuck),
        "{HELD} held calls of one uid: {stuck} agent threads wait on the FUSE filesystem \
         (turns per uid: {PER_UID_TURNS}); threads by wchan: {wchans:?}"
    );

    // Another workload is served, call after call, each on a new
    // connection (accept, attestation, first message).
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let took = tokio::time::timeout(SERVED_WITHIN, fetch_once(&agent.socket))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "call {i} of another workload not served within {SERVED_WITHIN:?} while \
                     {HELD} calls wait on a FUSE executable (held requests: {})\n{}",
                    fs.held(),
                    agent.log_text()
                )
            })
            .unwrap();
        slowest = slowest.max(took);
    }
    eprintln!(
        "20 calls served while {HELD} were held on FUSE ({} requests held); slowest {slowest:?}; \
         {stuck} agent threads waiting on FUSE",
        fs.held()
    );

    // The filesystem answers again: the held calls end, and the agent
    // serves as before.
    fs.stall(false);
    let result = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the attacker's calls ended after the filesystem answered");
    eprintln!("attacker: {result}");
    assert_eq!(
        result,
        format!("RESULT hold svid={HELD} refused=0 closed=0")
    );
    assert!(attacker.wait().unwrap().success());
    fetch_once(&agent.socket).await.unwrap();
    drop(fs);
}
