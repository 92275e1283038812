//! Reading a daemon's TOML config file: the part every config shares. The
//! file is read (an error names the path) and parsed into the caller's raw
//! type, whose `#[serde(deny_unknown_fields)]` refuses unknown keys by name;
//! each config then validates its own values.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a config file could not be read or parsed. Values it holds are
/// checked by each config itself.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
}

/// Reads and parses the TOML file at `path`.
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_at(&text, path)
}

/// Parses TOML text that came from no file (errors say `<text>`).
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigFileError> {
    parse_at(text, Path::new("<text>"))
}

fn parse_at<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigFileError> {
    toml::from_str(text).map_err(|e| ConfigFileError::Parse {
        path: path.to_path_buf(),
        // toml's message is a line-and-column summary, then the snippet
        // with a caret under the fault: its lines are kept, so the caret
        // stays under the fault when the CLI prints it.
        message: e.to_string().trim_end().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Raw {
        name: String,
        #[serde(default)]
        count: u32,
    }

    #[test]
    fn reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "name = \"x\"\ncount = 3\n").unwrap();
        let raw: Raw = read_toml(&p).unwrap();
        assert_eq!((raw.name.as_str(), raw.count), ("x", 3));
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.toml");
        let e = read_toml::<Raw>(&p).unwrap_err();
        assert!(matches!(e, ConfigFileError::Read { .. }), "{e:?}");
        let m = e.to_string();
        assert!(
            m.starts_with(&format!("cannot read config file {}: ", p.display())),
            "{m}"
        );
    }

    #[test]
    fn an_unknown_key_is_refused_by_name_with_its_snippet() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "name = \"x\"\nnmae = 1\n").unwrap();
        let m = read_toml::<Raw>(&p).unwrap_err().to_string();
        assert!(
            m.starts_with(&format!("invalid config file {}: ", p.display())),
            "{m}"
        );
        assert!(m.contains("unknown field") && m.contains("nmae"), "{m}");
        // The snippet keeps its lines: the caret stays under the key.
        let lines: Vec<&str> = m.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.ends_with("| nmae = 1"))
            .expect(&m);
        assert!(lines[at + 1].ends_with("| ^^^^"), "{m}");
    }

    #[test]
    fn text_errors_say_text() {
        let m = parse_toml::<Raw>("count = 1").unwrap_err().to_string();
        assert!(m.starts_with("invalid config file <text>: "), "{m}");
        assert!(m.contains("name"), "{m}");
    }
}
