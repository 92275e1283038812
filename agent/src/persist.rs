//! The agent's durable state under `data_dir`: its SVID chain, its key and
//! the last bundle, all in one file written atomically (temp file, fsync,
//! rename, mode 0600), so a crash at any moment leaves the previous state or
//! the new one, never an identity without its bundle, and a restart resumes
//! without re-attesting. Earlier versions kept the bundle in a second file
//! (`bundle.pem`): that layout is still read, and the first save migrates it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use sigil_proto::daemon::files::write_atomic;

pub mod jwt_keys;

/// CERTIFICATE blocks (leaf first), the PRIVATE KEY block, then one
/// TRUST BUNDLE CERTIFICATE block per bundle authority.
const IDENTITY: &str = "agent_svid.pem";
/// The bundle file of the earlier two-file layout.
const LEGACY_BUNDLE: &str = "bundle.pem";
const BUNDLE_TAG: &str = "TRUST BUNDLE CERTIFICATE";

/// The agent's identity as stored.
pub struct StoredIdentity {
    pub key_pkcs8: Vec<u8>,
    /// DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    pub bundle: Vec<Vec<u8>>,
}

impl std::fmt::Debug for StoredIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredIdentity")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct DataDir {
    dir: PathBuf,
    /// Serialises saves: a bundle update rewrites the identity file too.
    saving: Arc<Mutex<()>>,
    /// Test seam: a save stops after this many file-system steps, as if
    /// the process died there.
    #[cfg(test)]
    crash_after: Option<usize>,
}

impl DataDir {
    /// Creates `dir` (0700) if needed; refuses an existing one that group
    /// or others can reach.
    pub fn open(dir: &Path) -> anyhow::Result<DataDir> {
        sigil_proto::daemon::data_dir::private_dir(dir)?;
        Ok(DataDir {
            dir: dir.to_path_buf(),
            saving: Arc::new(Mutex::new(())),
            #[cfg(test)]
            crash_after: None,
        })
    }

    /// The stored identity, if there is one.
    pub fn load(&self) -> anyhow::Result<Option<StoredIdentity>> {
        let path = self.dir.join(IDENTITY);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let blocks =
            pem::parse_many(&text).with_context(|| format!("parsing {}", path.display()))?;
        let mut chain = Vec::new();
        let mut key = None;
        let mut bundle = Vec::new();
        for b in blocks {
            match b.tag() {
                "CERTIFICATE" => chain.push(b.into_contents()),
                "PRIVATE KEY" => key = Some(b.into_contents()),
                BUNDLE_TAG => bundle.push(b.into_contents()),
                other => anyhow::bail!("{}: unexpected PEM block {other:?}", path.display()),
            }
        }
        let key_pkcs8 = key.with_context(|| format!("{}: no PRIVATE KEY block", path.display()))?;
        if chain.is_empty() {
            anyhow::bail!("{}: no CERTIFICATE block", path.display());
        }
        if bundle.is_empty() {
            bundle = self.load_legacy_bundle()?;
        } else {
            sigil_proto::pem::certs_from_pem_or_der(&bundle.concat())
                .with_context(|| format!("{}: {BUNDLE_TAG} blocks", path.display()))?;
        }
        Ok(Some(StoredIdentity {
            key_pkcs8,
            chain,
            bundle,
        }))
    }

    /// The bundle of the two-file layout (an identity file without bundle
    /// blocks was written by an earlier version).
    fn load_legacy_bundle(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        let bpath = self.dir.join(LEGACY_BUNDLE);
        let b = fs::read(&bpath).with_context(|| {
            format!(
                "reading {} (the stored identity has no bundle of its own)",
                bpath.display()
            )
        })?;
        sigil_proto::pem::from_pem(&b).with_context(|| format!("parsing {}", bpath.display()))
    }

    /// Stores the SVID, key and bundle in one atomic write (then removes the
    /// earlier layout's bundle file, which is no longer read).
    pub fn save(&self, id: &StoredIdentity) -> anyhow::Result<()> {
        let _g = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        self.write(id)
    }

    /// Replaces the stored bundle, keeping the stored SVID and key (one
    /// atomic write of the same file). Refused when nothing is stored.
    pub fn save_bundle(&self, bundle: &[Vec<u8>]) -> anyhow::Result<()> {
        let _g = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        let mut id = self.load()?.with_context(|| {
            format!(
                "no stored agent identity in {} to store the bundle with",
                self.dir.display()
            )
        })?;
        id.bundle = bundle.to_vec();
        self.write(&id)
    }

    fn write(&self, id: &StoredIdentity) -> anyhow::Result<()> {
        let mut text = sigil_proto::pem::to_pem(&id.chain);
        text.push_str(&pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            id.key_pkcs8.clone(),
        )));
        for c in &id.bundle {
            text.push_str(&pem::encode(&pem::Pem::new(BUNDLE_TAG, c.clone())));
        }
        self.step(0)?;
        write_atomic(&self.dir.join(IDENTITY), text.as_bytes(), 0o600)?;
        self.step(1)?;
        let legacy = self.dir.join(LEGACY_BUNDLE);
        match fs::remove_file(&legacy) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", legacy.display())),
        }
        self.step(2)?;
        Ok(())
    }
}

impl DataDir {
    /// The fault-injection point after file-system step `n` of a save.
    fn step(&self, _n: usize) -> anyhow::Result<()> {
        #[cfg(test)]
        if self.crash_after == Some(_n) {
            anyhow::bail!("injected crash after step {_n}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
