//! The README's quick start, run the way a user runs it: `deploy/quickstart.sh`
//! starts a server and an agent, prints the SVID's SPIFFE ID and expiry and
//! the metrics URLs, and leaves both daemons running after it exits; running
//! it again replaces them with a fresh pair; `--stop` stops them and removes
//! the directory, and refuses to delete a directory it did not make.
//!
//! The script builds the binaries with cargo unless `SIGIL_BIN_DIR` is set;
//! here it gets the ones this test run built (CI runs the script as is, build
//! included).

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sigil_tests::{bin, prom, sigil_server, text};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How long one run of the script may take (it waits up to 20 s for each
/// daemon and 30 s for the SVID).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/quickstart.sh")
}

struct QuickStart {
    tmp: tempfile::TempDir,
    dir: PathBuf,
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl QuickStart {
    fn new() -> QuickStart {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("qs");
        QuickStart { tmp, dir }
    }

    /// Runs the script with `args`; stdout and stderr go to files (not
    /// pipes), so daemons it leaves behind cannot hold the test up.
    fn run(&self, args: &[&str]) -> Run {
        let out = self.tmp.path().join("stdout");
        let err = self.tmp.path().join("stderr");
        let bin_dir = bin("sigil-server").parent().unwrap().to_path_buf();
        bin("sigil-agent");
        let mut child = Command::new("bash")
            .arg(script())
            .args(args)
            .env("SIGIL_QUICKSTART_DIR", &self.dir)
            .env("SIGIL_BIN_DIR", bin_dir)
            .env_remove("SIGIL_ADMIN_SOCKET")
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + RUN_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "quickstart.sh {args:?} took over {RUN_TIMEOUT:?}:\n{}{}",
                    fs::read_to_string(&out).unwrap_or_default(),
                    fs::read_to_string(&err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Run {
            status,
            stdout: fs::read_to_string(&out).unwrap(),
            stderr: fs::read_to_string(&err).unwrap(),
        }
    }

    fn run_ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert!(
            r.status.success(),
            "quickstart.sh {args:?} failed ({}):\n{}\n{}",
            r.status,
            r.stdout,
            r.stderr
        );
        r
    }

    fn pid(&self, name: &str) -> i32 {
        let p = self.dir.join(format!("{name}.pid"));
        fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for QuickStart {
    fn drop(&mut self) {
        // Never leave daemons behind, even when an assertion failed.
        for name in ["agent", "server"] {
            if let Ok(pid) = fs::read_to_string(self.dir.join(format!("{name}.pid")))
                && let Ok(pid) = pid.trim().parse::<i32>()
                && is_ours(pid, name)
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Whether `pid` is a live (not zombie) process running our `sigil-<name>`.
fn is_ours(pid: i32, name: &str) -> bool {
    let alive = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false);
    alive
        && fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
            exe.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("sigil-{name}")))
        })
}

fn wait_gone(pid: i32, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while is_ours(pid, name) {
        assert!(
            Instant::now() < deadline,
            "sigil-{name} (pid {pid}) still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value after `prefix` on the line that starts with it.
fn line_value<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{out}"))
        .trim()
}

/// `GET url` (plain HTTP on loopback): status and body.
fn get(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let addr: SocketAddr = host.parse().unwrap_or_else(|e| panic!("{url}: {e}"));
    prom::http_get(addr, &format!("/{path}")).unwrap_or_else(|e| panic!("{url}: {e:#}"))
}

/// The metrics URLs the script printed (`curl -s http://.../metrics`).
fn metrics_urls(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.trim_start().strip_prefix("curl -s "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|u| u.ends_with("/metrics"))
        .map(str::to_string)
        .collect()
}

fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .expect("the test's uid has a user name")
        .name
}

/// Checks what a successful run promises; returns the daemons' pids.
fn check_running(qs: &QuickStart, r: &Run) -> (i32, i32) {
    let id = line_value(&r.stdout, "SPIFFE ID:");
    assert_eq!(id, format!("spiffe://example.org/user/{}", current_user()));
    let expires = OffsetDateTime::parse(line_value(&r.stdout, "Not after:"), &Rfc3339)
        .unwrap_or_else(|e| panic!("expiry: {e}\n{}", r.stdout));
    let now = OffsetDateTime::now_utc();
    assert!(expires > now, "expired SVID: {expires}");
    assert!(
        expires < now + Duration::from_secs(3600 + 60),
        "default TTL is 1h: {expires}"
    );
    assert!(qs.dir.join("svid/svid.pem").exists());
    assert!(qs.dir.join("svid/svid_key.pem").exists());

    // The script has exited; both daemons keep running.
    let (server, agent) = (qs.pid("server"), qs.pid("agent"));
    assert!(is_ours(server, "server"), "sigil-server is not running");
    assert!(is_ours(agent, "agent"), "sigil-agent is not running");

    // The printed next commands work: the admin socket answers.
    let socket = line_value(&r.stdout, "export SIGIL_ADMIN_SOCKET=");
    let out = sigil_server(&["entry", "count"], &[("SIGIL_ADMIN_SOCKET", socket)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains('1'), "{}", text(&out.stdout));
    assert!(
        line_value(&r.stdout, "export SPIFFE_ENDPOINT_SOCKET=")
            .ends_with(&format!("{}/run/agent.sock", qs.dir.display()))
    );

    // And so do the metrics and health URLs, one per daemon: both ready,
    // the server counting the one entry, the agent caching the one SVID.
    let urls = metrics_urls(&r.stdout);
    assert_eq!(urls.len(), 2, "{}", r.stdout);
    for (url, metric) in urls
        .iter()
        .zip(["sigil_server_entries", "sigil_agent_cached_svids"])
    {
        let (code, body) = get(url);
        assert_eq!(code, 200, "{url}: {body}");
        let families = prom::parse(&body).unwrap_or_else(|e| panic!("{url}: {e:#}\n{body}"));
        let value = families
            .get(metric)
            .and_then(|f| f.value(metric, &[]))
            .unwrap_or_else(|| panic!("{url}: no {metric}:\n{body}"));
        assert_eq!(value, 1.0, "{url}: {metric}");
        let ready = url.replace("/metrics", "/ready");
        let (code, body) = get(&ready);
        assert_eq!(code, 200, "{ready}: {body}");
    }
    (server, agent)
}

#[test]
fn quickstart_starts_restarts_and_stops() {
    let qs = QuickStart::new();

    let first = qs.run_ok(&[]);
    let (server1, agent1) = check_running(&qs, &first);

    // A second plain run replaces the running pair with a fresh one.
    let second = qs.run_ok(&[]);
    assert!(
        second.stdout.contains("Stopping the previous quick start"),
        "{}",
        second.stdout
    );
    wait_gone(server1, "server");
    wait_gone(agent1, "agent");
    let (server2, agent2) = check_running(&qs, &second);
    assert_ne!((server1, agent1), (server2, agent2));

    // --stop stops both and removes the directory; again, it is a no-op.
    let stop = qs.run_ok(&["--stop"]);
    assert!(stop.stdout.contains("Stopped"), "{}", stop.stdout);
    wait_gone(server2, "server");
    wait_gone(agent2, "agent");
    assert!(!qs.dir.exists(), "{} is still there", qs.dir.display());
    let again = qs.run_ok(&["--stop"]);
    assert!(
        again.stdout.contains("No quick start is running"),
        "{}",
        again.stdout
    );
}

#[test]
fn quickstart_refuses_to_remove_a_directory_it_did_not_make() {
    let qs = QuickStart::new();
    fs::create_dir(&qs.dir).unwrap();
    let precious = qs.dir.join("precious.txt");
    fs::write(&precious, "keep me").unwrap();
    for args in [&["--stop"][..], &[]] {
        let r = qs.run(args);
        assert_eq!(
            r.status.code(),
            Some(1),
            "{args:?}: {}{}",
            r.stdout,
            r.stderr
        );
        assert!(
            r.stderr.contains("not made by the quick start"),
            "{}",
            r.stderr
        );
        assert!(precious.exists());
    }
    let r = qs.run(&["--bogus"]);
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("usage"), "{}", r.stderr);
}
