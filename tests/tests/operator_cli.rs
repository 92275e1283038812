//! The operator's first week with the `sigil-server` CLI (issue 22 items
//! 2, 5 and 6), against a real server: selectors and flags that can never
//! work are refused with the cause and the fix; machine output round-trips;
//! the SPIRE habits (`entry list`, `entry delete --spiffe-id`, `bundle show
//! --format spiffe`, the agent ID of a join token) work.

use sigil_tests::{ServerOptions, TestServer, text};

const PARENT: &str = "spiffe://example.org/sigil/agent/join_token/abc";

/// `entry create --spiffe-id ID --parent-id PARENT` plus `extra`.
fn create_args<'a>(id: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["entry", "create", "--spiffe-id", id, "--parent-id", PARENT];
    a.extend_from_slice(extra);
    a
}

/// `entry create` of `spiffe://example.org/w` under [`PARENT`] plus `extra`.
fn create(s: &TestServer, extra: &[&str]) -> std::process::Output {
    s.cli(&create_args("spiffe://example.org/w", extra))
}

/// Asserts a refusal: exit 1, one line on stderr holding every needle.
fn refused(out: &std::process::Output, needles: &[&str], what: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
    for n in needles {
        assert!(err.contains(n), "{what}: expected {n:?} in {err}");
    }
}

#[test]
fn i22_2_selectors_no_attestor_produces_are_refused_with_the_fix() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    for (sel, needles) in [
        (
            "uinx:uid:0",
            &[
                "unknown type \"uinx\"",
                "did you mean unix?",
                "--allow-unknown-selector",
            ][..],
        ),
        (
            "unix:uuid:0",
            &[
                "unknown key \"uuid\"",
                "did you mean uid?",
                "unix:gid:<value>",
            ],
        ),
        ("unix:uid:root", &["must be a number", "unix:user:root"]),
        (
            "k8s:ns:default",
            &["unknown type \"k8s\"", "unix, container, systemd"],
        ),
        ("unix:sha256:xyz", &["64 lowercase hex"]),
        ("unix:path:usr/bin/x", &["absolute path"]),
    ] {
        refused(&create(&s, &["--selector", sel]), needles, sel);
    }
    // An entry file goes through the same server-side check.
    let file = s.dir.path().join("entries.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"entries":[{{"spiffe_id":"spiffe://example.org/f","parent_id":"{PARENT}","selectors":[{{"type":"unix","value":"uid:root"}}]}}]}}"#
        ),
    )
    .unwrap();
    refused(
        &s.cli(&["entry", "create", "--data", file.to_str().unwrap()]),
        &["unix:user:root"],
        "entry file",
    );
    assert_eq!(s.cli_json(&["entry", "count"])["count"], 0);

    // Unknown types pass with the explicit flag; a known type's bad value
    // never does.
    let out = create(
        &s,
        &["--selector", "unix:uid:root", "--allow-unknown-selector"],
    );
    refused(&out, &["unix:user:root"], "known type with the flag");
    let e = s.cli_json(&create_args(
        "spiffe://example.org/w",
        &["--selector", "k8s:ns:default", "--allow-unknown-selector"],
    ));
    let id = e["entries"][0]["id"].as_str().unwrap().to_string();
    // Good selectors of every attestor are accepted.
    let hex = "0f".repeat(32);
    for sel in [
        "unix:uid:0".to_string(),
        "unix:user:root".into(),
        "unix:path:/usr/bin/nginx".into(),
        format!("unix:sha256:{hex}"),
        format!("container:id:{hex}"),
        "systemd:unit:nginx.service".into(),
    ] {
        let out = s.cli(&create_args(
            "spiffe://example.org/good",
            &["--selector", &sel],
        ));
        assert!(out.status.success(), "{sel}: {}", text(&out.stderr));
    }
    // Updates are checked too.
    let out = s.cli(&[
        "entry",
        "update",
        "--entry-id",
        &id,
        "--selector",
        "uinx:uid:0",
    ]);
    refused(&out, &["did you mean unix?"], "update");
    assert_eq!(s.cli_json(&["entry", "count"])["count"], 7);
}

#[test]
fn i22_2_flags_whose_feature_does_not_work_are_refused() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    for (flags, needle) in [
        (&["--admin"][..], "admin entries are not implemented yet"),
        (
            &["--downstream"],
            "downstream servers are not implemented yet",
        ),
    ] {
        let mut extra = vec!["--selector", "unix:uid:1"];
        extra.extend_from_slice(flags);
        refused(&create(&s, &extra), &[needle, "omit it"], flags[0]);
    }
    assert_eq!(s.cli_json(&["entry", "count"])["count"], 0);
    let e = s.cli_json(&create_args(
        "spiffe://example.org/w",
        &["--selector", "unix:uid:1"],
    ));
    let id = e["entries"][0]["id"].as_str().unwrap().to_string();
    for (flags, needle) in [
        (
            &["--admin", "true"][..],
            "admin entries are not implemented yet",
        ),
        (&["--downstream", "true"], "downstream servers"),
    ] {
        let mut a = vec!["entry", "update", "--entry-id", &id];
        a.extend_from_slice(flags);
        refused(&s.cli(&a), &[needle], flags[0]);
    }
    // Issue 15: JWT-SVIDs are issued now, so their TTL is stored.
    let u = s.cli_json(&["entry", "update", "--entry-id", &id, "--jwt-svid-ttl", "5m"]);
    assert_eq!(u["entries"][0]["jwt_svid_ttl"], 300, "{u:#}");
}

