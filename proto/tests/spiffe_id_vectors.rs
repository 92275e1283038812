//! SPIFFE ID and trust domain vectors (SPIFFE ID specification, DESIGN §2):
//! accepted IDs come back unchanged, refused ones fail with the variant for
//! the rule they break and a message that names it, and every ASCII byte is
//! tried in a trust domain and in a path segment.

use sigil_proto::{SpiffeId, SpiffeIdError, TrustDomain};

/// Builds the string with `byte` (ASCII) or `s` spliced between `pre` and
/// `post`.
fn splice(pre: &str, middle: &str, post: &str) -> String {
    format!("{pre}{middle}{post}")
}

fn is_td_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

#[test]
fn valid_ids_are_accepted_unchanged() {
    let max = format!("spiffe://td/{}", "a".repeat(2048 - "spiffe://td/".len()));
    assert_eq!(max.len(), 2048);
    let max_td = format!("spiffe://{}/x", "a".repeat(255));
    let cases: Vec<(&str, &str, &str)> = vec![
        ("spiffe://trustdomain", "trustdomain", ""),
        (
            "spiffe://trustdomain/path/element",
            "trustdomain",
            "/path/element",
        ),
        ("spiffe://td/.path", "td", "/.path"),
        ("spiffe://td/...", "td", "/..."),
        ("spiffe://td/a-b_c.d", "td", "/a-b_c.d"),
        ("spiffe://td/UPPER/Mixed", "td", "/UPPER/Mixed"),
        (
            "spiffe://example.org/ns/prod/sa/web",
            "example.org",
            "/ns/prod/sa/web",
        ),
        ("spiffe://a-b_c.9/x", "a-b_c.9", "/x"),
        (&max, "td", &max["spiffe://td".len()..]),
        (&max_td, &max_td["spiffe://".len()..max_td.len() - 2], "/x"),
    ];
    for (input, td, path) in cases {
        let id = SpiffeId::parse(input).unwrap_or_else(|e| panic!("{input:?} refused: {e}"));
        assert_eq!(id.as_str(), input);
        assert_eq!(id.to_string(), input);
        assert_eq!(id.trust_domain().as_str(), td, "{input}");
        assert_eq!(id.path(), path, "{input}");
        assert_eq!(id.is_trust_domain_id(), path.is_empty(), "{input}");
        let again: SpiffeId = input.parse().unwrap();
        assert_eq!(again, id);
    }
}

/// What a refused input must produce: a check on the variant and a phrase
/// the message must contain.
struct Refusal {
    input: String,
    variant: fn(&SpiffeIdError) -> bool,
    phrase: &'static str,
}

fn refusal(
    input: impl Into<String>,
    variant: fn(&SpiffeIdError) -> bool,
    phrase: &'static str,
) -> Refusal {
    Refusal {
        input: input.into(),
        variant,
        phrase,
    }
}

