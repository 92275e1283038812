//! The pure verdict functions, without processes: `judge` on chains built
//! with `sigil_proto::test_pki`, and the order `verdict_of_connect` gives
//! the findings of one handshake.

use sigil_proto::test_pki::{TestCa, leaf_params};
use sigil_proto::tls::verdict::{PeerVerdict, Verdict};

use super::connect::Probe;
use super::inputs::domains_of;
use super::judge::{Role, Trust, judge};
use super::verdict_of_connect;

fn trust(ca: &TestCa) -> Trust {
    Trust {
        roots: vec![ca.der.clone()],
        domains: domains_of(std::slice::from_ref(&ca.der)),
        known_intermediates: Vec::new(),
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn code(f: &super::judge::Finding) -> &'static str {
    f.diagnosis.as_ref().map_or("ok", |d| d.verdict.code())
}

#[test]
fn a_healthy_leaf_passes_and_names_its_id() {
    let ca = TestCa::new("example.org");
    let f = judge(
        &[ca.leaf("spiffe://example.org/a").0],
        &trust(&ca),
        &[],
        Role::Client,
        now(),
    );
    assert_eq!(code(&f), "ok");
    assert_eq!(f.spiffe_id.unwrap().as_str(), "spiffe://example.org/a");
}

#[test]
fn the_skew_of_an_expired_leaf_is_measured_from_the_check_time() {
    let ca = TestCa::new("example.org");
    let leaf = ca.leaf("spiffe://example.org/a").0;
    let f = judge(&[leaf], &trust(&ca), &[], Role::Client, now() + 2 * 3600);
    assert_eq!(code(&f), "tls_peer_expired");
    let d = f.diagnosis.unwrap().detail;
    assert!(
        d.contains("0h") || d.contains("59m") || d.contains("1h 0m"),
        "{d}"
    );
}

#[test]
fn an_intermediate_this_workload_holds_but_the_peer_did_not_send_is_a_missing_intermediate() {
    let root = TestCa::new("example.org");
    let int = root.intermediate("example.org");
    let leaf = int.sign(&leaf_params(&["spiffe://example.org/a"])).0;
    let mut t = trust(&root);
    let untrusted = judge(std::slice::from_ref(&leaf), &t, &[], Role::Client, now());
    assert_eq!(code(&untrusted), "tls_peer_untrusted_ca");
    t.known_intermediates = vec![int.der.clone()];
    let f = judge(&[leaf], &t, &[], Role::Client, now());
    assert_eq!(code(&f), "tls_peer_chain_incomplete");
}

#[test]
fn the_server_role_needs_server_auth() {
    let ca = TestCa::new("example.org");
    let mut p = leaf_params(&["spiffe://example.org/a"]);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = ca.sign(&p).0;
    let f = judge(
        std::slice::from_ref(&leaf),
        &trust(&ca),
        &[],
        Role::Server,
        now(),
    );
    assert_eq!(code(&f), "tls_peer_wrong_key_usage");
    let f = judge(&[leaf], &trust(&ca), &[], Role::Client, now());
    assert_eq!(code(&f), "ok");
}

#[test]
fn connect_verdicts_transport_first_then_certificate_then_client_auth() {
    let ca = TestCa::new("example.org");
    let foreign = TestCa::new("example.org");
    let bad = judge(
        &[foreign.leaf("spiffe://example.org/s").0],
        &trust(&ca),
        &[],
        Role::Server,
        now(),
    );
    let good = judge(
        &[ca.leaf("spiffe://example.org/s").0],
        &trust(&ca),
        &[],
        Role::Server,
        now(),
    );
    let open = Probe {
        address: "127.0.0.1:1".into(),
        client_cert_requested: false,
        ..Probe::default()
    };
    let v = |p: &Probe, f| verdict_of_connect(p, f).map(|d| d.verdict);
    // An untrusted server certificate outranks the missing client auth.
    assert_eq!(
        v(&open, Some(&bad)),
        Some(Verdict::Peer(PeerVerdict::UntrustedCa))
    );
    assert_eq!(
        v(&open, Some(&good)),
        Some(Verdict::Peer(PeerVerdict::NoClientCertRequested))
    );
    let refused = Probe {
        client_cert_requested: true,
        accepted_us: Some(false),
        ..open.clone()
    };
    assert_eq!(
        v(&refused, Some(&good)),
        Some(Verdict::Peer(PeerVerdict::RefusedUs))
    );
    let fine = Probe {
        accepted_us: Some(true),
        ..refused.clone()
    };
    assert_eq!(v(&fine, Some(&good)), None);
}
