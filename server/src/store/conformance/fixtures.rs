//! Fixtures and assertion helpers shared by the conformance checks: records
//! in the trust domain [`TRUST_DOMAIN`], and helpers that panic with a
//! message naming the failed step.

use super::*;

/// The trust domain the checks use.
pub const TRUST_DOMAIN: &str = "example.org";

/// `spiffe://example.org<path>`; panics on an invalid path.
pub fn spiffe_id(path: &str) -> SpiffeId {
    let id = format!("spiffe://{TRUST_DOMAIN}{path}");
    SpiffeId::parse(&id).unwrap_or_else(|e| panic!("fixture SPIFFE ID {id}: {e}"))
}

pub(super) fn selector(s: &str) -> Selector {
    Selector::parse(s).unwrap_or_else(|e| panic!("fixture selector {s}: {e}"))
}

pub(super) fn trust_domain(name: &str) -> TrustDomain {
    TrustDomain::parse(name).unwrap_or_else(|e| panic!("fixture trust domain {name}: {e}"))
}

/// A normalized entry spec for `spiffe://example.org<spiffe_path>` under
/// `spiffe://example.org<parent_path>`, other fields at their defaults.
pub fn entry_spec(spiffe_path: &str, parent_path: &str, selectors: &[&str]) -> EntrySpec {
    let mut spec = raw_spec(spiffe_path, parent_path, selectors);
    spec.normalize();
    spec
}

/// Like [`entry_spec`] but with the selectors in the order given.
pub(super) fn raw_spec(spiffe_path: &str, parent_path: &str, selectors: &[&str]) -> EntrySpec {
    EntrySpec {
        spiffe_id: spiffe_id(spiffe_path),
        parent_id: spiffe_id(parent_path),
        selectors: selectors.iter().map(|s| selector(s)).collect(),
        x509_svid_ttl: 0,
        jwt_svid_ttl: 0,
        dns_names: Vec::new(),
        federates_with: Vec::new(),
        hint: String::new(),
        admin: false,
        downstream: false,
        expires_at: None,
    }
}

pub(super) fn filter(
    spiffe: Option<&str>,
    parent: Option<&str>,
    selectors: &[&str],
) -> EntryFilter {
    EntryFilter {
        spiffe_id: spiffe.map(spiffe_id),
        parent_id: parent.map(spiffe_id),
        selectors: selectors.iter().map(|s| selector(s)).collect(),
    }
}

pub(super) fn agent(path: &str, serial: &str) -> AttestedAgent {
    AttestedAgent {
        spiffe_id: spiffe_id(path),
        attestor: "join_token".to_string(),
        selectors: vec![selector("join_token:abc")],
        serial: serial.to_string(),
        previous_serial: None,
        expires_at: 5000,
        ca_serial: None,
        banned: false,
        ban_rules: vec![],
        attested_at: 1000,
        updated_at: 1000,
    }
}

pub(super) fn bundle(td: &str, x509: &[&[u8]], kids: &[&str], sequence: u64) -> BundleRecord {
    BundleRecord {
        trust_domain: trust_domain(td),
        x509_authorities: x509.iter().map(|c| c.to_vec()).collect(),
        jwt_authorities: kids
            .iter()
            .map(|kid| JwtAuthority {
                kid: kid.to_string(),
                public_key: format!("spki-{kid}").into_bytes(),
                expires_at: 9000,
            })
            .collect(),
        tainted_key_ids: Vec::new(),
        tainted_jwt_key_ids: Vec::new(),
        sequence,
    }
}

pub(super) fn token(hash: &str, expires_at: i64) -> JoinTokenRecord {
    JoinTokenRecord {
        token_hash: hash.to_string(),
        expires_at,
        created_at: 1000,
    }
}

pub(super) fn ca_slot(slot: SlotId, state: SlotState, serial: &str) -> CaSlot {
    CaSlot {
        slot,
        state,
        key_id: format!("ca-{}", slot.name()),
        cert_chain: vec![format!("cert-{serial}").into_bytes()],
        serial: serial.to_string(),
        not_before: 1000,
        not_after: 2000,
        tainted: false,
        tainted_at: None,
    }
}

pub(super) fn jwt_slot(slot: SlotId, state: SlotState, kid: &str) -> JwtSlot {
    JwtSlot {
        slot,
        state,
        key_id: format!("jwt-{}", slot.name()),
        kid: kid.to_string(),
        public_key: format!("spki-{kid}").into_bytes(),
        not_before: 1000,
        not_after: 2000,
        tainted: true,
        tainted_at: Some(1500),
    }
}

// ---- assertion helpers ----

#[track_caller]
pub(super) fn ok<T>(result: StoreResult<T>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e} ({e:?})"),
    }
}

#[track_caller]
pub(super) fn expect_err<T: Debug>(
    result: StoreResult<T>,
    what: &str,
    expected: &str,
    is_expected: fn(&StoreError) -> bool,
) -> StoreError {
    match result {
        Ok(v) => panic!("{what}: expected {expected}, got Ok({v:?})"),
        Err(e) if is_expected(&e) => e,
        Err(e) => panic!("{what}: expected {expected}, got {e} ({e:?})"),
    }
}

#[track_caller]
pub(super) fn expect_not_found<T: Debug>(result: StoreResult<T>, what: &str) {
    expect_err(result, what, "NotFound", |e| {
        matches!(e, StoreError::NotFound { .. })
    });
}

#[track_caller]
pub(super) fn expect_already_exists<T: Debug>(result: StoreResult<T>, what: &str) {
    expect_err(result, what, "AlreadyExists", |e| {
        matches!(e, StoreError::AlreadyExists { .. })
    });
}

#[track_caller]
pub(super) fn revision(store: &dyn Store) -> u64 {
    ok(store.entries_revision(), "entries_revision")
}

#[track_caller]
pub(super) fn events_since(store: &dyn Store, after: u64) -> Option<Vec<EntryEvent>> {
    ok(
        store.entry_events_since(after),
        &format!("entry_events_since({after})"),
    )
}

pub(super) fn ids(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

/// The ids of `expected`, sorted: what a list must return, in that order.
pub(super) fn sorted_ids(expected: &[&Entry]) -> Vec<String> {
    let mut v: Vec<String> = expected.iter().map(|e| e.id.clone()).collect();
    v.sort();
    v
}

#[track_caller]
pub(super) fn assert_list(store: &dyn Store, f: &EntryFilter, expected: &[&Entry], what: &str) {
    let listed = ok(store.list_entries(f), what);
    assert_eq!(
        ids(&listed),
        sorted_ids(expected),
        "{what}: wrong entries or order (must be ordered by id)"
    );
    for e in &listed {
        let want = expected
            .iter()
            .find(|x| x.id == e.id)
            .unwrap_or_else(|| panic!("{what}: unexpected entry {}", e.id));
        assert_eq!(e, *want, "{what}: listed entry differs from the stored one");
    }
}

pub(super) fn is_lower_hex_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
