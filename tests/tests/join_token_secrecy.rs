//! Join tokens stay out of process metadata (issue 20 item 8): `--help`
//! never prints `SIGIL_JOIN_TOKEN`'s value, and `join_token_file` (or
//! `--join-token-file`) lets the real agent attest with a token that never
//! appears on its command line, while a token file group or others can read
//! is refused, naming the path and the mode.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sigil_tests::{READY_TIMEOUT, ServerOptions, TestServer, bin, sigil_agent, stop_child, text};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn i20_8_help_never_prints_the_token() {
    for args in [&["run", "--help"][..], &["help", "run"][..]] {
        let out = sigil_agent(args, &[("SIGIL_JOIN_TOKEN", SECRET)]);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{args:?}: {all}");
        assert!(!all.contains(SECRET), "{args:?} printed the token: {all}");
        assert!(all.contains("--join-token "), "{args:?}: {all}");
        assert!(all.contains("--join-token-file"), "{args:?}: {all}");
    }
}

fn write_config(dir: &Path, s: &TestServer, extra: &str) -> std::path::PathBuf {
    let bundle = dir.join("bundle.pem");
    std::fs::write(&bundle, s.cli_ok(&["bundle", "show"])).unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "trust_domain = \"{}\"\ndata_dir = \"{}\"\nserver_address = \"{}\"\n\
             trust_bundle_path = \"{}\"\nsocket_path = \"{}\"\n{extra}",
            s.trust_domain,
            dir.join("data").display(),
            s.agent_addr,
            bundle.display(),
            dir.join("run/agent.sock").display()
        ),
    )
    .unwrap();
    config
}

fn token_file(dir: &Path, token: &str, mode: u32) -> std::path::PathBuf {
    let p = dir.join("join_token");
    // An operator's `echo TOKEN > file`: a trailing newline.
    std::fs::write(&p, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn generate(s: &TestServer) -> String {
    s.cli_json(&["token", "generate"])["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Starts `sigil-agent run` with `args`; returns once it is healthy (or
/// panics with its log), and the agent's command line as the kernel shows it.
fn run_until_healthy(dir: &Path, config: &Path, args: &[&str]) -> (std::process::Child, String) {
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let mut child = Command::new(bin("sigil-agent"))
        .args(["run", "--config"])
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    let sock = dir.join("run/agent.sock").display().to_string();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "sigil-agent exited with {st}: {}",
                std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
            );
        }
        if sigil_agent(&["healthcheck", "--socket", &sock], &[])
            .status
            .success()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent not healthy: {}",
            std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, String::from_utf8_lossy(&cmdline).replace('\0', " "))
}

#[test]
fn i20_8_join_token_file_is_used_and_a_readable_one_refused() {
    let s = TestServer::start(ServerOptions::default()).unwrap();

    // The config key.
    let dir = tempfile::tempdir().unwrap();
    let token = generate(&s);
    let file = token_file(dir.path(), &token, 0o600);
    let config = write_config(
        dir.path(),
        &s,
        &format!("join_token_file = \"{}\"\n", file.display()),
    );
    let v = sigil_agent(
        &["validate", "--config", &config.display().to_string()],
        &[],
    );
    assert!(v.status.success(), "validate: {}", text(&v.stderr));
    let (mut child, cmdline) = run_until_healthy(dir.path(), &config, &[]);
    assert!(
        !cmdline.contains(&token),
        "the token is on the command line: {cmdline}"
    );
    stop_child(&mut child);

    // The flag.
    let dir2 = tempfile::tempdir().unwrap();
    let token2 = generate(&s);
    let file2 = token_file(dir2.path(), &token2, 0o400);
    let config2 = write_config(dir2.path(), &s, "");
    let (mut child2, cmdline2) = run_until_healthy(
        dir2.path(),
        &config2,
        &["--join-token-file", &file2.display().to_string()],
    );
    assert!(!cmdline2.contains(&token2), "{cmdline2}");
    stop_child(&mut child2);
    let agents = s.cli_json(&["agent", "list"]);
    assert_eq!(
        agents["agents"].as_array().unwrap().len(),
        2,
        "both agents attested with their token files: {agents:#}"
    );

    // A token file group or others can read: refused by validate, by run
    // (config key) and by run (flag), naming the path and the mode.
    for mode in [0o640, 0o604, 0o644] {
        let dir3 = tempfile::tempdir().unwrap();
        let file3 = token_file(dir3.path(), &generate(&s), mode);
        let config3 = write_config(
            dir3.path(),
            &s,
            &format!("join_token_file = \"{}\"\n", file3.display()),
        );
        let config3 = config3.display().to_string();
        let file3s = file3.display().to_string();
        let mode_text = format!("{mode:04o}");
        let runs = [
            sigil_agent(&["validate", "--config", &config3], &[]),
            sigil_agent(&["run", "--config", &config3], &[]),
        ];
        for out in runs {
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "mode {mode_text}: {err}");
            assert!(
                err.contains(&file3s) && err.contains(&mode_text),
                "the refusal names the path and the mode {mode_text}: {err}"
            );
        }
        let flag_config = write_config(dir3.path(), &s, "");
        let out = sigil_agent(
            &[
                "run",
                "--config",
                &flag_config.display().to_string(),
                "--join-token-file",
                &file3s,
            ],
            &[],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "flag, mode {mode_text}: {err}");
        assert!(
            err.contains(&file3s) && err.contains(&mode_text),
            "flag: names the path and the mode: {err}"
        );
    }
}
