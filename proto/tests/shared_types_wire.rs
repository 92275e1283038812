//! The shared `sigil.types.v1` messages keep the field numbers and types the
//! admin and agent APIs defined before they were shared, so the wire
//! encoding of both APIs is unchanged.

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

fn message(name: &str) -> DescriptorProto {
    let fds = FileDescriptorSet::decode(sigil_proto::FILE_DESCRIPTOR_SET).unwrap();
    let (pkg, msg) = name.rsplit_once('.').unwrap();
    fds.file
        .iter()
        .filter(|f| f.package() == pkg)
        .flat_map(|f| f.message_type.iter())
        .find(|m| m.name() == msg)
        .unwrap_or_else(|| panic!("{name} not in the descriptor set"))
        .clone()
}

fn fields(name: &str) -> Vec<(String, i32, Type, Label)> {
    message(name)
        .field
        .iter()
        .map(|f| (f.name().to_string(), f.number(), f.r#type(), f.label()))
        .collect()
}

#[test]
fn entry_selector_item_error_fields_are_as_before() {
    use Label::{Optional as O, Repeated as R};
    use Type::*;
    let want = [
        ("id", 1, String, O),
        ("spiffe_id", 2, String, O),
        ("parent_id", 3, String, O),
        ("selectors", 4, Message, R),
        ("x509_svid_ttl_seconds", 5, Int64, O),
        ("jwt_svid_ttl_seconds", 6, Int64, O),
        ("dns_names", 7, String, R),
        ("federates_with", 8, String, R),
        ("hint", 9, String, O),
        ("admin", 10, Bool, O),
        ("downstream", 11, Bool, O),
        ("expires_at", 12, Int64, O),
        ("revision", 13, Uint64, O),
        ("created_at", 14, Int64, O),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(n, i, t, l)| (n.to_string(), *i, *t, *l))
        .collect();
    assert_eq!(fields("sigil.types.v1.Entry"), want);
    assert_eq!(
        fields("sigil.types.v1.Selector"),
        [
            ("type".into(), 1, String, O),
            ("value".into(), 2, String, O)
        ]
    );
    assert_eq!(
        fields("sigil.types.v1.ItemError"),
        [
            ("code".into(), 1, Int32, O),
            ("message".into(), 2, String, O)
        ]
    );
}

#[test]
fn an_agent_api_entry_encodes_as_before() {
    // As the agent API sent it before the types were shared: no field 14.
    let e = sigil_proto::agent_api::Entry {
        id: "e1".into(),
        spiffe_id: "spiffe://td/w".into(),
        selectors: vec![sigil_proto::agent_api::Selector {
            r#type: "unix".into(),
            value: "uid:0".into(),
        }],
        revision: 7,
        created_at: 0,
        ..Default::default()
    };
    let bytes = e.encode_to_vec();
    let golden: &[u8] = b"\x0a\x02e1\x12\x0dspiffe://td/w\x22\x0d\x0a\x04unix\x12\x05uid:0\x68\x07";
    assert_eq!(bytes, golden);
}
