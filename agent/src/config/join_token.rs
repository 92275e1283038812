//! Where the join token comes from. A token on the command line or in the
//! environment is readable by other local users (`/proc/<pid>/cmdline`,
//! `/proc/<pid>/environ` of a child), so a file is preferred: `--join-token-file`
//! or the `join_token_file` key. The file must not be readable or writable
//! by group or others (refused naming the path and the mode); a trailing
//! newline is trimmed. Precedence: `--join-token` (or `SIGIL_JOIN_TOKEN`),
//! then `--join-token-file`, then `join_token`, then `join_token_file`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::{AgentConfig, ConfigError, invalid};

/// Reads and checks a token file for `key` (the config key or the flag
/// name). `Ok(None)` when the file does not exist: a token is needed only
/// until the agent has attested, and operators delete it afterwards.
pub fn read_token_file(key: &'static str, path: &Path) -> Result<Option<String>, ConfigError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(invalid(key, format!("{}: {e}", path.display()))),
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(invalid(
            key,
            format!(
                "{} has mode {mode:04o}: a join token file must not be readable or writable by \
                 group or others (chmod 600 it)",
                path.display()
            ),
        ));
    }
    if !meta.is_file() {
        return Err(invalid(key, format!("{} is not a file", path.display())));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
    let token = text.trim_end_matches(['\n', '\r']);
    if !sigil_proto::attestation::is_valid_join_token(token) {
        return Err(invalid(
            key,
            format!("{} does not hold a well-formed join token", path.display()),
        ));
    }
    Ok(Some(token.to_string()))
}

/// The join token to attest with, if any: the flag (or its environment
/// variable), then the flag's file, then the config's `join_token`, then its
/// `join_token_file`.
pub fn join_token(
    cfg: &AgentConfig,
    flag: Option<String>,
    flag_file: Option<&Path>,
) -> Result<Option<String>, ConfigError> {
    if let Some(t) = flag {
        if !sigil_proto::attestation::is_valid_join_token(&t) {
            return Err(invalid("--join-token", "malformed join token"));
        }
        return Ok(Some(t));
    }
    let from_file = |key: &'static str, path: &PathBuf| {
        let t = read_token_file(key, path)?;
        if t.is_none() {
            warn!(key, path = %path.display(), "the join token file does not exist (fine once the agent has attested)");
        }
        Ok::<_, ConfigError>(t)
    };
    if let Some(p) = flag_file {
        return from_file("--join-token-file", &p.to_path_buf());
    }
    if let Some(t) = &cfg.join_token {
        return Ok(Some(t.clone()));
    }
    match &cfg.join_token_file {
        Some(p) => from_file("join_token_file", p),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn file(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let p = dir.join("t");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn trims_the_newline_and_refuses_open_modes() {
        let d = tempfile::tempdir().unwrap();
        let p = file(d.path(), &format!("{TOKEN}\n"), 0o600);
        assert_eq!(read_token_file("k", &p).unwrap().as_deref(), Some(TOKEN));
        for mode in [0o640, 0o604, 0o620, 0o602] {
            let p = file(d.path(), TOKEN, mode);
            let e = read_token_file("k", &p).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{mode:04o}")) && e.contains("/t"),
                "{e}"
            );
        }
        let p = file(d.path(), "not a token\n", 0o600);
        assert!(read_token_file("k", &p).is_err());
        assert!(
            read_token_file("k", &d.path().join("gone"))
                .unwrap()
                .is_none()
        );
    }
}
