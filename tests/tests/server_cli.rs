//! The admin CLI against a real `sigil-server`: entry CRUD with revisions,
//! duplicates refused, restarts keep everything, and bad input refused with
//! the rule named and nothing written.

use sigil_tests::{ServerOptions, TestServer, sigil_server, text};

const PARENT: &str = "spiffe://example.org/sigil/agent/join_token/abc";

fn create(s: &TestServer, id: &str, sel: &str) -> serde_json::Value {
    let v = s.cli_json(&[
        "entry",
        "create",
        "--spiffe-id",
        id,
        "--parent-id",
        PARENT,
        "--selector",
        sel,
    ]);
    v["entries"][0].clone()
}

#[test]
fn entry_crud_revisions_duplicates_and_restart() {
    let mut s = TestServer::start(ServerOptions::default()).unwrap();
    let a = create(&s, "spiffe://example.org/web", "unix:uid:1000");
    let b = create(&s, "spiffe://example.org/db", "unix:uid:1001");
    let id_a = a["id"].as_str().unwrap().to_string();
    assert_eq!(id_a.len(), 32);
    assert!(b["revision"].as_u64() > a["revision"].as_u64());

    // Show by id, by SPIFFE ID, by parent, by selector.
    let v = s.cli_json(&["entry", "show", "--entry-id", &id_a]);
    assert_eq!(v["entries"][0]["spiffe_id"], "spiffe://example.org/web");
    let v = s.cli_json(&["entry", "show", "--spiffe-id", "spiffe://example.org/db"]);
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
    let v = s.cli_json(&["entry", "show", "--parent-id", PARENT]);
    assert_eq!(v["entries"].as_array().unwrap().len(), 2);
    let v = s.cli_json(&["entry", "show", "--selector", "unix:uid:1001"]);
    assert_eq!(v["entries"][0]["spiffe_id"], "spiffe://example.org/db");
    let text_out = s.cli_ok(&["entry", "show", "--entry-id", &id_a]);
    assert!(
        text_out.contains("Selector        : unix:uid:1000"),
        "{text_out}"
    );

    // Duplicate (same ID, parent, selectors) refused; nothing added.
    let out = s.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--parent-id",
        PARENT,
        "--selector",
        "unix:uid:1000",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(s.cli_json(&["entry", "count"])["count"], 2);

    // Update bumps the revision and keeps the id.
    let before = a["revision"].as_u64().unwrap();
    let u = s.cli_json(&[
        "entry",
        "update",
        "--entry-id",
        &id_a,
        "--x509-svid-ttl",
        "30m",
        "--dns-name",
        "web.example.org",
    ]);
    let u = &u["entries"][0];
    assert_eq!(u["id"], id_a.as_str());
    assert_eq!(u["x509_svid_ttl"], 1800);
    assert!(u["revision"].as_u64().unwrap() > before);
    let rev_after_update = u["revision"].as_u64().unwrap();

    // Delete one; the other stays.
    let id_b = b["id"].as_str().unwrap();
    s.cli_ok(&["entry", "delete", "--entry-id", id_b]);
    let out = s.cli(&["entry", "delete", "--entry-id", id_b]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not found"));
    assert_eq!(s.cli_json(&["entry", "count"])["count"], 1);

    // A restart keeps the entry, its revision, and the CA (same bundle).
    let bundle_before = s.cli_ok(&["bundle", "show"]);
    s.stop();
    s.spawn().unwrap();
    let v = s.cli_json(&["entry", "show", "--entry-id", &id_a]);
    assert_eq!(v["entries"][0]["revision"], rev_after_update);
    assert_eq!(v["entries"][0]["dns_names"][0], "web.example.org");
    assert_eq!(s.cli_ok(&["bundle", "show"]), bundle_before);
    // Revisions keep increasing after a restart.
    let c = create(&s, "spiffe://example.org/cache", "unix:uid:1002");
    assert!(c["revision"].as_u64().unwrap() > rev_after_update);
}

#[test]
fn batch_create_from_json_file() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let file = s.dir.path().join("entries.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"entries":[
              {{"spiffe_id":"spiffe://example.org/a","parent_id":"{PARENT}","selectors":[{{"type":"unix","value":"uid:1"}}],"x509_svid_ttl":600}},
              {{"spiffe_id":"spiffe://example.org/b","parent_id":"{PARENT}","selectors":[{{"type":"unix","value":"uid:2"}}],"hint":"internal"}}
            ]}}"#
        ),
    )
    .unwrap();
    let v = s.cli_json(&["entry", "create", "--data", file.to_str().unwrap()]);
    assert_eq!(v["entries"].as_array().unwrap().len(), 2);
    assert_eq!(v["entries"][1]["hint"], "internal");

    // One bad entry refuses the whole file: nothing is created.
    std::fs::write(
        &file,
        format!(
            r#"{{"entries":[
              {{"spiffe_id":"spiffe://example.org/c","parent_id":"{PARENT}","selectors":[{{"type":"unix","value":"uid:3"}}]}},
              {{"spiffe_id":"spiffe://example.org/d/","parent_id":"{PARENT}","selectors":[{{"type":"unix","value":"uid:4"}}]}}
            ]}}"#
        ),
    )
    .unwrap();
    let out = s.cli(&["entry", "create", "--data", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("entry 1") && err.contains("trailing '/'"),
        "{err}"
    );
    assert_eq!(s.cli_json(&["entry", "count"])["count"], 2);
}

