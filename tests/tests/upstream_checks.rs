//! `[upstream.disk]` is checked before use (issue 21 item 7): the real
//! `sigil-server validate` and `sigil-server run` refuse an upstream CA whose
//! certificate does not chain to `bundle_file`, whose pathLenConstraint
//! leaves no room for Sigil's intermediate, that is expired, whose key does
//! not match or whose key file others can read, each naming the file and
//! the rule; a good chain passes and the server runs under it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use sigil_proto::test_pki::{TestCa, ca_params, self_signed};
use sigil_tests::{ServerOptions, TestServer, sigil_server, text};
use time::{Duration, OffsetDateTime};

fn ca(path_len: Option<u8>) -> CertificateParams {
    let mut p = ca_params("upstream.example");
    // Ends before ca_ttl (24h) from now: `validate` warns about it.
    p.not_after = OffsetDateTime::now_utc() + Duration::hours(12);
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p
}

fn pem(der: &[u8]) -> String {
    sigil_proto::pem::to_pem(&[der.to_vec()])
}

/// Writes one upstream (cert, key, optional bundle) under `name`, the key
/// with `mode`; returns the `[upstream.disk]` section.
fn write(
    dir: &Path,
    name: &str,
    cert_pem: &str,
    key: &KeyPair,
    bundle_pem: Option<&str>,
    mode: u32,
) -> (String, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key_file = dir.join(format!("{name}_key.pem"));
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(mode)).unwrap();
    let mut section = format!(
        "[upstream.disk]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key_file.display()
    );
    if let Some(b) = bundle_pem {
        let bundle = dir.join(format!("{name}_bundle.pem"));
        std::fs::write(&bundle, b).unwrap();
        section.push_str(&format!("bundle_file = \"{}\"\n", bundle.display()));
    }
    (section, cert)
}

#[test]
fn i21_7_validate_refuses_a_bad_upstream_chain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    let base = format!(
        "trust_domain = \"example.org\"\ndata_dir = \"{}\"\n",
        data.display()
    );
    let root = TestCa::from_params(ca(None));
    let other_root = TestCa::from_params(ca(None));

    // Refused, each with the rule it breaks.
    let mut bad = Vec::new();
    let (inter0, key0) = root.sign(&ca(Some(0)));
    bad.push((
        "pathlen0",
        write(
            d,
            "pathlen0",
            &pem(&inter0),
            &key0,
            Some(&pem(&root.der)),
            0o600,
        ),
        "pathLenConstraint 0",
    ));
    let (root0, rkey0) = self_signed(&ca(Some(0)));
    bad.push((
        "root_pathlen0",
        write(d, "root_pathlen0", &pem(&root0), &rkey0, None, 0o600),
        "pathLenConstraint 0",
    ));
    let (inter, key) = root.sign(&ca(Some(1)));
    bad.push((
        "wrong_bundle",
        write(
            d,
            "wrong_bundle",
            &pem(&inter),
            &key,
            Some(&pem(&other_root.der)),
            0o600,
        ),
        "does not chain to any root of bundle_file",
    ));
    let mut expired = ca(None);
    expired.not_before = OffsetDateTime::now_utc() - Duration::days(3);
    expired.not_after = OffsetDateTime::now_utc() - Duration::days(1);
    let (old, old_key) = self_signed(&expired);
    bad.push((
        "expired",
        write(d, "expired", &pem(&old), &old_key, None, 0o600),
        "expired at",
    ));
    let stranger = KeyPair::generate().unwrap();
    bad.push((
        "key_mismatch",
        write(
            d,
            "key_mismatch",
            &pem(&inter),
            &stranger,
            Some(&pem(&root.der)),
            0o600,
        ),
        "does not match",
    ));
    bad.push((
        "key_0644",
        write(
            d,
            "key_0644",
            &pem(&inter),
            &key,
            Some(&pem(&root.der)),
            0o644,
        ),
        "mode 0644 gives group or others access",
    ));

    let config = d.join("server.toml");
    for (name, (section, cert), rule) in &bad {
        std::fs::write(&config, format!("{base}{section}")).unwrap();
        for cmd in ["validate", "run"] {
            let out = sigil_server(&[cmd, "--config", config.to_str().unwrap()], &[]);
            let err = text(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{name}: {cmd} accepted it: {err}"
            );
            assert!(
                err.contains(rule),
                "{name}: {cmd}: expected {rule:?} in {err}"
            );
            let file = if name.starts_with("key_") {
                d.join(format!("{name}_key.pem"))
            } else {
                cert.clone()
            };
            assert!(
                err.contains(file.to_str().unwrap()),
                "{name}: {cmd}: the message names {}: {err}",
                file.display()
            );
        }
        assert!(!data.exists(), "{name}: nothing may be written");
    }

    // Good: an intermediate with pathLen 1 under the bundle's root, and a
    // self-signed root on its own.
    let (good, _) = write(d, "good", &pem(&inter), &key, Some(&pem(&root.der)), 0o600);
    let (root_pem, root_key) = self_signed(&ca(None));
    let (good_root, _) = write(d, "good_root", &pem(&root_pem), &root_key, None, 0o400);
    for section in [&good, &good_root] {
        std::fs::write(&config, format!("{base}{section}")).unwrap();
        let out = sigil_server(&["validate", "--config", config.to_str().unwrap()], &[]);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{section}: {err}");
        // Both end in 12 hours, before ca_ttl (24h) from now.
        assert!(
            err.contains("warning: the upstream CA certificate expires in"),
            "{section}: no expiry warning: {err}"
        );
    }
    // And the server runs under the intermediate: its bundle is the root.
    let s = TestServer::start(ServerOptions {
        extra: good,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.bundle(), vec![root.der.clone()]);
}
