//! The Issuer's unit tests: TTL choice and cap, authorization of entries
//! for the agent, CSR refusals, and names taken from the entry.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair, SanType};
use sigil_proto::clock::{Clock, unix_seconds};
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::*;
use crate::ca::testing::{self, TTL};
use crate::config::server_id;
use crate::entry::EntrySpec;
use crate::key_manager::memory::MemoryKeyManager;

const AGENT: &str = "spiffe://example.org/sigil/agent/join_token/n1";

struct Fixture {
    _dir: tempfile::TempDir,
    ca: Arc<CaManager>,
    registry: Arc<Registry>,
    issuer: Issuer,
    agent: AttestedAgent,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = testing::clock();
    let store = testing::store(dir.path());
    let ca = testing::start_on(
        store.clone(),
        Arc::new(MemoryKeyManager::default()),
        clock.clone(),
    );
    let registry = Registry::load(store, server_id(ca.trust_domain())).unwrap();
    let now = unix_seconds(clock.now());
    let issuer = Issuer::new(
        ca.clone(),
        clock,
        IssuerSettings {
            agent_svid_ttl: Duration::from_secs(3600),
            default_x509_svid_ttl: Duration::from_secs(600),
            // Above every TTL these tests use (the cap has its own test).
            max_x509_svid_ttl: 100 * TTL,
        },
    );
    let agent = AttestedAgent {
        spiffe_id: SpiffeId::parse(AGENT).unwrap(),
        attestor: "join_token".into(),
        selectors: vec![],
        serial: "01".into(),
        previous_serial: None,
        expires_at: now + 3600,
        ca_serial: None,
        banned: false,
        ban_rules: vec![],
        attested_at: now,
        updated_at: now,
    };
    Fixture {
        _dir: dir,
        ca,
        registry,
        issuer,
        agent,
    }
}

fn entry(f: &Fixture, spiffe_id: &str, parent: &str, ttl: u64, dns: &[&str]) -> String {
    f.registry
        .create(spec(spiffe_id, parent, ttl, dns), 0)
        .unwrap()
        .id
}

fn spec(spiffe_id: &str, parent: &str, ttl: u64, dns: &[&str]) -> EntrySpec {
    EntrySpec {
        spiffe_id: SpiffeId::parse(spiffe_id).unwrap(),
        parent_id: SpiffeId::parse(parent).unwrap(),
        selectors: vec![sigil_proto::Selector::parse("unix:uid:1000").unwrap()],
        x509_svid_ttl: ttl,
        jwt_svid_ttl: 0,
        dns_names: dns.iter().map(ToString::to_string).collect(),
        federates_with: vec![],
        hint: String::new(),
        admin: false,
        downstream: false,
        expires_at: None,
    }
}

/// A CSR that asks for names of its own (which must be ignored).
fn csr() -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
    params.subject_alt_names.push(SanType::URI(
        "spiffe://example.org/admin".try_into().unwrap(),
    ));
    params.serialize_request(&key).unwrap().der().to_vec()
}

fn sign_one(f: &Fixture, entry_id: &str, csr: Vec<u8>) -> Result<SignedLeaf, IssueError> {
    let mut out = f.issuer.sign_workloads(
        &f.registry,
        &f.agent,
        &[WorkloadCsr {
            entry_id: entry_id.to_string(),
            csr,
        }],
    );
    assert_eq!(out.len(), 1);
    out.remove(0)
}

/// (URIs, DNS names) of a leaf's subjectAltName.
fn sans(der: &[u8]) -> (Vec<String>, Vec<String>) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let (mut uris, mut dns) = (vec![], vec![]);
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for n in &san.general_names {
                match n {
                    GeneralName::URI(u) => uris.push((*u).to_string()),
                    GeneralName::DNSName(d) => dns.push((*d).to_string()),
                    _ => {}
                }
            }
        }
    }
    (uris, dns)
}

#[test]
fn the_ttl_is_the_entrys_or_the_default_and_capped_at_the_ca_expiry() {
    let f = fixture();
    let short = entry(&f, "spiffe://example.org/short", AGENT, 120, &[]);
    let default = entry(&f, "spiffe://example.org/default", AGENT, 0, &[]);
    let long = entry(
        &f,
        "spiffe://example.org/long",
        AGENT,
        10 * TTL.as_secs(),
        &[],
    );
    let leaf = sign_one(&f, &short, csr()).unwrap();
    let issued_at = leaf.not_after - 120;
    let leaf = sign_one(&f, &default, csr()).unwrap();
    assert_eq!(leaf.not_after, issued_at + 600, "the default TTL");
    let leaf = sign_one(&f, &long, csr()).unwrap();
    assert_eq!(
        leaf.not_after,
        f.ca.active().not_after(),
        "capped at the CA"
    );
    let minted = f
        .issuer
        .mint(
            &SpiffeId::parse("spiffe://example.org/m").unwrap(),
            &[],
            Some(10 * TTL),
            &KeyPair::generate().unwrap(),
        )
        .unwrap();
    assert_eq!(minted.not_after, f.ca.active().not_after(), "mint too");
    assert_eq!(minted.ca_serial, f.ca.active().serial_hex());
}