#[test]
fn bad_spiffe_ids_are_refused_by_the_cli_with_the_rule() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let cases = [
        ("", "empty"),
        ("http://example.org/x", "scheme"),
        ("SPIFFE://example.org/x", "scheme"),
        ("spiffe:///x", "trust domain is missing"),
        ("spiffe://example.org/x/", "trailing '/'"),
        ("spiffe://example.org//x", "empty path segment"),
        ("spiffe://example.org/./x", "'.' and '..'"),
        ("spiffe://example.org/../x", "'.' and '..'"),
        ("spiffe://example.org/%41", "percent-encoding"),
        ("spiffe://example.org:8080/x", "port"),
        ("spiffe://user@example.org/x", "userinfo"),
        ("spiffe://example.org/x?q=1", "query"),
        ("spiffe://example.org/x#f", "fragment"),
        ("spiffe://Example.org/x", "lowercase"),
        ("spiffe://exa mple.org/x", "not allowed in a trust domain"),
        (
            "spiffe://example.org/a b",
            "not allowed in a SPIFFE ID path",
        ),
    ];
    for (id, rule) in cases {
        let out = s.cli(&[
            "entry",
            "create",
            "--spiffe-id",
            id,
            "--parent-id",
            PARENT,
            "--selector",
            "unix:uid:1",
        ]);
        assert_eq!(out.status.code(), Some(2), "{id:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains(rule), "{id:?}: expected {rule:?} in {err}");
    }
    let long = format!("spiffe://example.org/{}", "a".repeat(2048));
    let out = s.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        &long,
        "--parent-id",
        PARENT,
        "--selector",
        "unix:uid:1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("2048"));
    assert_eq!(s.cli_json(&["entry", "count"])["count"], 0);
}

#[test]
fn bad_ttls_selectors_and_server_rules() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let base = [
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/w",
        "--parent-id",
        PARENT,
    ];
    let run = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        s.cli(&a)
    };
    for (extra, code, needle) in [
        (
            &["--selector", "unix:uid:1", "--x509-svid-ttl", "10"][..],
            2,
            "missing unit",
        ),
        (
            &["--selector", "unix:uid:1", "--x509-svid-ttl", "1y"],
            2,
            "unknown unit",
        ),
        (
            &["--selector", "unix:uid:1", "--x509-svid-ttl=-5s"],
            2,
            "negative",
        ),
        (&["--selector", "unixuid1"], 2, "type:value"),
        (&["--selector", "Unix:uid:1"], 2, "[a-z0-9_-]+"),
        (&["--selector", "unix:"], 2, "empty value"),
        (
            &["--selector", "unix:uid:1", "--dns-name", "bad_name"],
            2,
            "DNS name",
        ),
        // Server-side rules: TTL above ca_ttl / 6 (default ca_ttl 24h → 4h).
        (
            &["--selector", "unix:uid:1", "--x509-svid-ttl", "5h"],
            1,
            "ca_ttl / 6 = 4h",
        ),
        // Another trust domain.
        (
            &["--selector", "unix:uid:1", "--federates-with", "Bad"],
            2,
            "lowercase",
        ),
    ] {
        let out = run(extra);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{extra:?}: {err}");
        assert!(
            err.contains(needle),
            "{extra:?}: expected {needle:?} in {err}"
        );
        assert!(err.trim_end().lines().count() <= 3, "{err}");
    }
    let out = s.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://other.org/w",
        "--parent-id",
        PARENT,
        "--selector",
        "unix:uid:1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not in this server's trust domain"));
    let out = s.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/sigil/server",
        "--parent-id",
        PARENT,
        "--selector",
        "unix:uid:1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("reserved"));
    assert_eq!(s.cli_json(&["entry", "count"])["count"], 0);
}

