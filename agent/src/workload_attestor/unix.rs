//! The `unix` workload attestor: selectors from the kernel's peer credentials
//! and from `/proc/<pid>`.
//!
//! - `unix:uid:<n>`, `unix:gid:<n>`: from [`PeerCred`], the kernel's values
//!   when the workload connected. They are authoritative: the process may
//!   have changed its ids since (setuid, setgid), and `/proc/<pid>/status`
//!   is deliberately not compared with them.
//! - `unix:user:<name>`, `unix:group:<name>`: when the uid/gid resolve to
//!   names in the user database; omitted otherwise.
//! - `unix:supplementary_gid:<n>`: the process's own supplementary groups
//!   (`Groups:` in `/proc/<pid>/status`), not the user database's, since a
//!   process can drop groups.
//! - `unix:path:<path>`: the executable, as the kernel names it
//!   (`/proc/<pid>/exe`). For a process in another mount namespace (a
//!   container) this is the path inside that namespace, so pair it with
//!   `container:id` or `unix:sha256`.
//! - `unix:sha256:<hex>`: SHA-256 of the executable the process runs, read
//!   through `/proc/<pid>/exe`, when it is at most
//!   [`UnixAttestorConfig::max_exe_hash_bytes`] long.
//! - `container:id:<id>`: see [`super::container`].
//!
//! PID reuse: the process start time (`/proc/<pid>/stat`, field 22) and the
//! executable link are read before anything else and again after everything
//! else; a different start time is [`WorkloadAttestError::PidReused`], a
//! different executable (the process ran `execve` meanwhile) or a process
//! gone is [`WorkloadAttestError::Unavailable`]. This brackets the reads
//! here; it cannot see a reuse that happened between the connection and the
//! first read.
//!
//! Attestation blocks (file reads, user database look-ups that may go to
//! NSS, hashing up to the size limit): call it from a blocking thread.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};

use nix::unistd::{Gid, Group, Uid, User};
use ring::digest;
use sigil_proto::Selector;

use super::{PeerCred, WorkloadAttestError, WorkloadAttestor, container};

/// Default limit on the size of an executable that is hashed: 256 MiB.
pub const DEFAULT_MAX_EXE_HASH_BYTES: u64 = 256 * 1024 * 1024;

/// How many executable hashes are remembered.
const HASH_CACHE_CAPACITY: usize = 1024;

/// What the kernel appends to the `/proc/<pid>/exe` link of a process whose
/// executable has been unlinked.
const DELETED_SUFFIX: &[u8] = b" (deleted)";

/// Settings of the [`UnixAttestor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixAttestorConfig {
    /// Executables larger than this get no `unix:sha256` selector.
    pub max_exe_hash_bytes: u64,
    /// Where procfs is mounted (`/proc`; a fake tree in tests).
    pub proc_root: PathBuf,
}

