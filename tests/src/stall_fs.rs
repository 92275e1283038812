//! A FUSE filesystem that holds one executable and can be made to stop
//! answering (`workload_fuse.rs`): the attack of a local user who runs a
//! Workload API caller from a FUSE mount of their own and then has their
//! daemon leave every request unanswered, so that whatever the agent does
//! with the caller's executable (open it, `stat` it past the attribute
//! cache, `statfs` its filesystem) waits forever.
//!
//! Mounted in this process with mount(2) (root only; no libfuse). Every
//! attribute is given with a TTL of 0, so the kernel asks for each `stat`
//! that is allowed to ask. While [`StallFs::stall`] is on, each request
//! waits until it is off again (its own thread, so the rest of the test
//! runs on); dropping the mount turns it off first.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry,
    ReplyOpen, ReplyStatfs, Request,
};

const ROOT: u64 = 1;
const FILE: u64 = 2;
/// Attributes and entries are never cached by the kernel.
const TTL: Duration = Duration::ZERO;

/// The state shared between the mount's thread and the test.
#[derive(Default)]
struct Shared {
    stalled: AtomicBool,
    /// Requests that waited (or are waiting) on the stall.
    held: AtomicU64,
}

struct Fs {
    name: String,
    content: Arc<Vec<u8>>,
    shared: Arc<Shared>,
}

impl Fs {
    /// Waits while the filesystem is stalled.
    fn gate(&self) {
        if !self.shared.stalled.load(Ordering::SeqCst) {
            return;
        }
        self.shared.held.fetch_add(1, Ordering::SeqCst);
        while self.shared.stalled.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, perm, size, nlink) = if ino == ROOT {
            (FileType::Directory, 0o755, 0, 2)
        } else {
            (FileType::RegularFile, 0o755, self.content.len() as u64, 1)
        };
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl Filesystem for Fs {
    fn lookup(&mut self, _: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        self.gate();
        if parent == ROOT && name == OsStr::new(&self.name) {
            reply.entry(&TTL, &self.attr(FILE), 0);
        } else {
            reply.error(nix::libc::ENOENT);
        }
    }

    fn getattr(&mut self, _: &Request<'_>, ino: u64, _: Option<u64>, reply: ReplyAttr) {
        self.gate();
        match ino {
            ROOT | FILE => reply.attr(&TTL, &self.attr(ino)),
            _ => reply.error(nix::libc::ENOENT),
        }
    }

    fn open(&mut self, _: &Request<'_>, ino: u64, _: i32, reply: ReplyOpen) {
        self.gate();
        if ino == FILE {
            reply.opened(0, 0);
        } else {
            reply.error(nix::libc::EISDIR);
        }
    }

    fn read(
        &mut self,
        _: &Request<'_>,
        ino: u64,
        _: u64,
        offset: i64,
        size: u32,
        _: i32,
        _: Option<u64>,
        reply: ReplyData,
    ) {
        self.gate();
        if ino != FILE {
            return reply.error(nix::libc::EISDIR);
        }
        let start = (offset.max(0) as usize).min(self.content.len());
        let end = (start + size as usize).min(self.content.len());
        reply.data(&self.content[start..end]);
    }

    fn readdir(
        &mut self,
        _: &Request<'_>,
        ino: u64,
        _: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        self.gate();
        if ino != ROOT {
            return reply.error(nix::libc::ENOTDIR);
        }
        if offset == 0 {
            let _ = reply.add(FILE, 1, FileType::RegularFile, &self.name);
        }
        reply.ok();
    }

    fn statfs(&mut self, _: &Request<'_>, _: u64, reply: ReplyStatfs) {
        self.gate();
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 0);
    }
}

/// A mounted [`StallFs`]; unmounted (after the stall is lifted) on drop.
pub struct StallFs {
    shared: Arc<Shared>,
    exe: PathBuf,
    // Dropped after `Drop::drop` has lifted the stall.
    _session: fuser::BackgroundSession,
}

impl StallFs {
    /// Mounts, at `mountpoint` (an empty directory), a filesystem holding
    /// one executable file `name` with the bytes of `source`.
    pub fn mount(mountpoint: &Path, name: &str, source: &Path) -> anyhow::Result<StallFs> {
        let content =
            std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
        let shared = Arc::new(Shared::default());
        let fs = Fs {
            name: name.to_string(),
            content: Arc::new(content),
            shared: shared.clone(),
        };
        let session = fuser::spawn_mount2(
            fs,
            mountpoint,
            &[
                MountOption::RO,
                MountOption::Exec,
                // The attacker runs as another uid than this (root) test.
                MountOption::AllowOther,
                MountOption::FSName("sigil-stallfs".into()),
            ],
        )
        .with_context(|| format!("mounting FUSE at {} (root only)", mountpoint.display()))?;
        Ok(StallFs {
            shared,
            exe: mountpoint.join(name),
            _session: session,
        })
    }

    /// The executable's path on the mount.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// From now on every request waits (`true`) or is answered (`false`).
    pub fn stall(&self, on: bool) {
        self.shared.stalled.store(on, Ordering::SeqCst);
    }

    /// Requests that have waited on the stall so far.
    pub fn held(&self) -> u64 {
        self.shared.held.load(Ordering::SeqCst)
    }
}

impl Drop for StallFs {
    fn drop(&mut self) {
        self.stall(false);
    }
}
