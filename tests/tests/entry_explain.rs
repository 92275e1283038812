//! `sigil-server entry explain` against the real server and agent (issue
//! 18 item 4): the agent's debug line for a caller that got `no identity
//! issued` names its selectors; pasted into `entry explain` they show the
//! entries that would be issued (directly and through a node alias), the
//! near miss with the exact missing selector, an entry under a wrong
//! parent (another agent, and a node alias the agent does not match), and
//! an expired entry. A caller the admin socket does not admit is refused.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sigil_tests::poll::wait_for;
use sigil_tests::{ServerOptions, TestAgent, TestServer, bin, run_bounded, sigil_agent, text};

const LOG_LINE: &str = "no identity issued for the attested selectors";

/// The `--selector 'T:V'` values of the agent's last no-identity line.
fn logged_selectors(agent: &TestAgent) -> Vec<String> {
    let log = agent.log_text();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(LOG_LINE))
        .unwrap_or_else(|| panic!("no {LOG_LINE:?} line in the agent log:\n{log}"));
    line.split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// `entry explain --parent-id AGENT --selector S …`.
fn explain_args<'a>(agent_id: &'a str, selectors: &'a [String]) -> Vec<&'a str> {
    let mut args = vec!["entry", "explain", "--parent-id", agent_id];
    for s in selectors {
        args.extend(["--selector", s.as_str()]);
    }
    args
}

fn explain(server: &TestServer, agent_id: &str, selectors: &[String], extra: &[&str]) -> Value {
    let mut args = explain_args(agent_id, selectors);
    args.extend(extra);
    server.cli_json(&args)
}

fn ids(v: &Value, list: &str) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("{list} missing: {v:#}"))
        .iter()
        .map(|x| x["entry"]["spiffe_id"].as_str().unwrap().to_string())
        .collect()
}

fn find<'a>(v: &'a Value, list: &str, spiffe_id: &str) -> &'a Value {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["entry"]["spiffe_id"] == spiffe_id)
        .unwrap_or_else(|| panic!("{spiffe_id} not in {list}: {v:#}"))
}

