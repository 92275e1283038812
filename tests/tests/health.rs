//! `[health]`: `/metrics` (Prometheus text), `/live` and `/ready` on both
//! daemons, with the real binaries. The agent is ready only once its first
//! sync has been served: 503 while the server is away, 200 after.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sigil_tests::prom::{self, Family, http_get};
use sigil_tests::{ServerOptions, TestAgent, TestServer, free_addr, sigil_agent, text};

fn health(addr: SocketAddr) -> String {
    format!("\n[health]\naddress = \"{addr}\"\n")
}

fn metrics(addr: SocketAddr) -> BTreeMap<String, Family> {
    let (code, body) = http_get(addr, "/metrics").unwrap();
    assert_eq!(code, 200, "{body}");
    prom::parse(&body).unwrap_or_else(|e| panic!("not Prometheus text: {e:#}\n{body}"))
}

fn family<'a>(m: &'a BTreeMap<String, Family>, name: &str, kind: &str) -> &'a Family {
    let f = m
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing; have {:?}", m.keys()));
    assert_eq!(f.kind, kind, "{name}");
    assert!(
        f.help.as_deref().is_some_and(|h| !h.is_empty()),
        "{name} has no HELP"
    );
    f
}

fn value(m: &BTreeMap<String, Family>, name: &str, kind: &str, labels: &[(&str, &str)]) -> f64 {
    family(m, name, kind)
        .value(name, labels)
        .unwrap_or_else(|| panic!("{name}{labels:?} missing: {:?}", m[name].samples))
}

fn fetch(a: &TestAgent, timeout: &str) -> std::process::Output {
    let sock = a.socket.display().to_string();
    sigil_agent(
        &[
            "api",
            "fetch",
            "x509",
            "--timeout",
            timeout,
            "--socket",
            &sock,
        ],
        &[],
    )
}

