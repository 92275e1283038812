//! The accept/refuse rules of a fetched foreign bundle, one case each.

use sigil_proto::TrustDomain;
use sigil_proto::bundle::{SpiffeBundle, encode};
use sigil_proto::test_pki::TestCa;

use super::{Accepted, Refusal, judge};

fn td(name: &str) -> TrustDomain {
    TrustDomain::parse(name).unwrap()
}

fn bundle(ca_td: &str, for_td: &str, sequence: Option<u64>) -> SpiffeBundle {
    SpiffeBundle {
        trust_domain: td(for_td),
        x509_authorities: vec![TestCa::new(ca_td).der.clone()],
        jwt_authorities: vec![],
        sequence,
        refresh_hint: Some(60),
    }
}

fn doc(ca_td: &str, for_td: &str, sequence: Option<u64>) -> Vec<u8> {
    encode(&bundle(ca_td, for_td, sequence))
        .unwrap()
        .into_bytes()
}

/// The last accepted bundle: sequence `n`, a CA of its own.
fn last(n: u64) -> Accepted {
    Accepted {
        sequence: n,
        bundle: bundle("b.test", "b.test", Some(n)),
    }
}

#[test]
fn item2_newer_bundle_of_the_trust_domain_is_accepted() {
    let b = judge(
        &td("b.test"),
        Some(&last(4)),
        &doc("b.test", "b.test", Some(5)),
    )
    .unwrap();
    assert_eq!((b.x509_authorities.len(), b.sequence), (1, Some(5)));
    // Nothing stored yet, or no sequence on either side: nothing to compare.
    assert!(judge(&td("b.test"), None, &doc("b.test", "b.test", Some(1))).is_ok());
    assert!(
        judge(
            &td("b.test"),
            Some(&last(9)),
            &doc("b.test", "b.test", None)
        )
        .is_ok()
    );
    // The same document again: unchanged, not a failure.
    let l = last(4);
    let same = encode(&l.bundle).unwrap();
    assert_eq!(
        judge(&td("b.test"), Some(&l), same.as_bytes()).unwrap(),
        l.bundle
    );
}

#[test]
fn item2_garbage_is_refused_as_parse() {
    let r = judge(&td("b.test"), None, b"<html>not a bundle</html>").unwrap_err();
    assert!(matches!(r, Refusal::Parse(_)), "{r:?}");
    assert_eq!(r.reason(), "parse");
}

#[test]
fn item2_another_trust_domains_bundle_is_refused() {
    let r = judge(&td("b.test"), None, &doc("c.test", "c.test", Some(7))).unwrap_err();
    assert_eq!(r.reason(), "trust_domain", "{r}");
    assert!(r.to_string().contains("spiffe://c.test"), "{r}");
}

#[test]
fn item2_older_or_equal_sequence_is_refused() {
    // Older, or the same sequence with other keys.
    for fetched in [3, 4] {
        let r = judge(
            &td("b.test"),
            Some(&last(4)),
            &doc("b.test", "b.test", Some(fetched)),
        )
        .unwrap_err();
        assert_eq!(r, Refusal::Sequence { fetched, stored: 4 });
        assert_eq!(r.reason(), "sequence");
    }
}

#[test]
fn item2_empty_keys_means_all_revoked_and_is_applied() {
    let b = judge(
        &td("b.test"),
        Some(&last(1)),
        br#"{"keys":[],"spiffe_sequence":2,"spiffe_refresh_hint":60}"#,
    )
    .unwrap();
    assert!(b.is_empty());
}