impl Default for UnixAttestorConfig {
    fn default() -> Self {
        UnixAttestorConfig {
            max_exe_hash_bytes: DEFAULT_MAX_EXE_HASH_BYTES,
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// Identifies one version of one file: a change of content changes the
/// size, the mtime or (which no one can set back) the ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileVersion {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl FileVersion {
    fn of(meta: &fs::Metadata) -> Self {
        FileVersion {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }
}

/// The `unix` workload attestor. Cheap to share: the hash cache is behind a
/// mutex, held only for look-ups and inserts, never while hashing.
#[derive(Debug)]
pub struct UnixAttestor {
    config: UnixAttestorConfig,
    hashes: Mutex<HashMap<FileVersion, String>>,
    #[cfg(test)]
    hashes_computed: AtomicU64,
}

/// What is re-read after collecting to detect PID reuse and `execve`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcessMark {
    start_time: u64,
    exe: OsString,
}

impl UnixAttestor {
    pub fn new(config: UnixAttestorConfig) -> Self {
        UnixAttestor {
            config,
            hashes: Mutex::new(HashMap::new()),
            #[cfg(test)]
            hashes_computed: AtomicU64::new(0),
        }
    }

    /// Number of executable hashes cached.
    pub fn cache_len(&self) -> usize {
        self.lock_hashes().len()
    }

    fn lock_hashes(&self) -> std::sync::MutexGuard<'_, HashMap<FileVersion, String>> {
        // A panic while the lock was held cannot leave the map half-updated
        // in a way that matters: every entry is a complete (key, hash) pair.
        self.hashes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Collects the selectors of `cred.pid`, then checks that the process is
    /// still the one `before` describes.
    fn attest_marked(
        &self,
        cred: &PeerCred,
        dir: &Path,
        before: &ProcessMark,
    ) -> Result<Vec<Selector>, WorkloadAttestError> {
        let selectors = self.collect(cred, dir, &before.exe)?;
        // The start time is read last so that every read above falls between
        // the two start-time reads.
        let exe_after = read_exe_link(dir, cred.pid)?;
        let start_after = read_start_time(dir, cred.pid)?;
        if start_after != before.start_time {
            return Err(WorkloadAttestError::PidReused { pid: cred.pid });
        }
        if exe_after != before.exe {
            return Err(unavailable(
                cred.pid,
                "the process started another program while it was being attested",
            ));
        }
        Ok(selectors)
    }

    fn collect(
        &self,
        cred: &PeerCred,
        dir: &Path,
        exe: &OsStr,
    ) -> Result<Vec<Selector>, WorkloadAttestError> {
        let pid = cred.pid;
        let mut selectors = vec![
            unix_selector(pid, format!("uid:{}", cred.uid))?,
            unix_selector(pid, format!("gid:{}", cred.gid))?,
        ];
        match User::from_uid(Uid::from_raw(cred.uid)) {
            Ok(Some(user)) => push_optional(&mut selectors, pid, format!("user:{}", user.name)),
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(pid, uid = cred.uid, %error, "user look-up failed; unix:user omitted")
            }
        }
        match Group::from_gid(Gid::from_raw(cred.gid)) {
            Ok(Some(group)) => push_optional(&mut selectors, pid, format!("group:{}", group.name)),
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(pid, gid = cred.gid, %error, "group look-up failed; unix:group omitted")
            }
        }

        let status_path = dir.join("status");
        let status = fs::read(&status_path).map_err(|e| read_error(pid, &status_path, &e))?;
        for gid in supplementary_gids(&status)
            .map_err(|reason| unavailable(pid, format!("{}: {reason}", status_path.display())))?
        {
            selectors.push(unix_selector(pid, format!("supplementary_gid:{gid}"))?);
        }

        let Some(exe_str) = exe.to_str() else {
            return Err(unavailable(pid, "the executable's path is not UTF-8"));
        };
        selectors.push(unix_selector(pid, format!("path:{exe_str}"))?);
        // The kernel marks an unlinked executable with " (deleted)". The path
        // is reported as the kernel gives it, but no hash: the name no longer
        // leads to this content (typically a binary replaced under a running
        // process, or one removed to hide where it came from), and a file
        // whose name really ends in " (deleted)" cannot be told apart.
        if exe.as_bytes().ends_with(DELETED_SUFFIX) {
            tracing::debug!(pid, "executable was deleted; unix:sha256 omitted");
        } else if let Some(hash) = self.exe_sha256(pid, &dir.join("exe"))? {
            selectors.push(unix_selector(pid, format!("sha256:{hash}"))?);
        }

        // Optional: a process may have no cgroup file readable (or none at
        // all on a kernel without cgroups); it then just has no container id.
        match fs::read(dir.join("cgroup")) {
            Ok(text) => selectors.extend(container::container_selectors(&String::from_utf8_lossy(
                &text,
            ))),
            Err(error) => {
                tracing::debug!(pid, %error, "cannot read the cgroup file; container selectors omitted")
            }
        }
        Ok(selectors)
    }

    /// SHA-256 (lowercase hex) of the executable behind `exe_link`, or `None`
    /// when it is over the size limit or changed while it was read.
    fn exe_sha256(&self, pid: i32, exe_link: &Path) -> Result<Option<String>, WorkloadAttestError> {
        // Open once and take everything from the open file, so that the key,
        // the size check and the content are of the same file.
        let mut file = File::open(exe_link).map_err(|e| read_error(pid, exe_link, &e))?;
        let meta = file.metadata().map_err(|e| read_error(pid, exe_link, &e))?;
        if !meta.is_file() {
            return Err(unavailable(pid, "the executable is not a regular file"));
        }
        let version = FileVersion::of(&meta);
        if version.size > self.config.max_exe_hash_bytes {
            tracing::debug!(
                pid,
                size = version.size,
                limit = self.config.max_exe_hash_bytes,
                "executable larger than the hash limit; unix:sha256 omitted"
            );
            return Ok(None);
        }
        if let Some(hash) = self.lock_hashes().get(&version) {
            return Ok(Some(hash.clone()));
        }

        #[cfg(test)]
        self.hashes_computed.fetch_add(1, Ordering::Relaxed);
        let (hash, len) = sha256_hex(&mut file, self.config.max_exe_hash_bytes)
            .map_err(|e| read_error(pid, exe_link, &e))?;
        let after = file.metadata().map_err(|e| read_error(pid, exe_link, &e))?;
        if len != version.size || FileVersion::of(&after) != version {
            tracing::debug!(
                pid,
                "executable changed while it was hashed; unix:sha256 omitted"
            );
            return Ok(None);
        }

        let mut hashes = self.lock_hashes();
        if hashes.len() >= HASH_CACHE_CAPACITY && !hashes.contains_key(&version) {
            // Evict an arbitrary entry: cheap, and a cache miss only costs a
            // re-hash.
            if let Some(evict) = hashes.keys().next().copied() {
                hashes.remove(&evict);
            }
        }
        hashes.insert(version, hash.clone());
        Ok(Some(hash))
    }
}

