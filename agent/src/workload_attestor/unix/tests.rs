//! Tests of the unix attestor, on the test process, a child, and fabricated
//! `/proc` trees.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Child, Command};

use nix::unistd::{Gid, Group, Uid, User};
use ring::digest;

use super::exe_hash::{HASH_CACHE_CAPACITY, sha256_hex};
use super::*;
use crate::workload_attestor::PeerCred;
use crate::workload_attestor::exe_file::FileVersion;
use crate::workload_attestor::tests::{CONTAINER_ID, FakeProc, Subject, unavailable_reason};

fn attestor() -> Subject {
    Subject::new("/proc", UnixAttestorConfig::default())
}

fn self_cred() -> PeerCred {
    PeerCred {
        pid: i32::try_from(std::process::id()).unwrap(),
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
    }
}

fn file_sha256(path: &Path) -> String {
    hex::encode(digest::digest(&digest::SHA256, &fs::read(path).unwrap()))
}

fn strings(selectors: &[Selector]) -> BTreeSet<String> {
    selectors.iter().map(ToString::to_string).collect()
}

fn values<'a>(selectors: &'a BTreeSet<String>, prefix: &str) -> Vec<&'a str> {
    selectors
        .iter()
        .filter_map(|s| s.strip_prefix(prefix))
        .collect()
}

/// Kills and reaps the child even when an assertion fails.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn attests_the_test_process() {
    let attestor = attestor();
    let cred = self_cred();
    let got = strings(&attestor.attest(&cred).unwrap());

    assert!(got.contains(&format!("unix:uid:{}", cred.uid)), "{got:?}");
    assert!(got.contains(&format!("unix:gid:{}", cred.gid)), "{got:?}");
    if let Some(user) = User::from_uid(Uid::from_raw(cred.uid)).unwrap() {
        assert!(got.contains(&format!("unix:user:{}", user.name)), "{got:?}");
    }
    if let Some(group) = Group::from_gid(Gid::from_raw(cred.gid)).unwrap() {
        assert!(
            got.contains(&format!("unix:group:{}", group.name)),
            "{got:?}"
        );
    }

    let exe = std::env::current_exe().unwrap().canonicalize().unwrap();
    assert_eq!(
        values(&got, "unix:path:"),
        vec![exe.to_str().unwrap()],
        "{got:?}"
    );
    assert_eq!(
        values(&got, "unix:sha256:"),
        vec![file_sha256(&exe).as_str()],
        "{got:?}"
    );

    let expected_gids: BTreeSet<String> = nix::unistd::getgroups()
        .unwrap()
        .into_iter()
        .map(|g| g.as_raw().to_string())
        .collect();
    let got_gids: BTreeSet<String> = values(&got, "unix:supplementary_gid:")
        .into_iter()
        .map(str::to_string)
        .collect();
    assert_eq!(got_gids, expected_gids);
}

#[test]
fn the_second_attestation_of_a_binary_uses_the_cache() {
    let attestor = attestor();
    let first = attestor.attest(&self_cred()).unwrap();
    assert_eq!(attestor.cache_len(), 1);
    assert_eq!(attestor.hashes.computed(), 1);

    let second = attestor.attest(&self_cred()).unwrap();
    assert_eq!(attestor.cache_len(), 1);
    assert_eq!(attestor.hashes.computed(), 1);
    assert_eq!(strings(&first), strings(&second));
}

#[test]
fn executables_over_the_limit_are_not_hashed() {
    let attestor = Subject::new(
        "/proc",
        UnixAttestorConfig {
            max_exe_hash_bytes: 1,
        },
    );
    let got = strings(&attestor.attest(&self_cred()).unwrap());
    assert!(values(&got, "unix:sha256:").is_empty(), "{got:?}");
    assert_eq!(values(&got, "unix:path:").len(), 1, "{got:?}");
    assert_eq!(attestor.cache_len(), 0);
}

#[test]
fn a_process_that_does_not_exist_is_unavailable() {
    // pid_max is at most 2^22, so this pid never exists.
    for pid in [i32::MAX, 0, -1] {
        let cred = PeerCred { pid, ..self_cred() };
        match attestor().attest(&cred) {
            Err(WorkloadAttestError::Unavailable { pid: p, .. }) => assert_eq!(p, pid),
            other => panic!("pid {pid}: {other:?}"),
        }
    }
}

