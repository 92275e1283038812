//! Bundle decoding: the JWK Set decoder and the PEM / DER certificate-list
//! readers never panic, and what they accept (for a JWK Set: the keys not
//! skipped) re-encodes to something that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_proto::TrustDomain;
use sigil_proto::{bundle, pem};

fuzz_target!(|data: &[u8]| {
    let td = TrustDomain::parse("example.org").expect("valid trust domain");
    if let Ok(decoded) = bundle::decode(&td, data) {
        // Every skip report names a key of the document.
        let mut last = None;
        for s in &decoded.skipped {
            assert!(last.is_none_or(|l| l <= s.index), "reports in key order");
            last = Some(s.index);
        }
        // What was kept is usable: it re-encodes, and the encoding decodes
        // to the same bundle with nothing skipped.
        let json = bundle::encode(&decoded.bundle).expect("a decoded bundle re-encodes");
        let again = bundle::decode(&td, json.as_bytes()).expect("re-encoded bundle decodes");
        assert_eq!(again.bundle, decoded.bundle);
        assert!(again.skipped.is_empty(), "{:?}", again.skipped);
    }
    if let Ok(certs) = pem::from_pem(data) {
        assert!(!certs.is_empty());
        let text = pem::to_pem(&certs);
        assert_eq!(
            pem::from_pem(text.as_bytes()).expect("PEM round trip"),
            certs
        );
    }
    if let Ok(certs) = pem::certs_from_pem_or_der(data) {
        let der: Vec<u8> = certs.concat();
        if data.first() == Some(&0x30) {
            assert_eq!(der, data, "DER list must split the input exactly");
        }
    }
});