#[test]
fn invalid_ids_are_refused_naming_the_rule() {
    use SpiffeIdError as E;
    let cases = vec![
        refusal("", |e| matches!(e, E::Empty), "empty"),
        refusal(
            "http://td/x",
            |e| matches!(e, E::WrongScheme { .. }),
            "scheme",
        ),
        refusal(
            "SPIFFE://td/x",
            |e| matches!(e, E::WrongScheme { .. }),
            "lowercase scheme",
        ),
        refusal(
            "Spiffe://td",
            |e| matches!(e, E::WrongScheme { .. }),
            "scheme",
        ),
        refusal(
            "spiffe:/td",
            |e| matches!(e, E::WrongScheme { .. }),
            "scheme",
        ),
        refusal(
            "spiffe:td",
            |e| matches!(e, E::WrongScheme { .. }),
            "scheme",
        ),
        refusal(
            " spiffe://td/x",
            |e| matches!(e, E::WrongScheme { .. }),
            "scheme",
        ),
        refusal(
            "spiffe://",
            |e| matches!(e, E::MissingTrustDomain { .. }),
            "trust domain is missing",
        ),
        refusal(
            "spiffe:///path",
            |e| matches!(e, E::MissingTrustDomain { .. }),
            "trust domain is missing",
        ),
        refusal(
            "spiffe://td/path/",
            |e| matches!(e, E::TrailingSlash { .. }),
            "trailing '/'",
        ),
        refusal(
            "spiffe://td/",
            |e| matches!(e, E::TrailingSlash { .. }),
            "trailing '/'",
        ),
        refusal(
            "spiffe://td//x",
            |e| matches!(e, E::EmptySegment { .. }),
            "empty path segment",
        ),
        refusal(
            "spiffe://td/x//y",
            |e| matches!(e, E::EmptySegment { .. }),
            "empty path segment",
        ),
        refusal(
            "spiffe://td/.",
            |e| matches!(e, E::DotSegment { .. }),
            "'.' and '..'",
        ),
        refusal(
            "spiffe://td/..",
            |e| matches!(e, E::DotSegment { .. }),
            "'.' and '..'",
        ),
        refusal(
            "spiffe://td/./x",
            |e| matches!(e, E::DotSegment { .. }),
            "'.' and '..'",
        ),
        refusal(
            "spiffe://td/x/../y",
            |e| matches!(e, E::DotSegment { .. }),
            "'.' and '..'",
        ),
        refusal(
            "spiffe://td/%41",
            |e| matches!(e, E::PercentEncoded { .. }),
            "percent-encoding",
        ),
        refusal(
            "spiffe://td/a%2Fb",
            |e| matches!(e, E::PercentEncoded { .. }),
            "percent-encoding",
        ),
        refusal(
            "spiffe://td:8080/x",
            |e| matches!(e, E::Port { .. }),
            "port",
        ),
        refusal("spiffe://td:/x", |e| matches!(e, E::Port { .. }), "port"),
        refusal(
            "spiffe://u@td/x",
            |e| matches!(e, E::UserInfo { .. }),
            "userinfo",
        ),
        refusal(
            "spiffe://u:p@td/x",
            |e| matches!(e, E::Port { .. } | E::UserInfo { .. }),
            "not allowed",
        ),
        refusal(
            "spiffe://td/x?q=1",
            |e| matches!(e, E::Query { .. }),
            "query",
        ),
        refusal("spiffe://td?q", |e| matches!(e, E::Query { .. }), "query"),
        refusal(
            "spiffe://td/x#frag",
            |e| matches!(e, E::Fragment { .. }),
            "fragment",
        ),
        refusal(
            "spiffe://td#frag",
            |e| matches!(e, E::Fragment { .. }),
            "fragment",
        ),
        refusal(
            "spiffe://TD/x",
            |e| {
                matches!(
                    e,
                    E::UppercaseTrustDomain {
                        ch: 'T',
                        pos: 9,
                        ..
                    }
                )
            },
            "lowercase",
        ),
        refusal(
            "spiffe://exAmple.org",
            |e| {
                matches!(
                    e,
                    E::UppercaseTrustDomain {
                        ch: 'A',
                        pos: 11,
                        ..
                    }
                )
            },
            "lowercase",
        ),
        refusal(
            format!("spiffe://td/{}", "a".repeat(2049 - "spiffe://td/".len())),
            |e| matches!(e, E::TooLong { len: 2049 }),
            "limit of 2048",
        ),
        refusal(
            format!("spiffe://{}/x", "a".repeat(256)),
            |e| matches!(e, E::TrustDomainTooLong { len: 256, .. }),
            "limit of 255",
        ),
        refusal(
            "spiffe://td/a b",
            |e| {
                matches!(
                    e,
                    E::BadPathChar {
                        byte: b' ',
                        pos: 13,
                        ..
                    }
                )
            },
            "not allowed in a SPIFFE ID path",
        ),
        refusal(
            "spiffe://t d/x",
            |e| {
                matches!(
                    e,
                    E::BadTrustDomainChar {
                        byte: b' ',
                        pos: 10,
                        ..
                    }
                )
            },
            "not allowed in a trust domain",
        ),
    ];
    for case in cases {
        let err =
            SpiffeId::parse(&case.input).expect_err(&format!("{:?} must be refused", case.input));
        assert!((case.variant)(&err), "{:?}: unexpected {err:?}", case.input);
        let msg = err.to_string();
        assert!(
            msg.contains(case.phrase),
            "{:?}: message {msg:?} does not name the rule ({:?})",
            case.input,
            case.phrase
        );
        // Messages quote the offending value unless it is too long to.
        if case.input.len() <= 300 && !case.input.is_empty() {
            assert!(msg.contains(&format!("{:?}", case.input)), "{msg}");
        }
    }
}

