//! Property tests for the SPIFFE types every process shares: SPIFFE ID and
//! trust-domain parsing (round trips, and refusal of every byte class and
//! shape DESIGN §2 forbids), selector parse/display and the subset rule used
//! for matching, the duration syntax, and the JWKS bundle codec.

use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::{Index, subsequence};
use sigil_proto::bundle::{self, JwtKey, SpiffeBundle};
use sigil_proto::pem;
use sigil_proto::selector::is_subset;
use sigil_proto::{
    Selector, SelectorError, SpiffeId, SpiffeIdError, TrustDomain, format_duration, parse_duration,
};

// ---------------------------------------------------------------------------
// Generators.

/// A valid trust domain name: `[a-z0-9._-]`, 1..=255 bytes.
fn trust_domain() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9][a-z0-9.-]{0,30}", "[a-z0-9._-]{1,255}",]
}

/// A valid path segment: `[a-zA-Z0-9._-]+`, not `.` or `..`.
fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,24}".prop_filter("dot segments are forbidden", |s| s != "." && s != "..")
}

/// A valid path: empty or `/seg/seg…`.
fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..6).prop_map(|segs| {
        segs.iter().fold(String::new(), |mut p, s| {
            p.push('/');
            p.push_str(s);
            p
        })
    })
}

fn valid_id() -> impl Strategy<Value = String> {
    (trust_domain(), path()).prop_map(|(td, p)| format!("spiffe://{td}{p}"))
}

/// Characters allowed nowhere in a SPIFFE ID (neither trust domain nor
/// path): every other ASCII byte except '/', and non-ASCII characters.
fn forbidden_char() -> impl Strategy<Value = char> {
    prop_oneof![
        (0u8..=0x7f)
            .prop_filter("allowed somewhere", |b| {
                !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
            })
            .prop_map(char::from),
        any::<char>().prop_filter("non-ASCII only", |c| !c.is_ascii()),
    ]
}

fn selector_type() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,64}"
}

/// A selector value: non-empty, no control characters (may contain ':').
fn selector_value() -> impl Strategy<Value = String> {
    "[^\\p{Cc}]{1,40}"
}

fn selector() -> impl Strategy<Value = Selector> {
    (
        prop_oneof!["unix|k8s|docker|x509pop", selector_type()],
        selector_value(),
    )
        .prop_map(|(t, v)| Selector::new(&t, &v).expect("generated selector is valid"))
}

fn selectors(max: usize) -> impl Strategy<Value = Vec<Selector>> {
    prop::collection::vec(selector(), 0..max)
}

// ---------------------------------------------------------------------------
// SPIFFE IDs and trust domains.

