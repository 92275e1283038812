//! Tests of the agent's durable state: every crash point of every save
//! leaves the old state or the new one, and the two-file layout of earlier
//! versions is read and migrated.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

/// More than any save has steps: every crash point is covered.
const MAX_STEPS: usize = 4;

fn cert(td: &str) -> (Vec<u8>, Vec<u8>) {
    let (der, key) = sigil_proto::test_pki::self_signed(&sigil_proto::test_pki::ca_params(td));
    (der, key.serialize_der())
}

/// A distinct identity per `tag` (the persistence layer parses only PEM and
/// the bundle's certificates).
fn ident(tag: u8) -> StoredIdentity {
    let (leaf, key) = cert(&format!("leaf{tag}.example"));
    let (ca, _) = cert(&format!("ca{tag}.example"));
    let (b1, _) = cert(&format!("b{tag}.example"));
    StoredIdentity {
        key_pkcs8: key,
        chain: vec![leaf, ca.clone()],
        bundle: vec![ca, b1],
    }
}

type Parts = (Vec<u8>, Vec<Vec<u8>>, Vec<Vec<u8>>);

fn parts(i: &StoredIdentity) -> Parts {
    (i.key_pkcs8.clone(), i.chain.clone(), i.bundle.clone())
}

fn private_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
    d
}

/// The two-file layout of earlier versions: chain + key, then the bundle.
fn write_legacy(dir: &Path, id: &StoredIdentity) {
    let mut text = sigil_proto::pem::to_pem(&id.chain);
    text.push_str(&pem::encode(&pem::Pem::new(
        "PRIVATE KEY",
        id.key_pkcs8.clone(),
    )));
    fs::write(dir.join("agent_svid.pem"), text).unwrap();
    fs::write(dir.join("bundle.pem"), sigil_proto::pem::to_pem(&id.bundle)).unwrap();
}

/// Runs `save` with a crash injected after every possible step, on a data
/// dir prepared by `setup`; after each, a fresh start must load exactly the
/// state before or the state after (never an error, never a mix).
fn every_crash_point(
    what: &str,
    setup: impl Fn(&Path),
    before: Option<Parts>,
    after: Parts,
    save: impl Fn(&DataDir) -> anyhow::Result<()>,
) {
    for k in 0..=MAX_STEPS {
        let tmp = private_dir();
        setup(tmp.path());
        let mut d = DataDir::open(tmp.path()).unwrap();
        d.crash_after = Some(k);
        let crashed = save(&d).is_err();
        let loaded = DataDir::open(tmp.path())
            .unwrap()
            .load()
            .unwrap_or_else(|e| {
                panic!("{what}: crash after step {k}: the agent cannot start again: {e:#}")
            })
            .as_ref()
            .map(parts);
        assert!(
            loaded == before || loaded.as_ref() == Some(&after),
            "{what}: crash after step {k}: loaded neither the old nor the new state (a mix)"
        );
        if !crashed {
            assert!(loaded.as_ref() == Some(&after), "{what}: completed save");
        }
        // And the next save (after the restart) completes.
        let d = DataDir::open(tmp.path()).unwrap();
        save(&d).unwrap();
        assert!(d.load().unwrap().as_ref().map(parts) == Some(after.clone()));
    }
}

#[test]
fn i20_5_crash_between_persistence_steps_never_strands_the_agent() {
    let old = ident(1);
    let new = ident(2);
    every_crash_point(
        "first attestation",
        |_| {},
        None,
        parts(&new),
        |d| d.save(&new),
    );
    every_crash_point(
        "renewal",
        |p| DataDir::open(p).unwrap().save(&old).unwrap(),
        Some(parts(&old)),
        parts(&new),
        |d| d.save(&new),
    );
    every_crash_point(
        "renewal over the two-file layout",
        |p| write_legacy(p, &old),
        Some(parts(&old)),
        parts(&new),
        |d| d.save(&new),
    );
    let rebundled = StoredIdentity {
        bundle: new.bundle.clone(),
        key_pkcs8: old.key_pkcs8.clone(),
        chain: old.chain.clone(),
    };
    every_crash_point(
        "bundle update",
        |p| DataDir::open(p).unwrap().save(&old).unwrap(),
        Some(parts(&old)),
        parts(&rebundled),
        |d| d.save_bundle(&new.bundle),
    );
    every_crash_point(
        "bundle update over the two-file layout",
        |p| write_legacy(p, &old),
        Some(parts(&old)),
        parts(&rebundled),
        |d| d.save_bundle(&new.bundle),
    );
}

#[test]
fn the_two_file_layout_is_read_and_migrated() {
    let tmp = private_dir();
    let old = ident(1);
    write_legacy(tmp.path(), &old);
    let d = DataDir::open(tmp.path()).unwrap();
    assert!(d.load().unwrap().as_ref().map(parts) == Some(parts(&old)));
    let new = ident(2);
    d.save(&new).unwrap();
    assert!(
        !tmp.path().join("bundle.pem").exists(),
        "the separate bundle file is gone after the first save"
    );
    assert!(d.load().unwrap().as_ref().map(parts) == Some(parts(&new)));
    let mode = fs::metadata(tmp.path().join("agent_svid.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn nothing_stored_loads_none() {
    let tmp = private_dir();
    assert!(DataDir::open(tmp.path()).unwrap().load().unwrap().is_none());
}