#[test]
fn trust_domain_vectors() {
    use SpiffeIdError as E;
    for (input, name) in [
        ("example.org", "example.org"),
        ("spiffe://example.org", "example.org"),
        ("td", "td"),
        ("a-b_c.9", "a-b_c.9"),
    ] {
        let td = TrustDomain::parse(input).unwrap_or_else(|e| panic!("{input:?} refused: {e}"));
        assert_eq!(td.as_str(), name);
        assert_eq!(td.id().as_str(), format!("spiffe://{name}"));
        assert!(td.id().is_trust_domain_id());
    }
    let max = "a".repeat(255);
    assert_eq!(TrustDomain::parse(&max).unwrap().as_str(), max);

    let refused = vec![
        refusal(
            String::new(),
            |e| matches!(e, E::MissingTrustDomain { .. }),
            "missing",
        ),
        refusal(
            "a".repeat(256),
            |e| matches!(e, E::TrustDomainTooLong { len: 256, .. }),
            "limit of 255",
        ),
        refusal(
            "Example.org",
            |e| matches!(e, E::UppercaseTrustDomain { .. }),
            "lowercase",
        ),
        refusal("example.org:443", |e| matches!(e, E::Port { .. }), "port"),
        refusal(
            "user@example.org",
            |e| matches!(e, E::UserInfo { .. }),
            "userinfo",
        ),
        refusal(
            "exa mple.org",
            |e| matches!(e, E::BadTrustDomainChar { byte: b' ', .. }),
            "not allowed in a trust domain",
        ),
        refusal(
            "spiffe://example.org/path",
            |e| matches!(e, E::BadTrustDomainChar { byte: b'/', .. }),
            "not allowed in a trust domain",
        ),
        refusal(
            "spiffe://Example.org",
            |e| matches!(e, E::UppercaseTrustDomain { .. }),
            "lowercase",
        ),
        refusal(
            "https://example.org",
            |e| matches!(e, E::WrongScheme { .. }),
            "scheme",
        ),
        refusal(
            "spiffe://",
            |e| matches!(e, E::MissingTrustDomain { .. }),
            "missing",
        ),
    ];
    for case in refused {
        let input = &case.input;
        let err = TrustDomain::parse(input).expect_err(&format!("{input:?} must be refused"));
        assert!((case.variant)(&err), "{input:?}: unexpected {err:?}");
        assert!(err.to_string().contains(case.phrase), "{input:?}: {err}");
    }
}

/// The error a refused byte must produce in a trust domain.
fn td_refusal_matches(b: u8, err: &SpiffeIdError) -> bool {
    use SpiffeIdError as E;
    match b {
        b'A'..=b'Z' => matches!(err, E::UppercaseTrustDomain { ch, .. } if *ch == b as char),
        b':' => matches!(err, E::Port { .. }),
        b'@' => matches!(err, E::UserInfo { .. }),
        b'?' => matches!(err, E::Query { .. }),
        b'#' => matches!(err, E::Fragment { .. }),
        _ => matches!(err, E::BadTrustDomainChar { byte, .. } if *byte == b),
    }
}

/// The error a refused byte must produce in a path segment.
fn path_refusal_matches(b: u8, err: &SpiffeIdError) -> bool {
    use SpiffeIdError as E;
    match b {
        b'?' => matches!(err, E::Query { .. }),
        b'#' => matches!(err, E::Fragment { .. }),
        b'%' => matches!(err, E::PercentEncoded { .. }),
        _ => matches!(err, E::BadPathChar { byte, .. } if *byte == b),
    }
}

#[test]
fn every_ascii_byte_in_a_trust_domain() {
    let mut accepted = Vec::new();
    for b in 0u8..=0x7f {
        let c = (b as char).to_string();
        let bare = splice("a", &c, "b");
        let bare_result = TrustDomain::parse(&bare);
        let in_id = SpiffeId::parse(&splice("spiffe://a", &c, "b/x"));
        let at_end = SpiffeId::parse(&splice("spiffe://a", &c, ""));
        if is_td_byte(b) {
            accepted.push(b);
            assert_eq!(bare_result.unwrap().as_str(), bare);
            assert_eq!(in_id.unwrap().trust_domain().as_str(), bare);
            at_end.unwrap();
            continue;
        }
        let err = bare_result.expect_err(&format!("trust domain {bare:?} must be refused"));
        if b != b'/' {
            assert!(td_refusal_matches(b, &err), "byte {b:#04x}: {err:?}");
        }
        if b == b'/' {
            // '/' ends the trust domain: "spiffe://a/b/x" is trust domain "a".
            assert_eq!(in_id.unwrap().trust_domain().as_str(), "a");
            assert!(matches!(at_end, Err(SpiffeIdError::TrailingSlash { .. })));
            continue;
        }
        let err = in_id.expect_err(&format!("byte {b:#04x} must be refused in a trust domain"));
        assert!(td_refusal_matches(b, &err), "byte {b:#04x}: {err:?}");
        if let SpiffeIdError::BadTrustDomainChar { pos, .. } = err {
            assert_eq!(pos, "spiffe://a".len());
            assert!(err.to_string().contains(&format!("{b:#04x}")), "{err}");
        }
        let err = at_end.expect_err(&format!("byte {b:#04x} must be refused at the end"));
        assert!(td_refusal_matches(b, &err), "byte {b:#04x}: {err:?}");
    }
    let expected: Vec<u8> = (b'a'..=b'z')
        .chain(b'0'..=b'9')
        .chain([b'.', b'_', b'-'])
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(accepted, expected);
}