/// Polls `path` until it answers `want` (bounded); returns the body.
fn wait_for(addr: SocketAddr, path: &str, want: u16, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let got = http_get(addr, path);
        if let Ok((code, body)) = &got
            && *code == want
        {
            return body.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {want} in {limit:?}; last: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn server_serves_probes_and_metrics() {
    let h = free_addr();
    let s = TestServer::start(ServerOptions {
        extra: health(h),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(http_get(h, "/live").unwrap(), (200, "live\n".into()));
    assert_eq!(http_get(h, "/ready").unwrap(), (200, "ready\n".into()));
    assert_eq!(http_get(h, "/nothing").unwrap().0, 404);

    let a = TestAgent::start(&s).unwrap();
    s.register_uid(&a, "spiffe://example.org/me");
    let out = fetch(&a, "30s");
    assert!(out.status.success(), "{}", text(&out.stderr));

    let m = metrics(h);
    let issued = "sigil_server_svids_issued_total";
    for kind in ["server", "agent", "workload"] {
        let n = value(&m, issued, "counter", &[("kind", kind), ("result", "ok")]);
        assert!(n >= 1.0, "{kind}: {n}");
    }
    let hist = family(&m, "sigil_server_signing_duration_seconds", "histogram");
    assert!(hist.sum("sigil_server_signing_duration_seconds_count") >= 3.0);
    assert!(hist.sum("sigil_server_signing_duration_seconds_sum") > 0.0);
    let att = "sigil_server_node_attestations_total";
    assert_eq!(
        value(
            &m,
            att,
            "counter",
            &[("attestor", "join_token"), ("result", "ok")]
        ),
        1.0
    );
    assert!(
        value(
            &m,
            "sigil_server_ca_events_total",
            "counter",
            &[("event", "activate")]
        ) >= 1.0
    );
    assert_eq!(
        value(&m, "sigil_server_connected_agents", "gauge", &[]),
        1.0
    );
    assert_eq!(value(&m, "sigil_server_entries", "gauge", &[]), 1.0);
    let ca = value(&m, "sigil_server_ca_expiry_seconds", "gauge", &[]);
    assert!(ca > 3600.0 && ca <= 24.0 * 3600.0, "{ca}");
    let svid = value(&m, "sigil_server_svid_expiry_seconds", "gauge", &[]);
    assert!(svid > 0.0 && svid <= 3600.0, "{svid}");

    // A refused attestation (a spent token) is counted with its code.
    let bundle = a.dir.path().join("bundle.pem");
    let cfg = a.dir.path().join("again.toml");
    std::fs::write(
        &cfg,
        format!(
            "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nserver_address = \"{}\"\n\
             trust_bundle_path = \"{}\"\nsocket_path = \"{}\"\n",
            a.dir.path().join("again").display(),
            s.agent_addr,
            bundle.display(),
            a.dir.path().join("again.sock").display()
        ),
    )
    .unwrap();
    let token = a.agent_id.rsplit('/').next().unwrap();
    let out = sigil_tests::run_bounded(
        std::process::Command::new(sigil_tests::bin("sigil-agent"))
            .args(["run", "--config"])
            .arg(&cfg)
            .args(["--join-token", token]),
    );
    assert!(!out.status.success());
    let m = metrics(h);
    assert_eq!(
        value(
            &m,
            att,
            "counter",
            &[("attestor", "join_token"), ("result", "permission_denied")]
        ),
        1.0,
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn agent_is_ready_after_its_first_sync_and_counts_what_it_does() {
    let mut s = TestServer::start(ServerOptions::default()).unwrap();
    let h = free_addr();
    let mut a = TestAgent::start_with(&s, &health(h)).unwrap();
    assert_eq!(http_get(h, "/live").unwrap(), (200, "live\n".into()));
    wait_for(h, "/ready", 200, Duration::from_secs(30));

    // A caller with no entry is refused; then one with an entry is served.
    let out = fetch(&a, "1s");
    assert!(!out.status.success());
    s.register_uid(&a, "spiffe://example.org/me");
    let out = fetch(&a, "30s");
    assert!(out.status.success(), "{}", text(&out.stderr));

    let m = metrics(h);
    let calls = "sigil_agent_workload_api_calls_total";
    let fetch_ok = [("method", "FetchX509SVID"), ("code", "ok")];
    assert!(value(&m, calls, "counter", &fetch_ok) >= 1.0);
    let denied = [("method", "FetchX509SVID"), ("code", "permission_denied")];
    assert!(value(&m, calls, "counter", &denied) >= 1.0);
    family(&m, "sigil_agent_workload_streams", "gauge");
    assert!(
        value(
            &m,
            "sigil_agent_workload_attestations_total",
            "counter",
            &[("result", "ok")]
        ) >= 2.0
    );
    assert_eq!(
        value(
            &m,
            "sigil_agent_node_attestations_total",
            "counter",
            &[("attestor", "join_token"), ("result", "ok")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "sigil_agent_svids_issued_total",
            "counter",
            &[("result", "ok")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "sigil_agent_svid_rotations_total",
            "counter",
            &[("reason", "missing")]
        ),
        1.0
    );
    assert_eq!(
        value(&m, "sigil_agent_sync_errors_total", "counter", &[]),
        0.0
    );
    assert_eq!(value(&m, "sigil_agent_cached_svids", "gauge", &[]), 1.0);
    for (name, max) in [
        ("sigil_agent_svid_expiry_seconds", 3600.0),
        ("sigil_agent_agent_svid_expiry_seconds", 3600.0),
        ("sigil_agent_ca_expiry_seconds", 24.0 * 3600.0),
    ] {
        let v = value(&m, name, "gauge", &[]);
        assert!(v > 0.0 && v <= max, "{name} = {v}");
    }

    // Restarted while the server is away: live but not ready; ready again
    // once the server is back and the first sync has been served.
    s.kill();
    a.kill();
    // Not waiting for `healthcheck`: it says what /ready says.
    a.start_process(None).unwrap();
    wait_for(h, "/live", 200, Duration::from_secs(10));
    let (code, body) = http_get(h, "/ready").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("not ready: "), "{body}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(http_get(h, "/ready").unwrap().0, 503);
    let m = metrics(h);
    assert!(value(&m, "sigil_agent_sync_errors_total", "counter", &[]) >= 1.0);
    s.spawn().unwrap();
    wait_for(h, "/ready", 200, Duration::from_secs(45));
}
