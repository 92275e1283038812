//! Tests of the composition and the PID-reuse bracket, and the fixtures the
//! attestors' tests share: a fabricated `/proc` tree and the standard
//! attestors (`unix` then `container`) over a procfs root.

use std::ffi::OsString;
use std::fs;
use std::ops::Deref;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::container::ContainerAttestor;
use super::process::{ProcessMark, start_time_from_stat};
use super::unix::{UnixAttestor, UnixAttestorConfig};
use super::*;

/// The standard attestors over `proc_root`, keeping a handle on the unix one
/// (its hash cache is inspected through `Deref`).
pub(crate) struct Subject {
    unix: Arc<UnixAttestor>,
    pub(crate) all: Attestors,
}

impl Subject {
    pub(crate) fn new(proc_root: impl Into<PathBuf>, config: UnixAttestorConfig) -> Self {
        let unix = Arc::new(UnixAttestor::new(config));
        let all = Attestors::new(proc_root, vec![unix.clone(), Arc::new(ContainerAttestor)]);
        Subject { unix, all }
    }

    pub(crate) fn attest(&self, cred: &PeerCred) -> Result<Vec<Selector>, WorkloadAttestError> {
        self.all.mark_and_attest(cred)
    }
}

impl Attestors {
    /// Marks the process and attests it at once (accept and call together).
    /// Every attestation that succeeds is made again without blocking
    /// (`attest_now`, from what the first one left in memory), which must
    /// give the very same selectors.
    pub(crate) fn mark_and_attest(
        &self,
        cred: &PeerCred,
    ) -> Result<Vec<Selector>, WorkloadAttestError> {
        let mark = self.mark(cred)?;
        let selectors = self.attest(cred, &mark)?;
        match WorkloadAttestor::attest_now(self, cred, &mark) {
            Some(Ok(now)) => assert_eq!(now, selectors, "attest_now differs from attest"),
            other => panic!("attest_now after attest: {other:?}"),
        }
        Ok(selectors)
    }
}

impl Deref for Subject {
    type Target = UnixAttestor;
    fn deref(&self) -> &UnixAttestor {
        &self.unix
    }
}

