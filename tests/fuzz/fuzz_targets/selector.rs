//! Selector parser: never panics; accepted selectors display as the input,
//! re-parse equal and obey the type/value rules; subset matching is
//! reflexive on whatever parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_proto::Selector;
use sigil_proto::selector::is_subset;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parsed = Vec::new();
    // Each line is one selector, so one input exercises matching too.
    for line in text.split('\n') {
        match Selector::parse(line) {
            Ok(s) => {
                assert_eq!(s.to_string(), line);
                assert_eq!(Selector::parse(&s.to_string()).as_ref(), Ok(&s));
                assert_eq!(Selector::new(s.ty(), s.value()).as_ref(), Ok(&s));
                assert!(!s.ty().is_empty() && s.ty().len() <= 64);
                assert!(s.ty().bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'_'
                    || b == b'-'));
                assert!(!s.value().is_empty() && s.value().len() <= 4096);
                assert!(!s.value().chars().any(char::is_control));
                parsed.push(s);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    assert!(is_subset(&parsed, &parsed));
    let mut reversed = parsed.clone();
    reversed.reverse();
    assert!(is_subset(&parsed, &reversed));
    if let Some((first, rest)) = parsed.split_first() {
        assert!(is_subset(rest, &parsed));
        assert_eq!(is_subset(&parsed, rest), rest.contains(first));
    }
});
