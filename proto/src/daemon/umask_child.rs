//! Test support: running one test of the current test binary again in a
//! child process under a given umask. The umask is process-wide, so a test
//! that changes it in the test process races every other test creating
//! files; in a child of its own it races nothing.
//!
//! The parent test calls [`run_under_umask`] with the child test's full
//! name; the child test starts with [`child_umask`], which applies the
//! umask (and says which) only when it runs as that child.

use std::process::Command;

/// The variable carrying the umask (octal) to the child.
const VAR: &str = "SIGIL_TEST_CHILD_UMASK";

/// In a child started by [`run_under_umask`]: sets the process umask and
/// returns it. Elsewhere: `None`, and nothing changes.
pub fn child_umask() -> Option<u32> {
    let umask = u32::from_str_radix(&std::env::var(VAR).ok()?, 8).ok()?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    Some(umask)
}

/// Runs the test `name` (its full path in the test binary, e.g.
/// `daemon::files::tests::modes`) alone in a child process with `umask`;
/// `Err` holds the child's output when it failed or did not run the test.
pub fn run_under_umask(name: &str, umask: u32) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(VAR, format!("{umask:o}"))
        .output()
        .map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.contains("1 passed") {
        Ok(())
    } else {
        Err(format!("{name} under umask {umask:03o}: {text}"))
    }
}
