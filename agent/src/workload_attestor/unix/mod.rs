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
//!
//! `container:id:<id>` comes from the `container` attestor
//! ([`super::container`]), run next to this one.
//!
//! PID reuse is checked around every attestor by
//! [`super::Attestors`]; this one reads `/proc/<pid>` freely inside that
//! bracket. Executable hashes are cached per file version ([`exe_hash`]),
//! user and group names for a second ([`names`]).
//!
//! [`Attestor::attest`] may block (user database look-ups that may go to
//! NSS, hashing up to the size limit): call it from a blocking thread.
//! [`Attestor::attest_now`] never does: it reads procfs and memory only and
//! answers `None` when a name or the hash is not in memory.

mod exe_hash;
mod names;
#[cfg(test)]
mod tests;

use std::os::unix::ffi::OsStrExt;

use sigil_proto::Selector;

use super::{Attestor, Now, Process, WorkloadAttestError, read_error, read_procfs, unavailable};
use exe_hash::{ExeHashes, Known};
use names::Names;

/// Default limit on the size of an executable that is hashed: 256 MiB.
pub const DEFAULT_MAX_EXE_HASH_BYTES: u64 = 256 * 1024 * 1024;

/// What the kernel appends to the `/proc/<pid>/exe` link of a process whose
/// executable has been unlinked.
const DELETED_SUFFIX: &[u8] = b" (deleted)";

/// Settings of the [`UnixAttestor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixAttestorConfig {
    /// Executables larger than this get no `unix:sha256` selector.
    pub max_exe_hash_bytes: u64,
}

impl Default for UnixAttestorConfig {
    fn default() -> Self {
        UnixAttestorConfig {
            max_exe_hash_bytes: DEFAULT_MAX_EXE_HASH_BYTES,
        }
    }
}

/// The `unix` workload attestor. Cheap to share: the hash cache is behind a
/// mutex, held only for look-ups and inserts, never while hashing.
#[derive(Debug)]
pub struct UnixAttestor {
    hashes: ExeHashes,
    names: Names,
}

impl UnixAttestor {
    pub fn new(config: UnixAttestorConfig) -> Self {
        UnixAttestor {
            hashes: ExeHashes::new(config.max_exe_hash_bytes),
            names: Names::default(),
        }
    }

    /// Number of executable hashes cached.
    pub fn cache_len(&self) -> usize {
        self.hashes.len()
    }
}

impl Attestor for UnixAttestor {
    fn attest(&self, process: &Process<'_>) -> Result<Vec<Selector>, WorkloadAttestError> {
        self.selectors(process, true)?
            .ok_or_else(|| unavailable(process.cred.pid, "attestation needed a blocking thread"))
    }

    fn attest_now(&self, process: &Process<'_>) -> Now {
        self.selectors(process, false).transpose()
    }
}

impl UnixAttestor {
    /// The selectors of `process`; `Ok(None)` when a name or the
    /// executable's hash is not in memory and `may_block` is false (see
    /// [`Now`]).
    fn selectors(
        &self,
        process: &Process<'_>,
        may_block: bool,
    ) -> Result<Option<Vec<Selector>>, WorkloadAttestError> {
        let (cred, dir, exe) = (process.cred, process.dir, process.exe);
        let pid = cred.pid;
        let mut selectors = vec![
            unix_selector(pid, format!("uid:{}", cred.uid))?,
            unix_selector(pid, format!("gid:{}", cred.gid))?,
        ];
        let (Some(user), Some(group)) = (
            self.names.user(cred.uid, may_block),
            self.names.group(cred.gid, may_block),
        ) else {
            return Ok(None);
        };
        match user {
            Ok(Some(name)) => push_optional(&mut selectors, pid, format!("user:{name}")),
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(pid, uid = cred.uid, %error, "user look-up failed; unix:user omitted")
            }
        }
        match group {
            Ok(Some(name)) => push_optional(&mut selectors, pid, format!("group:{name}")),
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(pid, gid = cred.gid, %error, "group look-up failed; unix:group omitted")
            }
        }

        let status_path = dir.join("status");
        let status = read_procfs(&status_path).map_err(|e| read_error(pid, &status_path, &e))?;
        for gid in supplementary_gids(&status)
            .map_err(|reason| unavailable(pid, format!("{}: {reason}", status_path.display())))?
        {
            selectors.push(unix_selector(pid, format!("supplementary_gid:{gid}"))?);
        }

        let exe_str = exe
            .to_str()
            .ok_or_else(|| unavailable(pid, "the executable's path is not UTF-8"))?;
        selectors.push(unix_selector(pid, format!("path:{exe_str}"))?);
        // The kernel marks an unlinked executable with " (deleted)". The path
        // is reported as the kernel gives it, but no hash: the name no longer
        // leads to this content (typically a binary replaced under a running
        // process, or one removed to hide where it came from), and a file
        // whose name really ends in " (deleted)" cannot be told apart.
        if exe.as_bytes().ends_with(DELETED_SUFFIX) {
            tracing::debug!(pid, "executable was deleted; unix:sha256 omitted");
        } else {
            let exe_link = dir.join("exe");
            match self
                .hashes
                .sha256_if(pid, &exe_link, may_block, process.exe_local)?
            {
                Known::Hash(Some(hash)) => {
                    selectors.push(unix_selector(pid, format!("sha256:{hash}"))?)
                }
                Known::Hash(None) => {}
                Known::NotCached => return Ok(None),
            }
        }
        Ok(Some(selectors))
    }
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
