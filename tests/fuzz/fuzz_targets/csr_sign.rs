//! The server's CSR → X.509-SVID path: `csr_public_key` (parse, signature
//! check, key type) then `X509Ca::sign_leaf` with a CA built once. Whatever
//! the CSR asks for (CA rights, its own SANs), the leaf is a valid SVID for
//! the entry's ID only, with cA=false.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use rcgen::KeyPair;
use sigil_proto::{SpiffeId, TrustDomain, check_leaf};
use sigil_server::ca::csr::csr_public_key;
use sigil_server::ca::{X509Ca, profile};
use sigil_server::store::SlotId;

fn ca() -> &'static X509Ca {
    static CA: OnceLock<X509Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let td = TrustDomain::parse("example.org").expect("valid trust domain");
        let key = KeyPair::generate().expect("key generation");
        let now = time::OffsetDateTime::now_utc();
        let params = profile::ca_params(
            &td,
            now - Duration::from_secs(60),
            now + Duration::from_secs(86_400),
            profile::serial_from_random([7; 16]),
            false,
        )
        .expect("CA params");
        let cert = params.self_signed(&key).expect("self-signed CA");
        X509Ca::new(SlotId::A, key, vec![cert.der().to_vec()]).expect("CA")
    })
}

fuzz_target!(|data: &[u8]| {
    let ca = ca();
    let Ok(key) = csr_public_key(data) else {
        return;
    };
    let id = SpiffeId::parse("spiffe://example.org/workload").expect("valid ID");
    let leaf = ca
        .sign_leaf(
            &id,
            &["web.example.org".to_string()],
            Duration::from_secs(3600),
            &key,
            SystemTime::now(),
        )
        .expect("a CSR that passed the checks is signed");
    let info = check_leaf(&leaf.chain[0]).expect("the leaf follows the X.509-SVID profile");
    assert_eq!(
        info.spiffe_id, id,
        "the SPIFFE ID comes from the entry only"
    );
    assert_eq!(info.dns_names, vec!["web.example.org".to_string()]);
    assert_eq!(leaf.chain.len(), 2);
});
