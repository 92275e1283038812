//! The server's stable instance id: 128 random bits as 32 lowercase hex
//! characters, generated at the first start and kept in
//! `<data_dir>/instance_id` (written atomically, owner-only). Several servers
//! sharing one PostgreSQL database tell their CA journals and heartbeats
//! apart by it (`sigil-server server list`), so it must survive restarts and
//! is never guessed from the host: a file that is there but malformed stops
//! the start, naming the file and the rule, instead of being replaced (a new
//! id would orphan the server's CA journal).

use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

/// Name of the file in `data_dir`.
pub const FILE_NAME: &str = "instance_id";
/// Length of an id in hex characters.
pub const ID_LEN: usize = 32;

/// Why the instance id could not be had.
#[derive(Debug, thiserror::Error)]
pub enum InstanceIdError {
    #[error(
        "{path} holds {found:?}, which is not a server instance id (exactly {ID_LEN} lowercase \
         hex characters, one line); restore the file or remove it only if this server's CA \
         journal may be orphaned (a new id is a new server)"
    )]
    Malformed { path: PathBuf, found: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the system random generator failed")]
    Random,
}

/// Whether `s` is a well-formed instance id.
pub fn is_valid(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The id kept in `data_dir`, generating and writing it on first use.
pub fn load_or_create(data_dir: &Path) -> Result<String, InstanceIdError> {
    let path = data_dir.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.strip_suffix('\n').unwrap_or(&text);
            if !is_valid(id) {
                return Err(InstanceIdError::Malformed {
                    path,
                    found: text.chars().take(80).collect(),
                });
            }
            Ok(id.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 16];
            SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| InstanceIdError::Random)?;
            let id = hex::encode(bytes);
            sigil_proto::daemon::files::write_atomic(&path, format!("{id}\n").as_bytes(), 0o600)
                .map_err(|source| InstanceIdError::Write {
                    path: path.clone(),
                    source,
                })?;
            tracing::info!(instance_id = %id, file = %path.display(), "new server instance id");
            Ok(id)
        }
        Err(source) => Err(InstanceIdError::Read { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item1_instance_id_is_kept_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        assert!(is_valid(&a), "{a}");
        assert_eq!(load_or_create(dir.path()).unwrap(), a);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), a);
    }

    #[test]
    fn item1_malformed_instance_id_is_refused_naming_file_and_rule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        for bad in [
            "",
            "xyz\n",
            &"A".repeat(32),
            &"a".repeat(31),
            &"a".repeat(33),
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = load_or_create(dir.path()).unwrap_err().to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains("32 lowercase hex"), "{e}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), bad, "file kept");
        }
    }
}