/// Unix seconds of an RFC 3339 JSON string; panics naming `what` otherwise.
fn rfc3339(v: &serde_json::Value, what: &str) -> i64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not an RFC 3339 string: {v}"));
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{what} {s:?} is not RFC 3339: {e}"))
        .unix_timestamp()
}

/// Runs an admin command with `input` on its stdin.
fn cli_with_stdin(s: &TestServer, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(sigil_tests::bin("sigil-server"))
        .args(args)
        .env("SIGIL_ADMIN_SOCKET", &s.socket)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("sigil-server {args:?} did not finish in 60 s");
        }
    }
}

/// The fields an operator sets (what must survive a round trip).
fn operator_fields(e: &serde_json::Value) -> serde_json::Value {
    let mut e = e.clone();
    let o = e.as_object_mut().unwrap();
    for server_set in ["id", "revision", "created_at"] {
        o.remove(server_set);
    }
    e
}

#[test]
fn i22_5_entry_show_json_round_trips_through_entry_create_data() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let expires = "2099-01-02T03:04:05Z";
    let created = s.cli_json(&create_args(
        "spiffe://example.org/web",
        &[
            "--selector",
            "unix:uid:1000",
            "--selector",
            "unix:gid:1000",
            "--dns-name",
            "web.example.org",
            "--x509-svid-ttl",
            "30m",
            "--hint",
            "web",
            "--expires-at",
            expires,
        ],
    ));
    let id = created["entries"][0]["id"].as_str().unwrap().to_string();
    let shown = s.cli_ok(&["entry", "show", "--entry-id", &id, "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let original = v["entries"][0].clone();
    // Every time is RFC 3339, here and in `ca show`.
    assert_eq!(rfc3339(&original["expires_at"], "expires_at"), 4071006245);
    rfc3339(&original["created_at"], "created_at");
    let ca = s.cli_json(&["ca", "show"]);
    for slot in ca["slots"].as_array().unwrap() {
        rfc3339(&slot["not_before"], "ca show not_before");
        rfc3339(&slot["not_after"], "ca show not_after");
    }
    rfc3339(&ca["prepare_at"], "ca show prepare_at");
    rfc3339(&ca["activate_at"], "ca show activate_at");

    // show | create --data - : the server-set fields are ignored.
    s.cli_ok(&["entry", "delete", "--entry-id", &id]);
    let out = cli_with_stdin(
        &s,
        &["entry", "create", "--data", "-", "--output", "json"],
        &shown,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let again = &again["entries"][0];
    assert_ne!(again["id"], original["id"], "the server assigns a new id");
    assert_eq!(operator_fields(again), operator_fields(&original));
}

#[test]
fn i22_5_update_clears_dns_names_ttl_and_expiry() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let created = s.cli_json(&create_args(
        "spiffe://example.org/web",
        &[
            "--selector",
            "unix:uid:1000",
            "--dns-name",
            "web.example.org",
            "--x509-svid-ttl",
            "30m",
            "--expires-at",
            "2099-01-01T00:00:00Z",
        ],
    ));
    let id = created["entries"][0]["id"].as_str().unwrap().to_string();
    let u = s.cli_json(&[
        "entry",
        "update",
        "--entry-id",
        &id,
        "--clear-dns-names",
        "--x509-svid-ttl",
        "default",
        "--expires-at",
        "never",
    ]);
    let e = &u["entries"][0];
    assert_eq!(e["dns_names"], serde_json::json!([]), "{u:#}");
    assert_eq!(e["x509_svid_ttl"], 0, "back to the server default: {u:#}");
    assert!(e["expires_at"].is_null(), "{u:#}");
    // `0s` still means nothing but a mistake.
    let out = s.cli(&[
        "entry",
        "update",
        "--entry-id",
        &id,
        "--x509-svid-ttl",
        "0s",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("`default`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn i22_5_a_no_op_update_keeps_the_revision() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let created = s.cli_json(&create_args(
        "spiffe://example.org/web",
        &["--selector", "unix:uid:1000", "--hint", "web"],
    ));
    let e = &created["entries"][0];
    let (id, rev) = (e["id"].as_str().unwrap(), e["revision"].as_u64().unwrap());
    // The same values again: nothing is written, the revision stays.
    let same = [
        "entry",
        "update",
        "--entry-id",
        id,
        "--hint",
        "web",
        "--selector",
        "unix:uid:1000",
    ];
    let u = s.cli_json(&same);
    assert_eq!(u["entries"][0]["revision"], rev, "{u:#}");
    assert_eq!(u["unchanged"], true, "{u:#}");
    let out = s.cli_ok(&same);
    assert!(out.contains("unchanged"), "{out}");
    // No store write happened in between: the next change takes the next
    // revision.
    let next = s.cli_json(&create_args(
        "spiffe://example.org/db",
        &["--selector", "unix:uid:1001"],
    ));
    assert_eq!(next["entries"][0]["revision"], rev + 1, "{next:#}");
    // A real change bumps it.
    let u = s.cli_json(&["entry", "update", "--entry-id", id, "--hint", "api"]);
    assert!(
        u["entries"][0]["revision"].as_u64().unwrap() > rev + 1,
        "{u:#}"
    );
    assert_eq!(u["unchanged"], false, "{u:#}");
}

#[test]
fn i22_6_token_generate_prints_the_agent_id_that_parent_id_needs() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let out = s.cli_ok(&["token", "generate"]);
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("Token: "))
        .unwrap_or_else(|| panic!("no token: {out}"));
    let want = sigil_tests::join_token_agent_id("example.org", token);
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("Agent ID: {want} "))),
        "expected the full agent ID {want}: {out}"
    );
    let v = s.cli_json(&["token", "generate"]);
    let want = sigil_tests::join_token_agent_id("example.org", v["token"].as_str().unwrap());
    assert_eq!(v["agent_id"], want.as_str(), "{v:#}");
    // The printed ID is accepted as a parent as is.
    s.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/w",
        "--parent-id",
        &want,
        "--selector",
        "unix:uid:1",
    ]);
    // `--ttl 0s` is refused with the rule instead of meaning 10m.
    let out = s.cli(&["token", "generate", "--ttl", "0s"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("from 1s to 30d"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn i22_6_entry_list_and_delete_by_spiffe_id() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let mk = |id: &str, sel: &str| {
        s.cli_json(&create_args(id, &["--selector", sel]))["entries"][0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let a1 = mk("spiffe://example.org/a", "unix:uid:1");
    let a2 = mk("spiffe://example.org/a", "unix:uid:2");
    mk("spiffe://example.org/b", "unix:uid:3");
    // `entry list` is `entry show`.
    let v = s.cli_json(&["entry", "list"]);
    assert_eq!(v["entries"].as_array().unwrap().len(), 3, "{v:#}");

    // Several matches: refused, listing them, nothing deleted.
    let out = s.cli(&["entry", "delete", "--spiffe-id", "spiffe://example.org/a"]);
    refused(&out, &[&a1, &a2, "--yes"], "two matches");
    assert_eq!(s.cli_json(&["entry", "count"])["count"], 3);
    let v = s.cli_json(&[
        "entry",
        "delete",
        "--spiffe-id",
        "spiffe://example.org/a",
        "--yes",
    ]);
    let mut deleted: Vec<&str> = v["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    deleted.sort();
    let mut want = vec![a1.as_str(), a2.as_str()];
    want.sort();
    assert_eq!(deleted, want);
    // One match needs no confirmation; none is an error.
    s.cli_ok(&["entry", "delete", "--spiffe-id", "spiffe://example.org/b"]);
    assert_eq!(s.cli_json(&["entry", "count"])["count"], 0);
    let out = s.cli(&["entry", "delete", "--spiffe-id", "spiffe://example.org/b"]);
    refused(
        &out,
        &["no entry has SPIFFE ID spiffe://example.org/b"],
        "none",
    );
}

#[test]
fn i22_6_bundle_show_format_spiffe_is_the_jwk_set() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let spiffe = s.cli_ok(&["bundle", "show", "--format", "spiffe"]);
    assert_eq!(spiffe, s.cli_ok(&["bundle", "show", "--format", "jwks"]));
    let v: serde_json::Value = serde_json::from_str(&spiffe).unwrap();
    assert!(v["keys"].is_array(), "{v:#}");
}

#[test]
fn i22_6_eacces_on_the_admin_socket_names_the_allow_list() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: switching users needs root");
        return;
    }
    let out = sigil_tests::run_bounded(
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(sigil_tests::bin("sigil-server"))
            .args(["entry", "count", "--socket"])
            .arg(&s.socket),
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("ermission denied")
            && err.contains("uid 65534 is not allowed")
            && err.contains("admin_allowed_uids"),
        "{err}"
    );
    assert!(!err.contains("is sigil-server running"), "{err}");
}

#[test]
fn i22_6_config_errors_keep_the_toml_snippet_and_say_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(&path, "trust_domain = \"example.org\"\nca_ttl = [\n").unwrap();
    let out = sigil_tests::sigil_server(&["validate", "--config", path.to_str().unwrap()], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines[0].contains("line 2, column"), "{err}");
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with("2 | ca_ttl = ["))
        .unwrap_or_else(|| panic!("the snippet's line is its own line: {err}"));
    assert!(lines[at + 1].contains('^'), "the caret under it: {err}");

    let missing = dir.path().join("missing.toml");
    let out = sigil_tests::sigil_server(&["validate", "--config", missing.to_str().unwrap()], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the cause once: {err}"
    );
}
