//! The `systemd` attestor: `systemd:unit:<name>.service`, the system
//! service a process runs in, from its cgroup (`/proc/<pid>/cgroup`).
//! systemd puts every service in a cgroup named after it
//! (`/system.slice/<name>.service`, template instances under
//! `/system.slice/system-<template>.slice/<name>@<instance>.service`), and
//! only root on the host can move a process into another service's cgroup,
//! so, unlike `unix:path` (a path in the caller's own mount namespace,
//! which a container's root controls), a container cannot claim a host
//! unit.
//!
//! Fail-closed rules (each gives no `systemd:` selector, never a wrong one):
//!
//! - The caller must be in the host's cgroup namespace: the inode of its
//!   `/proc/<pid>/ns/cgroup` must equal the agent's own, and the agent's own
//!   must be the kernel's initial cgroup namespace (inode `0xEFFFFFFB`);
//!   an agent in any other cgroup namespace (a container) gives no
//!   `systemd:` selectors at all, since the paths it reads are then
//!   relative to that namespace.
//! - The cgroup path must be exactly zero or more `*.slice` segments and
//!   one `*.service` segment: no scope (sessions, `systemd-run --scope`,
//!   containers), nothing under `user.slice` or a user's service manager
//!   (`user@<uid>.service`, which its user controls), no sub-cgroup of a
//!   service (whatever a delegated service names it), no root cgroup.
//! - cgroup v2 (`0::<path>`) and v1 (`<n>:name=systemd:<path>`) lines are
//!   read; when both are below their root they must name the same unit
//!   (a hierarchy at its root, `0::/` next to v1 or an unmanaged
//!   `name=systemd:/`, is one systemd does not use and is ignored).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sigil_proto::Selector;

use super::container::cgroup_lines;
use super::{Attestor, Process, WorkloadAttestError};

/// The inode of the kernel's initial cgroup namespace
/// (`PROC_CGROUP_INIT_INO`, include/linux/proc_ns.h).
pub const INITIAL_CGROUP_NS_INO: u64 = 0xEFFF_FFFB;

/// The `systemd` attestor.
#[derive(Debug, Clone, Copy)]
pub struct SystemdAttestor {
    /// The host's cgroup namespace inode; `None`: the agent is not in it,
    /// so no process gets `systemd:` selectors.
    host_cgroup_ns: Option<u64>,
}

impl SystemdAttestor {
    /// The attestor of an agent whose procfs is `proc_root`: the host's
    /// namespace is the agent's own (`<proc_root>/self/ns/cgroup`) when that
    /// is the initial one; otherwise it is disabled (logged once, here).
    pub fn detect(proc_root: &Path) -> Self {
        let own = cgroup_ns(&proc_root.join("self"));
        let host_cgroup_ns = match own {
            Some(ino) if ino == INITIAL_CGROUP_NS_INO => Some(ino),
            other => {
                tracing::info!(cgroup_ns = ?other, "the agent is not in the host's cgroup \
                    namespace: no systemd:unit selectors");
                None
            }
        };
        SystemdAttestor { host_cgroup_ns }
    }

    /// An attestor that takes `host` as the host's cgroup namespace inode
    /// (tests over a fabricated procfs).
    pub fn with_host_cgroup_ns(host: Option<u64>) -> Self {
        SystemdAttestor {
            host_cgroup_ns: host,
        }
    }
}

/// The inode of `<proc_dir>/ns/cgroup`, if readable.
fn cgroup_ns(proc_dir: &Path) -> Option<u64> {
    std::fs::metadata(proc_dir.join("ns/cgroup"))
        .ok()
        .map(|m| m.ino())
}

impl Attestor for SystemdAttestor {
    fn attest(&self, process: &Process<'_>) -> Result<Vec<Selector>, WorkloadAttestError> {
        let pid = process.cred.pid;
        let Some(host) = self.host_cgroup_ns else {
            return Ok(Vec::new());
        };
        // Optional, like `container`: no readable cgroup file, no unit.
        let text = match process.cgroup() {
            Ok(text) => text,
            Err(error) => {
                tracing::debug!(pid, %error, "cannot read the cgroup file; systemd selectors omitted");
                return Ok(Vec::new());
            }
        };
        let Some(unit) = unit_from_cgroup(&String::from_utf8_lossy(text)) else {
            return Ok(Vec::new());
        };
        // The namespace is looked at only for a caller with a unit: the
        // rule's outcome is the same, and most callers have none.
        let ns = cgroup_ns(process.dir);
        if ns != Some(host) {
            tracing::debug!(pid, cgroup_ns = ?ns, host_cgroup_ns = host,
                "caller is not in the host's cgroup namespace; systemd selectors omitted");
            return Ok(Vec::new());
        }
        Ok(Selector::new("systemd", &format!("unit:{unit}"))
            .ok()
            .into_iter()
            .collect())
    }
}

/// The system service named by the contents of a `/proc/<pid>/cgroup`
/// file, under the rules in the file comment; `None` for anything else.
pub fn unit_from_cgroup(text: &str) -> Option<String> {
    let mut v2: Option<&str> = None;
    let mut v1: Option<&str> = None;
    for (hierarchy, controllers, path) in cgroup_lines(text) {
        let slot = match (hierarchy, controllers) {
            ("0", "") => &mut v2,
            (_, "name=systemd") => &mut v1,
            _ => continue,
        };
        if slot.replace(path).is_some() {
            return None; // the same hierarchy twice: not a kernel's file
        }
    }
    // A hierarchy at its root is one systemd does not use (an unused v2
    // next to v1, or a v1 name=systemd nobody manages).
    match (v2.filter(|p| *p != "/"), v1.filter(|p| *p != "/")) {
        (Some(v2), Some(v1)) => unit_in_path(v2).filter(|_| v2 == v1),
        (Some(path), None) | (None, Some(path)) => unit_in_path(path),
        (None, None) => None,
    }
}

/// `<slice>*/<name>.service` → `<name>.service`.
fn unit_in_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    let segments: Vec<&str> = rest.split('/').collect();
    let (unit, slices) = segments.split_last()?;
    if !slices
        .iter()
        .all(|s| s.ends_with(".slice") && s.len() > ".slice".len())
    {
        return None;
    }
    if slices.first() == Some(&"user.slice") || !is_service_name(unit) {
        return None;
    }
    if unit.starts_with("user@") {
        return None;
    }
    Some(unit.to_string())
}

/// A unit name of a service as systemd writes it: `[A-Za-z0-9:_.\-@]` (and
/// `\` of its `\xNN` escapes), at most 255 bytes, ending in `.service` with
/// a non-empty name.
fn is_service_name(s: &str) -> bool {
    s.len() <= 255
        && s.strip_suffix(".service")
            .is_some_and(|name| !name.is_empty())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_:.-@\\".contains(&b))
}

#[cfg(test)]
mod tests;