proptest! {
    #[test]
    fn spiffe_id_parse_display_round_trip(input in valid_id()) {
        let id = SpiffeId::parse(&input).unwrap();
        prop_assert_eq!(id.to_string(), input.clone());
        prop_assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id.clone());
        let td = id.trust_domain();
        prop_assert_eq!(format!("spiffe://{}{}", td, id.path()), input);
        prop_assert!(id.is_member_of(&td));
        prop_assert_eq!(td.spiffe_id(id.path()).unwrap(), id.clone());
        prop_assert_eq!(id.is_trust_domain_id(), id.path().is_empty());
    }

    #[test]
    fn spiffe_id_refuses_a_forbidden_char_anywhere(
        input in valid_id(),
        at in any::<Index>(),
        c in forbidden_char(),
    ) {
        // Insert after the scheme, at a char boundary of the rest.
        let rest = &input["spiffe://".len()..];
        let pos = "spiffe://".len() + at.index(rest.len() + 1);
        let mut bad = input.clone();
        bad.insert(pos, c);
        let err = SpiffeId::parse(&bad);
        prop_assert!(err.is_err(), "{:?} was accepted", bad);
        let msg = err.unwrap_err().to_string();
        prop_assert!(!msg.is_empty());
    }

    #[test]
    fn spiffe_id_refuses_uppercase_trust_domain(td in "[a-z0-9]{0,10}[A-Z][a-zA-Z0-9.-]{0,10}", p in path()) {
        let bad = format!("spiffe://{td}{p}");
        let is_uppercase_error = matches!(
            SpiffeId::parse(&bad),
            Err(SpiffeIdError::UppercaseTrustDomain { .. })
        );
        prop_assert!(is_uppercase_error, "{:?}", bad);
        prop_assert!(TrustDomain::parse(&td).is_err());
    }

    #[test]
    fn spiffe_id_refuses_bad_shapes(
        td in trust_domain(),
        segs in prop::collection::vec(segment(), 1..5),
        at in any::<Index>(),
        shape in 0usize..4,
    ) {
        let mut segs = segs;
        let i = at.index(segs.len());
        match shape {
            0 => segs[i] = String::new(),
            1 => segs[i] = ".".into(),
            2 => segs[i] = "..".into(),
            _ => segs.push(String::new()),
        }
        let bad = format!("spiffe://{td}/{}", segs.join("/"));
        prop_assert!(SpiffeId::parse(&bad).is_err(), "{:?} was accepted", bad);
    }

    #[test]
    fn spiffe_id_refuses_wrong_schemes(rest in valid_id(), scheme in "(SPIFFE|Spiffe|spiffe:|spiffe:/|spife:/|https:/|)") {
        let bad = rest.replacen("spiffe:/", &scheme, 1);
        prop_assume!(bad != rest);
        prop_assert!(SpiffeId::parse(&bad).is_err(), "{:?} was accepted", bad);
    }

    #[test]
    fn spiffe_id_length_limit(td in "[a-z]{1,20}", n in 1900usize..2200) {
        let mut id = format!("spiffe://{td}/");
        while id.len() < n {
            id.push('a');
        }
        prop_assert_eq!(SpiffeId::parse(&id).is_ok(), id.len() <= 2048);
    }

    #[test]
    fn trust_domain_parse_round_trip(td in trust_domain()) {
        let parsed = TrustDomain::parse(&td).unwrap();
        prop_assert_eq!(parsed.as_str(), td.as_str());
        prop_assert_eq!(TrustDomain::parse(parsed.id().as_str()).unwrap(), parsed.clone());
        prop_assert_eq!(parsed.id().to_string(), format!("spiffe://{td}"));
    }

    #[test]
    fn trust_domain_length_limit(n in 200usize..300) {
        let td = "a".repeat(n);
        prop_assert_eq!(TrustDomain::parse(&td).is_ok(), n <= 255);
    }

    #[test]
    fn parsers_never_panic(s in "\\PC{0,80}|spiffe://.{0,80}") {
        let _ = SpiffeId::parse(&s);
        let _ = TrustDomain::parse(&s);
        let _ = Selector::parse(&s);
        let _ = parse_duration(&s);
    }
}

// ---------------------------------------------------------------------------
// Selectors.

