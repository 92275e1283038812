//! Foreign client stacks for the interop suite (`tests/tests/interop_clients.rs`).
//!
//! Installs, with pinned versions, into a cache under the workspace
//! `target/interop/`:
//! - `python/venv`: py-spiffe with grpcio (gRPC C-core) and `cryptography`,
//!   from `tests/interop/python/requirements.txt` (exact pins, `--no-deps`,
//!   then `pip check`); re-created when that file or the interpreter changes.
//! - `node/node_modules`: `@grpc/grpc-js` and `@grpc/proto-loader` from
//!   `tests/interop/node/package.json` + `package-lock.json` (`npm ci`);
//!   re-installed when either file or the Node version changes.
//!
//! A file lock (`flock` on `target/interop/.lock`) keeps parallel test
//! binaries from installing at the same time. Every command is bounded. The
//! versions actually installed are checked against the pins and printed.
//!
//! Whether a missing client fails or skips is decided in one place,
//! [`available`]: with `CI=true` it fails, elsewhere the test is skipped with a
//! message naming what is missing.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long one install step (venv creation, `pip install`, `npm ci`) may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a client script may run.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

/// True when running in CI (`CI=true`), where every client must be present.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The availability rule, for every foreign client: `Ok` gives the client;
/// an error fails the test in CI (`CI=true`) and skips it elsewhere, with a
/// message naming what is missing either way.
pub fn available<T: Clone>(what: &str, r: &Result<T, String>) -> Option<T> {
    match r {
        Ok(t) => Some(t.clone()),
        Err(e) if in_ci() => panic!("{what} is required in CI (CI=true) but is not available: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: {what} is not available (CI=true makes this a failure): {e}");
            None
        }
    }
}

/// `target/interop` of this workspace.
pub fn cache_dir() -> PathBuf {
    let t = super::target_dir();
    t.parent()
        .map(Path::to_path_buf)
        .unwrap_or(t)
        .join("interop")
}

/// `tests/interop` (the client sources).
pub fn sources_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// Sigil's Workload API definition, `proto/proto/workload.proto`.
pub fn workload_proto() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/proto/workload.proto")
}

/// Runs `cmd`, killing it after `limit`; an error (not a panic) when it
/// cannot start or does not finish, so installs fall under [`available`].
pub fn run_for(cmd: &mut Command, limit: Duration) -> anyhow::Result<Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => Ok(out?),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            bail!("{cmd:?} did not finish in {limit:?}")
        }
    }
}

