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
//! **Nothing is followed.** The consumer's user may be able to write
//! `cert_dir`, and the helper usually runs as root: every step works on
//! directory file descriptors (`openat`/`mkdirat`/`symlinkat`/`renameat`,
//! `fchmod`, `O_NOFOLLOW`), `cert_dir` itself must not be a symlink, and a
//! version directory is only filled once opened without following and seen
//! to be the helper's own. A symlink planted anywhere in `cert_dir` is
//! replaced or removed, never written through, so nothing outside changes.
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

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};

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
    /// Something other than what the helper created sits where it writes.
    #[error("{path}: {message}; the helper does not follow or reuse it")]
    Planted { path: PathBuf, message: String },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> FilesError + 'a {
    move |e| FilesError::Io {
        action,
        path: path.to_path_buf(),
        error: std::io::Error::from(e),
    }
}

/// One file of a set.
pub struct OutFile<'a> {
    pub name: &'a str,
    pub contents: &'a [u8],
    pub mode: u32,
}

/// A directory held open: every operation below is relative to its file
/// descriptor (`openat`, `mkdirat`, `symlinkat`, `renameat`, `fchmod`),
/// so a symlink swapped in for it or into it is never followed.
struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

impl Dir {
    /// Opens `name` in `self` as a directory, refusing a symlink.
    fn open(&self, name: &str) -> Result<Dir, FilesError> {
        let path = self.path.join(name);
        let fd = openat(self.fd.as_fd(), name, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => FilesError::Planted {
                path: path.clone(),
                message: "is a symbolic link or not a directory".into(),
            },
            e => io("opening", &path)(e),
        })?;
        Ok(Dir { fd, path })
    }

    fn sync(&self) -> Result<(), FilesError> {
        nix::unistd::fsync(self.fd.as_fd()).map_err(io("syncing directory", &self.path))
    }

    /// Replaces the entry `link` by a symlink to `target`, atomically
    /// (temporary symlink + `renameat`, which never follows either name).
    fn swap_symlink(&self, tmp: &str, link: &str, target: &Path) -> Result<(), FilesError> {
        let tmp_path = self.path.join(tmp);
        match unlinkat(self.fd.as_fd(), tmp, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(io("removing", &tmp_path)(e)),
        }
        symlinkat(target, self.fd.as_fd(), tmp).map_err(io("creating symlink", &tmp_path))?;
        renameat(self.fd.as_fd(), tmp, self.fd.as_fd(), link)
            .map_err(io("renaming symlink over", &self.path.join(link)))
    }

    fn read_link(&self, name: &str) -> Option<PathBuf> {
        readlinkat(self.fd.as_fd(), name).ok().map(PathBuf::from)
    }

    /// Entry names, without `.` and `..`.
    fn names(&self) -> Result<Vec<String>, FilesError> {
        let fd = self.fd.try_clone().map_err(|error| FilesError::Io {
            action: "listing",
            path: self.path.clone(),
            error,
        })?;
        let mut d = nix::dir::Dir::from_fd(fd).map_err(io("listing", &self.path))?;
        Ok(d.iter()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().ok().map(String::from))
            .filter(|n| n != "." && n != "..")
            .collect())
    }

    /// Writes a new file `name` with exactly `mode`, fsynced; refuses any
    /// existing entry (a planted symlink included).
    fn write_new(&self, name: &str, contents: &[u8], mode: u32) -> Result<(), FilesError> {
        let path = self.path.join(name);
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
        let fd = openat(
            self.fd.as_fd(),
            name,
            flags | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(io("creating", &path))?;
        // Exact mode whatever the umask.
        fchmod(fd.as_fd(), Mode::from_bits_truncate(mode))
            .map_err(io("setting the mode of", &path))?;
        let mut f = fs::File::from(fd);
        f.write_all(contents)
            .and_then(|()| f.sync_all())
            .map_err(|error| FilesError::Io {
                action: "writing",
                path,
                error,
            })
    }

    /// Removes a version directory (its plain entries, then itself), or
    /// the symlink or file standing under a version name. Nothing is
    /// followed; a nested directory (the helper never makes one) stays
    /// and makes the removal fail.
    fn remove_version(&self, name: &str) -> Result<(), FilesError> {
        let path = self.path.join(name);
        let st = fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(io("inspecting", &path))?;
        if !is_dir(&st) {
            return unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir)
                .map_err(io("removing", &path));
        }
        let sub = self.open(name)?;
        for entry in sub.names()? {
            unlinkat(sub.fd.as_fd(), entry.as_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(io("removing", &sub.path.join(&entry)))?;
        }
        unlinkat(self.fd.as_fd(), name, UnlinkatFlags::RemoveDir).map_err(io("removing", &path))
    }
}

