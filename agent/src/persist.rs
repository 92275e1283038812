//! The agent's durable state under `data_dir`: its SVID chain and key (one
//! file, so they can never be mismatched) and the last bundle, each written
//! atomically (temp file, fsync, rename) with mode 0600, so a restart
//! resumes without re-attesting.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sigil_proto::daemon::files::write_atomic;

/// CERTIFICATE blocks (leaf first), then the PRIVATE KEY block.
const IDENTITY: &str = "agent_svid.pem";
const BUNDLE: &str = "bundle.pem";

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
}

impl DataDir {
    /// Creates `dir` (0700) if needed; refuses an existing one that group
    /// or others can reach.
    pub fn open(dir: &Path) -> anyhow::Result<DataDir> {
        sigil_proto::daemon::data_dir::private_dir(dir)?;
        Ok(DataDir {
            dir: dir.to_path_buf(),
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
        for b in blocks {
            match b.tag() {
                "CERTIFICATE" => chain.push(b.into_contents()),
                "PRIVATE KEY" => key = Some(b.into_contents()),
                other => anyhow::bail!("{}: unexpected PEM block {other:?}", path.display()),
            }
        }
        let key_pkcs8 = key.with_context(|| format!("{}: no PRIVATE KEY block", path.display()))?;
        if chain.is_empty() {
            anyhow::bail!("{}: no CERTIFICATE block", path.display());
        }
        let bpath = self.dir.join(BUNDLE);
        let b = fs::read(&bpath).with_context(|| format!("reading {}", bpath.display()))?;
        let bundle = sigil_proto::pem::from_pem(&b)
            .with_context(|| format!("parsing {}", bpath.display()))?;
        Ok(Some(StoredIdentity {
            key_pkcs8,
            chain,
            bundle,
        }))
    }

    /// Stores the SVID and key (one atomic write), then the bundle.
    pub fn save(&self, id: &StoredIdentity) -> anyhow::Result<()> {
        let mut text = sigil_proto::pem::to_pem(&id.chain);
        text.push_str(&pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            id.key_pkcs8.clone(),
        )));
        write_atomic(&self.dir.join(IDENTITY), text.as_bytes(), 0o600)?;
        self.save_bundle(&id.bundle)
    }

    pub fn save_bundle(&self, bundle: &[Vec<u8>]) -> anyhow::Result<()> {
        write_atomic(
            &self.dir.join(BUNDLE),
            sigil_proto::pem::to_pem(bundle).as_bytes(),
            0o600,
        )?;
        Ok(())
    }
}
