//! Tests of the `systemd` attestor: the cgroup-line parser, and the
//! namespace rule over a fabricated `/proc` (the seam; the real-process
//! test is `tests/tests/systemd_unit.rs`).

use std::fs;
use std::sync::Arc;

use super::*;
use crate::workload_attestor::Attestors;
use crate::workload_attestor::tests::FakeProc;

const HELPER: &str = "sigil-helper@nginx.service";

#[test]
fn i21_5_system_services_are_found() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "cgroup v2",
            "0::/system.slice/sshd.service\n",
            "sshd.service",
        ),
        (
            "v2, template instance in its slice",
            "0::/system.slice/system-sigil\\x2dhelper.slice/sigil-helper@nginx.service\n",
            HELPER,
        ),
        (
            "v1 hybrid: v1 controllers, name=systemd and v2 agree",
            "12:memory:/system.slice/sshd.service\n\
             1:name=systemd:/system.slice/sshd.service\n\
             0::/system.slice/sshd.service\n",
            "sshd.service",
        ),
        (
            "v1 legacy: an unused v2 at its root",
            "4:cpu,cpuacct:/system.slice/cron.service\n\
             1:name=systemd:/system.slice/cron.service\n0::/\n",
            "cron.service",
        ),
        (
            "v2 used, name=systemd unmanaged at its root",
            "9:name=systemd:/\n4:memory:/x\n0::/system.slice/s.service\n",
            "s.service",
        ),
        (
            "a service in the root slice",
            "0::/foo.service\n",
            "foo.service",
        ),
        (
            "a service in a custom slice",
            "0::/custom.slice/custom-db.slice/postgresql@16-main.service\n",
            "postgresql@16-main.service",
        ),
        (
            "garbage lines are skipped",
            "garbage\n\n:::\n0::/system.slice/sshd.service\n",
            "sshd.service",
        ),
    ];
    for (name, text, unit) in cases {
        assert_eq!(
            unit_from_cgroup(text).as_deref(),
            Some(*unit),
            "{name}: {text:?}"
        );
    }
}

#[test]
fn i21_5_scopes_user_units_and_garbage_have_no_unit() {
    let cases: &[(&str, &str)] = &[
        ("empty", ""),
        ("v2 root", "0::/\n"),
        ("init", "0::/init.scope\n"),
        (
            "login session",
            "0::/user.slice/user-1000.slice/session-3.scope\n",
        ),
        (
            "a user's service manager",
            "0::/user.slice/user-1000.slice/user@1000.service\n",
        ),
        (
            "a user service (its user names it)",
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/sigil-helper@nginx.service\n",
        ),
        ("a service in user.slice", "0::/user.slice/sshd.service\n"),
        (
            "a user manager outside user.slice",
            "0::/system.slice/user@0.service\n",
        ),
        (
            "a transient scope (systemd-run --scope)",
            "0::/system.slice/run-r1234.scope\n",
        ),
        (
            "a container scope",
            "0::/system.slice/docker-3f8a9c1d2e4b5a6978c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2.scope\n",
        ),
        (
            "a sub-cgroup of a delegated service",
            "0::/system.slice/containerd.service/sigil-helper@nginx.service\n",
        ),
        ("a slice only", "0::/system.slice\n"),
        ("not under a slice", "0::/docker/sshd.service\n"),
        ("an empty slice name", "0::/.slice/sshd.service\n"),
        ("an empty unit name", "0::/system.slice/.service\n"),
        ("a relative path", "0::system.slice/sshd.service\n"),
        ("a trailing slash", "0::/system.slice/sshd.service/\n"),
        ("a space in the name", "0::/system.slice/ss hd.service\n"),
        (
            "v1 only, not name=systemd",
            "4:memory:/system.slice/sshd.service\n",
        ),
        (
            "v1 and v2 disagree",
            "1:name=systemd:/system.slice/a.service\n0::/system.slice/b.service\n",
        ),
        (
            "v2 twice",
            "0::/system.slice/a.service\n0::/system.slice/a.service\n",
        ),
    ];
    for (name, text) in cases {
        assert_eq!(unit_from_cgroup(text), None, "{name}: {text:?}");
    }
    let too_long = format!("0::/{}.service\n", "a".repeat(250));
    assert_eq!(unit_from_cgroup(&too_long), None, "a name over 255 bytes");
}

/// A fake process in `sigil-helper@nginx.service` whose cgroup namespace
/// is a file; the host's is that file's inode or another's.
fn fake_in_helper_unit() -> (FakeProc, u64) {
    let fake = FakeProc::new("prog");
    fs::write(
        fake.dir().join("cgroup"),
        "0::/system.slice/system-sigil\\x2dhelper.slice/sigil-helper@nginx.service\n",
    )
    .unwrap();
    fs::create_dir(fake.dir().join("ns")).unwrap();
    fs::write(fake.dir().join("ns/cgroup"), "").unwrap();
    let ino = fs::metadata(fake.dir().join("ns/cgroup")).unwrap().ino();
    (fake, ino)
}

fn attest(fake: &FakeProc, host: Option<u64>) -> Vec<String> {
    let attestors = Attestors::new(
        fake.root_path(),
        vec![Arc::new(SystemdAttestor::with_host_cgroup_ns(host))],
    );
    let selectors = attestors.mark_and_attest(&fake.cred()).unwrap();
    selectors.iter().map(ToString::to_string).collect()
}

#[test]
fn i21_5_systemd_unit_only_in_the_host_cgroup_namespace() {
    let (fake, ino) = fake_in_helper_unit();
    assert_eq!(
        attest(&fake, Some(ino)),
        vec![format!("systemd:unit:{HELPER}")]
    );
    // Another cgroup namespace than the host's; an agent outside the host's.
    assert!(attest(&fake, Some(ino + 1)).is_empty());
    assert!(attest(&fake, None).is_empty());
    // No readable namespace link, or no cgroup file: nothing, no error.
    fs::remove_file(fake.dir().join("ns/cgroup")).unwrap();
    assert!(attest(&fake, Some(ino)).is_empty());
    let (fake, ino) = fake_in_helper_unit();
    fs::remove_file(fake.dir().join("cgroup")).unwrap();
    assert!(attest(&fake, Some(ino)).is_empty());
}

#[test]
fn the_agent_outside_the_initial_cgroup_namespace_disables_it() {
    // A fabricated procfs: `self/ns/cgroup` is an ordinary file, never the
    // initial namespace.
    let (fake, _) = fake_in_helper_unit();
    let self_dir = fake.root_path().join("self/ns");
    fs::create_dir_all(&self_dir).unwrap();
    fs::write(self_dir.join("cgroup"), "").unwrap();
    let detected = SystemdAttestor::detect(fake.root_path());
    assert_eq!(detected.host_cgroup_ns, None);
    // The real one: whatever this machine is, detection reads the inode.
    let real = SystemdAttestor::detect(Path::new("/proc"));
    let own = fs::metadata("/proc/self/ns/cgroup").map(|m| m.ino()).ok();
    assert_eq!(
        real.host_cgroup_ns,
        own.filter(|i| *i == INITIAL_CGROUP_NS_INO)
    );
}