#[test]
fn every_ascii_byte_in_a_path_segment() {
    let mut accepted = Vec::new();
    for b in 0u8..=0x7f {
        let c = (b as char).to_string();
        let middle = SpiffeId::parse(&splice("spiffe://td/a", &c, "b"));
        let end = SpiffeId::parse(&splice("spiffe://td/a", &c, ""));
        if b == b'/' {
            // '/' separates segments; at the end it is a trailing slash.
            assert_eq!(middle.unwrap().path(), "/a/b");
            assert!(matches!(end, Err(SpiffeIdError::TrailingSlash { .. })));
            continue;
        }
        if is_path_byte(b) {
            accepted.push(b);
            assert_eq!(middle.unwrap().path(), splice("/a", &c, "b"));
            assert_eq!(end.unwrap().path(), splice("/a", &c, ""));
            continue;
        }
        let err = middle.expect_err(&format!("byte {b:#04x} must be refused in a path"));
        assert!(path_refusal_matches(b, &err), "byte {b:#04x}: {err:?}");
        if let SpiffeIdError::BadPathChar { pos, .. } = err {
            assert_eq!(pos, "spiffe://td/a".len());
            assert!(err.to_string().contains(&format!("{b:#04x}")), "{err}");
        }
        let err = end.expect_err(&format!("byte {b:#04x} must be refused at a path's end"));
        assert!(path_refusal_matches(b, &err), "byte {b:#04x}: {err:?}");
    }
    let expected: Vec<u8> = (b'A'..=b'Z')
        .chain(b'a'..=b'z')
        .chain(b'0'..=b'9')
        .chain([b'.', b'_', b'-'])
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(accepted, expected);
}

#[test]
fn non_ascii_characters_are_refused() {
    // Bytes 0x80..=0xff only occur inside multi-byte UTF-8 characters.
    // Kelvin sign and dotted capital I lowercase to ASCII-looking letters:
    // no normalisation may let them through.
    for ch in [
        "é", "ß", "日本", "🙂", "\u{212A}", "\u{0130}", "ａ", "\u{00A0}", "\u{200B}",
    ] {
        let first = ch.as_bytes()[0];
        assert!(first >= 0x80);

        let td = splice("a", ch, "b");
        let err = TrustDomain::parse(&td).expect_err(&format!("{td:?} must be refused"));
        assert!(
            matches!(err, SpiffeIdError::BadTrustDomainChar { byte, pos: 1, .. } if byte == first),
            "{td:?}: {err:?}"
        );
        assert!(err.to_string().contains("not allowed in a trust domain"));

        let id = splice("spiffe://a", ch, "b/x");
        let err = SpiffeId::parse(&id).expect_err(&format!("{id:?} must be refused"));
        assert!(
            matches!(err, SpiffeIdError::BadTrustDomainChar { byte, .. } if byte == first),
            "{id:?}: {err:?}"
        );

        let id = splice("spiffe://td/a", ch, "b");
        let err = SpiffeId::parse(&id).expect_err(&format!("{id:?} must be refused"));
        assert!(
            matches!(err, SpiffeIdError::BadPathChar { byte, pos: 13, .. } if byte == first),
            "{id:?}: {err:?}"
        );
        assert!(err.to_string().contains("not allowed in a SPIFFE ID path"));
    }
}

#[test]
fn serde_round_trip_validates() {
    let id: SpiffeId = serde_json::from_str("\"spiffe://example.org/a\"").unwrap();
    assert_eq!(
        serde_json::to_string(&id).unwrap(),
        "\"spiffe://example.org/a\""
    );
    let err = serde_json::from_str::<SpiffeId>("\"spiffe://example.org/a/\"").unwrap_err();
    assert!(err.to_string().contains("trailing '/'"), "{err}");
    let err = serde_json::from_str::<TrustDomain>("\"EXAMPLE.org\"").unwrap_err();
    assert!(err.to_string().contains("lowercase"), "{err}");
}
