//! Tests of the bundle's JWK Set codec: round trips, the encoded shape,
//! the decoding vectors of skipped keys and the document-level errors.

use rcgen::{KeyPair, PKCS_ECDSA_P384_SHA384, PublicKeyData};
use serde_json::{Value, json};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::key_params::{KeyParams, der_tlv, der_uint};
use super::*;
use crate::pem::parse_cert;
use crate::spiffe_id::TrustDomain;
use crate::test_pki::TestCa;

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

/// An RSA SPKI with a 2048-bit modulus: ring cannot generate RSA keys,
/// and the codec only needs well-formed integers.
fn rsa_spki() -> Vec<u8> {
    let mut n = vec![0u8; 256];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut n).unwrap();
    n[0] |= 0x80;
    KeyParams::Rsa {
        n,
        e: vec![1, 0, 1],
    }
    .to_spki()
}

fn p384_ca() -> Vec<u8> {
    crate::test_pki::p384_ca("example.org")
}

fn sample() -> SpiffeBundle {
    let ec_jwt = KeyPair::generate().unwrap();
    SpiffeBundle {
        trust_domain: td(),
        x509_authorities: vec![TestCa::new("example.org").der, p384_ca()],
        jwt_authorities: vec![
            JwtKey {
                kid: "ec-key".into(),
                spki_der: ec_jwt.subject_public_key_info(),
            },
            JwtKey {
                kid: "rsa-key".into(),
                spki_der: rsa_spki(),
            },
        ],
        sequence: Some(7),
        refresh_hint: Some(300),
    }
}

fn decode_value(v: &Value) -> Result<Decoded, JwksError> {
    decode(&td(), v.to_string().as_bytes())
}

fn encoded_keys(b: &SpiffeBundle) -> Vec<Value> {
    let v: Value = serde_json::from_str(&encode(b).unwrap()).unwrap();
    v["keys"].as_array().unwrap().clone()
}

/// Decodes `keys` in a document with the sample's sequence and refresh
/// hint; the document itself must be accepted.
fn decode_keys(keys: &[Value]) -> Decoded {
    decode_value(&json!({
        "keys": keys,
        "spiffe_sequence": 7,
        "spiffe_refresh_hint": 300
    }))
    .unwrap()
}

/// `b` without the authority its encoding puts at key `index`.
fn without(b: &SpiffeBundle, index: usize) -> SpiffeBundle {
    let mut b = b.clone();
    let n = b.x509_authorities.len();
    if index < n {
        b.x509_authorities.remove(index);
    } else {
        b.jwt_authorities.remove(index - n);
    }
    b
}

/// Decodes `keys` (the encoding of `bundle`, with key `index` spoiled)
/// and checks that exactly that key was skipped and every other key
/// kept; returns the rule it was skipped for.
fn skipped_rule(bundle: &SpiffeBundle, keys: &[Value], index: usize) -> KeyRule {
    let d = decode_keys(keys);
    assert_eq!(d.bundle, without(bundle, index), "{:?}", d.skipped);
    assert_eq!(d.skipped.len(), 1, "{:?}", d.skipped);
    assert_eq!(d.skipped[0].index, index);
    assert!(d.skipped[0].key_dropped());
    d.skipped[0].rule.clone()
}

#[test]
fn round_trip() {
    let bundle = sample();
    let text = encode(&bundle).unwrap();
    let back = decode(&td(), text.as_bytes()).unwrap();
    assert_eq!(back.bundle, bundle);
    assert_eq!(back.skipped, vec![]);
}

