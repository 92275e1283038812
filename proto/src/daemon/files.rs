//! Writing files so no reader ever sees half of one: [`write_atomic`]
//! (a new temp file beside the target, fsync, rename, fsync the directory)
//! with an exact mode whatever the umask, [`write_new`] for a file that
//! must not exist yet, and the SVID file trio both CLIs write
//! ([`write_svid_files`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The file names and modes of an X.509-SVID written as files: the chain,
/// its key (owner-only) and the trust bundle.
pub const SVID_FILES: [(&str, u32); 3] = [
    ("svid.pem", 0o644),
    ("svid_key.pem", 0o600),
    ("bundle.pem", 0o644),
];

/// Tries at fresh temp names when one is taken (a temp file left by a
/// crashed writer whose pid was reused, or something planted there).
const TEMP_ATTEMPTS: u32 = 16;

/// Numbers this process's temp names, so no two writes share one.
static NEXT: AtomicU64 = AtomicU64::new(0);

fn context(action: &str, path: &Path) -> impl FnOnce(io::Error) -> io::Error {
    let what = format!("{action} {}", path.display());
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Creates `path`, which must not exist (not even as a symlink:
/// `O_EXCL|O_NOFOLLOW`), with exactly `mode` (set again after the open,
/// because the umask narrows the mode given to `open`), writes `contents`
/// and fsyncs it.
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut f = create_exclusive(path, mode)?;
    let written = (|| {
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()
    })();
    if written.is_err() {
        // The file is this call's own (created above): no half file stays.
        let _ = fs::remove_file(path);
    }
    written.map_err(context("writing", path))
}

fn create_exclusive(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .mode(mode)
        .open(path)
        .map_err(context("creating", path))
}

/// Replaces (or creates) `path` with `contents` and exactly `mode`,
/// atomically: readers see the old file or the new one, never a mix, and a
/// failure leaves the old file as it was.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_with(path, contents, mode, |from, to| fs::rename(from, to))
}

fn write_atomic_with(
    path: &Path,
    contents: &[u8],
    mode: u32,
    rename: impl Fn(&Path, &Path) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("writing {}: file name is not valid UTF-8", path.display()),
        )
    })?;
    let mut attempt = 0;
    let tmp = loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()));
        match write_new(&tmp, contents, mode) {
            Ok(()) => break tmp,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt + 1 < TEMP_ATTEMPTS => {
                attempt += 1;
            }
            Err(e) => return Err(context("writing", path)(e)),
        }
    };
    let done = rename(&tmp, path).and_then(|()| File::open(dir)?.sync_all());
    if done.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    done.map_err(context("writing", path))
}

/// Writes the X.509-SVID files ([`SVID_FILES`]) into `dir` (created if
/// missing), each atomically, and returns their paths in that order.
pub fn write_svid_files(
    dir: &Path,
    svid_pem: &[u8],
    key_pem: &[u8],
    bundle_pem: &[u8],
) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).map_err(context("creating", dir))?;
    let mut out = Vec::new();
    for ((name, mode), contents) in SVID_FILES.into_iter().zip([svid_pem, key_pem, bundle_pem]) {
        let p = dir.join(name);
        write_atomic(&p, contents, mode)?;
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