#[test]
fn an_entry_not_authorized_for_the_agent_is_refused() {
    let f = fixture();
    let other = entry(
        &f,
        "spiffe://example.org/w",
        "spiffe://example.org/sigil/agent/join_token/n2",
        0,
        &[],
    );
    for id in [other.as_str(), "no-such-entry"] {
        match sign_one(&f, id, csr()) {
            Err(e @ IssueError::NotAuthorized { .. }) => assert_eq!(
                e.to_string(),
                format!("entry {id} is not authorized for this agent")
            ),
            other => panic!("signed for an unauthorized entry: {other:?}"),
        }
    }
}

#[test]
fn a_bad_csr_is_refused_with_a_clear_error() {
    let f = fixture();
    let ok = entry(&f, "spiffe://example.org/w", AGENT, 0, &[]);
    for (csr, says) in [
        (vec![], "CSR is empty"),
        (b"garbage".to_vec(), "invalid CSR"),
    ] {
        match sign_one(&f, &ok, csr.clone()) {
            Err(IssueError::BadCsr(m)) => assert!(m.contains(says), "{m}"),
            other => panic!("signed a bad CSR: {other:?}"),
        }
        match f.issuer.sign_agent(&f.agent.spiffe_id, &csr) {
            Err(IssueError::BadCsr(m)) => assert!(m.contains(says), "{m}"),
            other => panic!("signed a bad agent CSR: {other:?}"),
        }
        assert!(Issuer::check_csr(&csr).is_err());
    }
}

#[test]
fn the_spiffe_id_and_dns_names_come_from_the_entry_not_the_csr() {
    let f = fixture();
    let id = entry(
        &f,
        "spiffe://example.org/web",
        AGENT,
        0,
        &["web.example.org"],
    );
    let leaf = sign_one(&f, &id, csr()).unwrap();
    assert_eq!(leaf.spiffe_id.to_string(), "spiffe://example.org/web");
    let (uris, dns) = sans(&leaf.chain[0]);
    assert_eq!(uris, vec!["spiffe://example.org/web".to_string()]);
    assert_eq!(dns, vec!["web.example.org".to_string()]);

    let agent = f.issuer.sign_agent(&f.agent.spiffe_id, &csr()).unwrap();
    assert_eq!(sans(&agent.chain[0]), (vec![AGENT.to_string()], vec![]));
}

#[test]
fn i20_7_an_entry_ttl_over_the_limit_is_capped_at_issuance() {
    let f = fixture();
    let clock = testing::clock();
    let now = unix_seconds(clock.now());
    let capped = Issuer::new(
        f.ca.clone(),
        clock,
        IssuerSettings {
            agent_svid_ttl: Duration::from_secs(3600),
            default_x509_svid_ttl: Duration::from_secs(600),
            max_x509_svid_ttl: Duration::from_secs(1800),
        },
    );
    // Stored before ca_ttl was lowered: 2h, over the 30 min limit.
    let over = entry(&f, "spiffe://example.org/over", AGENT, 7200, &[]);
    let leaf = capped
        .sign_workloads(
            &f.registry,
            &f.agent,
            &[WorkloadCsr {
                entry_id: over,
                csr: csr(),
            }],
        )
        .remove(0)
        .unwrap();
    assert_eq!(leaf.not_after, now + 1800, "capped at ca_ttl / 6");
}

#[test]
fn item6_an_svid_never_outlives_its_entrys_expires_at() {
    let f = fixture();
    let now = unix_seconds(testing::clock().now());
    let mut expiring = spec("spiffe://example.org/expiring", AGENT, 3600, &[]);
    expiring.expires_at = Some(now + 120);
    let id = f.registry.create(expiring, 0).unwrap().id;
    let leaf = sign_one(&f, &id, csr()).unwrap();
    assert_eq!(
        leaf.not_after,
        now + 120,
        "capped at the entry's expires_at"
    );
}