#[test]
fn encoded_shape_follows_the_spec() {
    let bundle = sample();
    let v: Value = serde_json::from_str(&encode(&bundle).unwrap()).unwrap();
    assert_eq!(v["spiffe_sequence"], json!(7));
    assert_eq!(v["spiffe_refresh_hint"], json!(300));
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 4);

    let ca = &keys[0];
    assert_eq!(ca["use"], "x509-svid");
    assert_eq!(ca["kty"], "EC");
    assert_eq!(ca["crv"], "P-256");
    assert!(ca.get("kid").is_none(), "x509-svid keys carry no kid: {ca}");
    let x5c = ca["x5c"].as_array().unwrap();
    assert_eq!(x5c.len(), 1);
    assert_eq!(
        x5c[0].as_str().unwrap(),
        STANDARD.encode(&bundle.x509_authorities[0])
    );
    // x and y are the certificate key's coordinates, base64url unpadded.
    let cert = parse_cert(&bundle.x509_authorities[0]).unwrap();
    let point = cert.public_key().subject_public_key.data.to_vec();
    let x = URL_SAFE_NO_PAD.decode(ca["x"].as_str().unwrap()).unwrap();
    let y = URL_SAFE_NO_PAD.decode(ca["y"].as_str().unwrap()).unwrap();
    assert_eq!([&[4u8][..], &x, &y].concat(), point);
    assert!(!ca["x"].as_str().unwrap().contains(['=', '+', '/']));

    assert_eq!(keys[1]["crv"], "P-384");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(keys[1]["x"].as_str().unwrap())
            .unwrap()
            .len(),
        48
    );

    assert_eq!(keys[2]["use"], "jwt-svid");
    assert_eq!(keys[2]["kid"], "ec-key");
    assert!(keys[2].get("x5c").is_none());
    assert_eq!(keys[3]["kty"], "RSA");
    assert_eq!(keys[3]["e"], "AQAB");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(keys[3]["n"].as_str().unwrap())
            .unwrap()
            .len(),
        256
    );
}

#[test]
fn optional_members_are_omitted() {
    let mut bundle = sample();
    bundle.sequence = None;
    bundle.refresh_hint = None;
    let v: Value = serde_json::from_str(&encode(&bundle).unwrap()).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), vec!["keys"]);
    let back = decode_value(&v).unwrap();
    assert_eq!(back.bundle, bundle);
    assert_eq!(back.skipped, vec![]);
}

