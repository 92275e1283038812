//! Writing SVID files: `svid.pem`, `svid_key.pem` (0600) and `bundle.pem`,
//! each atomically (temp file, fsync, rename) so no reader sees half a file.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Writes `contents` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("file name is not valid UTF-8")?;
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// Writes the three SVID files into `dir` (created if missing) and returns
/// their paths.
pub fn write_svid_files(
    dir: &Path,
    svid_pem: &str,
    key_pem: &str,
    bundle_pem: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = [
        ("svid.pem", svid_pem, 0o644),
        ("svid_key.pem", key_pem, 0o600),
        ("bundle.pem", bundle_pem, 0o644),
    ];
    let mut out = Vec::new();
    for (name, contents, mode) in files {
        let p = dir.join(name);
        write_atomic(&p, contents.as_bytes(), mode)?;
        out.push(p);
    }
    Ok(out)
}
