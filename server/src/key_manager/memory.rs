//! CA keys held in memory only, for tests and throwaway servers.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rcgen::KeyPair;

use super::KeyType;
use super::{KeyError, KeyManager, check_id, from_pkcs8, generate};

#[derive(Default)]
pub struct MemoryKeyManager {
    keys: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl std::fmt::Debug for MemoryKeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryKeyManager { .. }")
    }
}

impl MemoryKeyManager {
    fn keys(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A poisoned map still holds valid keys: every insert is one call.
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl KeyManager for MemoryKeyManager {
    fn generate(&self, id: &str, key_type: KeyType) -> Result<KeyPair, KeyError> {
        check_id(id)?;
        let mut keys = self.keys();
        if keys.contains_key(id) {
            return Err(KeyError::Generate(format!("key {id:?} already exists")));
        }
        let key = generate(key_type)?;
        keys.insert(id.to_string(), key.serialize_der());
        Ok(key)
    }

    fn load(&self, id: &str) -> Result<KeyPair, KeyError> {
        let keys = self.keys();
        let der = keys
            .get(id)
            .ok_or_else(|| KeyError::NotFound { id: id.to_string() })?;
        from_pkcs8(id, der)
    }

    fn delete(&self, id: &str) -> Result<(), KeyError> {
        self.keys().remove(id);
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>, KeyError> {
        Ok(self.keys().keys().cloned().collect())
    }
}
