//! SPIFFE ID and trust domain parsers: never panic, and whatever they accept
//! is canonical (displays as the input, re-parses to the same value) and
//! obeys every rule of DESIGN §2.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_proto::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = SpiffeId::parse(text) {
        assert_eq!(id.to_string(), text, "accepted input is not canonical");
        assert_eq!(SpiffeId::parse(id.as_str()).as_ref(), Ok(&id));
        assert!(text.len() <= 2048);
        let rest = text.strip_prefix("spiffe://").expect("scheme");
        let td = id.trust_domain();
        assert!(!td.as_str().is_empty() && td.as_str().len() <= 255);
        assert!(td.as_str().bytes().all(|b| b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(b, b'.' | b'_' | b'-')));
        assert_eq!(format!("{}{}", td.as_str(), id.path()), rest);
        assert!(id.is_member_of(&td));
        if !id.path().is_empty() {
            for seg in id.path()[1..].split('/') {
                assert!(
                    !seg.is_empty() && seg != "." && seg != "..",
                    "bad segment {seg:?}"
                );
                assert!(
                    seg.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                );
            }
        }
        assert_eq!(td.spiffe_id(id.path()).as_ref(), Ok(&id));
    } else if let Err(e) = SpiffeId::parse(text) {
        assert!(!e.to_string().is_empty());
    }
    match TrustDomain::parse(text) {
        Ok(td) => {
            assert_eq!(TrustDomain::parse(td.as_str()).as_ref(), Ok(&td));
            assert_eq!(TrustDomain::parse(td.id().as_str()).as_ref(), Ok(&td));
            assert!(td.id().is_trust_domain_id());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