proptest! {
    #[test]
    fn selector_parse_display_round_trip(t in selector_type(), v in selector_value()) {
        let text = format!("{t}:{v}");
        let s = Selector::parse(&text).unwrap();
        prop_assert_eq!(s.ty(), t.as_str());
        prop_assert_eq!(s.value(), v.as_str());
        prop_assert_eq!(s.to_string(), text);
        prop_assert_eq!(Selector::parse(&s.to_string()).unwrap(), s.clone());
        prop_assert_eq!(Selector::new(&t, &v).unwrap(), s);
    }

    #[test]
    fn selector_refuses_bad_types(t in "[a-z0-9_-]{0,5}[^a-z0-9_:\\-][a-z0-9_-]{0,5}", v in selector_value()) {
        let err = Selector::parse(&format!("{t}:{v}"));
        prop_assert!(matches!(err, Err(SelectorError::BadType { .. })), "{:?}", err);
    }

    #[test]
    fn selector_refuses_control_chars(t in selector_type(), v in selector_value(), c in "\\p{Cc}", at in any::<Index>()) {
        let mut v = v;
        let boundaries: Vec<usize> = v.char_indices().map(|(i, _)| i).chain([v.len()]).collect();
        v.insert_str(boundaries[at.index(boundaries.len())], &c);
        let err = Selector::parse(&format!("{t}:{v}"));
        prop_assert!(matches!(err, Err(SelectorError::ControlChar { .. })), "{:?}", err);
    }

    #[test]
    fn selector_refuses_missing_parts(t in selector_type(), v in selector_value()) {
        let no_colon = Selector::parse(&t);
        let no_value = Selector::parse(&format!("{t}:"));
        let no_type = Selector::parse(&format!(":{v}"));
        let ok = matches!(no_colon, Err(SelectorError::MissingColon { .. }))
            && matches!(no_value, Err(SelectorError::EmptyValue { .. }))
            && matches!(no_type, Err(SelectorError::EmptyType { .. }));
        prop_assert!(ok, "{:?} {:?} {:?}", no_colon, no_value, no_type);
    }

    #[test]
    fn subset_is_reflexive(a in selectors(8)) {
        prop_assert!(is_subset(&a, &a));
        prop_assert!(is_subset(&[], &a));
    }

    #[test]
    fn subset_of_a_subsequence_and_monotone(
        have in selectors(10),
        mask in prop::collection::vec(any::<bool>(), 10),
        extra in selectors(5),
    ) {
        let required: Vec<Selector> = have
            .iter()
            .zip(&mask)
            .filter(|(_, keep)| **keep)
            .map(|(s, _)| s.clone())
            .collect();
        prop_assert!(is_subset(&required, &have));
        // Monotone: more selectors on the workload never un-match an entry.
        let mut more = have.clone();
        more.extend(extra);
        prop_assert!(is_subset(&required, &more));
    }

    #[test]
    fn subset_is_order_and_duplicate_independent(
        required in selectors(6),
        have in selectors(10),
        seed in any::<u64>(),
    ) {
        let expected = required.iter().all(|r| have.contains(r));
        prop_assert_eq!(is_subset(&required, &have), expected);
        let shuffle = |v: &[Selector]| {
            let mut v = v.to_vec();
            let mut x = seed | 1;
            for i in (1..v.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.swap(i, (x % (i as u64 + 1)) as usize);
            }
            v
        };
        prop_assert_eq!(is_subset(&shuffle(&required), &shuffle(&have)), expected);
        let mut dup_req = required.clone();
        dup_req.extend(required.iter().cloned());
        let mut dup_have = have.clone();
        dup_have.extend(have.iter().cloned());
        prop_assert_eq!(is_subset(&dup_req, &dup_have), expected);
        // Missing one required selector never matches.
        if let Some(r) = required.first() {
            let without: Vec<Selector> = have.iter().filter(|h| *h != r).cloned().collect();
            prop_assert!(!is_subset(&required, &without));
        }
    }
}

// ---------------------------------------------------------------------------
// Durations.

const HUNDRED_YEARS: u64 = 100 * 365 * 86_400;

proptest! {
    #[test]
    fn duration_format_parse_round_trip(secs in 0u64..=HUNDRED_YEARS) {
        let d = Duration::from_secs(secs);
        let text = format_duration(d);
        prop_assert_eq!(parse_duration(&text).unwrap(), d);
    }

    #[test]
    fn duration_parts_add_up(parts in prop::collection::vec((0u64..10_000, prop::sample::select(vec![('s', 1u64), ('m', 60), ('h', 3600), ('d', 86_400)])), 1..5)) {
        let text: String = parts.iter().map(|(n, (u, _))| format!("{n}{u}")).collect();
        let total: u64 = parts.iter().map(|(n, (_, m))| n * m).sum();
        let parsed = parse_duration(&text).unwrap();
        prop_assert_eq!(parsed, Duration::from_secs(total));
        // The canonical form of what was parsed parses back to the same.
        prop_assert_eq!(parse_duration(&format_duration(parsed)).unwrap(), parsed);
    }

    #[test]
    fn duration_refuses_bare_numbers_negatives_and_overflow(n in any::<u64>(), unit in "[smhd]") {
        prop_assert!(parse_duration(&n.to_string()).is_err());
        let negative = format!("-{n}{unit}");
        prop_assert!(parse_duration(&negative).is_err());
        let big = format!("{n}{n}{n}{unit}");
        let expected_ok = big.parse::<u128>().is_ok_and(|v| {
            let mult: u128 = match unit.as_str() { "s" => 1, "m" => 60, "h" => 3600, _ => 86_400 };
            v * mult <= u128::from(HUNDRED_YEARS)
        });
        prop_assert_eq!(parse_duration(&big).is_ok(), expected_ok, "{}", big);
    }
}

// ---------------------------------------------------------------------------
// JWKS.

