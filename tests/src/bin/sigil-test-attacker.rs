//! A Workload API caller that plays the attacks of issue 14, item 2, as
//! real processes (driven by `tests/tests/workload_attack.rs`). It speaks
//! just enough HTTP/2 by hand to split one connection between processes:
//! the process that connects does the handshake, a child that inherited the
//! socket makes the call.
//!
//! Modes (each prints one `RESULT ...` line on stdout):
//! - `call <socket>`: connect and call `FetchX509SVID` (`RESULT svid` or
//!   `RESULT refused`).
//! - `stop <fd>`: write one byte to `fd`, then stop (SIGSTOP); the program
//!   an entry pins, exec'd by the attacker or run as the pid-reuse victim.
//! - `exec <socket> <pinned>`: P connects and handshakes, forks C, then
//!   execs `<pinned> stop <fd>`; C waits for that byte and calls over the
//!   inherited connection.
//! - `exit <socket> <pinned>`: P connects and handshakes, forks C, exits;
//!   C waits for P to be gone, makes `<pinned> stop` take P's pid (root:
//!   `ns_last_pid`) and calls over the inherited connection.
//! - `digest <socket>`: like `call`, but prints `RESULT svid <hash>` with a
//!   hash of the first response message (a rotated SVID hashes otherwise).
//! - `idle <socket> <count> <seconds>` (issue 21, item 2): keeps up to
//!   `count` connections open that never send a byte, topping them up every
//!   500 ms as the agent closes them, for `seconds`; then prints
//!   `RESULT idle attempts=<n> open=<m>`. Non-blocking connects, so a full
//!   backlog costs nothing.
//! - `hold <socket> <count>` (`workload_fuse.rs`): one call (so the agent
//!   knows this executable), then `count` threads wait; prints `READY`,
//!   and on a line on stdin the threads each connect, handshake and call
//!   `FetchX509SVID`. Prints `HANDSHAKEN <n>` once every handshake ended
//!   (the server's SETTINGS, or none within 20 s), then `RESULT hold
//!   svid=<n> refused=<n> closed=<n>` once every call did (an answer, or
//!   none within 20 s: `closed`). Run from a FUSE mount that stops
//!   answering, it makes calls whose executable the agent cannot look at.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use nix::unistd::{ForkResult, Pid, fork, pipe};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const TIMEOUT: Duration = Duration::from_secs(20);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(1).as_str() {
        "call" => {
            let mut s = connect(&arg(2));
            handshake(&mut s);
            println!("RESULT {}", call(&mut s));
        }
        "stop" => {
            let fd: i32 = arg(2).parse().expect("fd");
            // SAFETY: the fd was left open across exec for this purpose.
            let mut w = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            w.write_all(b"x").expect("signal the attacker");
            drop(w);
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP).expect("stop");
            // Killed by the test while stopped; never gets here normally.
        }
        "digest" => {
            let mut s = connect(&arg(2));
            handshake(&mut s);
            let mut first = None;
            let r = call_with(&mut s, &mut first);
            match first {
                Some(m) => {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    m.hash(&mut h);
                    println!("RESULT {r} {:016x}", h.finish());
                }
                None => println!("RESULT {r}"),
            }
        }
        "idle" => idle(
            &arg(2),
            arg(3).parse().expect("count"),
            Duration::from_secs(arg(4).parse().expect("seconds")),
        ),
        "hold" => hold(&arg(2), arg(3).parse().expect("count")),
        "exec" => exec_attack(&arg(2), &arg(3)),
        "exit" => exit_attack(&arg(2), &arg(3)),
        other => panic!("unknown mode {other:?}"),
    }
}

fn connect(socket: &str) -> UnixStream {
    let s = UnixStream::connect(socket).expect("connect to the Workload API");
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    s
}

