//! Conformance check for the last accepted remote `spiffe_sequence` per
//! federated trust domain (issue 16): recorded, replaced, forgotten, kept
//! per trust domain and across a reopen.

use super::fixtures::*;
use super::*;

pub fn i16_remote_sequence_survives_reopen(location: &dyn StoreLocation) {
    let (b, c) = (trust_domain("b.example"), trust_domain("c.example"));
    {
        let store = location.open();
        let s = &*store;
        assert_eq!(ok(s.remote_sequence(&b), "unknown"), None);
        ok(s.put_remote_sequence(&b, Some(7)), "record 7");
        ok(s.put_remote_sequence(&c, Some(3)), "record 3 for another");
        assert_eq!(ok(s.remote_sequence(&b), "read"), Some(7));
        ok(s.put_remote_sequence(&c, None), "forget");
        ok(s.put_remote_sequence(&c, None), "forget again (nothing)");
        assert_eq!(ok(s.remote_sequence(&c), "forgotten"), None);
    }
    let store = location.open();
    let s = &*store;
    assert_eq!(
        ok(s.remote_sequence(&b), "after reopen"),
        Some(7),
        "the remote sequence survives a reopen"
    );
    ok(
        s.put_remote_sequence(&b, Some(u64::from(u32::MAX) + 9)),
        "replace",
    );
    assert_eq!(
        ok(s.remote_sequence(&b), "replaced"),
        Some(u64::from(u32::MAX) + 9)
    );
    assert_eq!(ok(s.remote_sequence(&c), "other after reopen"), None);
}
