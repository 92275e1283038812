//! `ca revoke` and the agents whose own SVID the CA signed (issue 20 item
//! 1, server half): with the real server and agent, revoking a tainted CA
//! that an attested agent's current SVID chains to is refused, naming how
//! many agents and which; `--force` revokes and says what it broke.

use sigil_tests::{ServerOptions, TestAgent, TestServer, text};

fn slot_with(view: &serde_json::Value, state: &str) -> (String, String) {
    let s = view["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["state"] == state)
        .unwrap_or_else(|| panic!("no {state} slot: {view:#}"));
    (
        s["slot"].as_str().unwrap().to_string(),
        s["serial"].as_str().unwrap().to_string(),
    )
}

fn bundle_has(s: &TestServer, serial_hex: &str) -> bool {
    let want = serial_hex.trim_start_matches('0').to_ascii_lowercase();
    s.bundle().iter().any(|der| {
        let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
        let got: String = c.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
        got.trim_start_matches('0') == want
    })
}

#[test]
fn i20_1_revoke_refused_while_an_agent_chains_to_the_ca() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let mut a = TestAgent::start(&s).unwrap();
    let agents = s.cli_json(&["agent", "list"]);
    let agent_id = agents["agents"][0]["spiffe_id"]
        .as_str()
        .expect("one attested agent")
        .to_string();
    let (slot0, serial0) = slot_with(&s.cli_json(&["ca", "show"]), "active");

    // Rotate: the agent's own SVID stays signed by the old CA. The agent is
    // stopped first, as an agent that is offline during the rotation would
    // be, so nothing can move its SVID before the revoke.
    s.cli_ok(&["ca", "prepare"]);
    s.cli_ok(&["ca", "activate", "--force"]);
    a.kill();
    s.cli_ok(&["ca", "taint", "--slot", &slot0]);

    let out = s.cli(&["ca", "revoke", "--slot", &slot0]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "revoke must be refused while the agent chains to the CA: {}{err}",
        text(&out.stdout)
    );
    assert!(err.contains("1 attested agent "), "names how many: {err}");
    assert!(err.contains(&agent_id), "names the agent: {err}");
    assert!(err.contains("--force"), "says how to override: {err}");
    assert!(bundle_has(&s, &serial0), "a refused revoke changes nothing");

    let out = s.cli(&["ca", "revoke", "--slot", &slot0, "--force"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "forced revoke: {err}");
    assert!(
        err.contains("warning:") && err.contains("1 attested agent ") && err.contains(&agent_id),
        "a forced revoke says what it breaks: {err}"
    );
    assert!(!bundle_has(&s, &serial0), "forced revoke removed the CA");
    assert!(
        s.log_text()
            .contains("revoking a CA that agents still depend on"),
        "the server logs the forced revoke"
    );
}
