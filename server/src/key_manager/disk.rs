//! CA keys as PKCS#8 DER files under `data_dir/keys` (directory 0700, files
//! 0600), written atomically: temp file, fsync, rename, fsync directory.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::KeyPair;

use super::KeyType;
use super::{KeyError, KeyManager, check_id, from_pkcs8, generate};

const SUFFIX: &str = ".pk8";

#[derive(Debug)]
pub struct DiskKeyManager {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl DiskKeyManager {
    /// Opens (creating if needed, mode 0700) the key directory. An existing
    /// directory readable by others has its mode tightened to 0700.
    pub fn open(dir: &Path) -> Result<DiskKeyManager, KeyError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        Ok(DiskKeyManager {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{SUFFIX}"))
    }
}

impl KeyManager for DiskKeyManager {
    fn generate(&self, id: &str, key_type: KeyType) -> Result<KeyPair, KeyError> {
        check_id(id)?;
        let path = self.path(id);
        if path.exists() {
            return Err(KeyError::Io {
                path: path.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "key exists"),
            });
        }
        let key = generate(key_type)?;
        sigil_proto::daemon::files::write_atomic(&path, key.serialized_der(), 0o600)
            .map_err(io(&path))?;
        Ok(key)
    }

    fn load(&self, id: &str) -> Result<KeyPair, KeyError> {
        check_id(id)?;
        let path = self.path(id);
        let der = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::NotFound { id: id.to_string() });
            }
            Err(e) => return Err(io(&path)(e)),
        };
        from_pkcs8(id, &der).map_err(|e| match e {
            KeyError::Invalid { id, message } => KeyError::Invalid {
                id,
                message: format!("{}: {message}", path.display()),
            },
            e => e,
        })
    }

    fn delete(&self, id: &str) -> Result<(), KeyError> {
        check_id(id)?;
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn list(&self) -> Result<Vec<String>, KeyError> {
        let mut ids = Vec::new();
        for ent in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let ent = ent.map_err(io(&self.dir))?;
            let name = ent.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX))
                && !id.starts_with('.')
            {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    fn location(&self, id: &str) -> String {
        self.path(id).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn generate_load_delete() {
        let dir = tempfile::tempdir().unwrap();
        let km = DiskKeyManager::open(&dir.path().join("keys")).unwrap();
        let k = km.generate("ca-a-1", KeyType::EcP256).unwrap();
        let meta = fs::metadata(dir.path().join("keys/ca-a-1.pk8")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(dir.path().join("keys")).unwrap().mode() & 0o777,
            0o700
        );
        let l = km.load("ca-a-1").unwrap();
        assert_eq!(k.public_key_raw(), l.public_key_raw());
        assert!(km.generate("ca-a-1", KeyType::EcP256).is_err());
        km.generate("ca-b-2", KeyType::EcP384).unwrap();
        assert_eq!(km.list().unwrap(), vec!["ca-a-1", "ca-b-2"]);
        km.delete("ca-a-1").unwrap();
        assert!(matches!(km.load("ca-a-1"), Err(KeyError::NotFound { .. })));
        assert!(matches!(km.load("../x"), Err(KeyError::BadId { .. })));
        // Debug output never carries key material.
        assert!(format!("{l:?}").contains("elided"));
    }

    #[test]
    fn garbage_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let km = DiskKeyManager::open(dir.path()).unwrap();
        fs::write(dir.path().join("bad.pk8"), b"not a key").unwrap();
        let e = km.load("bad").unwrap_err().to_string();
        assert!(e.contains("bad") && e.contains("PKCS#8"), "{e}");
    }
}
