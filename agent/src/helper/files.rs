//! Publishing a set of files so that readers never see a half-written file
//! nor, when they follow the rule below, a mismatched pair. This is the
//! Kubernetes projected-volume ("atomic writer") scheme:
//!
//! ```text
//! cert_dir/
//!   ..v00000000000000000042/   a complete, fsynced set (hidden, versioned)
//!   ..data -> ..v00000000000000000042
//!   svid.pem -> ..data/svid.pem       (one symlink per configured name)
//!   svid_key.pem -> ..data/svid_key.pem
//!   bundle.pem -> ..data/bundle.pem
//! ```
//!
//! An update writes every file into a fresh version directory (each file
//! fsynced, then the directory), points a temporary symlink at it and
//! `rename(2)`s that over `..data` (atomic), fsyncs `cert_dir`, makes sure
//! the per-name symlinks exist, and finally removes versions older than the
//! previous one.
//!
//! **Reader guarantee.**
//! - Any open of `cert_dir/<name>` yields one complete file of one version:
//!   files are never written in place.
//! - A reader that resolves `..data` once (`readlink`) and reads all its
//!   files from that version directory gets a set written together (a key
//!   that matches its certificate), provided it finishes before two more
//!   updates have been published: the previous version is kept until the
//!   next one replaces the current.
//! - A reader that opens `cert_dir/svid.pem` and then `cert_dir/svid_key.pem`
//!   resolves `..data` twice; if an update lands between the two opens it
//!   can get files of two versions. No sequence of renames can prevent that;
//!   such readers (nginx, …) reload on the signal sent after the swap, or
//!   should read through `..data` as above.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sigil_proto::daemon::files::write_new;

/// The symlink naming the current version directory.
pub const DATA_LINK: &str = "..data";
const DATA_LINK_TMP: &str = "..data_tmp";
const VERSION_PREFIX: &str = "..v";

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{action} {path}: {error}")]
    Io {
        action: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    /// Writing one file of the set (the error names it).
    #[error("{0}")]
    Write(std::io::Error),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FilesError + 'a {
    move |error| FilesError::Io {
        action,
        path: path.to_path_buf(),
        error,
    }
}

/// One file of a set.
pub struct OutFile<'a> {
    pub name: &'a str,
    pub contents: &'a [u8],
    pub mode: u32,
}

fn fsync_dir(dir: &Path) -> Result<(), FilesError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

/// Replaces `link` by a symlink to `target`, atomically (temporary symlink
/// + rename).
fn swap_symlink(dir: &Path, tmp_name: &str, link: &Path, target: &Path) -> Result<(), FilesError> {
    let tmp = dir.join(tmp_name);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("removing", &tmp)(e)),
    }
    std::os::unix::fs::symlink(target, &tmp).map_err(io("creating symlink", &tmp))?;
    fs::rename(&tmp, link).map_err(io("renaming symlink over", link))
}

/// The version directory names in `dir`, sorted oldest first.
fn versions(dir: &Path) -> Result<Vec<String>, FilesError> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .map_err(io("listing", dir))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            n.strip_prefix(VERSION_PREFIX)
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The version directory `..data` points at, if any.
pub fn current_version(dir: &Path) -> Option<String> {
    fs::read_link(dir.join(DATA_LINK))
        .ok()
        .and_then(|t| t.file_name().and_then(|n| n.to_str()).map(String::from))
}

