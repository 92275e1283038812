//! `validate`'s check that a config can run here: every file it names can
//! be read by the current user, and every directory it needs exists or can
//! be created. Each problem names the config key, the path and the OS
//! error; all of them are reported at once ([`PathProblems`]).

use std::fmt;
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, access};

/// One key whose path cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathProblem {
    pub key: &'static str,
    pub path: PathBuf,
    pub problem: String,
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid config: {} {}: {}",
            self.key,
            self.path.display(),
            self.problem
        )
    }
}

/// Every problem found, one line each.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct PathProblems(pub Vec<PathProblem>);

impl fmt::Display for PathProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        // `;` too: the daemons print an error on one line.
        f.write_str(&lines.join(";\n"))
    }
}

impl PathProblems {
    /// `key`'s file `path` must exist and be readable by this process.
    pub fn readable_file(&mut self, key: &'static str, path: &Path) {
        let problem = match std::fs::File::open(path) {
            Err(e) => Some(format!("cannot be read: {e}")),
            Ok(f) => match f.metadata() {
                Ok(m) if m.is_dir() => Some("is a directory, not a file".to_string()),
                Ok(_) => None,
                Err(e) => Some(format!("cannot be read: {e}")),
            },
        };
        self.push(key, path, problem);
    }

    /// `key`'s directory `path` must exist as a directory this process can
    /// write to, or be creatable: its nearest existing ancestor is a
    /// directory this process can write to.
    pub fn creatable_dir(&mut self, key: &'static str, path: &Path) {
        let problem = dir_problem(path);
        self.push(key, path, problem);
    }

    /// The directory of `key`'s file `path` (a socket) must be creatable.
    pub fn creatable_parent(&mut self, key: &'static str, path: &Path) {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let problem =
            dir_problem(parent).map(|p| format!("its directory {}: {p}", parent.display()));
        self.push(key, path, problem);
    }

    fn push(&mut self, key: &'static str, path: &Path, problem: Option<String>) {
        if let Some(problem) = problem {
            self.0.push(PathProblem {
                key,
                path: path.to_path_buf(),
                problem,
            });
        }
    }

    /// `Ok` when nothing was found.
    pub fn into_result(self) -> Result<(), PathProblems> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

fn dir_problem(path: &Path) -> Option<String> {
    let mut existing = path;
    let mut missing = false;
    // Walks up to the nearest existing ancestor (bounded by the path).
    loop {
        match std::fs::metadata(existing) {
            Ok(m) if !m.is_dir() => {
                return Some(if missing {
                    format!(
                        "cannot be created: {} is not a directory",
                        existing.display()
                    )
                } else {
                    "is not a directory".to_string()
                });
            }
            Ok(_) => break,
            // A missing component, or a file where a directory must be:
            // the walk up finds which.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                missing = true;
                match existing.parent() {
                    Some(p) if !p.as_os_str().is_empty() => existing = p,
                    _ => existing = Path::new("."),
                }
            }
            Err(e) => return Some(format!("cannot be inspected: {e}")),
        }
    }
    match access(existing, AccessFlags::W_OK | AccessFlags::X_OK) {
        Ok(()) => None,
        Err(e) => {
            let e = std::io::Error::from(e);
            Some(if missing {
                format!("cannot be created in {}: {e}", existing.display())
            } else {
                format!("cannot be written: {e}")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_and_uncreatable_dir_are_named() {
        let dir = tempfile_dir();
        let mut p = PathProblems::default();
        p.readable_file("trust_bundle_path", &dir.join("nope.pem"));
        let file = dir.join("file");
        std::fs::write(&file, b"x").unwrap();
        p.creatable_dir("data_dir", &file.join("sub"));
        p.creatable_dir("data_dir", &dir.join("a/b/c"));
        let text = p.to_string();
        assert_eq!(p.0.len(), 2, "{text}");
        assert!(text.contains("trust_bundle_path"), "{text}");
        assert!(text.contains("No such file or directory"), "{text}");
        assert!(text.contains("is not a directory"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("sigil-path-check-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