/// Opens `dir` (created 0755 if missing), refusing a symlink in its place.
fn open_cert_dir(dir: &Path) -> Result<Dir, FilesError> {
    let refuse = |e| match e {
        Errno::ELOOP | Errno::ENOTDIR => FilesError::Planted {
            path: dir.to_path_buf(),
            message: "cert_dir is a symbolic link or not a directory".into(),
        },
        e => io("opening", dir)(e),
    };
    let open = || nix::fcntl::open(dir, DIR_FLAGS, Mode::empty());
    match open() {
        Ok(fd) => Ok(Dir {
            fd,
            path: dir.to_path_buf(),
        }),
        Err(Errno::ENOENT) => {
            if let Some(parent) = dir.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(|error| FilesError::Io {
                        action: "creating",
                        path: parent.to_path_buf(),
                        error,
                    })?;
            }
            match nix::unistd::mkdir(dir, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io("creating", dir)(e)),
            }
            let fd = open().map_err(refuse)?;
            // Explicit modes: a umask (systemd's UMask=0077) must not hide
            // the certificates from the consumer; the key keeps its own.
            fchmod(fd.as_fd(), Mode::from_bits_truncate(0o755))
                .map_err(io("setting the mode of", dir))?;
            Ok(Dir {
                fd,
                path: dir.to_path_buf(),
            })
        }
        Err(e) => Err(refuse(e)),
    }
}