impl WorkloadAttestor for UnixAttestor {
    fn attest(&self, cred: &PeerCred) -> Result<Vec<Selector>, WorkloadAttestError> {
        // SO_PEERCRED gives pid 0 for a peer outside our pid namespace.
        if cred.pid <= 0 {
            return Err(unavailable(cred.pid, "no process id for the peer"));
        }
        let dir = self.config.proc_root.join(cred.pid.to_string());
        let start_time = read_start_time(&dir, cred.pid)?;
        let exe = read_exe_link(&dir, cred.pid)?;
        self.attest_marked(cred, &dir, &ProcessMark { start_time, exe })
    }
}

fn unavailable(pid: i32, reason: impl Into<String>) -> WorkloadAttestError {
    WorkloadAttestError::Unavailable {
        pid,
        reason: reason.into(),
    }
}

fn read_error(pid: i32, path: &Path, error: &io::Error) -> WorkloadAttestError {
    unavailable(pid, format!("{}: {error}", path.display()))
}

/// A `unix:<value>` selector that the workload must have: one that cannot be
/// built makes the attestation fail.
fn unix_selector(pid: i32, value: String) -> Result<Selector, WorkloadAttestError> {
    Selector::new("unix", &value).map_err(|e| unavailable(pid, e.to_string()))
}

/// Adds a `unix:<value>` selector that is only nice to have (a name): one
/// that cannot be built is left out.
fn push_optional(selectors: &mut Vec<Selector>, pid: i32, value: String) {
    match Selector::new("unix", &value) {
        Ok(selector) => selectors.push(selector),
        Err(error) => tracing::debug!(pid, %error, "name is not a valid selector; omitted"),
    }
}

fn read_exe_link(dir: &Path, pid: i32) -> Result<OsString, WorkloadAttestError> {
    let link = dir.join("exe");
    fs::read_link(&link)
        .map(PathBuf::into_os_string)
        .map_err(|e| read_error(pid, &link, &e))
}

fn read_start_time(dir: &Path, pid: i32) -> Result<u64, WorkloadAttestError> {
    let path = dir.join("stat");
    let stat = fs::read(&path).map_err(|e| read_error(pid, &path, &e))?;
    start_time_from_stat(&stat)
        .ok_or_else(|| unavailable(pid, format!("{}: no start time", path.display())))
}

