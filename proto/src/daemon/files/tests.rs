//! write_atomic, write_new and the SVID files: exact modes under any umask
//! (in a child process), planted symlinks, failed renames.

use std::os::unix::fs::MetadataExt;

use super::*;
use crate::daemon::umask_child::{child_umask, run_under_umask};

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// Leftover temp files in `dir` (names starting with `.`).
fn temps(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn replaces_the_file_with_the_exact_mode() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("key.pem");
    fs::write(&p, b"old").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    write_atomic(&p, b"new", 0o600).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"new");
    assert_eq!(mode(&p), 0o600);
    write_atomic(&p, b"wider", 0o644).unwrap();
    assert_eq!(mode(&p), 0o644);
    assert!(temps(dir.path()).is_empty(), "{:?}", temps(dir.path()));
}

/// Run by [`exact_modes_under_narrow_and_usual_umasks`] in a child process
/// under each umask (a no-op in the test process itself).
#[test]
fn mode_under_umask_child() {
    let Some(umask) = child_umask() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for want in [0o600, 0o644, 0o666] {
        let p = dir.path().join(format!("f{want:o}"));
        write_atomic(&p, b"x", want).unwrap();
        assert_eq!(mode(&p), want, "umask {umask:03o}");
        let n = dir.path().join(format!("n{want:o}"));
        write_new(&n, b"x", want).unwrap();
        assert_eq!(mode(&n), want, "umask {umask:03o}");
    }
}

#[test]
fn exact_modes_under_narrow_and_usual_umasks() {
    for umask in [0o077, 0o022, 0o027] {
        run_under_umask("daemon::files::tests::mode_under_umask_child", umask).unwrap();
    }
}

#[test]
fn write_new_refuses_a_symlink_and_leaves_its_target_alone() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    fs::write(&target, b"victim").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = write_new(&link, b"evil", 0o600).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
    assert!(e.to_string().contains(&link.display().to_string()), "{e}");
    assert_eq!(fs::read(&target).unwrap(), b"victim");
    // A dangling symlink: the open must not create its target.
    let missing = dir.path().join("missing");
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(&missing, &dangling).unwrap();
    write_new(&dangling, b"evil", 0o600).unwrap_err();
    assert!(!missing.exists());
}

#[test]
fn write_atomic_skips_a_planted_temp_name_without_following_it() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere");
    let p = dir.path().join("svid.pem");
    // Plant symlinks at the next temp names this process will try.
    let next = NEXT.load(Ordering::Relaxed);
    for n in next..next + 4 {
        let tmp = dir
            .path()
            .join(format!(".svid.pem.tmp.{}.{n}", std::process::id()));
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
    }
    write_atomic(&p, b"cert", 0o644).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"cert");
    assert!(!target.exists(), "a planted symlink was followed");
}

#[test]
fn a_failed_rename_leaves_the_old_file_and_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bundle.pem");
    fs::write(&p, b"old").unwrap();
    let e = write_atomic_with(&p, b"new", 0o644, |_, _| {
        Err(io::Error::other("rename refused"))
    })
    .unwrap_err();
    assert!(e.to_string().contains("rename refused"), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("writing {}", p.display())),
        "{e}"
    );
    assert_eq!(fs::read(&p).unwrap(), b"old");
    assert!(temps(dir.path()).is_empty(), "{:?}", temps(dir.path()));
}

#[test]
fn a_rename_onto_a_directory_fails_and_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d");
    fs::create_dir(&p).unwrap();
    fs::write(p.join("inside"), b"kept").unwrap();
    write_atomic(&p, b"x", 0o644).unwrap_err();
    assert_eq!(fs::read(p.join("inside")).unwrap(), b"kept");
    assert!(temps(dir.path()).is_empty(), "{:?}", temps(dir.path()));
}

#[test]
fn svid_files_are_written_with_their_modes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new/dir");
    let written = write_svid_files(&out, b"chain", b"key", b"bundle").unwrap();
    let names: Vec<_> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["svid.pem", "svid_key.pem", "bundle.pem"]);
    assert_eq!(fs::read(out.join("svid.pem")).unwrap(), b"chain");
    assert_eq!(fs::read(out.join("svid_key.pem")).unwrap(), b"key");
    assert_eq!(fs::read(out.join("bundle.pem")).unwrap(), b"bundle");
    assert_eq!(mode(&out.join("svid_key.pem")), 0o600);
    assert_eq!(mode(&out.join("svid.pem")), 0o644);
    assert_eq!(mode(&out.join("bundle.pem")), 0o644);
}
