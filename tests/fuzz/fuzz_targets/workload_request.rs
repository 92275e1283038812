//! Workload API request handling without a caller: arbitrary metadata
//! (security header absent, repeated, any value, other keys) and arbitrary
//! request bytes for each method, decoded as tonic would and run through
//! `precheck` (the header and field checks the handlers use). Never panics;
//! accepts only with exactly one `workload.spiffe.io: true`, and refusals
//! are `InvalidArgument`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sigil_agent::workload_api::{SECURITY_HEADER, WorkloadRequest, precheck};
use sigil_proto::workload as pb;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};

fuzz_target!(|data: &[u8]| {
    // Layout: [method][n headers] then n × ([key len][value len] key value),
    // then the request body.
    let [method, n, rest @ ..] = data else {
        return;
    };
    let mut rest = rest;
    let mut metadata = MetadataMap::new();
    for _ in 0..*n % 8 {
        let [kl, vl, tail @ ..] = rest else {
            return;
        };
        let (kl, vl) = (usize::from(*kl % 32), usize::from(*vl % 64));
        if tail.len() < kl + vl {
            return;
        }
        let (k, tail) = tail.split_at(kl);
        let (v, tail) = tail.split_at(vl);
        rest = tail;
        // Keys 0..=1 bytes long stand for the security header itself.
        let key = if k.len() <= 1 {
            Ok(AsciiMetadataKey::from_static(SECURITY_HEADER))
        } else {
            AsciiMetadataKey::from_bytes(k)
        };
        if let (Ok(key), Ok(value)) = (key, AsciiMetadataValue::try_from(v)) {
            metadata.append(key, value);
        }
    }
    let body = rest;
    let request = match method % 5 {
        0 => pb::X509svidRequest::decode(body).map(WorkloadRequest::X509Svid),
        1 => pb::X509BundlesRequest::decode(body).map(WorkloadRequest::X509Bundles),
        2 => pb::JwtsvidRequest::decode(body).map(WorkloadRequest::JwtSvid),
        3 => pb::JwtBundlesRequest::decode(body).map(WorkloadRequest::JwtBundles),
        _ => pb::ValidateJwtsvidRequest::decode(body).map(WorkloadRequest::ValidateJwtSvid),
    };
    let Ok(request) = request else {
        return;
    };
    let values: Vec<_> = metadata.get_all(SECURITY_HEADER).iter().collect();
    let header_ok = values.len() == 1 && values[0].as_encoded_bytes() == b"true";
    match precheck(&metadata, &request) {
        Ok(()) => {
            assert!(
                header_ok,
                "accepted without exactly one valid header: {metadata:?}"
            );
            match &request {
                WorkloadRequest::JwtSvid(r) => assert!(!r.audience.is_empty()),
                WorkloadRequest::ValidateJwtSvid(r) => {
                    assert!(!r.audience.is_empty() && !r.svid.is_empty())
                }
                _ => {}
            }
        }
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(!status.message().is_empty());
        }
    }
});