/// Field 22 (`starttime`) of a `/proc/<pid>/stat` line. Field 2 is the
/// command name in parentheses, which may itself hold spaces, ')' and bytes
/// that are not UTF-8, so counting starts after the last ')'.
fn start_time_from_stat(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // After the ')' come fields 3 (state), 4, ...: field 22 is the 20th.
    rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

/// The `Groups:` line of a `/proc/<pid>/status` file, sorted, without
/// duplicates.
fn supplementary_gids(status: &[u8]) -> Result<Vec<u32>, String> {
    let line = status
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"Groups:"))
        .ok_or("no Groups: line")?;
    let line = std::str::from_utf8(line).map_err(|_| "Groups: line is not text")?;
    let mut gids = line
        .split_ascii_whitespace()
        .map(|gid| {
            gid.parse::<u32>()
                .map_err(|_| format!("Groups: {gid:?} is not a group id"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    gids.sort_unstable();
    gids.dedup();
    Ok(gids)
}

/// SHA-256 of at most `limit` bytes of `reader`, and how many bytes it read
/// (`limit + 1` at most, so a file that grew shows up).
fn sha256_hex(reader: &mut impl Read, limit: u64) -> io::Result<(String, u64)> {
    let mut reader = reader.take(limit.saturating_add(1));
    let mut context = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        context.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(context.finish()), len))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::unix::fs::symlink;
    use std::process::{Child, Command};

    use super::*;

    fn attestor() -> UnixAttestor {
        UnixAttestor::new(UnixAttestorConfig::default())
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
        assert_eq!(attestor.hashes_computed.load(Ordering::Relaxed), 1);

        let second = attestor.attest(&self_cred()).unwrap();
        assert_eq!(attestor.cache_len(), 1);
        assert_eq!(attestor.hashes_computed.load(Ordering::Relaxed), 1);
        assert_eq!(strings(&first), strings(&second));
    }

    #[test]
    fn executables_over_the_limit_are_not_hashed() {
        let attestor = UnixAttestor::new(UnixAttestorConfig {
            max_exe_hash_bytes: 1,
            ..UnixAttestorConfig::default()
        });
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

    const CONTAINER_ID: &str = "3f8a9c1d2e4b5a6978c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2";
    const FAKE_PID: i32 = 4242;
    const FAKE_START: u64 = 987_654;

    /// A fabricated `/proc/<FAKE_PID>` whose executable is a file in the temp
    /// dir; `exe_name` is its file name.
    struct FakeProc {
        root: tempfile::TempDir,
        exe: PathBuf,
    }

    impl FakeProc {
        fn new(exe_name: &str) -> Self {
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
            fs::write(
                fake.dir().join("cgroup"),
                format!("0::/system.slice/docker-{CONTAINER_ID}.scope\n"),
            )
            .unwrap();
            fake
        }

        fn dir(&self) -> PathBuf {
            self.root.path().join(FAKE_PID.to_string())
        }

        /// A stat line whose command name holds spaces, ')' and a byte that
        /// is not UTF-8.
        fn write_stat(&self, start: u64) {
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

        fn attestor(&self) -> UnixAttestor {
            UnixAttestor::new(UnixAttestorConfig {
                proc_root: self.root.path().to_path_buf(),
                ..UnixAttestorConfig::default()
            })
        }

        fn cred(&self) -> PeerCred {
            PeerCred {
                pid: FAKE_PID,
                uid: 4_000_000_123,
                gid: 4_000_000_456,
            }
        }
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
    fn a_changed_start_time_is_pid_reuse() {
        let fake = FakeProc::new("prog");
        let attestor = fake.attestor();
        let before = ProcessMark {
            start_time: FAKE_START - 1,
            exe: fake.exe.clone().into_os_string(),
        };
        match attestor.attest_marked(&fake.cred(), &fake.dir(), &before) {
            Err(WorkloadAttestError::PidReused { pid }) => assert_eq!(pid, FAKE_PID),
            other => panic!("{other:?}"),
        }
        // The same process, seen the same way twice, passes.
        let before = ProcessMark {
            start_time: FAKE_START,
            ..before
        };
        attestor
            .attest_marked(&fake.cred(), &fake.dir(), &before)
            .unwrap();
    }

    #[test]
    fn a_new_program_in_the_same_process_is_refused() {
        let fake = FakeProc::new("prog");
        let before = ProcessMark {
            start_time: FAKE_START,
            exe: OsString::from("/usr/bin/something-else"),
        };
        match fake
            .attestor()
            .attest_marked(&fake.cred(), &fake.dir(), &before)
        {
            Err(WorkloadAttestError::Unavailable { pid, reason }) => {
                assert_eq!(pid, FAKE_PID);
                assert!(reason.contains("another program"), "{reason}");
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
        };
        fs::remove_file(fake.dir().join("stat")).unwrap();
        assert!(matches!(
            attestor.attest_marked(&fake.cred(), &fake.dir(), &before),
            Err(WorkloadAttestError::Unavailable { .. })
        ));
        assert!(matches!(
            attestor.attest(&fake.cred()),
            Err(WorkloadAttestError::Unavailable { .. })
        ));
    }

    fn unavailable_reason(result: Result<Vec<Selector>, WorkloadAttestError>) -> String {
        match result {
            Err(WorkloadAttestError::Unavailable { pid, reason }) => {
                assert_eq!(pid, FAKE_PID);
                reason
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
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
            let mut hashes = attestor.lock_hashes();
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
        let hashes = attestor.lock_hashes();
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
        assert_eq!(attestor.hashes_computed.load(Ordering::Relaxed), 2);
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
}
