//! Container ids from `/proc/<pid>/cgroup`: the container runtimes put each
//! container in a cgroup whose name carries the 64-hex container id, so the
//! kernel's record of a process's cgroup says which container it runs in.
//!
//! Recognised layouts (cgroup v1 lines `hierarchy:controllers:path`, v2 lines
//! `0::path`):
//!
//! - docker, cgroupfs driver: `/docker/<id>`
//! - docker, systemd driver: `/system.slice/docker-<id>.scope`
//! - containerd/CRI, cgroupfs driver: `/kubepods/<qos>/pod<uid>/<id>`
//! - containerd/CRI, systemd driver: `.../cri-containerd-<id>.scope`
//! - CRI-O: `.../crio-<id>.scope` (not `crio-conmon-<id>.scope`, the monitor)
//! - podman: `.../libpod-<id>.scope` (not `libpod-conmon-<id>.scope`)
//!
//! An id counts only in its exact form: 64 lowercase hex digits, either a
//! whole path segment or a whole `<runtime>-<id>[.scope]` segment.
//!
//! Whoever can create and name cgroups can put a process in a cgroup that
//! looks like any container. Outside containers that is root, except in a
//! subtree systemd delegates to an unprivileged user's service manager
//! (`user@<uid>.service`), where `systemd-run --user --scope
//! --unit=docker-<id>` is enough. So an id in such a subtree makes the answer
//! `None` (rootless containers get no `container:id` selector), and so does a
//! process whose cgroups name two different ids (nesting, or a container that
//! was delegated its own cgroup tree naming a sub-cgroup after another
//! container): there is no safe way to pick one.
//!
//! The paths are relative to the reader's cgroup namespace: the agent must run
//! in the host cgroup namespace to see them.
//!
//! [`ContainerAttestor`] is the `container` attestor: `container:id:<id>`
//! from the attested process's cgroup file.

use sigil_proto::Selector;

use super::{Attestor, Process, WorkloadAttestError};

/// The `container` attestor.
#[derive(Debug, Default, Clone, Copy)]
pub struct ContainerAttestor;

impl Attestor for ContainerAttestor {
    fn attest(&self, process: &Process<'_>) -> Result<Vec<Selector>, WorkloadAttestError> {
        // Optional: a process may have no cgroup file readable (or none at
        // all on a kernel without cgroups); it then just has no container id.
        match process.cgroup() {
            Ok(text) => Ok(container_selectors(&String::from_utf8_lossy(text))),
            Err(error) => {
                tracing::debug!(pid = process.cred.pid, %error, "cannot read the cgroup file; container selectors omitted");
                Ok(Vec::new())
            }
        }
    }
}

/// Length of a container id in hex digits.
const CONTAINER_ID_LEN: usize = 64;

/// Segment prefixes the runtimes (with the systemd cgroup driver, and CRI-O
/// with either driver) put before the id.
const RUNTIME_PREFIXES: &[&str] = &["docker-", "cri-containerd-", "crio-", "libpod-"];

/// The container id (64 lowercase hex digits) named by the contents of a
/// `/proc/<pid>/cgroup` file, or `None` for a process outside any container,
/// for an id inside a user-delegated cgroup subtree, and when the lines name
/// more than one id. Malformed lines are skipped.
pub fn container_id_from_cgroup(text: &str) -> Option<String> {
    let mut found: Option<&str> = None;
    for (_hierarchy, _controllers, path) in cgroup_lines(text) {
        let mut user_delegated = false;
        for segment in path.split('/') {
            if segment.starts_with("user@") && segment.ends_with(".service") {
                user_delegated = true;
            }
            let Some(id) = id_in_segment(segment) else {
                continue;
            };
            if user_delegated {
                return None;
            }
            match found {
                Some(previous) if previous != id => return None,
                _ => found = Some(id),
            }
        }
    }
    found.map(str::to_string)
}

/// The well-formed lines of a `/proc/<pid>/cgroup` file as (hierarchy id,
/// controllers, path); malformed lines are skipped.
pub(crate) fn cgroup_lines(text: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    text.lines().filter_map(|line| {
        let mut parts = line.splitn(3, ':');
        Some((parts.next()?, parts.next()?, parts.next()?))
    })
}

/// The `container:id:<id>` selector for the process whose cgroup file reads
/// `text`, if [`container_id_from_cgroup`] finds an id.
pub fn container_selectors(text: &str) -> Vec<Selector> {
    container_id_from_cgroup(text)
        .and_then(|id| Selector::new("container", &format!("id:{id}")).ok())
        .into_iter()
        .collect()
}

/// The id a single cgroup path segment names: the whole segment, or the part
/// between a runtime prefix and an optional `.scope`.
fn id_in_segment(segment: &str) -> Option<&str> {
    if is_container_id(segment) {
        return Some(segment);
    }
    let rest = RUNTIME_PREFIXES
        .iter()
        .find_map(|prefix| segment.strip_prefix(prefix))?;
    let id = rest.strip_suffix(".scope").unwrap_or(rest);
    is_container_id(id).then_some(id)
}

