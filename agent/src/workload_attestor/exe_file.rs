//! The caller's executable file, looked at without waiting on its
//! filesystem, so that an attestation can run on the Workload API's async
//! worker (`WorkloadAttestor::attest_now`) and no caller can stall it.
//!
//! A caller chooses where its executable lives. On a FUSE filesystem —
//! which an unprivileged user can mount — every `open` and, once the
//! attribute cache has lapsed, every `stat` of the file is a request to the
//! user's own daemon, which may never answer; on NFS or 9p a hung server
//! does the same. A worker blocked in such a call would stall every other
//! caller's calls and streams. So, off the blocking threads:
//!
//! - the executable is never opened (its hash is looked up, not computed);
//! - its identity and version come from `statx` with `AT_STATX_DONT_SYNC`,
//!   which answers from the inode in memory (FUSE, NFS and 9p honour it and
//!   send no request; local filesystems have nothing to sync);
//! - the path to it is `/proc/<pid>/exe`, a link procfs resolves itself,
//!   with no look-up in the target's filesystem;
//! - and only for an executable on a local, kernel-backed filesystem
//!   ([`is_local_mount`], judged once, at accept): a network filesystem
//!   may still check its dentry on the way (NFS's weak revalidation), so
//!   its callers are attested on a blocking thread.
//!
//! The accept itself asks the executable's filesystem nothing either: the
//! filesystem's type comes from the caller's own `mountinfo` (procfs),
//! found by the mount id `statx` gives. What is left on a blocking thread:
//! for an executable off local filesystems, each call opens the file to
//! find its hash (attributes in memory may lag behind an NFS server's), and
//! a new executable is read to hash it (at most two at once). A filesystem
//! that stops answering holds those blocking threads, never an accept nor
//! an async worker.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::libc;

/// `statx(path, mask)` with `AT_STATX_DONT_SYNC` (following links).
fn statx_cached(path: &Path, mask: u32) -> io::Result<libc::statx> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let mut buf = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `buf` a writable statx
    // buffer, both live for the call.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_STATX_DONT_SYNC,
            mask,
            buf.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statx succeeded, so it filled the buffer (zeroed before).
    Ok(unsafe { buf.assume_init() })
}

/// Identifies one version of one file: a change of content changes the
/// size, the mtime or (which no one can set back) the ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileVersion {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) mtime: i64,
    pub(crate) mtime_nsec: i64,
    pub(crate) ctime: i64,
    pub(crate) ctime_nsec: i64,
}

impl FileVersion {
    /// The version `meta` describes (e.g. `fstat` of an open file).
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
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

/// What `statx` says of a file, from memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExeStat {
    pub(crate) version: FileVersion,
    pub(crate) is_file: bool,
}

/// `statx(path)` with `AT_STATX_DONT_SYNC`: the attributes the kernel holds
/// for the file, without asking its filesystem to refresh them. Follows
/// links (so `/proc/<pid>/exe` gives the executable).
pub(crate) fn stat_cached(path: &Path) -> io::Result<ExeStat> {
    let s = statx_cached(path, libc::STATX_BASIC_STATS)?;
    let needed = libc::STATX_TYPE | libc::STATX_INO | libc::STATX_SIZE;
    if s.stx_mask & needed != needed {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "statx gave no type, inode or size",
        ));
    }
    Ok(ExeStat {
        version: FileVersion {
            dev: libc::makedev(s.stx_dev_major, s.stx_dev_minor),
            ino: s.stx_ino,
            size: s.stx_size,
            mtime: s.stx_mtime.tv_sec,
            mtime_nsec: i64::from(s.stx_mtime.tv_nsec),
            ctime: s.stx_ctime.tv_sec,
            ctime_nsec: i64::from(s.stx_ctime.tv_nsec),
        },
        is_file: u32::from(s.stx_mode) & libc::S_IFMT == libc::S_IFREG,
    })
}

/// Local, kernel-backed filesystems (`mountinfo` type names): every
/// attribute is in memory and no look-up or `stat` waits on a server or a
/// user's daemon.
const LOCAL: [&str; 13] = [
    "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "ramfs", "overlay", "f2fs", "iso9660",
    "squashfs", "erofs", "zfs",
];

/// Whether the executable of the process whose procfs directory is
/// `proc_dir` is on a local, kernel-backed filesystem: the mount `statx`
/// names for `<proc_dir>/exe` (from memory), looked up in
/// `<proc_dir>/mountinfo`. Asks no filesystem but procfs. A mount not
/// found there (the process left that mount namespace), a kernel without
/// mount ids in `statx` (before 5.8) or anything unreadable is not local.
pub(crate) fn is_local_mount(proc_dir: &Path) -> bool {
    let Ok(mnt_id) = mount_id(&proc_dir.join("exe")) else {
        return false;
    };
    super::read_procfs(&proc_dir.join("mountinfo"))
        .ok()
        .and_then(|m| fs_type_of(&m, mnt_id).map(|t| LOCAL.contains(&t)))
        .unwrap_or(false)
}

/// The mount id of the file at `path` (`statx`, from memory).
fn mount_id(path: &Path) -> io::Result<u64> {
    let s = statx_cached(path, libc::STATX_MNT_ID)?;
    if s.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "statx gave no mount id",
        ));
    }
    Ok(s.stx_mnt_id)
}

/// The filesystem type of mount `id` in a `mountinfo` file: line
/// `<id> <parent> <major:minor> <root> <point> <options> [<tags>...] -
/// <type> <source> <super options>`.
fn fs_type_of(mountinfo: &[u8], id: u64) -> Option<&str> {
    let text = std::str::from_utf8(mountinfo).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(' ');
        if fields.next()?.parse::<u64>().ok()? != id {
            return None;
        }
        let (_, after) = line.split_once(" - ")?;
        after.split(' ').next()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_stat_agrees_with_std_metadata() {
        let exe = std::env::current_exe().unwrap();
        let ours = stat_cached(&exe).unwrap();
        let std = std::fs::metadata(&exe).unwrap();
        assert_eq!(ours.version, FileVersion::of(&std));
        assert!(ours.is_file);
        // Through the procfs link, as the attestors read it.
        let via_proc = stat_cached(Path::new("/proc/self/exe")).unwrap();
        assert_eq!(via_proc.version, ours.version);
        assert!(!stat_cached(Path::new("/")).unwrap().is_file);
        assert!(stat_cached(Path::new("/no/such/file")).is_err());
    }

    #[test]
    fn the_filesystem_type_comes_from_mountinfo_by_mount_id() {
        let info = b"22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n\
            29 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
            31 29 0:45 / /mnt/fuse rw,nosuid,nodev master:2 - fuse.sshfs host:/ rw\n\
            32 29 0:46 / /mnt/nfs rw - nfs4 srv:/x rw\n";
        assert_eq!(fs_type_of(info, 29), Some("ext4"));
        assert_eq!(fs_type_of(info, 31), Some("fuse.sshfs"));
        assert_eq!(fs_type_of(info, 32), Some("nfs4"));
        assert_eq!(fs_type_of(info, 2), None);
        for t in ["fuse.sshfs", "nfs4", "proc", "cifs", "9p"] {
            assert!(!LOCAL.contains(&t), "{t}");
        }
        // This test's own executable is on the machine's local disk (CI and
        // development machines build on ext4, xfs, btrfs or overlay).
        assert!(is_local_mount(Path::new("/proc/self")));
        assert!(!is_local_mount(Path::new("/proc/no-such-pid")));
    }
}
