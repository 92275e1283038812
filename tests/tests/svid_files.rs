//! The files workloads get (issue 22 item 7), through the real server,
//! agent and CLI: `svid.pem` written by `sigil-agent api fetch x509 --write`
//! and by `sigil-agent helper` holds the leaf then the intermediates and
//! never a root (the root is in `bundle.pem` only), with and without an
//! upstream CA; and the default SVID (first in the Workload API response,
//! what `--write` and a helper without `hint` write) is the oldest matching
//! entry, so adding a newer entry whose SPIFFE ID sorts first changes nothing.

use std::path::Path;
use std::time::Duration;

use sigil_proto::test_pki::{TestCa, ca_params};
use sigil_tests::poll::wait_for;
use sigil_tests::{ServerOptions, TestAgent, TestServer, sigil_agent, text};

/// Registers `id` for this test's uid under `a`; returns its `created_at`
/// (unix seconds).
fn register(s: &TestServer, a: &TestAgent, id: &str) -> i64 {
    s.register_uid(a, id);
    unix_time(&s.cli_json(&["entry", "show", "--spiffe-id", id])["entries"][0]["created_at"])
}

/// `api fetch x509` for this process with `args`.
fn fetch(a: &TestAgent, args: &[&str]) -> std::process::Output {
    let sock = a.socket.display().to_string();
    sigil_agent(
        &[&["api", "fetch", "x509", "--socket", &sock], args].concat(),
        &[],
    )
}

/// `api fetch x509 --output json` for this process; `None` until it
/// answers with `n` SVIDs.
fn fetch_json(a: &TestAgent, n: usize) -> Option<serde_json::Value> {
    let out = fetch(a, &["--output", "json"]);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    (v["svids"].as_array()?.len() == n).then_some(v)
}

/// `api fetch x509 --write dir`, which must succeed.
fn fetch_write(a: &TestAgent, dir: &Path) {
    let out = fetch(a, &["--write", dir.to_str().unwrap()]);
    assert!(out.status.success(), "--write: {}", text(&out.stderr));
}

/// `helper --once` writing into `dir`, which must succeed.
fn helper_once(a: &TestAgent, work: &Path, dir: &Path) {
    let cfg = work.join("helper.toml");
    std::fs::write(
        &cfg,
        format!(
            "agent_address = \"unix://{}\"\ncert_dir = \"{}\"\n",
            a.socket.display(),
            dir.display()
        ),
    )
    .unwrap();
    let args = ["helper", "--once", "--timeout", "20s", "--config"];
    let out = sigil_agent(&[&args[..], &[cfg.to_str().unwrap()]].concat(), &[]);
    assert!(out.status.success(), "helper --once: {}", text(&out.stderr));
}

fn pem_file(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    sigil_proto::pem::from_pem(&bytes).unwrap()
}

fn self_signed(der: &[u8]) -> bool {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    c.subject().as_raw() == c.issuer().as_raw() && c.verify_signature(None).is_ok()
}

/// Unix seconds of a JSON time: RFC 3339 text or (older output) an integer.
fn unix_time(v: &serde_json::Value) -> i64 {
    if let Some(n) = v.as_i64() {
        return n;
    }
    let t = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{t:?}: {e}"))
        .unix_timestamp()
}

fn leaf_id(der: &[u8]) -> String {
    sigil_proto::tls::spiffe_id_from_cert(der)
        .unwrap()
        .to_string()
}

/// `svid.pem` in `dir`: the leaf first, each certificate signed by the
/// next, the last by a CA of `bundle.pem`; no root and no bundle CA in it;
/// `want_len` certificates.
fn check_files(what: &str, dir: &Path, bundle: &[Vec<u8>], want_len: usize) {
    let chain = pem_file(&dir.join("svid.pem"));
    let written_bundle = pem_file(&dir.join("bundle.pem"));
    assert_eq!(written_bundle, bundle, "{what}: bundle.pem is the bundle");
    for (i, c) in chain.iter().enumerate() {
        assert!(
            !self_signed(c),
            "{what}: svid.pem certificate {i} is a root"
        );
        assert!(
            !bundle.contains(c),
            "{what}: svid.pem certificate {i} is a bundle CA (consumers must not send it)"
        );
    }
    assert_eq!(chain.len(), want_len, "{what}: svid.pem length");
    let certs: Vec<_> = chain
        .iter()
        .map(|d| x509_parser::parse_x509_certificate(d).unwrap().1)
        .collect();
    assert!(
        certs
            .windows(2)
            .all(|w| w[0].verify_signature(Some(w[1].public_key())).is_ok()),
        "{what}: svid.pem is not leaf then issuers in order"
    );
    let last = certs.last().unwrap();
    assert!(
        bundle.iter().any(|r| {
            let (_, r) = x509_parser::parse_x509_certificate(r).unwrap();
            last.verify_signature(Some(r.public_key())).is_ok()
        }),
        "{what}: svid.pem does not chain to bundle.pem"
    );
}