#[test]
fn bad_configs_are_refused_naming_the_key_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let good = format!(
        "trust_domain = \"example.org\"\ndata_dir = \"{}\"\n",
        data.display()
    );
    let cases = [
        (format!("{good}ca_tll = \"1h\"\n"), "ca_tll"),
        (format!("{good}ca_ttl = \"ten\"\n"), "ten"),
        (
            format!("{good}ca_ttl = \"6h\"\ndefault_x509_svid_ttl = \"2h\"\n"),
            "ca_ttl / 6",
        ),
        ("data_dir = \"/x\"\n".to_string(), "trust_domain"),
        (format!("{good}trust_domain = \"b\"\n"), "trust_domain"),
        (
            format!(
                "{good}[bundle_endpoint]\naddress = \"127.0.0.1:1\"\nprofile = \"https_web\"\n"
            ),
            "cert_file",
        ),
        ("trust_domain = [\n".to_string(), "invalid config"),
    ];
    for (cfg, needle) in &cases {
        let path = dir.path().join("server.toml");
        std::fs::write(&path, cfg).unwrap();
        for cmd in ["validate", "run"] {
            let out = sigil_server(&[cmd, "--config", path.to_str().unwrap()], &[]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{cmd} {cfg:?}: {err}");
            assert!(err.contains(needle), "{cmd}: expected {needle:?} in {err}");
        }
        assert!(!data.exists(), "nothing may be written for a bad config");
    }
    // A certificate file that is neither PEM nor DER.
    let garbage = dir.path().join("up.pem");
    std::fs::write(&garbage, "hello").unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(
        &path,
        format!(
            "{good}[upstream.disk]\ncert_file = \"{0}\"\nkey_file = \"{0}\"\n",
            garbage.display()
        ),
    )
    .unwrap();
    for cmd in ["validate", "run"] {
        let out = sigil_server(&[cmd, "--config", path.to_str().unwrap()], &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("cert_file") && err.contains(garbage.to_str().unwrap()),
            "{err}"
        );
    }
    assert!(!data.exists());
    std::fs::write(&path, &good).unwrap();
    let out = sigil_server(&["validate", "--config", path.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("configuration is valid"));
}

#[test]
fn token_generate_is_single_secret_and_usage_errors_exit_2() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let v = s.cli_json(&["token", "generate", "--ttl", "5m"]);
    let token = v["token"].as_str().unwrap();
    assert_eq!(token.len(), 32);
    let v2 = s.cli_json(&[
        "token",
        "generate",
        "--spiffe-id",
        "spiffe://example.org/node/a",
    ]);
    assert_ne!(v2["token"], v["token"]);
    let entry_id = v2["entry_id"].as_str().unwrap();
    let e = s.cli_json(&["entry", "show", "--entry-id", entry_id]);
    assert_eq!(
        e["entries"][0]["parent_id"],
        "spiffe://example.org/sigil/server"
    );
    // The node entry's selector carries the token's hash, never the token.
    let sel = e["entries"][0]["selectors"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(sel, v2["token"].as_str().unwrap());
    assert_eq!(sel.len(), 64);
    // Tokens never appear in the server log.
    assert!(!s.log_text().contains(token));
    assert!(!s.log_text().contains(v2["token"].as_str().unwrap()));

    let out = s.cli(&["token", "generate", "--ttl", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    let out = s.cli(&["entry", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    // Errors are one line on stderr and exit 1.
    let out = s.cli(&["entry", "show", "--entry-id", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim_end().lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn no_server_is_a_clear_error() {
    let out = sigil_server(&["healthcheck", "--socket", "/nonexistent/admin.sock"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("/nonexistent/admin.sock") && err.contains("is sigil-server running"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_itself_rejects_bad_ids_with_the_rule() {
    use sigil_proto::admin_api as pb;
    let s = TestServer::start(ServerOptions::default()).unwrap();
    // Straight to the gRPC API: no CLI validation in front of it.
    let mut c = sigil_server::admin::client::connect(&s.socket)
        .await
        .unwrap();
    let sel = vec![pb::Selector {
        r#type: "unix".into(),
        value: "uid:1".into(),
    }];
    let cases = [
        ("spiffe://example.org/a/", PARENT, "trailing '/'"),
        ("spiffe://Example.org/a", PARENT, "lowercase"),
        ("spiffe://example.org/%41", PARENT, "percent-encoding"),
        ("https://example.org/a", PARENT, "scheme"),
        (
            "spiffe://example.org/a",
            "spiffe://example.org//p",
            "parent_id",
        ),
        ("spiffe://example.org/a", "", "parent_id"),
    ];
    let entries: Vec<pb::Entry> = cases
        .iter()
        .map(|(id, parent, _)| pb::Entry {
            spiffe_id: id.to_string(),
            parent_id: parent.to_string(),
            selectors: sel.clone(),
            ..Default::default()
        })
        .collect();
    let results = c
        .create_entries(pb::CreateEntriesRequest {
            entries,
            allow_unknown_selectors: false,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    for ((id, _, rule), r) in cases.iter().zip(results) {
        match r.result {
            Some(pb::entry_result::Result::Error(e)) => {
                assert_eq!(e.code, tonic::Code::InvalidArgument as i32, "{id}");
                assert!(
                    e.message.contains(rule),
                    "{id}: expected {rule:?} in {}",
                    e.message
                );
            }
            other => panic!("{id} accepted: {other:?}"),
        }
    }
    let e = c
        .mint_x509_svid(pb::MintX509SvidRequest {
            spiffe_id: "spiffe://example.org/x/..".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("'.' and '..'"), "{e}");
    let e = c
        .list_entries(pb::ListEntriesRequest {
            by_spiffe_id: "spiffe://example.org/x?y".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("query"), "{e}");
    assert_eq!(s.cli_json(&["entry", "count"])["count"], 0);
}

/// Workload API §5.2.1 wants unique hints per response: entries that share a
/// hint and can match one workload are accepted but warned about, naming
/// both; an entry with the same hint that cannot overlap is not.
#[test]
fn entries_sharing_a_hint_for_one_workload_are_warned_about() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let with_hint = |id: &str, selectors: &[&str], hint: &str| {
        let mut args = vec!["entry", "create", "--spiffe-id", id, "--parent-id", PARENT];
        for sel in selectors {
            args.extend(["--selector", sel]);
        }
        args.extend(["--hint", hint]);
        s.cli_json(&args)["entries"][0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let a = with_hint("spiffe://example.org/a", &["unix:uid:1000"], "db");
    // Another uid: never the same workload, no warning.
    let other = with_hint("spiffe://example.org/c", &["unix:uid:2000"], "db");
    let warning = "entries with the same hint can match one workload";
    assert!(!s.log_text().contains(warning), "{}", s.log_text());
    // A superset of a's selectors: a workload with both matches both.
    let b = with_hint(
        "spiffe://example.org/b",
        &["unix:uid:1000", "unix:gid:1000"],
        "db",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        let log = s.log_text();
        if let Some(l) = log.lines().find(|l| l.contains(warning)) {
            break l.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no warning: {log}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(line.contains(&b) && line.contains(&a), "{line}");
    assert!(!line.contains(&other), "{line}");
}