fn exec_attack(socket: &str, pinned: &str) {
    let mut s = connect(socket);
    // The agent has accepted (and recorded) the connection once its
    // SETTINGS arrive.
    handshake(&mut s);
    let (r, w) = pipe().expect("pipe");
    // SAFETY: single-threaded program; the child only uses the socket and
    // the pipe, then exits.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(w);
            let mut r = std::fs::File::from(r);
            let mut b = [0u8; 1];
            // The byte comes from the pinned program: P has exec'd.
            r.read_exact(&mut b).expect("P exec'd the pinned program");
            println!("RESULT {}", call(&mut s));
            std::process::exit(0);
        }
        ForkResult::Parent { .. } => {
            drop(r);
            let fd = w.as_raw_fd();
            // Keep `w` open across exec (no CLOEXEC on pipe()'s fds).
            let e = Command::new(pinned).arg("stop").arg(fd.to_string()).exec();
            panic!("exec {pinned}: {e}");
        }
    }
}

fn exit_attack(socket: &str, pinned: &str) {
    let mut s = connect(socket);
    handshake(&mut s);
    let p_pid = std::process::id() as i32;
    let (r, w) = pipe().expect("pipe");
    // SAFETY: as in `exec_attack`.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(w);
            let mut r = std::fs::File::from(r);
            let mut rest = Vec::new();
            // EOF: every write end is closed, so P has exited.
            r.read_to_end(&mut rest).expect("P exited");
            wait_gone(p_pid);
            let reused = take_pid(p_pid, pinned);
            println!("RESULT reused={reused} {}", call(&mut s));
            std::process::exit(0);
        }
        ForkResult::Parent { .. } => {
            drop(r);
            // SAFETY: exit without running destructors of the shared socket.
            unsafe { nix::libc::_exit(0) };
        }
    }
}

/// Waits (bounded) until `/proc/<pid>` is gone: P exited and was reaped.
fn wait_gone(pid: i32) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(std::time::Instant::now() < deadline, "P never went away");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts `<pinned> stop` until it gets `pid` (root only: `ns_last_pid`).
fn take_pid(pid: i32, pinned: &str) -> bool {
    for _ in 0..200 {
        if std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).is_err() {
            return false;
        }
        let (r, w) = pipe().expect("pipe");
        let fd = w.as_raw_fd();
        let mut child = Command::new(pinned)
            .arg("stop")
            .arg(fd.to_string())
            .spawn()
            .expect("spawn the victim");
        drop(w);
        let mut b = [0u8; 1];
        let _ = std::fs::File::from(r).read_exact(&mut b);
        if child.id() as i32 == pid {
            // Left stopped; the test kills it.
            std::mem::forget(child);
            return true;
        }
        let _ = nix::sys::signal::kill(Pid::from_raw(child.id() as i32), nix::sys::signal::SIGKILL);
        let _ = child.wait();
    }
    false
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn read_frame(s: &mut UnixStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut h = [0u8; 9];
    s.read_exact(&mut h).ok()?;
    let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).ok()?;
    Some((h[3], h[4], stream, payload))
}

/// Client preface and SETTINGS; returns once the server's SETTINGS came.
fn handshake(s: &mut UnixStream) {
    assert!(try_handshake(s), "no server SETTINGS");
}

/// [`handshake`]: `false` when the server's SETTINGS did not come within
/// the read timeout (or the connection closed).
fn try_handshake(s: &mut UnixStream) -> bool {
    if s.write_all(PREFACE).is_err() || s.write_all(&frame(4, 0, 0, &[])).is_err() {
        return false;
    }
    loop {
        match read_frame(s) {
            Some((4, flags, _, _)) if flags & 1 == 0 => return true,
            Some(_) => {}
            None => return false,
        }
    }
}

/// `FetchX509SVID` on stream 1: `svid` when a response message arrives,
/// `refused` when the stream ends without one, `closed` when the
/// connection does.
fn call(s: &mut UnixStream) -> &'static str {
    call_with(s, &mut None)
}

