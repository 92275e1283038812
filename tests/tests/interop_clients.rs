//! Interop with real, unmodified client stacks (issue 12, DESIGN §5): the
//! real `sigil-server` and `sigil-agent` binaries, and clients installed from
//! their registries with pinned versions by `sigil_tests::interop` into
//! `target/interop/`:
//! - py-spiffe (grpcio = gRPC C-core, `cryptography`): X.509-SVID and bundles,
//!   an `X509Source` across an overlapping rotation, the security header,
//!   an unregistered uid;
//! - raw grpcio with py-spiffe's generated stubs and a hand-rolled call;
//! - Node `@grpc/grpc-js` (nghttp2) with Sigil's own `workload.proto`;
//! - the safe mTLS pattern with Python's `ssl` and SVIDs from py-spiffe.
//!
//! The Rust `spiffe` crate is exercised by `agent_e2e`, `ca_rotation` and the
//! mTLS example (`sigil_tests::mtls`). The client sources are under
//! `tests/interop/`; each script prints one JSON object asserted here.
//! Without a client stack these tests skip outside CI and fail in CI.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use sigil_tests::interop::{self, run_json};
use sigil_tests::{ServerOptions, TestAgent, TestServer};

const TD: &str = "example.org";
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Registers `id` for workloads of `uid` under `agent`.
fn register(s: &TestServer, a: &TestAgent, id: &str, uid: u32) {
    s.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        id,
        "--parent-id",
        &a.agent_id,
        "--selector",
        &format!("unix:uid:{uid}"),
    ]);
}

