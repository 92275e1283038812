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
//!   ([`is_local_fs`], judged once, at accept, on a blocking thread): a
//!   network filesystem may still check its dentry on the way (NFS's weak
//!   revalidation), so its callers are attested on a blocking thread.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::libc;
use nix::sys::statfs::{
    BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, F2FS_SUPER_MAGIC, FsType, ISOFS_SUPER_MAGIC,
    OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC,
};

/// What `statx` says of a file, from memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExeStat {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) mtime: i64,
    pub(crate) mtime_nsec: i64,
    pub(crate) ctime: i64,
    pub(crate) ctime_nsec: i64,
    pub(crate) is_file: bool,
}

/// `statx(path)` with `AT_STATX_DONT_SYNC`: the attributes the kernel holds
/// for the file, without asking its filesystem to refresh them. Follows
/// links (so `/proc/<pid>/exe` gives the executable).
pub(crate) fn stat_cached(path: &Path) -> io::Result<ExeStat> {
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
            libc::STATX_BASIC_STATS,
            buf.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statx succeeded, so it filled the buffer (zeroed before).
    let s = unsafe { buf.assume_init() };
    let needed = libc::STATX_TYPE | libc::STATX_INO | libc::STATX_SIZE;
    if s.stx_mask & needed != needed {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "statx gave no type, inode or size",
        ));
    }
    Ok(ExeStat {
        dev: libc::makedev(s.stx_dev_major, s.stx_dev_minor),
        ino: s.stx_ino,
        size: s.stx_size,
        mtime: s.stx_mtime.tv_sec,
        mtime_nsec: i64::from(s.stx_mtime.tv_nsec),
        ctime: s.stx_ctime.tv_sec,
        ctime_nsec: i64::from(s.stx_ctime.tv_nsec),
        is_file: u32::from(s.stx_mode) & libc::S_IFMT == libc::S_IFREG,
    })
}

/// `f_type` of filesystems nix names no constant for.
const SQUASHFS_MAGIC: FsType = FsType(0x7371_7368);
const EROFS_SUPER_MAGIC_V1: FsType = FsType(0xE0F5_E1E2);
const RAMFS_MAGIC: FsType = FsType(0x8584_58F6);
const ZFS_SUPER_MAGIC: FsType = FsType(0x2FC1_2FC1);

/// Local, kernel-backed filesystems: every attribute is in memory and no
/// look-up or `stat` waits on a server or a user's daemon. (ext2, ext3 and
/// ext4 share one magic number.)
const LOCAL: [FsType; 11] = [
    EXT4_SUPER_MAGIC,
    XFS_SUPER_MAGIC,
    BTRFS_SUPER_MAGIC,
    TMPFS_MAGIC,
    RAMFS_MAGIC,
    OVERLAYFS_SUPER_MAGIC,
    F2FS_SUPER_MAGIC,
    ISOFS_SUPER_MAGIC,
    SQUASHFS_MAGIC,
    EROFS_SUPER_MAGIC_V1,
    ZFS_SUPER_MAGIC,
];

/// Whether the file at `path` is on a local, kernel-backed filesystem.
/// Blocks (`statfs` asks the filesystem): call it from a blocking thread.
/// Anything unknown or unreadable is not local.
pub(crate) fn is_local_fs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| is_local_type(s.filesystem_type()))
}

fn is_local_type(t: FsType) -> bool {
    LOCAL.contains(&t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::statfs::{FUSE_SUPER_MAGIC, NFS_SUPER_MAGIC, PROC_SUPER_MAGIC, SMB_SUPER_MAGIC};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn cached_stat_agrees_with_std_metadata() {
        let exe = std::env::current_exe().unwrap();
        let ours = stat_cached(&exe).unwrap();
        let std = std::fs::metadata(&exe).unwrap();
        assert_eq!(
            (ours.dev, ours.ino, ours.size, ours.mtime, ours.ctime),
            (std.dev(), std.ino(), std.size(), std.mtime(), std.ctime())
        );
        assert!(ours.is_file);
        // Through the procfs link, as the attestors read it.
        let via_proc = stat_cached(Path::new("/proc/self/exe")).unwrap();
        assert_eq!((via_proc.dev, via_proc.ino), (ours.dev, ours.ino));
        assert!(!stat_cached(Path::new("/")).unwrap().is_file);
        assert!(stat_cached(Path::new("/no/such/file")).is_err());
    }

    #[test]
    fn network_and_user_filesystems_are_not_local() {
        for t in [
            FUSE_SUPER_MAGIC,
            NFS_SUPER_MAGIC,
            SMB_SUPER_MAGIC,
            PROC_SUPER_MAGIC,
        ] {
            assert!(!is_local_type(t), "{t:?}");
        }
        assert!(is_local_type(EXT4_SUPER_MAGIC) && is_local_type(OVERLAYFS_SUPER_MAGIC));
        assert!(!is_local_fs(Path::new("/no/such/file")));
    }
}