/// Publishes `files` as the new current set in `dir` (created 0755 if
/// missing) and returns the version directory's path.
pub fn publish(dir: &Path, files: &[OutFile<'_>]) -> Result<PathBuf, FilesError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(io("creating", dir))?;
        // Explicit modes: a umask (systemd's UMask=0077) must not hide the
        // certificates from the consumer; the key file keeps its own mode.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(io("setting the mode of", dir))?;
    }
    let previous = current_version(dir);
    let existing = versions(dir)?;
    // Zero-padded so names sort by age; one past the newest on disk.
    let next = existing
        .iter()
        .chain(previous.iter())
        .filter_map(|n| n.strip_prefix(VERSION_PREFIX)?.parse::<u64>().ok())
        .max()
        .map_or(1, |n| n + 1);
    let version = format!("{VERSION_PREFIX}{next:020}");
    let vdir = dir.join(&version);
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&vdir)
        .map_err(io("creating", &vdir))?;
    fs::set_permissions(&vdir, fs::Permissions::from_mode(0o755))
        .map_err(io("setting the mode of", &vdir))?;
    let written = (|| {
        for f in files {
            // New file, exact mode whatever the umask, fsynced.
            write_new(&vdir.join(f.name), f.contents, f.mode).map_err(FilesError::Write)?;
        }
        fsync_dir(&vdir)
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&vdir);
        return Err(e);
    }
    // The swap: from here on every new open sees the new set.
    swap_symlink(
        dir,
        DATA_LINK_TMP,
        &dir.join(DATA_LINK),
        Path::new(&version),
    )?;
    for f in files {
        let link = dir.join(f.name);
        let target = Path::new(DATA_LINK).join(f.name);
        if fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            swap_symlink(dir, &format!("..{}_tmp", f.name), &link, &target)?;
        }
    }
    fsync_dir(dir)?;
    // Keep the current and the previous version; an open reader of the
    // previous one is not broken.
    for old in versions(dir)? {
        if old != version && Some(&old) != previous.as_ref() {
            let p = dir.join(&old);
            if let Err(e) = fs::remove_dir_all(&p) {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove an old version directory");
            }
        }
    }
    Ok(vdir)
}

#[cfg(test)]
mod tests {
    use sigil_proto::daemon::umask_child::{child_umask, run_under_umask};

    use super::*;

    fn set<'a>(a: &'a [u8], b: &'a [u8]) -> [OutFile<'a>; 2] {
        [
            OutFile {
                name: "cert.pem",
                contents: a,
                mode: 0o644,
            },
            OutFile {
                name: "key.pem",
                contents: b,
                mode: 0o600,
            },
        ]
    }

    #[test]
    fn modes_hold_under_systemd_umask() {
        run_under_umask(
            "helper::files::tests::publishes_versions_and_keeps_the_previous_one",
            0o077, // systemd's UMask=0077
        )
        .unwrap();
    }

    #[test]
    fn publishes_versions_and_keeps_the_previous_one() {
        // Under umask 0077 when run by the test above; as it is otherwise.
        let _ = child_umask();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let v1 = publish(&dir, &set(b"c1", b"k1")).unwrap();
        for d in [&dir, &v1] {
            let m = fs::metadata(d).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, 0o755, "{}", d.display());
        }
        let m = fs::metadata(dir.join("cert.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o644);
        assert_eq!(fs::read(dir.join("cert.pem")).unwrap(), b"c1");
        let mode = fs::metadata(dir.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let v2 = publish(&dir, &set(b"c2", b"k2")).unwrap();
        assert_eq!(fs::read(dir.join("key.pem")).unwrap(), b"k2");
        assert!(v1.exists(), "previous version kept");
        let v3 = publish(&dir, &set(b"c3", b"k3")).unwrap();
        assert!(!v1.exists(), "older versions removed");
        assert!(v2.exists() && v3.exists());
        assert_eq!(
            current_version(&dir).as_deref(),
            v3.file_name().and_then(|n| n.to_str())
        );
        assert_eq!(fs::read(dir.join("..data/cert.pem")).unwrap(), b"c3");
        // A plain file in the way (an older layout) is replaced by a link.
        fs::remove_file(dir.join("cert.pem")).unwrap();
        fs::write(dir.join("cert.pem"), b"stale").unwrap();
        publish(&dir, &set(b"c4", b"k4")).unwrap();
        assert_eq!(fs::read(dir.join("cert.pem")).unwrap(), b"c4");
        assert!(
            fs::symlink_metadata(dir.join("cert.pem"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