#[test]
fn attests_a_child_process_by_its_pid() {
    let child = KillOnDrop(Command::new("sleep").arg("5").spawn().unwrap());
    // `spawn` returns once the child has executed `sleep`.
    let cred = PeerCred {
        pid: i32::try_from(child.0.id()).unwrap(),
        ..self_cred()
    };
    let got = strings(&attestor().attest(&cred).unwrap());

    let sleep = std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("sleep"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap()
        .canonicalize()
        .unwrap();
    assert_eq!(
        values(&got, "unix:path:"),
        vec![sleep.to_str().unwrap()],
        "{got:?}"
    );
    assert_eq!(
        values(&got, "unix:sha256:"),
        vec![file_sha256(&sleep).as_str()],
        "{got:?}"
    );
    assert!(got.contains(&format!("unix:uid:{}", cred.uid)), "{got:?}");
}

#[test]
fn the_fake_proc_tree_gives_every_selector() {
    let fake = FakeProc::new("prog");
    let got = strings(&fake.attestor().attest(&fake.cred()).unwrap());
    let expected: BTreeSet<String> = [
        "unix:uid:4000000123".to_string(),
        "unix:gid:4000000456".to_string(),
        "unix:supplementary_gid:4".to_string(),
        "unix:supplementary_gid:27".to_string(),
        "unix:supplementary_gid:100".to_string(),
        format!("unix:path:{}", fake.exe.to_str().unwrap()),
        format!("unix:sha256:{}", file_sha256(&fake.exe)),
        format!("container:id:{CONTAINER_ID}"),
    ]
    .into_iter()
    .collect();
    // The uid and gid resolve to no names, so there are no unix:user and
    // unix:group selectors.
    assert_eq!(got, expected);
}

#[test]
fn a_deleted_executable_keeps_its_path_but_gets_no_hash() {
    let fake = FakeProc::new("prog (deleted)");
    let got = strings(&fake.attestor().attest(&fake.cred()).unwrap());
    assert_eq!(
        values(&got, "unix:path:"),
        vec![fake.exe.to_str().unwrap()],
        "{got:?}"
    );
    assert!(fake.exe.to_str().unwrap().ends_with(" (deleted)"));
    assert!(values(&got, "unix:sha256:").is_empty(), "{got:?}");
}

#[test]
fn missing_required_data_fails_closed() {
    // No status file: the supplementary groups are unknown.
    let fake = FakeProc::new("prog");
    fs::remove_file(fake.dir().join("status")).unwrap();
    let reason = unavailable_reason(fake.attestor().attest(&fake.cred()));
    assert!(reason.contains("status"), "{reason}");
    // A status file without a Groups: line.
    let fake = FakeProc::new("prog");
    fs::write(fake.dir().join("status"), "Name:\tprog\n").unwrap();
    let reason = unavailable_reason(fake.attestor().attest(&fake.cred()));
    assert!(reason.contains("Groups"), "{reason}");
    // No executable link.
    let fake = FakeProc::new("prog");
    fs::remove_file(fake.dir().join("exe")).unwrap();
    let reason = unavailable_reason(fake.attestor().attest(&fake.cred()));
    assert!(reason.contains("exe"), "{reason}");
    // A path that cannot be a selector (a control character).
    let fake = FakeProc::new("prog\nline");
    let reason = unavailable_reason(fake.attestor().attest(&fake.cred()));
    assert!(reason.contains("control character"), "{reason}");
}

#[test]
fn the_hash_cache_is_bounded() {
    let fake = FakeProc::new("prog");
    let attestor = fake.attestor();
    {
        let mut hashes = attestor.hashes.lock();
        for ino in 0..HASH_CACHE_CAPACITY as u64 {
            let version = FileVersion {
                dev: u64::MAX,
                ino,
                size: 1,
                mtime: 0,
                mtime_nsec: 0,
                ctime: 0,
                ctime_nsec: 0,
            };
            hashes.insert(version, "00".repeat(32));
        }
    }
    let got = strings(&attestor.attest(&fake.cred()).unwrap());
    assert_eq!(
        values(&got, "unix:sha256:"),
        vec![file_sha256(&fake.exe).as_str()]
    );
    assert_eq!(attestor.cache_len(), HASH_CACHE_CAPACITY);
    let hashes = attestor.hashes.lock();
    assert!(hashes.values().any(|h| *h == file_sha256(&fake.exe)));
}

#[test]
fn missing_optional_data_omits_selectors() {
    let fake = FakeProc::new("prog");
    fs::remove_file(fake.dir().join("cgroup")).unwrap();
    let got = strings(&fake.attestor().attest(&fake.cred()).unwrap());
    assert!(values(&got, "container:").is_empty(), "{got:?}");
    assert_eq!(values(&got, "unix:path:").len(), 1, "{got:?}");
}

#[test]
fn a_modified_executable_is_hashed_again() {
    let fake = FakeProc::new("prog");
    let attestor = fake.attestor();
    attestor.attest(&fake.cred()).unwrap();
    fs::write(&fake.exe, b"another program, same inode").unwrap();
    let got = strings(&attestor.attest(&fake.cred()).unwrap());
    assert_eq!(
        values(&got, "unix:sha256:"),
        vec![file_sha256(&fake.exe).as_str()]
    );
    assert_eq!(attestor.hashes.computed(), 2);
}

#[test]
fn groups_parsing() {
    assert_eq!(
        supplementary_gids(b"Name:\tx\nGroups:\t \n").unwrap(),
        Vec::<u32>::new()
    );
    assert_eq!(
        supplementary_gids(b"Groups:\t10 4 10\nNgid:\t0\n").unwrap(),
        vec![4, 10]
    );
    assert!(supplementary_gids(b"Name:\tx\n").is_err());
    assert!(supplementary_gids(b"Groups:\t4 x\n").is_err());
    assert!(supplementary_gids(b"Groups:\t-1\n").is_err());
}

#[test]
fn hashing_reports_growth_past_the_limit() {
    let data = vec![7u8; 100];
    let (hash, len) = sha256_hex(&mut data.as_slice(), 1000).unwrap();
    assert_eq!(len, 100);
    assert_eq!(hash, hex::encode(digest::digest(&digest::SHA256, &data)));
    let (_, len) = sha256_hex(&mut data.as_slice(), 10).unwrap();
    assert_eq!(len, 11);
}

#[test]
fn item12_concurrent_hashing_is_bounded_and_cached_by_content_identity() {
    use super::exe_hash::{ExeHashes, MAX_CONCURRENT_HASHES};
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    // Copies of one "large binary" (distinct inodes) and many callers of
    // one of them, all at once.
    let content = vec![7u8; 4 * 1024 * 1024];
    let copies: Vec<PathBuf> = (0..6)
        .map(|i| {
            let p = dir.path().join(format!("copy{i}"));
            fs::write(&p, &content).unwrap();
            p
        })
        .collect();
    let hashes = Arc::new(ExeHashes::new(u64::MAX));
    let start = Arc::new(std::sync::Barrier::new(copies.len() + 6));
    let mut threads = Vec::new();
    for path in copies
        .iter()
        .cloned()
        .chain(std::iter::repeat_n(copies[0].clone(), 6))
    {
        let (hashes, start) = (hashes.clone(), start.clone());
        threads.push(std::thread::spawn(move || {
            start.wait();
            hashes.sha256(1, &path).unwrap().unwrap()
        }));
    }
    let want = file_sha256(&copies[0]);
    for t in threads {
        assert_eq!(t.join().unwrap(), want);
    }
    let max = hashes.max_running.load(Ordering::Relaxed);
    assert!(
        max <= MAX_CONCURRENT_HASHES,
        "{max} hashes ran at once; the bound is {MAX_CONCURRENT_HASHES}"
    );
    // One hash per copy, and the six callers of copy0 shared (about) one.
    let computed = hashes.computed();
    assert!(
        (6..=6 + MAX_CONCURRENT_HASHES as u64).contains(&computed),
        "{computed} hashes computed for 6 copies"
    );
    // Touching a copy makes a new version: hashed again, once.
    let before = hashes.computed();
    let f = fs::File::options().append(true).open(&copies[1]).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    hashes.sha256(1, &copies[1]).unwrap().unwrap();
    hashes.sha256(1, &copies[1]).unwrap().unwrap();
    assert_eq!(hashes.computed(), before + 1);
}
