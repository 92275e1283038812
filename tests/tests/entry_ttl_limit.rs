//! The X.509-SVID TTL ≤ CA TTL / 6 rule after `ca_ttl` is lowered (issue 20
//! item 7), with the real server: an entry created under the old `ca_ttl`
//! is reported at start (naming it, its TTL and the limit; the server keeps
//! serving and caps its SVIDs), updates of it are refused until its TTL is
//! lowered, and once lowered the start reports nothing.

use sigil_tests::{ServerOptions, TestServer, text};

const WARNING: &str = "entry X.509-SVID TTL exceeds ca_ttl / 6";

fn set_ca_ttl(s: &TestServer, from: &str, to: &str) {
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    let old = format!("ca_ttl = \"{from}\"");
    assert!(cfg.contains(&old), "{cfg}");
    std::fs::write(&s.config, cfg.replace(&old, &format!("ca_ttl = \"{to}\""))).unwrap();
}

#[test]
fn i20_7_start_reports_offending_entries() {
    let mut s = TestServer::start(ServerOptions {
        extra: "ca_ttl = \"24h\"\n".into(),
        ..Default::default()
    })
    .unwrap();
    let created = s.cli_json(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/long",
        "--parent-id",
        "spiffe://example.org/sigil/agent/join_token/x",
        "--selector",
        "unix:uid:1000",
        "--x509-svid-ttl",
        "4h",
    ]);
    let id = created["entries"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created:#}"))
        .to_string();
    assert!(!s.log_text().contains(WARNING));

    // ca_ttl lowered to 12h: the limit is now 2h.
    s.stop();
    set_ca_ttl(&s, "24h", "12h");
    let before = s.log_text().len();
    s.spawn()
        .expect("the server keeps starting with an offending entry");
    let log = s.log_text()[before..].to_string();
    let line = log
        .lines()
        .find(|l| l.contains(WARNING))
        .unwrap_or_else(|| panic!("no start warning for the offending entry:\n{log}"));
    assert!(
        line.contains(&id) && line.contains("4h") && line.contains("2h"),
        "names the entry, its TTL and the limit: {line}"
    );

    // An update that leaves the TTL is refused, naming the same.
    let out = s.cli(&["entry", "update", "--entry-id", &id, "--hint", "web"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "update must be refused: {err}");
    assert!(
        err.contains(&id) && err.contains("4h") && err.contains("ca_ttl / 6 = 2h"),
        "names the entry, the value and the limit: {err}"
    );
    // Lowering it passes; the next start reports nothing.
    s.cli_ok(&[
        "entry",
        "update",
        "--entry-id",
        &id,
        "--x509-svid-ttl",
        "1h",
    ]);
    s.stop();
    let before = s.log_text().len();
    s.spawn().unwrap();
    let log = s.log_text()[before..].to_string();
    assert!(!log.contains(WARNING), "{log}");
}