/// Both writers, both setups: without an upstream the chain is the leaf
/// alone (Sigil's CA is the root, in the bundle); under an upstream
/// intermediate it is leaf, Sigil's CA, the upstream intermediate, with
/// the upstream root in the bundle only.
#[test]
fn i22_7_svid_pem_has_no_root() {
    let pki = tempfile::tempdir().unwrap();
    let root = TestCa::new("upstream.example");
    let (inter, inter_key) = root.sign(&ca_params("upstream.example"));
    let cert_file = pki.path().join("inter.pem");
    let key_file = pki.path().join("inter_key.pem");
    let bundle_file = pki.path().join("root.pem");
    std::fs::write(&cert_file, sigil_proto::pem::to_pem(&[inter])).unwrap();
    std::fs::write(&key_file, inter_key.serialize_pem()).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(
        &bundle_file,
        sigil_proto::pem::to_pem(std::slice::from_ref(&root.der)),
    )
    .unwrap();
    let upstream = format!(
        "[upstream.disk]\ncert_file = \"{}\"\nkey_file = \"{}\"\nbundle_file = \"{}\"\n",
        cert_file.display(),
        key_file.display(),
        bundle_file.display()
    );

    for (name, extra, want_len) in [
        ("self-signed CA", String::new(), 1),
        ("upstream", upstream, 3),
    ] {
        let s = TestServer::start(ServerOptions {
            extra,
            ..Default::default()
        })
        .unwrap();
        let a = TestAgent::start(&s).unwrap();
        register(&s, &a, "spiffe://example.org/files");
        wait_for(Duration::from_secs(30), "an SVID", || fetch_json(&a, 1));
        let bundle = s.bundle();
        if name == "upstream" {
            assert_eq!(
                bundle,
                vec![root.der.clone()],
                "the bundle is the upstream root"
            );
        }
        let work = tempfile::tempdir().unwrap();
        let written = work.path().join("write");
        fetch_write(&a, &written);
        check_files(&format!("{name}: --write"), &written, &bundle, want_len);
        let helper_dir = work.path().join("helper");
        helper_once(&a, work.path(), &helper_dir);
        check_files(&format!("{name}: helper"), &helper_dir, &bundle, want_len);
        // The server's own `x509 mint --write` follows the same rule.
        let minted = work.path().join("minted");
        s.cli_ok(&[
            "x509",
            "mint",
            "--spiffe-id",
            "spiffe://example.org/minted",
            "--write",
            minted.to_str().unwrap(),
        ]);
        check_files(&format!("{name}: x509 mint"), &minted, &bundle, want_len);
    }
}

/// An entry whose SPIFFE ID sorts first, created after the default one,
/// changes neither the first SVID of the response nor what `--write` and
/// the helper write.
#[test]
fn i22_7_default_svid_is_stable_when_an_entry_is_added() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    let created = register(&s, &a, "spiffe://example.org/zz-first");
    let v = wait_for(Duration::from_secs(30), "the first SVID", || {
        fetch_json(&a, 1)
    });
    assert_eq!(v["svids"][0]["spiffe_id"], "spiffe://example.org/zz-first");

    // Entry times are seconds: the next entry is created in a later second,
    // so it is newer whatever its (random) id.
    wait_for(Duration::from_secs(5), "a later second", || {
        (time::OffsetDateTime::now_utc().unix_timestamp() > created).then_some(())
    });
    register(&s, &a, "spiffe://example.org/aa-second");
    let v = wait_for(Duration::from_secs(30), "both SVIDs", || fetch_json(&a, 2));
    let ids: Vec<&str> = v["svids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["spiffe_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "spiffe://example.org/zz-first",
            "spiffe://example.org/aa-second"
        ],
        "the oldest entry stays the default"
    );

    let work = tempfile::tempdir().unwrap();
    let written = work.path().join("write");
    fetch_write(&a, &written);
    assert_eq!(
        leaf_id(&pem_file(&written.join("svid.pem"))[0]),
        "spiffe://example.org/zz-first",
        "--write"
    );
    let helper_dir = work.path().join("helper");
    helper_once(&a, work.path(), &helper_dir);
    assert_eq!(
        leaf_id(&pem_file(&helper_dir.join("svid.pem"))[0]),
        "spiffe://example.org/zz-first",
        "helper"
    );
}
