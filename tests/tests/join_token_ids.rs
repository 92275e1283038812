//! Join-token agent IDs against a real `sigil-server` (issue 14, "Also"):
//! the ID carries the token's hash, never the token, and a store written by
//! an earlier build (token in the ID) is migrated at start: the agent record
//! renamed, its entries re-parented, and the agent's old-form SVID renews to
//! its new ID.

use std::time::{Duration, Instant};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sigil_proto::agent_api as pb;
use sigil_proto::attestation;
use sigil_proto::{Selector, SpiffeId};
use sigil_server::store::conformance::entry_spec;
use sigil_server::store::sled::SledStore;
use sigil_server::store::{AttestedAgent, Store};
use sigil_tests::agent_client::{AgentIdentity, attest, connect, identity, key_and_csr};
use sigil_tests::{ServerOptions, TestServer, join_token_agent_id};

/// Bound on each call of these tests.
const CALL: Duration = Duration::from_secs(20);

fn sha256_hex(s: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn also_join_token_agent_id_is_a_hash() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let generated = s.cli_json(&["token", "generate"]);
    let token = generated["token"].as_str().unwrap().to_string();
    let mut c = s.agent_client(None).await.unwrap();
    let (key, csr) = key_and_csr();
    let svid = tokio::time::timeout(
        CALL,
        attest(
            &mut c,
            attestation::JOIN_TOKEN,
            token.clone().into_bytes(),
            csr,
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let expected = format!(
        "spiffe://example.org/sigil/agent/join_token/{}",
        &sha256_hex(&token)[..32]
    );
    assert_eq!(svid.spiffe_id, expected, "the agent ID is the token's hash");
    assert_eq!(
        format!(
            "spiffe://example.org{}",
            generated["agent_id_path"].as_str().unwrap()
        ),
        expected,
        "token generate says which ID the agent will get"
    );
    // Renew once, so the renewal path logs too.
    let (renewed, _) = renew(&s, &s.bundle(), &identity(&key, &svid), "renewal").await;
    assert_eq!(renewed.spiffe_id, expected);

    let agents = s.cli_json(&["agent", "list"]);
    assert_eq!(agents["agents"][0]["spiffe_id"], expected.as_str());
    let text = s.cli_ok(&["agent", "list"]);
    for (what, shown) in [
        ("agent list --output json", agents.to_string()),
        ("agent list", text),
        (
            "agent show",
            s.cli_ok(&["agent", "show", "--spiffe-id", &expected]),
        ),
        ("the server log", s.log_text()),
    ] {
        assert!(
            !shown.contains(&token),
            "{what} contains the join token: {shown}"
        );
    }
    assert!(
        s.log_text().contains(&expected),
        "the log names the agent by its ID"
    );
}

/// The token an earlier build put into the agent's ID.
const OLD_TOKEN: &str = "0123456789abcdef0123456789abcdef";
/// The serial of the agent's old-form SVID (lowercase hex, as stored).
const OLD_SERIAL: [u8; 16] = [
    0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f, 0x70, 0x81, 0x92, 0xa3, 0xb4, 0xc5, 0xd6, 0xe7, 0xf8, 0x09,
];

/// Removes the store's "join-token IDs migrated" mark, as a store written by
/// an earlier build lacks it. Waits out the lock the just-dropped store
/// may still hold for a moment.
fn forget_migration(store_dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let db = loop {
        match sled::open(store_dir) {
            Ok(db) => break db,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("opening {} raw: {e}", store_dir.display()),
        }
    };
    let meta = db.open_tree("meta").unwrap();
    meta.remove("join_token_ids_hashed").unwrap();
    db.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn also_stored_old_form_agents_are_migrated() {
    // An upstream root the test holds, so it can sign the SVID an earlier
    // build would have issued (with the token in its ID).
    let up = tempfile::tempdir().unwrap();
    let (root, root_key) = sigil_proto::test_pki::upstream_root(&rcgen::PKCS_ECDSA_P256_SHA256);
    let cert_path = up.path().join("upstream.pem");
    let key_path = up.path().join("upstream_key.pem");
    std::fs::write(&cert_path, root.pem()).unwrap();
    std::fs::write(&key_path, root_key.serialize_pem()).unwrap();
    // The owner's alone: the server refuses an upstream key others can read.
    std::fs::set_permissions(
        &key_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut s = TestServer::start(ServerOptions {
        extra: format!(
            "[upstream.disk]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            cert_path.display(),
            key_path.display()
        ),
        ..Default::default()
    })
    .unwrap();
    let bundle = s.bundle();
    s.stop();

    let old_id = format!("spiffe://example.org/sigil/agent/join_token/{OLD_TOKEN}");
    let new_id = join_token_agent_id("example.org", OLD_TOKEN);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let store_dir = s.data_dir.join("store");
    {
        let store = SledStore::open(&store_dir).unwrap();
        let selector = Selector::new("join_token", &sha256_hex(OLD_TOKEN)).unwrap();
        store
            .put_agent(&AttestedAgent {
                spiffe_id: SpiffeId::parse(&old_id).unwrap(),
                attestor: "join_token".to_string(),
                selectors: vec![selector],
                serial: hex(&OLD_SERIAL),
                previous_serial: None,
                expires_at: now + 3600,
                ca_serial: None,
                banned: false,
                ban_rules: vec![],
                attested_at: now,
                updated_at: now,
            })
            .unwrap();
        let parent = old_id.trim_start_matches("spiffe://example.org");
        let spec = entry_spec("/w", parent, &["unix:uid:1000"]);
        store.create_entry(spec, now).unwrap();
    }
    forget_migration(&store_dir);
    s.spawn().unwrap();

    // Migrated: the record under the new ID, the entry under it.
    let agents = s.cli_json(&["agent", "list"]);
    let ids: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["spiffe_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![new_id.as_str()], "{agents:#}");
    assert!(!agents.to_string().contains(OLD_TOKEN), "{agents:#}");
    let under_new = s.cli_json(&["entry", "show", "--parent-id", &new_id]);
    assert_eq!(
        under_new["entries"].as_array().unwrap().len(),
        1,
        "{under_new:#}"
    );
    let under_old = s.cli_json(&["entry", "show", "--parent-id", &old_id]);
    assert_eq!(
        under_old["entries"].as_array().map_or(0, Vec::len),
        0,
        "{under_old:#}"
    );

    // The agent's old-form SVID still authenticates, and renews to the new ID.
    let mut params = sigil_proto::test_pki::leaf_params(&[&old_id]);
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&OLD_SERIAL));
    let issuer = rcgen::Issuer::from_ca_cert_der(root.der(), root_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
    let old = AgentIdentity {
        id: old_id.clone(),
        chain: vec![CertificateDer::from(leaf.der().to_vec())],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    };
    let (renewed, ident) = renew(&s, &bundle, &old, "the old-form SVID renews").await;
    assert_eq!(renewed.spiffe_id, new_id, "renewed to the hash-form ID");
    // And the new SVID works as that agent.
    let (again, _) = renew(&s, &bundle, &ident, "the new SVID renews").await;
    assert_eq!(again.spiffe_id, new_id);
    assert!(!s.log_text().contains(OLD_TOKEN), "{}", s.log_text());
}

/// One RenewAgent call made with `who`, which must succeed (`what` says
/// which); the new SVID and identity.
async fn renew(
    s: &TestServer,
    bundle: &[Vec<u8>],
    who: &AgentIdentity,
    what: &str,
) -> (pb::AgentSvid, AgentIdentity) {
    let mut c = connect(s.agent_addr, bundle.to_vec(), &s.trust_domain, Some(who))
        .await
        .unwrap();
    let (key, csr) = key_and_csr();
    let svid = tokio::time::timeout(CALL, c.renew_agent(pb::RenewAgentRequest { csr }))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in {CALL:?}"))
        .expect(what)
        .into_inner()
        .svid
        .unwrap();
    let ident = identity(&key, &svid);
    (svid, ident)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