#[test]
fn entry_explain_names_near_miss_wrong_parent_expired_and_alias() {
    let server = TestServer::start(ServerOptions::default()).unwrap();
    let agent = TestAgent::start(&server).unwrap();
    let sock = agent.socket.display().to_string();
    let uid = nix::unistd::getuid().as_raw();
    let uid_sel = format!("unix:uid:{uid}");

    // A caller with no entry: refused, and the agent logs its selectors.
    let out = sigil_agent(
        &["api", "fetch", "x509", "--socket", &sock, "--timeout", "1s"],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no identity issued"),
        "{}",
        text(&out.stderr)
    );
    let pasted = logged_selectors(&agent);
    assert!(pasted.contains(&uid_sel), "{pasted:?}");

    let node_sel = server.cli_json(&["agent", "show", "--spiffe-id", &agent.agent_id])["agents"][0]
        ["selectors"][0]
        .as_str()
        .unwrap()
        .to_string();
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let expires = expires
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let other_agent =
        "spiffe://example.org/sigil/agent/join_token/0123456789abcdef0123456789abcdef";
    let p = agent.agent_id.as_str();
    let other_rack_sel = format!("join_token:{}", "f".repeat(64));
    // (SPIFFE ID, parent or "node", selectors, expires_at)
    let entries: [(&str, &str, Vec<&str>, Option<&str>); 8] = [
        ("near", p, vec![&uid_sel, "unix:gid:4242"], None),
        (
            "far",
            p,
            vec![&uid_sel, "unix:gid:4243", "unix:user:nobody-here"],
            None,
        ),
        ("wrong-agent", other_agent, vec![&uid_sel], None),
        ("rack", "node", vec![&node_sel], None),
        (
            "via-alias",
            "spiffe://example.org/rack",
            vec![&uid_sel],
            None,
        ),
        ("other-rack", "node", vec![&other_rack_sel], None),
        (
            "under-other-rack",
            "spiffe://example.org/other-rack",
            vec![&uid_sel],
            None,
        ),
        ("expiring", p, vec![&uid_sel], Some(&expires)),
    ];
    for (name, parent, sels, expires_at) in entries {
        let id = format!("spiffe://example.org/{name}");
        let mut a = vec!["entry", "create", "--spiffe-id", &id];
        match parent {
            "node" => a.push("--node"),
            p => a.extend(["--parent-id", p]),
        }
        for s in sels {
            a.extend(["--selector", s]);
        }
        if let Some(t) = expires_at {
            a.extend(["--expires-at", t]);
        }
        server.cli_ok(&a);
    }

    let v = explain(&server, p, &pasted, &[]);
    assert_eq!(v["agent_known"], true, "{v:#}");
    assert_eq!(
        v["aliases"],
        serde_json::json!(["spiffe://example.org/rack"]),
        "{v:#}"
    );
    // Issued: directly, and through the node alias.
    let issued = ids(&v, "issued");
    assert!(
        issued.contains(&"spiffe://example.org/via-alias".to_string()),
        "{v:#}"
    );
    assert_eq!(
        find(&v, "issued", "spiffe://example.org/via-alias")["via_alias"],
        "spiffe://example.org/rack"
    );
    // The near miss names exactly the missing selector, nearest first.
    assert_eq!(
        ids(&v, "near_misses"),
        vec!["spiffe://example.org/near", "spiffe://example.org/far"],
        "{v:#}"
    );
    assert_eq!(
        find(&v, "near_misses", "spiffe://example.org/near")["missing_selectors"],
        serde_json::json!(["unix:gid:4242"])
    );
    // Wrong parent: another agent, and an alias this agent does not match.
    let wrong = ids(&v, "wrong_parent");
    assert!(
        wrong.contains(&"spiffe://example.org/wrong-agent".to_string()),
        "{v:#}"
    );
    let other = find(&v, "wrong_parent", "spiffe://example.org/under-other-rack");
    assert!(
        other["reason"]
            .as_str()
            .unwrap()
            .contains("node alias the agent does not have")
            && other["reason"]
                .as_str()
                .unwrap()
                .contains("join_token:ffff"),
        "{other:#}"
    );
    // The cap: one near miss shown, one left off.
    let capped = explain(&server, p, &pasted, &["--limit", "1"]);
    assert_eq!(
        ids(&capped, "near_misses"),
        vec!["spiffe://example.org/near"]
    );
    assert_eq!(capped["near_misses_left_off"], 1, "{capped:#}");

    // Text: the operator reads the missing selector by name.
    let out = server.cli_ok(&explain_args(p, &pasted));
    assert!(
        out.contains("spiffe://example.org/near") && out.contains("[missing: unix:gid:4242]"),
        "{out}"
    );

    // The expiring entry moves from issued to expired once its time passes.
    let v = wait_for(Duration::from_secs(15), "the entry to expire", || {
        let v = explain(&server, p, &pasted, &[]);
        (!ids(&v, "expired").is_empty()).then_some(v)
    });
    assert_eq!(
        ids(&v, "expired"),
        vec!["spiffe://example.org/expiring"],
        "{v:#}"
    );
    assert!(
        find(&v, "expired", "spiffe://example.org/expiring")["reason"]
            .as_str()
            .unwrap()
            .contains("expired at")
    );
    assert!(!ids(&v, "issued").contains(&"spiffe://example.org/expiring".to_string()));
}

#[test]
fn entry_explain_refuses_a_caller_the_admin_socket_does_not_admit() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to run the server as another user");
        return;
    }
    // The server runs as nobody: root is not its uid nor allowed.
    let s = TestServer::start(ServerOptions {
        run_as: Some(65534),
        ..Default::default()
    })
    .unwrap();
    let out = run_bounded(
        Command::new(bin("sigil-server"))
            .args(["entry", "explain", "--parent-id"])
            .arg("spiffe://example.org/sigil/agent/join_token/0123456789abcdef0123456789abcdef")
            .args(["--selector", "unix:uid:0", "--socket"])
            .arg(&s.socket),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("uid 0 may not use the admin socket"), "{err}");
}