/// Runs a client until its JSON result says `"ok": true` (bounded: the
/// agent may not have synced the entry yet); panics with the last result.
fn until_ok(a: &TestAgent, limit: Duration, mut run: impl FnMut() -> Value) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let v = run();
        if v["ok"] == true {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "no success in {limit:?}; last result:\n{v:#}\nagent log tail:\n{}",
                tail(&a.log_text(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The server's bundle as lowercase hex DER, sorted.
fn bundle_hex(s: &TestServer) -> Vec<String> {
    let mut v: Vec<String> = s
        .bundle()
        .iter()
        .map(|c| c.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    v.sort();
    v
}

/// py-spiffe's fetch (fetch.py) as the test process, retried until it works.
fn py_fetch(py: &interop::Python, a: &TestAgent, write: Option<&Path>) -> Value {
    let ep = a.endpoint();
    let w = write.map(|p| p.display().to_string());
    until_ok(a, Duration::from_secs(30), || {
        let mut args = vec![ep.as_str()];
        if let Some(w) = &w {
            args.extend(["--write", w]);
        }
        run_json(&mut py.script("fetch.py", &args))
    })
}

fn assert_pinned_python(v: &Value) {
    let vs = &v["versions"];
    assert_eq!(vs["spiffe"], "0.3.2", "{vs}");
    assert_eq!(vs["grpcio"], "1.85.3", "{vs}");
    assert_eq!(vs["cryptography"], "50.0.2", "{vs}");
}

/// The SVID a fetch.py result carries must be a well-formed SVID for `id`.
fn assert_svid(v: &Value, id: &str) {
    let svid = &v["svid"];
    assert_eq!(svid["spiffe_id"], id, "{v:#}");
    let leaf = &svid["chain"][0];
    assert_eq!(leaf["uris"], serde_json::json!([id]), "{leaf:#}");
    assert_eq!(leaf["ca"], false, "{leaf:#}");
    // Every extension decoded by `cryptography`: SAN, basicConstraints,
    // keyUsage, extKeyUsage, SKI, AKI.
    for oid in [
        "2.5.29.17",
        "2.5.29.19",
        "2.5.29.15",
        "2.5.29.37",
        "2.5.29.14",
        "2.5.29.35",
    ] {
        assert!(
            leaf["extensions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e == oid),
            "{oid} missing: {leaf:#}"
        );
    }
    assert_eq!(svid["key_matches_leaf"], true, "{v:#}");
    assert_eq!(svid["chains_to_bundle"], true, "{v:#}");
}

#[test]
fn py_spiffe_fetches_the_x509_svid_and_bundles() {
    let Some(py) = interop::python() else { return };
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    let id = "spiffe://example.org/python";
    s.register_uid(&a, id);

    let v = py_fetch(&py, &a, None);
    assert_pinned_python(&v);
    assert_svid(&v, id);
    // The own trust domain's bundle (and no other) is there and equals the
    // server's.
    let bundles = v["bundles"].as_object().unwrap();
    assert_eq!(bundles.keys().collect::<Vec<_>>(), vec![TD], "{v:#}");
    let got: Vec<String> = bundles[TD]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, bundle_hex(&s));
}

#[test]
fn py_spiffe_x509_source_sees_an_overlapping_rotation() {
    let Some(py) = interop::python() else { return };
    // 20 s SVIDs: the agent renews at half life (± 10 %), ~10 s in.
    let s = TestServer::start(ServerOptions {
        extra: "ca_ttl = \"3m\"\ndefault_x509_svid_ttl = \"20s\"\nagent_svid_ttl = \"30s\"\n"
            .into(),
        ..Default::default()
    })
    .unwrap();
    let a = TestAgent::start(&s).unwrap();
    let id = "spiffe://example.org/rotating";
    s.register_uid(&a, id);
    py_fetch(&py, &a, None);

    let v = run_json(&mut py.script("rotation.py", &[&a.endpoint(), "30"]));
    assert_pinned_python(&v);
    assert_eq!(
        v["ok"], true,
        "no rotation seen by the X509Source in 30 s: {v:#}"
    );
    assert_eq!(v["spiffe_id"], id);
    assert_eq!(v["new"]["spiffe_id"], id);
    let (old, new) = (&v["old"], &v["new"]);
    assert_ne!(old["serial"], new["serial"]);
    let n = |x: &Value| x.as_i64().unwrap();
    // Seen while the old SVID was still valid, and the two overlap.
    assert!(
        n(&v["seen_at"]) < n(&old["not_after"]),
        "the new SVID reached the source only after the old one expired: {v:#}"
    );
    assert!(n(&new["not_before"]) < n(&old["not_after"]), "{v:#}");
    assert!(n(&new["not_after"]) > n(&old["not_after"]), "{v:#}");
    assert!(n(&v["updates"]) >= 1, "{v:#}");
}

#[test]
fn grpcio_call_without_the_security_header_gets_invalid_argument() {
    let Some(py) = interop::python() else { return };
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    let id = "spiffe://example.org/raw";
    s.register_uid(&a, id);
    // The same raw channel works with the header (the control), so the
    // refusals below are Sigil's answer, not a transport failure.
    let v = until_ok(&a, Duration::from_secs(30), || {
        let mut v = run_json(&mut py.script("raw_grpc.py", &[&a.endpoint()]));
        v["ok"] = v["stub_with_header"]["ok"].clone();
        v
    });
    assert_pinned_python(&v);
    assert_eq!(v["stub_with_header"]["spiffe_ids"], serde_json::json!([id]));
    for case in ["stub_no_header", "raw_no_header"] {
        let r = &v[case];
        assert_eq!(r["ok"], false, "{case}: {v:#}");
        assert_eq!(r["grpc_code"], "INVALID_ARGUMENT", "{case}: {v:#}");
        assert_eq!(
            r["grpc_details"], "security header missing from request",
            "{case}: {v:#}"
        );
    }
}

#[test]
fn py_spiffe_unregistered_uid_gets_permission_denied() {
    if !is_root() {
        eprintln!("SKIPPED: running a workload as uid {NOBODY} needs root (setpriv)");
        return;
    }
    let Some(py) = interop::python() else { return };
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    s.register_uid(&a, "spiffe://example.org/registered");
    // The registered uid gets its SVID: the agent is synced and the channel works.
    py_fetch(&py, &a, None);

    let v = run_json(&mut py.script_as(NOBODY, "fetch.py", &[&a.endpoint()]));
    assert_eq!(v["uid"], NOBODY, "{v:#}");
    assert_eq!(v["ok"], false, "{v:#}");
    assert_eq!(v["grpc_code"], "PERMISSION_DENIED", "{v:#}");
    assert_eq!(v["grpc_details"], "no identity issued", "{v:#}");
    assert_eq!(v["error_type"], "FetchX509SvidError", "{v:#}");
}

#[test]
fn node_grpc_js_fetches_the_x509_svid() {
    let Some(node) = interop::node() else { return };
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    let id = "spiffe://example.org/node";
    s.register_uid(&a, id);
    // unix:///abs/path, the SPIFFE_ENDPOINT_SOCKET form.
    let ep = format!("unix://{}", a.socket.display());
    let proto = interop::workload_proto().display().to_string();
    let v = until_ok(&a, Duration::from_secs(30), || {
        run_json(&mut node.script("fetch_x509.js", &[&ep, &proto]))
    });
    let vs = &v["versions"];
    assert_eq!(vs["@grpc/grpc-js"], "1.14.7", "{vs}");
    assert_eq!(vs["@grpc/proto-loader"], "0.8.1", "{vs}");
    assert_eq!(v["no_header"]["grpc_code"], "INVALID_ARGUMENT", "{v:#}");
    assert_eq!(
        v["no_header"]["grpc_details"],
        "security header missing from request"
    );
    assert_eq!(v["svid_count"], 1, "{v:#}");
    assert_eq!(v["spiffe_id"], id, "{v:#}");
    let leaf = &v["chain"][0];
    assert_eq!(leaf["subject_alt_name"], format!("URI:{id}"), "{v:#}");
    assert_eq!(leaf["ca"], false, "{v:#}");
    assert_eq!(v["key_matches_leaf"], true, "{v:#}");
    assert_eq!(v["chains_to_bundle"], true, "{v:#}");
    assert_eq!(v["bundle_len"], s.bundle().len(), "{v:#}");
}

#[test]
fn python_ssl_mtls_with_py_spiffe_svids_admits_only_the_allowed_peer() {
    if !is_root() {
        eprintln!("SKIPPED: two workloads of different uids need root (setpriv)");
        return;
    }
    let Some(py) = interop::python() else { return };
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    // Two workloads: the client (this uid) and the server (uid 65534).
    let client_id = "spiffe://example.org/client";
    let server_id = "spiffe://example.org/server";
    s.register_uid(&a, client_id);
    register(&s, &a, server_id, NOBODY);

    let tmp = tempfile::tempdir().unwrap();
    let client_dir = tmp.path().join("client");
    let server_dir = tmp.path().join("server");
    std::fs::create_dir(&server_dir).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let nobody = Some(nix::unistd::Uid::from_raw(NOBODY));
        nix::unistd::chown(
            &server_dir,
            nobody,
            Some(nix::unistd::Gid::from_raw(NOBODY)),
        )
        .unwrap();
    }
    let c = py_fetch(&py, &a, Some(&client_dir));
    assert_svid(&c, client_id);
    let sv = until_ok(&a, Duration::from_secs(30), || {
        run_json(&mut py.script_as(
            NOBODY,
            "fetch.py",
            &[&a.endpoint(), "--write", &server_dir.display().to_string()],
        ))
    });
    assert_eq!(sv["uid"], NOBODY, "{sv:#}");
    assert_svid(&sv, server_id);

    let v = run_json(&mut py.script(
        "mtls.py",
        &[
            "--server",
            &server_dir.display().to_string(),
            "--server-id",
            server_id,
            "--allow",
            client_id,
            "--allowed-client",
            &client_dir.display().to_string(),
            // A valid SVID of the other workload, not on the allow-list.
            "--unlisted-client",
            &server_dir.display().to_string(),
        ],
    ));
    let cases = &v["cases"];
    // The server trusts the bundle and nothing else.
    let n = s.bundle().len();
    assert_eq!(v["server_trust_store"]["x509_ca"], n, "{v:#}");
    assert_eq!(v["server_trust_store"]["x509"], n, "{v:#}");

    // The allowed peer: handshake, then admitted by the allow-list; it saw
    // the server's SPIFFE ID.
    let ok = &cases["allowed"];
    assert_eq!(ok["server"]["outcome"], "accepted", "{ok:#}");
    assert_eq!(ok["server"]["peer_ids"], serde_json::json!([client_id]));
    assert_eq!(ok["client"]["stage"], "done", "{ok:#}");
    assert_eq!(ok["client"]["received"], format!("WELCOME {client_id}\n"));
    assert_eq!(ok["client"]["server_ids"], serde_json::json!([server_id]));

    // (a) No certificate: refused in the handshake.
    let r = &cases["no_cert"];
    assert_eq!(r["server"]["stage"], "handshake", "{r:#}");
    assert_eq!(
        r["server"]["reason"], "PEER_DID_NOT_RETURN_A_CERTIFICATE",
        "{r:#}"
    );
    // TLS 1.3: the client learns it from the server's alert.
    refused_in_handshake(r, "TLSV13_ALERT_CERTIFICATE_REQUIRED");

    // (b) Self-signed, carrying the allowed ID: the chain does not verify.
    assert_eq!(
        v["self_signed_ids"],
        serde_json::json!([client_id]),
        "{v:#}"
    );
    let r = &cases["self_signed"];
    assert_eq!(r["server"]["stage"], "handshake", "{r:#}");
    assert_eq!(
        r["server"]["error_type"], "SSLCertVerificationError",
        "{r:#}"
    );
    assert_eq!(r["server"]["reason"], "CERTIFICATE_VERIFY_FAILED", "{r:#}");
    // X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    assert_eq!(r["server"]["verify_code"], 18, "{r:#}");
    refused_in_handshake(r, "TLSV1_ALERT_UNKNOWN_CA");

    // (c) A valid SVID that is not on the list: the handshake succeeds and
    // the allow-list refuses it.
    let r = &cases["not_listed"];
    assert_eq!(r["server"]["stage"], "application", "{r:#}");
    assert_eq!(r["server"]["outcome"], "refused", "{r:#}");
    assert_eq!(r["server"]["peer_ids"], serde_json::json!([server_id]));
    assert_eq!(r["client"]["stage"], "done", "{r:#}");
    assert_eq!(r["client"]["received"], "DENIED\n", "{r:#}");
}

/// The client side of a handshake refusal: the server's TLS alert, never a
/// greeting.
fn refused_in_handshake(r: &Value, alert: &str) {
    let stage = r["client"]["stage"].as_str().unwrap_or("");
    assert!(
        stage == "handshake" || stage == "read",
        "client should see a TLS failure: {r:#}"
    );
    assert_eq!(r["client"]["error_type"], "SSLError", "{r:#}");
    assert_eq!(r["client"]["reason"], alert, "{r:#}");
    assert_eq!(r["client"]["received"].as_str().unwrap_or(""), "", "{r:#}");
}
