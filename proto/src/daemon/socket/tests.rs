//! Socket binding: modes, directories, stale/live/non-socket paths, and no
//! dependence on the umask (in a child process).

use super::*;
use crate::daemon::umask_child::{child_umask, run_under_umask};

const SPEC: SocketSpec = SocketSpec {
    mode: 0o600,
    dir_mode: 0o700,
    what: "the test socket",
    daemon: "test daemon",
};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn is_socket(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .unwrap()
        .file_type()
        .is_socket()
}

/// Entries of `dir` other than `keep` (a private bind directory left over).
fn others(dir: &Path, keep: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n != keep)
        .collect()
}

#[tokio::test]
async fn binds_with_each_callers_mode_in_new_directories() {
    let dir = tempfile::tempdir().unwrap();
    for (m, dm) in [(0o600, 0o700), (0o666, 0o755)] {
        let spec = SocketSpec {
            mode: m,
            dir_mode: dm,
            ..SPEC
        };
        let sock = dir.path().join(format!("{m:o}/run/s.sock"));
        let l = bind(&sock, &spec).unwrap();
        assert!(is_socket(&sock));
        assert_eq!(mode(&sock), m);
        assert_eq!(mode(&dir.path().join(format!("{m:o}/run"))), dm);
        assert_eq!(mode(&dir.path().join(format!("{m:o}"))), dm);
        assert!(others(sock.parent().unwrap(), "s.sock").is_empty());
        // It accepts at its path.
        std::os::unix::net::UnixStream::connect(&sock).unwrap();
        let (_c, _) = l.accept().await.unwrap();
        assert!(socket_identity(&sock).is_some());
    }
}

#[tokio::test]
async fn an_existing_directory_keeps_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
    let _l = bind(&d.join("s.sock"), &SPEC).unwrap();
    assert_eq!(mode(&d), 0o750);
}

#[tokio::test]
async fn a_dead_socket_is_replaced_a_live_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    // A stale socket: bound, then its listener gone.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(is_socket(&sock));
    let live = bind(&sock, &SPEC).unwrap();
    assert_eq!(mode(&sock), 0o600);

    let e = bind(&sock, &SPEC).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    assert!(
        e.to_string().contains("in use by a running test daemon"),
        "{e}"
    );
    // The live socket is still there and still accepts.
    std::os::unix::net::UnixStream::connect(&sock).unwrap();
    drop(live);
    // Once its listener is gone it is stale, and replaced.
    let _again = bind(&sock, &SPEC).unwrap();
    assert!(others(dir.path(), "s.sock").is_empty());
}

#[tokio::test]
async fn a_regular_file_is_refused_and_left() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.sock");
    std::fs::write(&p, "keep me").unwrap();
    let e = bind(&p, &SPEC).unwrap_err().to_string();
    assert!(e.contains("not a socket"), "{e}");
    assert!(e.contains(&p.display().to_string()), "{e}");
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "keep me");
    assert!(others(dir.path(), "s.sock").is_empty());
}

#[tokio::test]
async fn a_symlink_is_refused_even_to_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, "x").unwrap();
    let link = dir.path().join("s.sock");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = bind(&link, &SPEC).unwrap_err().to_string();
    assert!(e.contains("not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "x");

    let real = dir.path().join("real.sock");
    drop(std::os::unix::net::UnixListener::bind(&real).unwrap());
    let link2 = dir.path().join("s2.sock");
    std::os::unix::fs::symlink(&real, &link2).unwrap();
    let e = bind(&link2, &SPEC).unwrap_err().to_string();
    assert!(e.contains("not a socket"), "{e}");
    assert!(is_socket(&real));
}

#[tokio::test]
async fn a_world_writable_directory_needs_the_sticky_bit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("open");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = bind(&d.join("s.sock"), &SPEC).unwrap_err().to_string();
    assert!(e.contains("world-writable without the sticky bit"), "{e}");
    assert!(e.contains("the test socket"), "{e}");
    assert!(e.contains(&d.display().to_string()), "{e}");
    assert!(std::fs::read_dir(&d).unwrap().next().is_none());

    // With the sticky bit (like /tmp) it is accepted.
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let _l = bind(&d.join("s.sock"), &SPEC).unwrap();
    assert_eq!(mode(&d), 0o1777);
}

/// Run by [`bind_neither_uses_nor_needs_the_umask`] in a child process
/// under umask 0 (a no-op in the test process itself).
#[tokio::test]
async fn mode_under_a_loose_umask_child() {
    if child_umask().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Made 0777 under this umask; bind would rightly refuse it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let sock = dir.path().join("admin.sock");
    let _l = bind(&sock, &SPEC).unwrap();
    assert_eq!(mode(&sock), 0o600);
    // And the umask was not changed by the bind.
    let now = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    assert_eq!(now.bits(), 0);
}

#[test]
fn bind_neither_uses_nor_needs_the_umask() {
    run_under_umask("daemon::socket::tests::mode_under_a_loose_umask_child", 0).unwrap();
}