/// A few CA certificates and JWT keys, generated once (P-256 and P-384).
struct Pool {
    certs: Vec<Vec<u8>>,
    jwt_spkis: Vec<Vec<u8>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let algs = [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
        ];
        let mut certs = Vec::new();
        let mut jwt_spkis = Vec::new();
        for i in 0..6 {
            let key = rcgen::KeyPair::generate_for(algs[i % 2]).unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, format!("CA {i}"));
            certs.push(params.self_signed(&key).unwrap().der().to_vec());
            let jwt = rcgen::KeyPair::generate_for(algs[(i + 1) % 2]).unwrap();
            jwt_spkis.push(rcgen::PublicKeyData::subject_public_key_info(&jwt));
        }
        Pool { certs, jwt_spkis }
    })
}

proptest! {
    #[test]
    fn jwks_encode_decode_round_trip(
        certs in subsequence((0..6usize).collect::<Vec<_>>(), 0..=6),
        jwts in subsequence((0..6usize).collect::<Vec<_>>(), 0..=6),
        kids in prop::collection::hash_set("[A-Za-z0-9_-]{1,32}", 6),
        sequence in any::<Option<u64>>(),
        refresh_hint in any::<Option<u64>>(),
        td in trust_domain(),
    ) {
        let pool = pool();
        let kids: Vec<String> = kids.into_iter().collect();
        let bundle = SpiffeBundle {
            trust_domain: TrustDomain::parse(&td).unwrap(),
            x509_authorities: certs.iter().map(|&i| pool.certs[i].clone()).collect(),
            jwt_authorities: jwts
                .iter()
                .enumerate()
                .map(|(n, &i)| JwtKey { kid: kids[n].clone(), spki_der: pool.jwt_spkis[i].clone() })
                .collect(),
            sequence,
            refresh_hint,
        };
        let json = bundle::encode(&bundle).unwrap();
        let decoded = bundle::decode(&bundle.trust_domain, json.as_bytes()).unwrap();
        prop_assert_eq!(&decoded.skipped, &vec![]);
        let back = decoded.bundle;
        prop_assert_eq!(&back, &bundle);
        // Encoding is deterministic.
        prop_assert_eq!(bundle::encode(&back).unwrap(), json);
        // The PEM codec round-trips the X.509 authorities too.
        if !bundle.x509_authorities.is_empty() {
            let pem = pem::to_pem(&bundle.x509_authorities);
            prop_assert_eq!(pem::from_pem(pem.as_bytes()).unwrap(), bundle.x509_authorities.clone());
            prop_assert_eq!(pem::certs_from_pem_or_der(pem.as_bytes()).unwrap(), bundle.x509_authorities.clone());
            let der: Vec<u8> = bundle.x509_authorities.concat();
            prop_assert_eq!(pem::certs_from_pem_or_der(&der).unwrap(), bundle.x509_authorities.clone());
        }
    }

    #[test]
    fn jwks_decode_never_panics_on_mutations(
        i in 0usize..6,
        at in any::<Index>(),
        byte in any::<u8>(),
        cut in any::<Index>(),
    ) {
        let pool = pool();
        let td = TrustDomain::parse("example.org").unwrap();
        let bundle = SpiffeBundle {
            trust_domain: td.clone(),
            x509_authorities: vec![pool.certs[i].clone()],
            jwt_authorities: vec![JwtKey { kid: "k".into(), spki_der: pool.jwt_spkis[i].clone() }],
            sequence: Some(1),
            refresh_hint: Some(300),
        };
        let mut json = bundle::encode(&bundle).unwrap().into_bytes();
        let n = json.len();
        json[at.index(n)] = byte;
        // Whatever a mutated document keeps re-encodes to a document that
        // decodes to the same bundle with nothing skipped.
        for doc in [&json[..], &json[..cut.index(n)]] {
            if let Ok(d) = bundle::decode(&td, doc) {
                let again = bundle::decode(&td, bundle::encode(&d.bundle).unwrap().as_bytes()).unwrap();
                prop_assert_eq!(&again.bundle, &d.bundle);
                prop_assert_eq!(&again.skipped, &vec![]);
            }
        }
        let mut der = pool.certs[i].clone();
        let m = der.len();
        der[at.index(m)] = byte;
        let _ = pem::certs_from_pem_or_der(&der);
        prop_assert!(pem::certs_from_pem_or_der(&pool.certs[i][..cut.index(m)]).is_err());
    }
}
