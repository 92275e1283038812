//! Issue 21 item 5: `systemd:unit:<name>.service`, a selector a container
//! cannot forge, with real processes. The test makes a cgroup named like a
//! system service (`/system.slice/sigil-test-<pid>.service` in the cgroup v2
//! hierarchy) and runs `sigil-agent api fetch` in it against a real agent:
//! in the host's cgroup namespace it gets the SVID registered for that
//! unit; the same process in a new cgroup namespace (`unshare -C`) gets
//! nothing, although the agent reads the same cgroup path for it.
//!
//! Needs root, a cgroup v2 mount, `unshare` (util-linux), a test process in
//! the kernel's initial cgroup namespace, and no running systemd (whose
//! hierarchy it would write into; there `systemd-run` is the way). Without
//! them it says what is missing and passes without running.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sigil_tests::{TestAgent, TestServer, bin, run_bounded, text};

/// The kernel's initial cgroup namespace inode (`PROC_CGROUP_INIT_INO`).
const INITIAL_CGROUP_NS_INO: u64 = 0xEFFF_FFFB;

/// Why the test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    if Path::new("/run/systemd/system").exists() {
        return Some("systemd is running (use systemd-run there)".into());
    }
    let ns = std::fs::metadata("/proc/self/ns/cgroup")
        .map(|m| m.ino())
        .ok();
    if ns != Some(INITIAL_CGROUP_NS_INO) {
        return Some(format!("not in the initial cgroup namespace ({ns:?})"));
    }
    if !run_bounded(Command::new("unshare").args(["-C", "true"]))
        .status
        .success()
    {
        return Some("`unshare -C` does not work".into());
    }
    None
}

/// Where cgroup v2 is mounted.
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
    })
}

/// A cgroup named like a system service; removed on drop (with
/// `system.slice` if this made it).
struct ServiceCgroup {
    dir: PathBuf,
    slice: Option<PathBuf>,
}

impl ServiceCgroup {
    fn new(root: &Path, unit: &str) -> ServiceCgroup {
        let slice = root.join("system.slice");
        let made_slice = !slice.exists();
        std::fs::create_dir_all(slice.join(unit)).unwrap();
        ServiceCgroup {
            dir: slice.join(unit),
            slice: made_slice.then_some(slice),
        }
    }
}

impl Drop for ServiceCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(s) = &self.slice {
            let _ = std::fs::remove_dir(s);
        }
    }
}

/// Runs `sigil-agent api fetch x509` as a process that first moves itself
/// into `cgroup` and then, with `new_ns`, into a new cgroup namespace.
fn fetch_in(cgroup: &Path, agent: &TestAgent, new_ns: bool, timeout: &str) -> std::process::Output {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        r#"cg=$1; shift; echo $$ > "$cg/cgroup.procs" && exec "$@""#,
        "sh",
    ])
    .arg(cgroup);
    if new_ns {
        cmd.args(["unshare", "-C"]);
    }
    cmd.arg(bin("sigil-agent"))
        .args("api fetch x509 --output json --timeout".split(' '))
        .arg(timeout)
        .arg("--socket")
        .arg(&agent.socket);
    run_bounded(&mut cmd)
}

#[test]
fn i21_5_systemd_unit_selector_only_in_the_host_cgroup_namespace() {
    if let Some(why) = missing() {
        eprintln!("NOT RUN: {why}");
        return;
    }
    let Some(root) = cgroup2_mount() else {
        eprintln!("NOT RUN: no cgroup v2 mount");
        return;
    };
    let s = TestServer::start(Default::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    let unit = format!("sigil-test-{}.service", std::process::id());
    let cgroup = ServiceCgroup::new(&root, &unit);
    let id = "spiffe://example.org/helper/by-unit";
    s.register(&a, id, &format!("systemd:unit:{unit}"));

    // In the host's cgroup namespace: the unit's SVID (retrying until the
    // entry reached the agent).
    let out = fetch_in(&cgroup.dir, &a, false, "30s");
    assert!(
        out.status.success() && text(&out.stdout).contains(id),
        "the unit's process got no SVID: {}{}\nagent log:\n{}",
        text(&out.stdout),
        text(&out.stderr),
        a.log_text()
    );

    // The same cgroup, a new cgroup namespace: no systemd selector, so no
    // SVID; the agent says why.
    let out = fetch_in(&cgroup.dir, &a, true, "2s");
    assert!(
        !out.status.success() && !text(&out.stdout).contains(id),
        "a process in another cgroup namespace got the unit's SVID: {}",
        text(&out.stdout)
    );
    assert!(
        a.log_text()
            .contains("caller is not in the host's cgroup namespace"),
        "{}",
        a.log_text()
    );
}
