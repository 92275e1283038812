//! The daemons refuse to start, saying why, rather than repair what they find
//! by changing it: an unreadable or corrupt CA key (issue 14 item 4) and a
//! data dir other users can enter (item 13). Each refusal leaves the data
//! dir exactly as it was.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sigil_tests::{ServerOptions, TestServer, bin, run_limited, text};

/// Every entry under `dir`: type, mode, size, mtime and content hash.
fn listing(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let hash = if m.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref())
            } else {
                String::new()
            };
            if m.is_dir() {
                todo.push(p.clone());
            }
            let desc = format!(
                "type={:?} mode={:o} size={} mtime={}.{} sha256={hash}",
                m.file_type(),
                m.mode(),
                m.len(),
                m.mtime(),
                m.mtime_nsec()
            );
            out.insert(p, desc);
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Starts `exe` with `config`, expecting a refusal whose message contains
/// every one of `needles`, with nothing under `data_dir` changed. Returns
/// the message.
fn assert_refuses(
    exe: &str,
    config: &Path,
    data_dir: &Path,
    needles: &[&str],
    what: &str,
) -> String {
    let before = listing(data_dir);
    let (out, started) = run_limited(
        Command::new(bin(exe)).args(["run", "--config"]).arg(config),
        Duration::from_secs(30),
    );
    let err = text(&out.stderr) + &text(&out.stdout);
    assert!(!started, "{what}: {exe} started anyway: {err}");
    assert!(!out.status.success(), "{what}: exit 0: {err}");
    for n in needles {
        assert!(err.contains(n), "{what}: message lacks {n:?}: {err}");
    }
    let after = listing(data_dir);
    let changed: Vec<String> = before
        .keys()
        .chain(after.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|p| before.get(*p) != after.get(*p))
        .map(|p| format!("{}: {:?} -> {:?}", p.display(), before.get(p), after.get(p)))
        .collect();
    assert!(
        changed.is_empty(),
        "{what}: the data dir changed: {changed:#?}"
    );
    err
}

fn assert_server_refuses(s: &TestServer, needles: &[&str], what: &str) -> String {
    assert_refuses("sigil-server", &s.config, &s.data_dir, needles, what)
}

fn active_key_file(s: &TestServer) -> PathBuf {
    let keys: Vec<PathBuf> = std::fs::read_dir(s.data_dir.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        // The JWT signing key (issue 15) sits beside it.
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ca-"))
        })
        .collect();
    assert_eq!(keys.len(), 1, "one CA key after a first start: {keys:?}");
    keys[0].clone()
}

#[test]
fn item4_unreadable_or_corrupt_ca_key_refuses_start_and_changes_nothing() {
    let mut s = TestServer::start(ServerOptions::default()).unwrap();
    let bundle = s.bundle();
    s.stop();
    let key = active_key_file(&s);
    let good = std::fs::read(&key).unwrap();
    let path = key.display().to_string();

    // Unreadable, even for root: the key file's name is now a directory.
    std::fs::remove_file(&key).unwrap();
    std::fs::create_dir(&key).unwrap();
    let err = assert_server_refuses(&s, &[&path, "cannot be loaded"], "unreadable key");
    println!("unreadable: {}", err.trim());

    // Corrupt: junk bytes.
    std::fs::remove_dir(&key).unwrap();
    std::fs::write(&key, b"\x30\x82junk junk junk").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = assert_server_refuses(&s, &[&path, "PKCS#8"], "corrupt key");
    println!("corrupt: {}", err.trim());

    // The key back: the same CA signs, the bundle is what it was.
    std::fs::write(&key, &good).unwrap();
    s.spawn().unwrap();
    assert_eq!(s.bundle(), bundle, "the CA changed across the refusals");
    s.stop();
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn item13_an_existing_data_dir_open_to_others_is_refused_not_changed() {
    // The server: a data dir made 0755 while it was down.
    let mut s = TestServer::start(ServerOptions::default()).unwrap();
    s.stop();
    std::fs::set_permissions(&s.data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = s.data_dir.display().to_string();
    let err = assert_server_refuses(&s, &[&dir, "0755", "chmod 0700"], "server data dir 0755");
    println!("server: {}", err.trim());
    assert_eq!(mode(&s.data_dir), 0o755, "the server changed the mode");

    // The agent: the same.
    std::fs::set_permissions(&s.data_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    s.spawn().unwrap();
    let mut a = sigil_tests::TestAgent::start(&s).unwrap();
    a.kill();
    std::fs::set_permissions(&a.data_dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let adir = a.data_dir.display().to_string();
    let err = assert_refuses(
        "sigil-agent",
        &a.config,
        &a.data_dir,
        &[&adir, "0750", "chmod 0700"],
        "agent data dir 0750",
    );
    println!("agent: {}", err.trim());
    assert_eq!(mode(&a.data_dir), 0o750, "the agent changed the mode");
    s.stop();
}
