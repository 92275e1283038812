//! The operator's first week with the `sigil-server` CLI (issue 22 items
//! 2, 5 and 6), against a real server: selectors and flags that can never
//! work are refused with the cause and the fix; machine output round-trips;
//! the SPIRE habits (`entry list`, `entry delete --spiffe-id`, `bundle show
//! --format spiffe`, the agent ID of a join token) work.

use sigil_tests::{ServerOptions, TestServer, text};

const PARENT: &str = "spiffe://example.org/sigil/agent/join_token/abc";

/// `entry create` of `spiffe://example.org/w` under [`PARENT`] plus `extra`.
fn create(s: &TestServer, extra: &[&str]) -> std::process::Output {
    let mut a = vec![
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/w",
        "--parent-id",
        PARENT,
    ];
    a.extend_from_slice(extra);
    s.cli(&a)
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
            &["unknown type \"uinx\"", "did you mean unix?", "--allow-unknown-selector"][..],
        ),
        (
            "unix:uuid:0",
            &["unknown key \"uuid\"", "did you mean uid?", "unix:gid:<value>"],
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
    let out = create(&s, &["--selector", "unix:uid:root", "--allow-unknown-selector"]);
    refused(&out, &["unix:user:root"], "known type with the flag");
    let e = s.cli_json(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/w",
        "--parent-id",
        PARENT,
        "--selector",
        "k8s:ns:default",
        "--allow-unknown-selector",
    ]);
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
        let out = s.cli(&[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/good",
            "--parent-id",
            PARENT,
            "--selector",
            &sel,
        ]);
        assert!(out.status.success(), "{sel}: {}", text(&out.stderr));
    }
    // Updates are checked too.
    let out = s.cli(&["entry", "update", "--entry-id", &id, "--selector", "uinx:uid:0"]);
    refused(&out, &["did you mean unix?"], "update");
    assert_eq!(s.cli_json(&["entry", "count"])["count"], 7);
}

#[test]
fn i22_2_flags_whose_feature_does_not_work_are_refused() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    for (flags, needle) in [
        (&["--admin"][..], "admin entries are not implemented yet"),
        (&["--downstream"], "downstream servers are not implemented yet"),
        (
            &["--federates-with", "other.org"],
            "federation is not implemented yet",
        ),
        (&["--jwt-svid-ttl", "5m"], "does not issue JWT-SVIDs yet"),
    ] {
        let mut extra = vec!["--selector", "unix:uid:1"];
        extra.extend_from_slice(flags);
        refused(&create(&s, &extra), &[needle, "omit it"], flags[0]);
    }
    assert_eq!(s.cli_json(&["entry", "count"])["count"], 0);
    let e = s.cli_json(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/w",
        "--parent-id",
        PARENT,
        "--selector",
        "unix:uid:1",
    ]);
    let id = e["entries"][0]["id"].as_str().unwrap().to_string();
    for (flags, needle) in [
        (&["--admin", "true"][..], "admin entries are not implemented yet"),
        (&["--downstream", "true"], "downstream servers"),
        (&["--jwt-svid-ttl", "5m"], "JWT-SVIDs"),
    ] {
        let mut a = vec!["entry", "update", "--entry-id", &id];
        a.extend_from_slice(flags);
        refused(&s.cli(&a), &[needle], flags[0]);
    }
}
