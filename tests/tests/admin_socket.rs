//! The admin socket refuses other users: by file mode (0600 in a 0700
//! directory) and, independently, by the peer-credential uid check against
//! the server's uid and `admin_allowed_uids`. Needs root to switch users;
//! skipped with a message otherwise.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use sigil_tests::{ServerOptions, TestServer, bin, run_bounded, text};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn socket_mode_and_uid_check_refuse_other_users() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let mode = std::fs::metadata(&s.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin socket mode");
    let dmode = std::fs::metadata(&s.data_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dmode, 0o700, "data_dir mode");
    if !is_root() {
        eprintln!("SKIPPED: switching users needs root; only the modes were checked");
        return;
    }
    // Another user cannot even connect.
    let out = run_bounded(
        Command::new("setpriv")
            .args([
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".into(),
            ])
            .arg(bin("sigil-server"))
            .args(["entry", "count", "--socket"])
            .arg(&s.socket),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("ermission denied"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn uid_check_refuses_a_caller_that_bypasses_file_modes() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to run the server as another user");
        return;
    }
    // The server runs as nobody; root can open any file, so only the
    // peer-credential check stands between root and the admin API.
    let mut s = TestServer::start(ServerOptions {
        run_as: Some(NOBODY),
        ..Default::default()
    })
    .unwrap();
    let out = s.cli(&["entry", "count"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("permission denied") && err.contains("uid 0 may not use the admin socket"),
        "{err}"
    );
    assert!(
        s.log_text().contains("caller uid not allowed"),
        "refusal not logged"
    );

    // The allow-list admits root.
    s.stop();
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("admin_allowed_uids = [0]\n{cfg}")).unwrap();
    s.spawn().unwrap();
    assert!(s.cli(&["entry", "count"]).status.success());
}