fn is_version(name: &str) -> bool {
    name.strip_prefix(VERSION_PREFIX)
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

/// The version directory names in `dir`, sorted oldest first.
fn versions(dir: &Dir) -> Result<Vec<String>, FilesError> {
    let mut out: Vec<String> = dir.names()?.into_iter().filter(|n| is_version(n)).collect();
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
    publish_with(dir, files, &mut |_| {})
}

/// [`publish`], calling `after_mkdir` with the new version directory's path
/// right after creating it: a seam for tests that swap things in there.
fn publish_with(
    dir: &Path,
    files: &[OutFile<'_>],
    after_mkdir: &mut dyn FnMut(&Path),
) -> Result<PathBuf, FilesError> {
    let d = open_cert_dir(dir)?;
    let previous = d
        .read_link(DATA_LINK)
        .and_then(|t| t.file_name().and_then(OsStr::to_str).map(String::from));
    let existing = versions(&d)?;
    // Zero-padded so names sort by age; one past the newest on disk.
    let next = existing
        .iter()
        .chain(previous.iter())
        .filter_map(|n| n.strip_prefix(VERSION_PREFIX)?.parse::<u64>().ok())
        .max()
        .map_or(1, |n| n + 1);
    let version = format!("{VERSION_PREFIX}{next:020}");
    let vpath = dir.join(&version);
    mkdirat(
        d.fd.as_fd(),
        version.as_str(),
        Mode::from_bits_truncate(0o755),
    )
    .map_err(io("creating", &vpath))?;
    after_mkdir(&vpath);
    let written = (|| {
        let v = d.open(&version)?;
        // Only a directory this process created (others cannot make one
        // owned by its user) is filled.
        let st = fstat(v.fd.as_fd()).map_err(io("inspecting", &vpath))?;
        if st.st_uid != nix::unistd::geteuid().as_raw() {
            return Err(FilesError::Planted {
                path: vpath.clone(),
                message: format!("is owned by uid {}, not by the helper", st.st_uid),
            });
        }
        fchmod(v.fd.as_fd(), Mode::from_bits_truncate(0o755))
            .map_err(io("setting the mode of", &vpath))?;
        for f in files {
            v.write_new(f.name, f.contents, f.mode)?;
        }
        v.sync()
    })();
    if let Err(e) = written {
        if let Err(c) = d.remove_version(&version) {
            tracing::warn!(error = %c, "cannot remove a version directory left by a failed update");
        }
        return Err(e);
    }
    // The swap: from here on every new open sees the new set.
    d.swap_symlink(DATA_LINK_TMP, DATA_LINK, Path::new(&version))?;
    for f in files {
        let target = Path::new(DATA_LINK).join(f.name);
        if d.read_link(f.name).as_deref() != Some(target.as_path()) {
            d.swap_symlink(&format!("..{}_tmp", f.name), f.name, &target)?;
        }
    }
    d.sync()?;
    // Keep the current and the previous version; an open reader of the
    // previous one is not broken.
    for old in versions(&d)? {
        if old != version
            && Some(&old) != previous.as_ref()
            && let Err(e) = d.remove_version(&old)
        {
            tracing::warn!(error = %e, "cannot remove an old version directory");
        }
    }
    Ok(vpath)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

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

    /// Every entry under `root` (itself included): name, mode, owner and,
    /// for files, contents. Links are listed, not followed.
    fn snapshot(root: &Path) -> Vec<(PathBuf, u32, u32, u32, Vec<u8>)> {
        use std::os::unix::fs::MetadataExt;
        let mut out = Vec::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(p) = todo.pop() {
            let m = fs::symlink_metadata(&p).unwrap();
            let contents = if m.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            out.push((p.clone(), m.mode(), m.uid(), m.gid(), contents));
            if m.is_dir() {
                for e in fs::read_dir(&p).unwrap() {
                    todo.push(e.unwrap().path());
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn i21_4_symlink_swapped_into_cert_dir_changes_nothing_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(outside.join("secret"), b"secret").unwrap();
        fs::set_permissions(outside.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        let before = snapshot(&outside);
        let dir = tmp.path().join("certs");
        publish(&dir, &set(b"c1", b"k1")).unwrap();
        // Links planted where the helper puts its temporary links, an
        // old-looking version and a published name, all pointing outside.
        let link = |name: &str, to: &Path| std::os::unix::fs::symlink(to, dir.join(name)).unwrap();
        link("..data_tmp", &outside);
        link("..cert.pem_tmp", &outside.join("secret"));
        link("..v00000000000000000000", &outside);
        fs::remove_file(dir.join("key.pem")).unwrap();
        link("key.pem", &outside.join("secret"));
        // And the race: the new version directory is swapped for a link to
        // the outside right after the helper creates it.
        let swapped = publish_with(&dir, &set(b"c2", b"k2"), &mut |v| {
            fs::rename(v, dir.join("..moved")).unwrap();
            std::os::unix::fs::symlink(&outside, v).unwrap();
        });
        assert_eq!(snapshot(&outside), before, "outside changed: {swapped:?}");
        let e = swapped.expect_err("published through a swapped-in link");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // The next update replaces or removes every planted link.
        publish(&dir, &set(b"c3", b"k3")).unwrap();
        assert_eq!(snapshot(&outside), before);
        assert_eq!(fs::read(dir.join("cert.pem")).unwrap(), b"c3");
        assert_eq!(fs::read(dir.join("key.pem")).unwrap(), b"k3");
        assert_eq!(fs::read(outside.join("secret")).unwrap(), b"secret");
        assert!(fs::symlink_metadata(dir.join("..v00000000000000000000")).is_err());
        // cert_dir itself a link to the outside: refused.
        let linked = tmp.path().join("linked");
        std::os::unix::fs::symlink(&outside, &linked).unwrap();
        let e = publish(&linked, &set(b"c4", b"k4")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(snapshot(&outside), before);
    }
}
