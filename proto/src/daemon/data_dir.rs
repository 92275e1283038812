//! A daemon's `data_dir`: created owner-only (0700) when missing, and
//! refused, never changed, when it exists and group or others can reach it.
//! Tightening an existing directory's mode would break whatever else lives
//! there (with `data_dir = "/var/lib"`, the host); the operator decides.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Makes sure `dir` is a directory only its owner can reach: creates it
/// (and missing parents) mode 0700 if it does not exist; refuses an
/// existing one whose mode grants group or others anything, naming the
/// path, its mode and the fix.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    let what = |e: io::Error| io::Error::new(e.kind(), format!("data_dir {}: {e}", dir.display()));
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(what)?;
            // The umask may have narrowed it further; make it exactly 0700.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(what)
        }
        Err(e) => Err(what(e)),
        Ok(m) if !m.is_dir() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("data_dir {} exists and is not a directory", dir.display()),
        )),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "data_dir {} has mode {:04o}: group or others can reach it, and the daemon \
                 keeps private keys there. It does not change the mode of an existing directory \
                 (that could break what else lives there): point data_dir at a directory of its \
                 own (a missing one is created 0700), or, if this directory is the daemon's \
                 alone, run `chmod 0700 {}`",
                dir.display(),
                m.permissions().mode() & 0o7777,
                dir.display()
            ),
        )),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_missing_dir_0700_and_refuses_an_open_one_unchanged() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        private_dir(&d).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        private_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        let e = private_dir(&d).unwrap_err().to_string();
        assert!(
            e.contains(&d.display().to_string()) && e.contains("0755"),
            "{e}"
        );
        assert!(e.contains("chmod 0700"), "{e}");
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }
}