/// [`call`], keeping the first response message's payload in `first`.
fn call_with(s: &mut UnixStream, first: &mut Option<Vec<u8>>) -> &'static str {
    let mut block = Vec::new();
    for (n, v) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/SpiffeWorkloadAPI/FetchX509SVID"),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("workload.spiffe.io", "true"),
    ] {
        // Literal without indexing, new name, no Huffman (RFC 7541 §6.2.2).
        block.push(0);
        block.push(n.len() as u8);
        block.extend_from_slice(n.as_bytes());
        block.push(v.len() as u8);
        block.extend_from_slice(v.as_bytes());
    }
    let mut out = frame(4, 1, 0, &[]);
    out.extend(frame(1, 0x4, 1, &block));
    // An empty X509SVIDRequest: uncompressed, length 0.
    out.extend(frame(0, 0x1, 1, &[0, 0, 0, 0, 0]));
    s.write_all(&out).expect("request");
    loop {
        let Some((kind, flags, stream, payload)) = read_frame(s) else {
            return "closed";
        };
        match kind {
            0 if stream == 1 && payload.len() > 5 => {
                *first = Some(payload);
                return "svid";
            }
            1 if stream == 1 && flags & 1 != 0 => return "refused",
            3 if stream == 1 => return "refused",
            6 if flags & 1 == 0 => {
                let _ = s.write_all(&frame(6, 1, 0, &payload));
            }
            7 => return "closed",
            _ => {}
        }
    }
}

/// The `hold` mode: after one call, `count` threads that each connect,
/// handshake and call when stdin says so.
fn hold(socket: &str, count: usize) {
    // One call first, so the agent knows this executable (its hash
    // cached), and so every piece of code the threads run below has run
    // once (its pages read from this program's filesystem) before that
    // filesystem may stop answering.
    let mut warm = connect(socket);
    handshake(&mut warm);
    assert_eq!(call(&mut warm), "svid", "the warm-up call got no SVID");
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = std::sync::Arc::new(std::sync::Mutex::new(go_rx));
    let (shaken_tx, shaken_rx) = std::sync::mpsc::channel::<bool>();
    let threads: Vec<_> = (0..count)
        .map(|_| {
            let (go, shaken, socket) = (go_rx.clone(), shaken_tx.clone(), socket.to_string());
            std::thread::spawn(move || {
                let _ = go.lock().map(|rx| rx.recv());
                let mut s = connect(&socket);
                let ok = try_handshake(&mut s);
                let _ = shaken.send(ok);
                if ok { call(&mut s) } else { "closed" }
            })
        })
        .collect();
    println!("READY");
    std::io::stdout().flush().expect("stdout");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("stdin");
    for _ in 0..count {
        let _ = go_tx.send(());
    }
    let shaken = (0..count)
        .filter(|_| shaken_rx.recv().unwrap_or(false))
        .count();
    println!("HANDSHAKEN {shaken}");
    std::io::stdout().flush().expect("stdout");
    let (mut svid, mut refused, mut closed) = (0, 0, 0);
    for t in threads {
        match t.join().expect("call thread") {
            "svid" => svid += 1,
            "refused" => refused += 1,
            _ => closed += 1,
        }
    }
    println!("RESULT hold svid={svid} refused={refused} closed={closed}");
}

/// The `idle` mode: connections that never speak, kept topped up.
fn idle(path: &str, count: usize, hold: Duration) {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, recv, socket,
    };
    let addr = UnixAddr::new(path).expect("socket path");
    let deadline = std::time::Instant::now() + hold;
    let mut open: Vec<OwnedFd> = Vec::new();
    let mut attempts = 0u64;
    while std::time::Instant::now() < deadline {
        // Drop the connections the agent closed (EOF or an error).
        open.retain(|fd| {
            let mut b = [0u8; 1];
            matches!(
                recv(
                    fd.as_raw_fd(),
                    &mut b,
                    MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
                ),
                Err(nix::errno::Errno::EAGAIN)
            )
        });
        while open.len() < count {
            attempts += 1;
            let Ok(fd) = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                None,
            ) else {
                break;
            };
            match connect(fd.as_raw_fd(), &addr) {
                Ok(()) => open.push(fd),
                // The backlog is full: try again next round.
                Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("RESULT idle attempts={attempts} open={}", open.len());
}
