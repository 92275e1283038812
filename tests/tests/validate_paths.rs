//! Issue 22 item 3: `validate` refuses a config that cannot run here: a
//! referenced file that is missing or unreadable by the user running it, a
//! directory that cannot be created. Each problem names the key, the path
//! and the OS error, all of them in one run.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use sigil_tests::{bin, run_bounded, text};

/// The uid the unreadable case runs as (root reads everything).
const NOBODY: u32 = 65534;

fn validate(binary: &str, config: &Path, as_nobody: bool) -> (bool, String) {
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".to_string(),
        ])
        .arg(bin(binary));
        c
    } else {
        Command::new(bin(binary))
    };
    let out = run_bounded(cmd.args(["validate", "--config"]).arg(config));
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

fn world_readable_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn write_public(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn i22_3_validate_refuses_missing_and_unreadable_paths() {
    let d = world_readable_dir();
    let dir = d.path();
    // A file where a directory must be made.
    let blocker = dir.join("blocker");
    write_public(&blocker, "not a directory");

    // The server: a data_dir under a file, missing upstream files, a
    // missing x509pop CA bundle. Every problem is reported in one run.
    let server_cfg = dir.join("server.toml");
    let data_dir = blocker.join("data");
    let up_cert = dir.join("missing/upstream.pem");
    let up_key = dir.join("missing/upstream_key.pem");
    let pop_ca = dir.join("missing/nodes.pem");
    write_public(
        &server_cfg,
        &format!(
            "trust_domain = \"example.org\"\ndata_dir = \"{}\"\n\
             admin_socket = \"{}\"\n\
             [upstream.disk]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
             [node_attestor.x509pop]\nca_bundle_path = \"{}\"\n",
            data_dir.display(),
            dir.join("run/admin.sock").display(),
            up_cert.display(),
            up_key.display(),
            pop_ca.display()
        ),
    );
    let (ok, out) = validate("sigil-server", &server_cfg, false);
    assert!(
        !ok,
        "validate passed a server config that cannot run:\n{out}"
    );
    for needle in [
        format!(
            "data_dir {}: cannot be created: {} is not a directory",
            data_dir.display(),
            blocker.display()
        ),
        format!(
            "upstream.disk.cert_file {}: cannot be read: No such file or directory",
            up_cert.display()
        ),
        format!(
            "upstream.disk.key_file {}: cannot be read",
            up_key.display()
        ),
        format!(
            "node_attestor.x509pop.ca_bundle_path {}: cannot be read",
            pop_ca.display()
        ),
    ] {
        assert!(out.contains(&needle), "no {needle:?} in:\n{out}");
    }
    println!("server: {out}");

    // The agent: a missing trust bundle, a socket directory under a file,
    // a missing web CA file for the bundle endpoint.
    let agent_cfg = dir.join("agent.toml");
    let bundle = dir.join("missing/bundle.pem");
    let socket = blocker.join("run/agent.sock");
    let web_ca = dir.join("missing/web-ca.pem");
    write_public(
        &agent_cfg,
        &format!(
            "trust_domain = \"example.org\"\ndata_dir = \"{}\"\n\
             server_address = \"127.0.0.1:8081\"\ntrust_bundle_path = \"{}\"\n\
             socket_path = \"{}\"\n\
             [bundle_endpoint]\nurl = \"https://localhost:8443/\"\nca_file = \"{}\"\n",
            dir.join("agent-data").display(),
            bundle.display(),
            socket.display(),
            web_ca.display()
        ),
    );
    let (ok, out) = validate("sigil-agent", &agent_cfg, false);
    assert!(
        !ok,
        "validate passed an agent config that cannot run:\n{out}"
    );
    for needle in [
        format!(
            "trust_bundle_path {}: cannot be read: No such file or directory",
            bundle.display()
        ),
        format!(
            "socket_path {}: its directory {}: cannot be created",
            socket.display(),
            blocker.join("run").display()
        ),
        format!(
            "bundle_endpoint.ca_file {}: cannot be read: No such file or directory",
            web_ca.display()
        ),
    ] {
        assert!(out.contains(&needle), "no {needle:?} in:\n{out}");
    }
    println!("agent: {out}");

    // Unreadable by the user who runs it: a root-only bundle, validated as
    // nobody (root reads everything, so only then is the check real).
    let owned = dir.join("root-only.pem");
    std::fs::write(&owned, "x").unwrap();
    std::fs::set_permissions(&owned, std::fs::Permissions::from_mode(0o600)).unwrap();
    let nobody_cfg = dir.join("agent-nobody.toml");
    write_public(
        &nobody_cfg,
        &format!(
            "trust_domain = \"example.org\"\ndata_dir = \"/tmp/sigil-validate-{}\"\n\
             server_address = \"127.0.0.1:8081\"\ntrust_bundle_path = \"{}\"\n\
             socket_path = \"/tmp/sigil-validate-{}/agent.sock\"\n",
            std::process::id(),
            owned.display(),
            std::process::id()
        ),
    );
    if nix::unistd::geteuid().is_root() {
        let (ok, out) = validate("sigil-agent", &nobody_cfg, true);
        assert!(!ok, "validate passed a bundle its user cannot read:\n{out}");
        let needle = format!(
            "trust_bundle_path {}: cannot be read: Permission denied",
            owned.display()
        );
        assert!(out.contains(&needle), "no {needle:?} in:\n{out}");
        println!("agent as nobody: {out}");
    }
    // And a config whose every path is fine still passes.
    std::fs::set_permissions(&owned, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = validate("sigil-agent", &nobody_cfg, false);
    assert!(ok, "a runnable config was refused:\n{out}");
}