pub(crate) fn unavailable_reason(result: Result<Vec<Selector>, WorkloadAttestError>) -> String {
    match result {
        Err(WorkloadAttestError::Unavailable { pid, reason }) => {
            assert_eq!(pid, FAKE_PID);
            reason
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

pub(crate) const CONTAINER_ID: &str =
    "3f8a9c1d2e4b5a6978c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2";
pub(crate) const FAKE_PID: i32 = 4242;
pub(crate) const FAKE_START: u64 = 987_654;

/// A fabricated `/proc/<FAKE_PID>` whose executable is a file in the temp
/// dir; `exe_name` is its file name.
pub(crate) struct FakeProc {
    root: tempfile::TempDir,
    pub(crate) exe: PathBuf,
}

impl FakeProc {
    pub(crate) fn new(exe_name: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let exe = root.path().join(exe_name);
        fs::write(&exe, b"\x7fELF not really a program").unwrap();
        let fake = FakeProc { root, exe };
        fs::create_dir(fake.dir()).unwrap();
        fake.write_stat(FAKE_START);
        fs::write(
            fake.dir().join("status"),
            b"Name:\tevil\xff) name\nUid:\t1000\t1000\t1000\t1000\nGroups:\t27 4 27 100 \n",
        )
        .unwrap();
        symlink(&fake.exe, fake.dir().join("exe")).unwrap();
        // The mounts as this test process sees them: the temp dir's is
        // among them (a local filesystem), as a caller's own would be.
        fs::copy("/proc/self/mountinfo", fake.dir().join("mountinfo")).unwrap();
        fs::write(
            fake.dir().join("cgroup"),
            format!("0::/system.slice/docker-{CONTAINER_ID}.scope\n"),
        )
        .unwrap();
        fake
    }

    pub(crate) fn root_path(&self) -> &Path {
        self.root.path()
    }

    /// The mark of the fake process as it is now.
    pub(crate) fn mark(&self) -> ProcessMark {
        ProcessMark::read(&self.dir(), FAKE_PID).unwrap()
    }

    pub(crate) fn dir(&self) -> PathBuf {
        self.root.path().join(FAKE_PID.to_string())
    }

    /// A stat line whose command name holds spaces, ')' and a byte that
    /// is not UTF-8.
    pub(crate) fn write_stat(&self, start: u64) {
        let mut stat = format!("{FAKE_PID} (a) b ").into_bytes();
        stat.push(0xff);
        stat.extend_from_slice(
            format!(
                ") c)) S 1 {FAKE_PID} {FAKE_PID} 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                 {start} 1000000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0\n"
            )
            .as_bytes(),
        );
        fs::write(self.dir().join("stat"), stat).unwrap();
    }

    /// The standard attestors over this tree.
    pub(crate) fn attestor(&self) -> Subject {
        Subject::new(self.root.path(), UnixAttestorConfig::default())
    }

    pub(crate) fn cred(&self) -> PeerCred {
        PeerCred {
            pid: FAKE_PID,
            uid: 4_000_000_123,
            gid: 4_000_000_456,
        }
    }
}

#[test]
fn a_changed_start_time_is_pid_reuse() {
    let fake = FakeProc::new("prog");
    let attestor = fake.attestor();
    let before = ProcessMark {
        start_time: FAKE_START - 1,
        exe: fake.exe.clone().into_os_string(),
        ..fake.mark()
    };
    match attestor
        .all
        .attest_marked(&fake.cred(), &fake.dir(), &before)
    {
        Err(WorkloadAttestError::PidReused { pid }) => assert_eq!(pid, FAKE_PID),
        other => panic!("{other:?}"),
    }
    // The same process, seen the same way twice, passes.
    let before = ProcessMark {
        start_time: FAKE_START,
        ..before
    };
    attestor
        .all
        .attest_marked(&fake.cred(), &fake.dir(), &before)
        .unwrap();
}

#[test]
fn a_new_program_in_the_same_process_is_refused() {
    let fake = FakeProc::new("prog");
    let before = ProcessMark {
        start_time: FAKE_START,
        exe: OsString::from("/usr/bin/something-else"),
        ..fake.mark()
    };
    match fake
        .attestor()
        .all
        .attest_marked(&fake.cred(), &fake.dir(), &before)
    {
        Err(WorkloadAttestError::Changed { pid, reason }) => {
            assert_eq!(pid, FAKE_PID);
            assert!(reason.contains("executable changed"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_process_that_vanishes_is_unavailable() {
    let fake = FakeProc::new("prog");
    let attestor = fake.attestor();
    let before = ProcessMark {
        start_time: FAKE_START,
        exe: fake.exe.clone().into_os_string(),
        ..fake.mark()
    };
    fs::remove_file(fake.dir().join("stat")).unwrap();
    assert!(matches!(
        attestor
            .all
            .attest_marked(&fake.cred(), &fake.dir(), &before),
        Err(WorkloadAttestError::Unavailable { .. })
    ));
    assert!(matches!(
        attestor.attest(&fake.cred()),
        Err(WorkloadAttestError::Unavailable { .. })
    ));
}

#[test]
fn start_time_parsing() {
    let real = fs::read("/proc/self/stat").unwrap();
    assert!(start_time_from_stat(&real).is_some());
    let line = b"1 (a) b) S 0 1 1 0 -1 4 0 0 0 0 0 0 0 0 20 0 1 0 555 1 1";
    assert_eq!(start_time_from_stat(line), Some(555));
    assert_eq!(start_time_from_stat(b"1 (sh) S 0 1"), None);
    assert_eq!(start_time_from_stat(b"no parenthesis"), None);
    assert_eq!(start_time_from_stat(b""), None);
}

/// An attestor that gives fixed selectors, sees what the bracket passed it,
/// and can do something to the fake process while it runs.
struct Probe {
    gives: Vec<&'static str>,
    seen_exe: Mutex<Option<OsString>>,
    during: Box<dyn Fn() + Send + Sync>,
}

impl Probe {
    fn new(gives: &[&'static str], during: impl Fn() + Send + Sync + 'static) -> Arc<Probe> {
        Arc::new(Probe {
            gives: gives.to_vec(),
            seen_exe: Mutex::new(None),
            during: Box::new(during),
        })
    }
}

impl Attestor for Probe {
    fn attest(&self, process: &Process<'_>) -> Result<Vec<Selector>, WorkloadAttestError> {
        *self.seen_exe.lock().unwrap() = Some(process.exe.to_os_string());
        (self.during)();
        Ok(self
            .gives
            .iter()
            .map(|s| Selector::parse(s).unwrap())
            .collect())
    }
}

#[test]
fn selectors_of_every_attestor_are_merged_in_order() {
    let fake = FakeProc::new("prog");
    let first = Probe::new(&["k8s:ns:default"], || {});
    let second = Probe::new(&["k8s:sa:web", "unix:uid:7"], || {});
    let all = Attestors::new(
        fake.root_path(),
        vec![first.clone(), second.clone(), Arc::new(ContainerAttestor)],
    );
    let got: Vec<String> = all
        .mark_and_attest(&fake.cred())
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            "k8s:ns:default".to_string(),
            "k8s:sa:web".into(),
            "unix:uid:7".into(),
            format!("container:id:{CONTAINER_ID}"),
        ]
    );
    // Each was given the executable the bracket read first.
    for p in [first, second] {
        assert_eq!(
            p.seen_exe.lock().unwrap().as_deref(),
            Some(fake.exe.as_os_str())
        );
    }
}

#[test]
fn a_pid_reused_while_any_attestor_runs_is_refused() {
    // The process is replaced while the last attestor runs: the bracket
    // around all of them sees it, whichever attestor was running.
    let fake = Arc::new(FakeProc::new("prog"));
    let during = {
        let fake = fake.clone();
        move || fake.write_stat(FAKE_START + 1)
    };
    let all = Attestors::new(
        fake.root_path(),
        vec![Probe::new(&["unix:uid:1"], || {}), Probe::new(&[], during)],
    );
    match all.mark_and_attest(&fake.cred()) {
        Err(WorkloadAttestError::PidReused { pid }) => assert_eq!(pid, FAKE_PID),
        other => panic!("{other:?}"),
    }
}

#[test]
fn one_failing_attestor_fails_the_whole_attestation() {
    struct Fails;
    impl Attestor for Fails {
        fn attest(&self, p: &Process<'_>) -> Result<Vec<Selector>, WorkloadAttestError> {
            Err(unavailable(p.cred.pid, "no kubelet"))
        }
    }
    let fake = FakeProc::new("prog");
    let all = Attestors::new(
        fake.root_path(),
        vec![Probe::new(&["unix:uid:1"], || {}), Arc::new(Fails)],
    );
    assert_eq!(
        unavailable_reason(all.mark_and_attest(&fake.cred())),
        "no kubelet"
    );
}

/// Reads the caller's cgroup file through [`Process::cgroup`] and remembers
/// what it saw.
#[derive(Default)]
struct CgroupReader(Mutex<Option<Vec<u8>>>);

impl Attestor for CgroupReader {
    fn attest(&self, p: &Process<'_>) -> Result<Vec<Selector>, WorkloadAttestError> {
        let text = p.cgroup().map(<[u8]>::to_vec).unwrap_or_default();
        *self.0.lock().unwrap() = Some(text);
        Ok(Vec::new())
    }
}

#[test]
fn cgroup_file_is_read_once_per_attestation_for_every_attestor() {
    let fake = Arc::new(FakeProc::new("prog"));
    let original = fs::read(fake.dir().join("cgroup")).unwrap();
    assert!(!original.is_empty());
    let (first, second) = (
        Arc::new(CgroupReader::default()),
        Arc::new(CgroupReader::default()),
    );
    // Between the two readers the file changes: the second must see what
    // the first read (one read per attestation), not the new contents.
    let rewrite = {
        let fake = fake.clone();
        move || fs::write(fake.dir().join("cgroup"), b"0::/changed\n").unwrap()
    };
    let all = Attestors::new(
        fake.root_path(),
        vec![first.clone(), Probe::new(&[], rewrite), second.clone()],
    );
    // One attestation (`mark_and_attest` would make a second one).
    let mark = all.mark(&fake.cred()).unwrap();
    WorkloadAttestor::attest(&all, &fake.cred(), &mark).unwrap();
    assert_eq!(first.0.lock().unwrap().as_deref(), Some(&original[..]));
    assert_eq!(second.0.lock().unwrap().as_deref(), Some(&original[..]));
}

/// A pidfd of process `pid` (`pidfd_open`, Linux 5.3 and later).
fn pidfd_of(pid: i32) -> Arc<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open returns a new descriptor that nothing else owns,
    // or -1 (checked).
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    assert!(
        fd >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    Arc::new(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

#[test]
fn with_a_pidfd_of_a_live_process_the_start_time_is_not_read() {
    // The pidfd (of this live test process) stands in for the start time:
    // a stat file that would say "pid reused" is not consulted, and one
    // that is gone is not needed.
    let fake = FakeProc::new("prog");
    let attestor = fake.attestor();
    let before = fake
        .mark()
        .with_pidfd(Some(pidfd_of(std::process::id() as i32)));
    fake.write_stat(FAKE_START + 1);
    attestor
        .all
        .attest_marked(&fake.cred(), &fake.dir(), &before)
        .unwrap();
    fs::remove_file(fake.dir().join("stat")).unwrap();
    attestor
        .all
        .attest_marked(&fake.cred(), &fake.dir(), &before)
        .unwrap();
    // Without the pidfd the same call is pid reuse.
    fake.write_stat(FAKE_START + 1);
    let without = before.with_pidfd(None);
    assert!(matches!(
        attestor
            .all
            .attest_marked(&fake.cred(), &fake.dir(), &without),
        Err(WorkloadAttestError::PidReused { .. })
    ));
}

#[test]
fn with_a_pidfd_of_an_exited_process_every_call_is_refused() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pidfd = pidfd_of(child.id() as i32);
    child.wait().unwrap();
    // The fake tree still reads as the process at accept (same start time,
    // same executable): only the pidfd knows it is gone.
    let fake = FakeProc::new("prog");
    let attestor = fake.attestor();
    let before = fake.mark().with_pidfd(Some(pidfd));
    for now in [false, true] {
        let got = if now {
            WorkloadAttestor::attest_now(&attestor.all, &fake.cred(), &before).unwrap()
        } else {
            WorkloadAttestor::attest(&attestor.all, &fake.cred(), &before)
        };
        match got {
            Err(WorkloadAttestError::Changed { pid, reason }) => {
                assert_eq!(pid, FAKE_PID);
                assert!(reason.contains("exited (pidfd)"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn an_executable_off_local_filesystems_is_attested_on_a_blocking_thread_only() {
    let fake = FakeProc::new("prog");
    let attestor = fake.attestor();
    let mut mark = fake.mark();
    assert!(mark.exe_local, "the temp dir is on a local filesystem");
    // Names and the hash found once (blocking), then from memory.
    WorkloadAttestor::attest(&attestor.all, &fake.cred(), &mark).unwrap();
    assert!(WorkloadAttestor::attest_now(&attestor.all, &fake.cred(), &mark).is_some());
    // As for an executable on FUSE or NFS: no attestation off the blocking
    // threads, where a look-up could wait on the filesystem.
    mark.exe_local = false;
    assert!(WorkloadAttestor::attest_now(&attestor.all, &fake.cred(), &mark).is_none());
    WorkloadAttestor::attest(&attestor.all, &fake.cred(), &mark).unwrap();
}
