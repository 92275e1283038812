//! The JWT methods' views: the JWT-SVIDs of a caller (minted on demand by
//! the [`JwtCache`], default identity first), the JWT bundles a caller may
//! see as JWK Sets (validation against those same bundles: `validator`).

use sigil_proto::SpiffeBundle;

use super::*;
use crate::cache::{JwtCache, MintError};

/// The bundles a caller with `selectors` may validate JWT-SVIDs against and
/// is served by `FetchJWTBundles`: the agent's own trust domain's, and those
/// of the trust domains the caller's SVIDs federate with (issue 16; the same
/// trust domains as its X.509 views, [`super::x509::federated_tds`]).
pub(super) fn jwt_bundles_for(
    snapshot: &Snapshot,
    selectors: &[Selector],
    now: i64,
) -> Vec<SpiffeBundle> {
    let jwt_bundle = |td: &TrustDomain, keys: &[sigil_proto::JwtKey]| SpiffeBundle {
        trust_domain: td.clone(),
        x509_authorities: Vec::new(),
        jwt_authorities: keys.to_vec(),
        sequence: None,
        refresh_hint: None,
    };
    let mut out = vec![jwt_bundle(
        &snapshot.trust_domain,
        &snapshot.jwt_authorities,
    )];
    let matched = snapshot.svids_for(selectors, now);
    for td in super::x509::federated_tds(snapshot, &matched) {
        let keys = snapshot
            .federated_jwt
            .get(td)
            .map_or(&[][..], Vec::as_slice);
        out.push(jwt_bundle(td, keys));
    }
    out
}

/// The caller's JWT-SVIDs for `audience`: of `spiffe_id` only when it is
/// given (and must be one of the caller's), else one per SPIFFE ID the
/// caller has, its default first.
pub(super) async fn jwt_svids(
    cache: &JwtCache,
    snapshot: &Snapshot,
    selectors: &[Selector],
    req: &pb::JwtsvidRequest,
    now: i64,
) -> Result<Vec<pb::Jwtsvid>, CallError> {
    let matched = snapshot.svids_for(selectors, now);
    if matched.is_empty() {
        return Err(CallError::NoIdentity);
    }
    let mut seen = HashSet::new();
    let wanted: Vec<&Arc<WorkloadSvid>> = matched
        .iter()
        .filter(|s| req.spiffe_id.is_empty() || s.spiffe_id.as_str() == req.spiffe_id)
        .filter(|s| seen.insert(s.spiffe_id.clone()))
        .collect();
    if wanted.is_empty() {
        return Err(CallError::NotCallersId(req.spiffe_id.clone()));
    }
    let hints = unique_hints(&wanted.iter().map(|s| (*s).clone()).collect::<Vec<_>>());
    let mut out = Vec::with_capacity(wanted.len());
    for (s, hint) in wanted.into_iter().zip(hints) {
        let token = cache
            .fetch(
                &s.entry_id,
                &s.spiffe_id,
                &req.audience,
                &snapshot.tainted_jwt_key_ids,
            )
            .await
            .map_err(|e| match e {
                MintError::Unauthorized(m) => CallError::MintRefused(m),
                MintError::Failed(m) => CallError::MintFailed(m),
            })?;
        out.push(pb::Jwtsvid {
            spiffe_id: s.spiffe_id.as_str().to_string(),
            svid: token,
            hint,
        });
    }
    Ok(out)
}

/// The JWT bundles a caller may see, each a JWK Set of its `jwt-svid` keys
/// (every key with `kid` and `use`).
pub(super) struct JwtBundleView;

impl StreamView for JwtBundleView {
    type Msg = pb::JwtBundlesResponse;

    fn render(
        &mut self,
        snapshot: &Snapshot,
        selectors: &[Selector],
        now: i64,
    ) -> Result<Rendered<Self::Msg>, CallError> {
        let mut bundles = BTreeMap::new();
        for b in jwt_bundles_for(snapshot, selectors, now) {
            let jwks = sigil_proto::bundle::encode(&b).map_err(CallError::BadBundle)?;
            bundles.insert(td_id(&b.trust_domain), jwks.into_bytes());
        }
        let mut d = Digest::new();
        d.map(&bundles);
        let count = bundles.len();
        Ok(Rendered {
            msg: pb::JwtBundlesResponse {
                bundles: bundles.into_iter().collect(),
            },
            digest: d.finish(),
            spiffe_id: String::new(),
            count,
        })
    }
}

/// A JSON object as a `google.protobuf.Struct`.
pub(super) fn to_struct(m: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

fn to_value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => Kind::StringValue(s),
        J::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(to_value).collect(),
        }),
        J::Object(o) => Kind::StructValue(to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}