#[test]
fn spki_encoding_matches_real_keys() {
    for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &PKCS_ECDSA_P384_SHA384] {
        let key = KeyPair::generate_for(alg).unwrap();
        let spki = key.subject_public_key_info();
        let params = KeyParams::from_spki(&spki).unwrap();
        assert_eq!(params.to_spki(), spki);
    }
    let rsa = rsa_spki();
    let parsed = SubjectPublicKeyInfo::from_der(&rsa).unwrap().1;
    assert_eq!(parsed.algorithm.algorithm, OID_PKCS1_RSAENCRYPTION);
    assert_eq!(KeyParams::from_spki(&rsa).unwrap().to_spki(), rsa);
    // Long-form DER lengths.
    assert_eq!(der_tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
    assert_eq!(der_tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
    assert_eq!(der_uint(&[0x00, 0x80]), vec![0x02, 0x02, 0x00, 0x80]);
}

/// One bundle decoding vector: a document built from the sample's
/// encoded keys, the sample authorities it must keep (by index, in
/// order) and the keys it must report.
struct Vector {
    /// Starts with the clause every reported key falls under.
    name: &'static str,
    keys: Vec<Value>,
    x509: Vec<usize>,
    jwt: Vec<usize>,
    skipped: Vec<Skipped>,
}

fn skip(index: usize, rule: KeyRule) -> Skipped {
    Skipped { index, rule }
}

#[test]
fn bundle_decoding_vectors() {
    let bundle = sample();
    let keys = encoded_keys(&bundle);
    let ca = |i: usize| json!(STANDARD.encode(&bundle.x509_authorities[i]));
    let with = |i: usize, member: &str, value: Value| {
        let mut k = keys[i].clone();
        k[member] = value;
        k
    };
    let without_member = |i: usize, member: &str| {
        let mut k = keys[i].clone();
        k.as_object_mut().unwrap().remove(member);
        k
    };
    // A well-formed EC key of an unknown use.
    let sig_use = with(2, "use", json!("sig"));
    let okp = json!({
        "kty": "OKP", "crv": "Ed25519", "use": "jwt-svid", "kid": "okp", "x": "AA"
    });
    // The first CA's certificate with another P-256 key's parameters.
    let other = encoded_keys(&SpiffeBundle {
        x509_authorities: vec![TestCa::new("example.org").der],
        jwt_authorities: vec![],
        ..bundle.clone()
    });
    let mut mismatched = keys[0].clone();
    mismatched["x"] = other[0]["x"].clone();
    mismatched["y"] = other[0]["y"].clone();

    let vectors = vec![
        Vector {
            name: "X509-SVID §6.2: an x509-svid key without x5c is ignored",
            keys: vec![
                without_member(0, "x5c"),
                keys[1].clone(),
                keys[2].clone(),
                keys[3].clone(),
            ],
            x509: vec![1],
            jwt: vec![0, 1],
            skipped: vec![skip(0, KeyRule::X5cMissing)],
        },
        Vector {
            name: "X509-SVID §6.2: an x509-svid key with an empty x5c is ignored",
            keys: vec![
                keys[0].clone(),
                with(1, "x5c", json!([])),
                keys[2].clone(),
                keys[3].clone(),
            ],
            x509: vec![0],
            jwt: vec![0, 1],
            skipped: vec![skip(1, KeyRule::X5cMissing)],
        },
        Vector {
            name: "X509-SVID §6.2: x5c values after the first are ignored, the first is used",
            keys: vec![
                with(0, "x5c", json!([ca(0), ca(1)])),
                // Ignored values are not even read.
                with(1, "x5c", json!([ca(1), "%%%", 42])),
                keys[2].clone(),
                keys[3].clone(),
            ],
            x509: vec![0, 1],
            jwt: vec![0, 1],
            skipped: vec![
                skip(0, KeyRule::X5cExtra { ignored: 1 }),
                skip(1, KeyRule::X5cExtra { ignored: 2 }),
            ],
        },
        Vector {
            name: "Trust Domain and Bundle §4.2.2: a key of unknown use is ignored",
            keys: vec![
                keys[0].clone(),
                sig_use.clone(),
                // Use values are case sensitive.
                with(1, "use", json!("X509-SVID")),
                with(3, "use", json!(7)),
                keys[1].clone(),
                keys[2].clone(),
                keys[3].clone(),
            ],
            x509: vec![0, 1],
            jwt: vec![0, 1],
            skipped: vec![
                skip(
                    1,
                    KeyRule::UnknownUse {
                        value: "\"sig\"".into(),
                    },
                ),
                skip(
                    2,
                    KeyRule::UnknownUse {
                        value: "\"X509-SVID\"".into(),
                    },
                ),
                skip(3, KeyRule::UnknownUse { value: "7".into() }),
            ],
        },
        Vector {
            name: "Trust Domain and Bundle §4.2.2: a key without use is ignored",
            keys: vec![
                keys[0].clone(),
                keys[1].clone(),
                without_member(2, "use"),
                with(3, "use", Value::Null),
            ],
            x509: vec![0, 1],
            jwt: vec![],
            skipped: vec![skip(2, KeyRule::MissingUse), skip(3, KeyRule::MissingUse)],
        },
        Vector {
            name: "Trust Domain and Bundle §4.2.1: a key of unknown kty is ignored",
            keys: vec![
                keys[0].clone(),
                okp,
                with(1, "kty", json!("oct")),
                without_member(3, "kty"),
                keys[1].clone(),
                keys[2].clone(),
                keys[3].clone(),
            ],
            x509: vec![0, 1],
            jwt: vec![0, 1],
            skipped: vec![
                skip(1, KeyRule::UnknownKeyType { kty: "OKP".into() }),
                skip(2, KeyRule::UnknownKeyType { kty: "oct".into() }),
                skip(3, KeyRule::MissingMember { member: "kty" }),
            ],
        },
        Vector {
            name: "Trust Domain and Bundle §4.1.3: a bad key between two good ones is \
                   skipped, both good ones kept in order",
            keys: vec![keys[1].clone(), mismatched.clone(), keys[0].clone()],
            x509: vec![1, 0],
            jwt: vec![],
            skipped: vec![skip(1, KeyRule::KeyMismatch)],
        },
        Vector {
            name: "Trust Domain and Bundle §4.1.3: a jwt-svid key without kid is skipped",
            keys: vec![
                without_member(2, "kid"),
                with(3, "kid", json!("")),
                keys[2].clone(),
            ],
            x509: vec![],
            jwt: vec![0],
            skipped: vec![
                skip(0, KeyRule::MissingMember { member: "kid" }),
                skip(1, KeyRule::MissingMember { member: "kid" }),
            ],
        },
        Vector {
            name: "Trust Domain and Bundle §4.1.3: a duplicate kid is skipped, the first \
                   key keeps it",
            keys: vec![
                keys[2].clone(),
                with(3, "kid", json!("ec-key")),
                keys[3].clone(),
            ],
            x509: vec![],
            jwt: vec![0, 1],
            skipped: vec![skip(
                1,
                KeyRule::DuplicateKid {
                    kid: "ec-key".into(),
                },
            )],
        },
        Vector {
            name: "Trust Domain and Bundle §4.1.3: a document whose keys all fail \
                   validation is an empty bundle",
            keys: vec![
                mismatched,
                json!("a string"),
                with(3, "e", json!("AA")),
                with(2, "crv", json!("P-521")),
            ],
            x509: vec![],
            jwt: vec![],
            skipped: vec![
                skip(0, KeyRule::KeyMismatch),
                skip(1, KeyRule::NotAnObject),
                skip(2, KeyRule::RsaExponent),
                skip(
                    3,
                    KeyRule::UnsupportedCurve {
                        crv: "P-521".into(),
                    },
                ),
            ],
        },
        Vector {
            name: "Trust Domain and Bundle §4.1.3: an empty keys array is an empty bundle",
            keys: vec![],
            x509: vec![],
            jwt: vec![],
            skipped: vec![],
        },
        Vector {
            name: "Trust Domain and Bundle §4.2.2: a document whose only key has an \
                   unknown use is an empty bundle (§4.1.3)",
            keys: vec![sig_use],
            x509: vec![],
            jwt: vec![],
            skipped: vec![skip(
                0,
                KeyRule::UnknownUse {
                    value: "\"sig\"".into(),
                },
            )],
        },
    ];
    for v in vectors {
        let d = decode_keys(&v.keys);
        let want = SpiffeBundle {
            x509_authorities: v
                .x509
                .iter()
                .map(|&i| bundle.x509_authorities[i].clone())
                .collect(),
            jwt_authorities: v
                .jwt
                .iter()
                .map(|&i| bundle.jwt_authorities[i].clone())
                .collect(),
            ..bundle.clone()
        };
        assert_eq!(d.bundle, want, "{}", v.name);
        assert_eq!(d.bundle.is_empty(), v.x509.is_empty() && v.jwt.is_empty());
        assert_eq!(d.skipped, v.skipped, "{}", v.name);
        for s in &d.skipped {
            assert!(
                v.name.starts_with(s.clause()),
                "{}: key {} falls under {}",
                v.name,
                s.index,
                s.clause()
            );
        }
    }
}

#[test]
fn skip_reports_name_the_key_the_clause_and_the_rule() {
    let cases = [
        (
            skip(0, KeyRule::X5cMissing),
            "bundle key 0 skipped (X509-SVID §6.2): an x509-svid key has no certificate: \
             \"x5c\" is missing or empty",
        ),
        (
            skip(3, KeyRule::X5cExtra { ignored: 2 }),
            "bundle key 3 kept with its first certificate (X509-SVID §6.2): \"x5c\" holds \
             2 value(s) after the first; only the first is used",
        ),
        (
            skip(1, KeyRule::MissingUse),
            "bundle key 1 skipped (Trust Domain and Bundle §4.2.2): the JWK has no \"use\" \
             member",
        ),
        (
            skip(
                2,
                KeyRule::UnknownUse {
                    value: "\"sig\"".into(),
                },
            ),
            "bundle key 2 skipped (Trust Domain and Bundle §4.2.2): \"use\" \"sig\" is not \
             a known use (\"x509-svid\" or \"jwt-svid\")",
        ),
        (
            skip(4, KeyRule::UnknownKeyType { kty: "OKP".into() }),
            "bundle key 4 skipped (Trust Domain and Bundle §4.2.1): key type \"OKP\" is not \
             a known key type (EC or RSA)",
        ),
        (
            skip(5, KeyRule::DuplicateKid { kid: "k".into() }),
            "bundle key 5 skipped (Trust Domain and Bundle §4.1.3): jwt-svid key has a \
             \"kid\" already used by another jwt-svid key: \"k\"",
        ),
    ];
    for (s, text) in cases {
        assert_eq!(s.to_string(), text);
    }
    assert!(!skip(0, KeyRule::X5cExtra { ignored: 1 }).key_dropped());
    assert!(skip(0, KeyRule::KeyMismatch).key_dropped());
}

#[test]
fn x5c_key_must_match_key_params() {
    let bundle = sample();
    let mut keys = encoded_keys(&bundle);
    // Key parameters of another P-256 key next to the first CA's cert.
    let other = encoded_keys(&SpiffeBundle {
        x509_authorities: vec![TestCa::new("example.org").der],
        jwt_authorities: vec![],
        ..bundle.clone()
    });
    keys[0]["x"] = other[0]["x"].clone();
    keys[0]["y"] = other[0]["y"].clone();
    assert_eq!(skipped_rule(&bundle, &keys, 0), KeyRule::KeyMismatch);
    // Claiming the P-384 CA is P-256.
    let mut keys = encoded_keys(&bundle);
    keys[1]["crv"] = json!("P-256");
    assert!(matches!(
        skipped_rule(&bundle, &keys, 1),
        KeyRule::CoordinateLength { member: "x", .. }
    ));
    // The certificate of the other x509-svid key.
    let mut keys = encoded_keys(&bundle);
    keys[0]["x5c"] = keys[1]["x5c"].clone();
    assert!(matches!(
        skipped_rule(&bundle, &keys, 0),
        KeyRule::KeyMismatch
    ));
}

#[test]
fn jwt_keys_need_a_unique_kid() {
    let bundle = sample();
    let mut keys = encoded_keys(&bundle);
    keys[2].as_object_mut().unwrap().remove("kid");
    assert_eq!(
        skipped_rule(&bundle, &keys, 2),
        KeyRule::MissingMember { member: "kid" }
    );
    let mut keys = encoded_keys(&bundle);
    keys[3]["kid"] = json!("");
    assert_eq!(
        skipped_rule(&bundle, &keys, 3),
        KeyRule::MissingMember { member: "kid" }
    );
    let mut keys = encoded_keys(&bundle);
    keys[3]["kid"] = json!("ec-key");
    assert_eq!(
        skipped_rule(&bundle, &keys, 3),
        KeyRule::DuplicateKid {
            kid: "ec-key".into()
        }
    );
    // Only a kept key holds its kid: when the first key with a kid is
    // skipped, the next one with it is kept.
    let mut keys = encoded_keys(&bundle);
    keys[2]["crv"] = json!("P-521");
    keys[3]["kid"] = json!("ec-key");
    let d = decode_keys(&keys);
    assert_eq!(
        d.bundle.jwt_authorities,
        vec![JwtKey {
            kid: "ec-key".into(),
            spki_der: bundle.jwt_authorities[1].spki_der.clone(),
        }]
    );
    assert_eq!(
        d.skipped,
        vec![skip(
            2,
            KeyRule::UnsupportedCurve {
                crv: "P-521".into()
            }
        )]
    );
    let mut dup = bundle.clone();
    dup.jwt_authorities[1].kid = "ec-key".into();
    assert!(matches!(
        encode(&dup),
        Err(JwksError::EncodeJwtAuthority {
            index: 1,
            rule: KeyRule::DuplicateKid { .. }
        })
    ));
}

#[test]
fn bad_base64_is_skipped() {
    let bundle = sample();
    let mut keys = encoded_keys(&bundle);
    keys[2]["x"] = json!("not*base64");
    assert!(matches!(
        skipped_rule(&bundle, &keys, 2),
        KeyRule::BadBase64 { member: "x", .. }
    ));
    // Padded base64url is not the JWK encoding.
    let mut keys = encoded_keys(&bundle);
    keys[3]["e"] = json!("AQAB==");
    assert!(matches!(
        skipped_rule(&bundle, &keys, 3),
        KeyRule::BadBase64 { member: "e", .. }
    ));
    let mut keys = encoded_keys(&bundle);
    keys[0]["x5c"] = json!(["%%%"]);
    assert!(matches!(
        skipped_rule(&bundle, &keys, 0),
        KeyRule::BadBase64 { member: "x5c", .. }
    ));
    let mut keys = encoded_keys(&bundle);
    keys[0]["x5c"] = json!([STANDARD.encode(b"not a certificate")]);
    assert!(matches!(
        skipped_rule(&bundle, &keys, 0),
        KeyRule::BadCertificate { .. }
    ));
    // An empty first value is a value: not a certificate.
    let mut keys = encoded_keys(&bundle);
    keys[1]["x5c"] = json!([""]);
    assert!(matches!(
        skipped_rule(&bundle, &keys, 1),
        KeyRule::BadCertificate { .. }
    ));
}

#[test]
fn bad_key_params_are_skipped() {
    let bundle = sample();
    let cases: Vec<(usize, &str, Value, KeyRule)> = vec![
        (
            2,
            "crv",
            json!("P-521"),
            KeyRule::UnsupportedCurve {
                crv: "P-521".into(),
            },
        ),
        (
            2,
            "y",
            json!(URL_SAFE_NO_PAD.encode([1u8; 31])),
            KeyRule::CoordinateLength {
                member: "y",
                crv: "P-256",
                expected: 32,
                found: 31,
            },
        ),
        (
            3,
            "n",
            json!(URL_SAFE_NO_PAD.encode([0xffu8; 128])),
            KeyRule::RsaModulusSize { bits: 1024 },
        ),
        (3, "e", json!("AA"), KeyRule::RsaExponent),
        (
            2,
            "kty",
            json!(""),
            KeyRule::MissingMember { member: "kty" },
        ),
        (2, "x", Value::Null, KeyRule::MissingMember { member: "x" }),
        (
            1,
            "crv",
            Value::Null,
            KeyRule::MissingMember { member: "crv" },
        ),
    ];
    for (index, member, value, rule) in cases {
        let mut keys = encoded_keys(&bundle);
        keys[index][member] = value;
        assert_eq!(skipped_rule(&bundle, &keys, index), rule, "{member}");
    }
    for (index, member, value) in [
        (0, "x5c", json!("not an array")),
        (1, "x5c", json!([42, "ignored"])),
        (2, "kid", json!(42)),
        (3, "n", json!(["AQAB"])),
    ] {
        let mut keys = encoded_keys(&bundle);
        keys[index][member] = value;
        assert!(
            matches!(
                skipped_rule(&bundle, &keys, index),
                KeyRule::MalformedMember { .. }
            ),
            "{member}"
        );
    }
    let mut keys = encoded_keys(&bundle);
    keys.insert(1, json!("a string"));
    let d = decode_keys(&keys);
    assert_eq!(d.bundle, bundle);
    assert_eq!(d.skipped, vec![skip(1, KeyRule::NotAnObject)]);
}

#[test]
fn unknown_members_are_ignored() {
    let bundle = sample();
    let mut keys = encoded_keys(&bundle);
    keys[0]["alg"] = json!("ES256");
    keys[2]["x5c"] = json!(["whatever"]);
    let doc = json!({
        "keys": keys,
        "spiffe_sequence": 7,
        "spiffe_refresh_hint": 300,
        "other": true
    });
    let back = decode_value(&doc).unwrap();
    assert_eq!(back.bundle, bundle);
    assert_eq!(back.skipped, vec![]);
}

#[test]
fn document_level_errors() {
    assert!(matches!(
        decode(&td(), b"{not json"),
        Err(JwksError::Json { .. })
    ));
    assert!(matches!(decode(&td(), b""), Err(JwksError::Json { .. })));
    assert!(matches!(
        decode(&td(), b"[1,2]"),
        Err(JwksError::Json { .. })
    ));
    assert!(matches!(
        decode(&td(), br#"{"keys":{}}"#),
        Err(JwksError::Json { .. })
    ));
    assert!(matches!(
        decode(&td(), br#"{"keys":[],"spiffe_sequence":-1}"#),
        Err(JwksError::Json { .. })
    ));
    assert_eq!(
        decode(&td(), br#"{"spiffe_sequence":1}"#),
        Err(JwksError::MissingKeys)
    );
    assert_eq!(
        decode(&td(), br#"{"keys":null}"#),
        Err(JwksError::MissingKeys)
    );
    let empty = decode(&td(), br#"{"keys":[]}"#).unwrap();
    assert!(empty.bundle.is_empty());
    assert_eq!(empty.bundle.trust_domain, td());
    assert_eq!(empty.skipped, vec![]);

    let mut big = br#"{"keys":[],"pad":""#.to_vec();
    big.resize(MAX_BUNDLE_BYTES + 1, b'a');
    assert_eq!(
        decode(&td(), &big),
        Err(JwksError::TooLarge {
            len: MAX_BUNDLE_BYTES + 1
        })
    );
    // Over the key limit even when every key would be skipped.
    let many = json!({ "keys": vec![json!({}); MAX_BUNDLE_KEYS + 1] });
    assert_eq!(
        decode_value(&many),
        Err(JwksError::TooManyKeys {
            count: MAX_BUNDLE_KEYS + 1
        })
    );
    let at_limit = json!({ "keys": vec![json!({}); MAX_BUNDLE_KEYS] });
    let d = decode_value(&at_limit).unwrap();
    assert!(d.bundle.is_empty());
    assert_eq!(d.skipped.len(), MAX_BUNDLE_KEYS);
    assert_eq!(
        d.skipped[MAX_BUNDLE_KEYS - 1],
        skip(MAX_BUNDLE_KEYS - 1, KeyRule::MissingUse)
    );
    // Deep nesting hits the JSON parser's recursion limit, not the stack.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(
        decode(&td(), deep.as_bytes()),
        Err(JwksError::Json { .. })
    ));
    assert_eq!(
        JwksError::MissingKeys.to_string(),
        "bundle document has no \"keys\" member (required by the SPIFFE bundle format)"
    );
}

#[test]
fn encode_refuses_unusable_authorities() {
    let mut bundle = sample();
    bundle.x509_authorities.push(b"garbage".to_vec());
    assert!(matches!(
        encode(&bundle),
        Err(JwksError::EncodeX509Authority {
            index: 2,
            rule: KeyRule::BadCertificate { .. }
        })
    ));
    let mut bundle = sample();
    bundle.jwt_authorities[0].kid.clear();
    assert!(matches!(
        encode(&bundle),
        Err(JwksError::EncodeJwtAuthority {
            index: 0,
            rule: KeyRule::MissingMember { member: "kid" }
        })
    ));
    let mut bundle = sample();
    bundle.jwt_authorities[1].spki_der = vec![0x30, 0x00];
    assert!(matches!(
        encode(&bundle),
        Err(JwksError::EncodeJwtAuthority {
            index: 1,
            rule: KeyRule::BadSpki { .. }
        })
    ));
}