fn is_container_id(s: &str) -> bool {
    s.len() == CONTAINER_ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f8a9c1d2e4b5a6978c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2";
    const OTHER: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

    fn cgroup(template: &str) -> String {
        template.replace("{ID}", ID).replace("{OTHER}", OTHER)
    }

    #[test]
    fn ids_of_the_common_runtimes_are_found() {
        let cases: &[(&str, &str)] = &[
            (
                "docker, cgroup v1, cgroupfs driver",
                "12:hugetlb:/docker/{ID}\n\
                 11:memory:/docker/{ID}\n\
                 4:cpu,cpuacct:/docker/{ID}\n\
                 1:name=systemd:/docker/{ID}\n",
            ),
            (
                "docker, cgroup v2, systemd driver",
                "0::/system.slice/docker-{ID}.scope\n",
            ),
            (
                "docker, hybrid v1 + v2",
                "5:devices:/system.slice/docker-{ID}.scope\n\
                 1:name=systemd:/system.slice/docker-{ID}.scope\n\
                 0::/system.slice/docker-{ID}.scope\n",
            ),
            (
                "kubernetes + containerd, cgroup v1, cgroupfs driver",
                "11:memory:/kubepods/burstable/pod5f1c2a0e-8d4b-4c3a-9e7f-0a1b2c3d4e5f/{ID}\n\
                 3:cpu,cpuacct:/kubepods/burstable/pod5f1c2a0e-8d4b-4c3a-9e7f-0a1b2c3d4e5f/{ID}\n",
            ),
            (
                "kubernetes + containerd, guaranteed QoS (no QoS level)",
                "0::/kubepods/pod5f1c2a0e-8d4b-4c3a-9e7f-0a1b2c3d4e5f/{ID}\n",
            ),
            (
                "kubernetes + containerd, cgroup v2, systemd driver",
                "0::/kubepods.slice/kubepods-burstable.slice/\
                 kubepods-burstable-pod5f1c2a0e_8d4b_4c3a_9e7f_0a1b2c3d4e5f.slice/\
                 cri-containerd-{ID}.scope\n",
            ),
            (
                "CRI-O, cgroup v2, systemd driver",
                "0::/kubepods.slice/kubepods-besteffort.slice/\
                 kubepods-besteffort-pod5f1c2a0e_8d4b_4c3a_9e7f_0a1b2c3d4e5f.slice/\
                 crio-{ID}.scope\n",
            ),
            (
                "CRI-O, cgroupfs driver",
                "0::/kubepods/besteffort/pod5f1c2a0e-8d4b-4c3a-9e7f-0a1b2c3d4e5f/crio-{ID}\n",
            ),
            ("podman, cgroup v2", "0::/machine.slice/libpod-{ID}.scope\n"),
            (
                "podman, cgroup v2, process in the container's sub-cgroup",
                "0::/machine.slice/libpod-{ID}.scope/container\n",
            ),
            (
                "the same id twice in one path",
                "0::/docker/{ID}/system.slice/docker-{ID}.scope\n",
            ),
            (
                "malformed lines are skipped",
                "garbage\n\n0::/system.slice/docker-{ID}.scope\n",
            ),
        ];
        for (name, template) in cases {
            let text = cgroup(template);
            assert_eq!(
                container_id_from_cgroup(&text).as_deref(),
                Some(ID),
                "{name}: {text:?}"
            );
        }
    }

    #[test]
    fn hosts_and_near_misses_have_no_id() {
        let short = &ID[..12];
        let upper = ID.to_ascii_uppercase();
        let long = format!("{ID}0");
        let not_hex = format!("{}g", &ID[..63]);
        let cases: Vec<(&str, String)> =
            vec![
            ("empty file", String::new()),
            ("cgroup v2 root", "0::/\n".to_string()),
            (
                "user session",
                "0::/user.slice/user-1000.slice/session-3.scope\n".to_string(),
            ),
            ("system service", "0::/system.slice/sshd.service\n".to_string()),
            ("init", "0::/init.scope\n".to_string()),
            (
                "cgroup v1 host process",
                "12:memory:/user.slice\n1:name=systemd:/user.slice/user-0.slice/session-1.scope\n"
                    .to_string(),
            ),
            ("short hex (docker's short id)", format!("0::/docker/{short}\n")),
            ("uppercase hex", format!("0::/docker/{upper}\n")),
            (
                "uppercase hex in a scope",
                format!("0::/system.slice/docker-{upper}.scope\n"),
            ),
            ("65 hex digits", format!("0::/docker/{long}\n")),
            ("63 hex digits", format!("0::/docker/{}\n", &ID[..63])),
            ("64 characters, not all hex", format!("0::/docker/{not_hex}\n")),
            (
                "unknown runtime prefix",
                format!("0::/system.slice/foo-{ID}.scope\n"),
            ),
            (
                "id in the middle of a segment",
                format!("0::/system.slice/x{ID}.scope\n"),
            ),
            (
                "the CRI-O monitor, not the container",
                format!("0::/machine.slice/crio-conmon-{ID}.scope\n"),
            ),
            (
                "the podman monitor, not the container",
                format!("0::/machine.slice/libpod-conmon-{ID}.scope\n"),
            ),
            (
                "two different ids on two lines",
                format!("4:memory:/docker/{ID}\n0::/system.slice/docker-{OTHER}.scope\n"),
            ),
            (
                "two different ids in one path (nested)",
                format!("0::/docker/{ID}/docker/{OTHER}\n"),
            ),
            (
                "a look-alike scope made under a user's delegated subtree",
                format!(
                    "0::/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{ID}.scope\n"
                ),
            ),
            (
                "a bare id made under a user's delegated subtree",
                format!("0::/user.slice/user-1000.slice/user@1000.service/{ID}\n"),
            ),
        ];
        for (name, text) in &cases {
            assert_eq!(container_id_from_cgroup(text), None, "{name}: {text:?}");
        }
    }

    #[test]
    fn the_selector_is_container_id() {
        let text = cgroup("0::/system.slice/docker-{ID}.scope\n");
        let selectors = container_selectors(&text);
        assert_eq!(selectors.len(), 1);
        assert_eq!(selectors[0].to_string(), format!("container:id:{ID}"));
        assert!(container_selectors("0::/init.scope\n").is_empty());
    }
}