/// Like [`run_for`], but the command must exit 0.
fn run_ok(cmd: &mut Command, limit: Duration) -> anyhow::Result<Output> {
    let out = run_for(cmd, limit)?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An exclusive `flock` on `target/interop/.lock`, waited for (bounded).
struct InstallLock(#[allow(dead_code)] nix::fcntl::Flock<File>);

impl InstallLock {
    fn take() -> anyhow::Result<InstallLock> {
        let dir = cache_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(".lock");
        let deadline = Instant::now() + INSTALL_TIMEOUT * 2;
        let mut file =
            File::create(&path).with_context(|| format!("opening {}", path.display()))?;
        loop {
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(l) => return Ok(InstallLock(l)),
                Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    file = f;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err((_, e)) => bail!("cannot lock {}: {e}", path.display()),
            }
        }
    }
}

/// Exact pins (`name==version`) of a requirements file, names normalized.
fn requirement_pins(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter_map(|l| l.split_once("=="))
        .map(|(n, v)| (normalize(n), v.trim().to_string()))
        .collect()
}

/// PEP 503 name normalization.
fn normalize(name: &str) -> String {
    name.trim().to_lowercase().replace(['_', '.'], "-")
}

/// The installed py-spiffe stack.
#[derive(Debug, Clone)]
pub struct Python {
    /// `target/interop/python/venv/bin/python`.
    pub python: PathBuf,
    /// `tests/interop/python`.
    pub scripts: PathBuf,
    /// Installed distribution → version (the pinned ones).
    pub versions: BTreeMap<String, String>,
}

impl Python {
    /// A command running `script` (in `tests/interop/python`) with `args`.
    pub fn script(&self, script: &str, args: &[&str]) -> Command {
        let mut c = Command::new(&self.python);
        self.prepare(&mut c, script, args);
        c
    }

    /// The same, for a workload of `uid` (gid = uid, no groups; needs root).
    /// The script drops privileges itself after its imports
    /// (`common.drop_privileges_from_env`), before it connects: the venv's
    /// base interpreter may live where `uid` cannot read it (pyenv under
    /// `/root`), so `setpriv` in front of it would not run this interpreter.
    pub fn script_as(&self, uid: u32, script: &str, args: &[&str]) -> Command {
        let mut c = self.script(script, args);
        c.env("SIGIL_INTEROP_RUN_AS", uid.to_string());
        c
    }

    fn prepare(&self, c: &mut Command, script: &str, args: &[&str]) {
        c.arg(self.scripts.join(script))
            .args(args)
            .current_dir(&self.scripts)
            // Never write __pycache__ into the source tree.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("PYTHONHOME");
    }
}

/// The installed Node stack.
#[derive(Debug, Clone)]
pub struct Node {
    pub node: PathBuf,
    /// `target/interop/node/node_modules` (given to scripts as `NODE_PATH`).
    pub node_modules: PathBuf,
    /// `tests/interop/node`.
    pub scripts: PathBuf,
    pub versions: BTreeMap<String, String>,
}

impl Node {
    pub fn script(&self, script: &str, args: &[&str]) -> Command {
        let mut c = Command::new(&self.node);
        c.arg(self.scripts.join(script))
            .args(args)
            .current_dir(&self.scripts)
            .env("NODE_PATH", &self.node_modules);
        c
    }
}

/// Runs a client script (bounded by [`SCRIPT_TIMEOUT`]) and parses the one
/// JSON object it prints on stdout; panics with its output otherwise.
pub fn run_json(cmd: &mut Command) -> serde_json::Value {
    let out = run_for(cmd, SCRIPT_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    match line.map(serde_json::from_str::<serde_json::Value>) {
        Some(Ok(v)) => v,
        _ => panic!(
            "{cmd:?} printed no JSON result ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The py-spiffe stack, installed once per test process (and cached on disk
/// across processes); `None` when unavailable outside CI (see [`available`]).
pub fn python() -> Option<Python> {
    static PY: OnceLock<Result<Python, String>> = OnceLock::new();
    let r = PY.get_or_init(|| install_python().map_err(|e| format!("{e:#}")));
    let py = available(
        "the Python client stack (python3 -m venv, pip, py-spiffe)",
        r,
    )?;
    eprintln!("interop: Python stack: {}", fmt_versions(&py.versions));
    Some(py)
}

/// The `@grpc/grpc-js` stack, like [`python`].
pub fn node() -> Option<Node> {
    static NODE: OnceLock<Result<Node, String>> = OnceLock::new();
    let r = NODE.get_or_init(|| install_node().map_err(|e| format!("{e:#}")));
    let n = available("the Node client stack (node, npm, @grpc/grpc-js)", r)?;
    eprintln!("interop: Node stack: {}", fmt_versions(&n.versions));
    Some(n)
}

fn fmt_versions(v: &BTreeMap<String, String>) -> String {
    v.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn install_python() -> anyhow::Result<Python> {
    let started = Instant::now();
    let base = std::env::var_os("SIGIL_INTEROP_PYTHON").unwrap_or_else(|| "python3".into());
    let probe = run_ok(
        Command::new(&base).args([
            "-c",
            "import sys, venv, ensurepip; print(sys.version.split()[0], sys.executable)",
        ]),
        Duration::from_secs(60),
    )
    .context("python3 with the venv and ensurepip modules is needed")?;
    let interpreter = String::from_utf8_lossy(&probe.stdout).trim().to_string();
    let scripts = sources_dir().join("python");
    let req_path = scripts.join("requirements.txt");
    let req =
        std::fs::read(&req_path).with_context(|| format!("reading {}", req_path.display()))?;
    let pins = requirement_pins(&String::from_utf8_lossy(&req));
    let stamp = sha256_hex(&[&req, interpreter.as_bytes()]);

    let dir = cache_dir().join("python");
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    let stamp_file = venv.join(".sigil-interop-stamp");
    let _lock = InstallLock::take()?;
    let fresh =
        std::fs::read_to_string(&stamp_file).is_ok_and(|s| s.trim() == stamp) && python.exists();
    if !fresh {
        eprintln!(
            "interop: creating the Python venv in {} ({interpreter})",
            venv.display()
        );
        if venv.exists() {
            std::fs::remove_dir_all(&venv)
                .with_context(|| format!("removing {}", venv.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        run_ok(
            Command::new(&base).args(["-m", "venv"]).arg(&venv),
            INSTALL_TIMEOUT,
        )?;
        run_ok(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "--quiet",
                    // Exactly the pinned set, transitive dependencies included.
                    "--no-deps",
                    "-r",
                ])
                .arg(&req_path),
            INSTALL_TIMEOUT,
        )
        .context("pip install of tests/interop/python/requirements.txt")?;
        run_ok(
            Command::new(&python).args(["-m", "pip", "check", "--disable-pip-version-check"]),
            Duration::from_secs(120),
        )
        .context("the pinned Python set is incomplete or inconsistent")?;
        std::fs::write(&stamp_file, &stamp)?;
        eprintln!(
            "interop: Python venv installed in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    // What is installed, checked against the pins; and the stack imports.
    let freeze = run_ok(
        Command::new(&python).args([
            "-m",
            "pip",
            "freeze",
            "--all",
            "--disable-pip-version-check",
        ]),
        Duration::from_secs(120),
    )?;
    let installed = requirement_pins(&String::from_utf8_lossy(&freeze.stdout));
    let mut versions = BTreeMap::new();
    for (name, want) in &pins {
        match installed.get(name) {
            Some(v) if v == want => {
                versions.insert(name.clone(), v.clone());
            }
            other => bail!("{name}: pinned {want}, installed {other:?}"),
        }
    }
    run_ok(
        Command::new(&python).args([
            "-c",
            "import spiffe, grpc, cryptography.x509, google.protobuf; from spiffe._proto import workload_pb2_grpc",
        ]),
        Duration::from_secs(60),
    )
    .context("the installed Python stack does not import")?;
    versions.insert("python".into(), interpreter);
    Ok(Python {
        python,
        scripts,
        versions,
    })
}

fn install_node() -> anyhow::Result<Node> {
    let started = Instant::now();
    let node = PathBuf::from("node");
    let nv = run_ok(
        Command::new(&node).args([
            "-p",
            "process.versions.node + ' nghttp2 ' + process.versions.nghttp2",
        ]),
        Duration::from_secs(60),
    )
    .context("node is needed")?;
    let node_version = String::from_utf8_lossy(&nv.stdout).trim().to_string();
    run_ok(
        Command::new("npm").arg("--version"),
        Duration::from_secs(60),
    )
    .context("npm is needed")?;
    let scripts = sources_dir().join("node");
    let pkg = std::fs::read(scripts.join("package.json")).context("reading package.json")?;
    let lock =
        std::fs::read(scripts.join("package-lock.json")).context("reading package-lock.json")?;
    let stamp = sha256_hex(&[&pkg, &lock, node_version.as_bytes()]);
    let dir = cache_dir().join("node");
    let node_modules = dir.join("node_modules");
    let stamp_file = dir.join(".sigil-interop-stamp");
    let _lock = InstallLock::take()?;
    let fresh = std::fs::read_to_string(&stamp_file).is_ok_and(|s| s.trim() == stamp)
        && node_modules.exists();
    if !fresh {
        eprintln!(
            "interop: installing the Node packages in {} (node {node_version})",
            dir.display()
        );
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("package.json"), &pkg)?;
        std::fs::write(dir.join("package-lock.json"), &lock)?;
        run_ok(
            Command::new("npm")
                .args([
                    "ci",
                    "--ignore-scripts",
                    "--no-audit",
                    "--no-fund",
                    "--prefer-offline",
                    "--loglevel=error",
                ])
                .current_dir(&dir),
            INSTALL_TIMEOUT,
        )
        .context("npm ci of tests/interop/node/package-lock.json")?;
        std::fs::write(&stamp_file, &stamp)?;
        eprintln!(
            "interop: Node packages installed in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    let wanted: serde_json::Value =
        serde_json::from_slice(&pkg).context("package.json is not JSON")?;
    let mut versions = BTreeMap::new();
    for (name, want) in wanted["dependencies"]
        .as_object()
        .context("package.json has no dependencies")?
    {
        let p = node_modules.join(name).join("package.json");
        let got: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
        )?;
        let got = got["version"].as_str().unwrap_or("").to_string();
        if Some(got.as_str()) != want.as_str() {
            bail!("{name}: pinned {want}, installed {got}");
        }
        versions.insert(name.clone(), got);
    }
    versions.insert("node".into(), node_version);
    Ok(Node {
        node,
        node_modules,
        scripts,
        versions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_parsed_and_normalized() {
        let p = requirement_pins("# c\nspiffe==0.3.2\nPyASN1_Modules==0.4.2  # x\nfoo>=1\n\n");
        assert_eq!(p.len(), 2);
        assert_eq!(p["spiffe"], "0.3.2");
        assert_eq!(p["pyasn1-modules"], "0.4.2");
    }

    #[test]
    fn the_committed_requirements_pin_every_package_exactly() {
        let text = std::fs::read_to_string(sources_dir().join("python/requirements.txt")).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), requirement_pins(&text).len(), "{lines:?}");
        for p in ["spiffe", "grpcio", "cryptography", "protobuf"] {
            assert!(requirement_pins(&text).contains_key(p), "{p} not pinned");
        }
    }
}
