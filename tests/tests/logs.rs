//! `--log-format json` (here through `SIGIL_LOG_FORMAT`): every line both
//! daemons write is one JSON object with a level, a constant message and the
//! DESIGN §8 fields; no key material or join token reaches the log.

use std::collections::BTreeSet;

use sigil_tests::{ServerOptions, TestAgent, TestServer, sigil_agent, text};

fn lines(log: &str, who: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{who}: not JSON ({e}): {l}")))
        .collect()
}

/// Every field name used on any line.
fn fields(lines: &[serde_json::Value], who: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in lines {
        assert!(l["level"].is_string(), "{who}: no level: {l}");
        assert!(l["timestamp"].is_string(), "{who}: no timestamp: {l}");
        let f = l["fields"]
            .as_object()
            .unwrap_or_else(|| panic!("{who}: no fields: {l}"));
        assert!(f["message"].is_string(), "{who}: no message: {l}");
        out.extend(f.keys().cloned());
    }
    out
}

#[test]
fn json_logs_carry_fields_and_no_secrets() {
    // The only test in this binary: nothing else reads the environment.
    unsafe { std::env::set_var("SIGIL_LOG_FORMAT", "json") };
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let token = s.cli_json(&["token", "generate"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let a = TestAgent::start(&s).unwrap();
    s.register_uid(&a, "spiffe://example.org/me");
    let sock = a.socket.display().to_string();
    let out = sigil_agent(
        &[
            "api",
            "fetch",
            "x509",
            "--timeout",
            "30s",
            "--socket",
            &sock,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let server_log = s.log_text();
    let agent_log = a.log_text();
    let server = fields(&lines(&server_log, "server"), "server");
    let agent = fields(&lines(&agent_log, "agent"), "agent");
    for f in ["agent_id", "spiffe_id", "serial", "entry_id"] {
        assert!(
            server.contains(f),
            "server logs never carry {f}: {server:?}"
        );
    }
    for f in ["agent_id", "spiffe_id", "pid", "uid", "entry_id"] {
        assert!(agent.contains(f), "agent logs never carry {f}: {agent:?}");
    }

    // Secrets: private keys in any encoding, and an unspent join token.
    let stored = std::fs::read_to_string(a.data_dir.join("agent_svid.pem")).unwrap();
    let key = pem::parse_many(&stored)
        .unwrap()
        .into_iter()
        .find(|p| p.tag().contains("PRIVATE KEY"))
        .expect("the agent stores its key");
    let key_b64 =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key.contents());
    for (who, log) in [("server", &server_log), ("agent", &agent_log)] {
        assert!(!log.contains("PRIVATE KEY"), "{who} logged a PEM key");
        assert!(!log.contains(&key_b64[..40]), "{who} logged the agent key");
        assert!(!log.contains(&token), "{who} logged an unspent join token");
    }
}
