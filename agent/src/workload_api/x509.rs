//! The X.509 views: a caller's SVIDs (default first, hints unique within a
//! response) and the trust bundles.

use super::*;

/// The hints of one response's SVIDs, unique as the Workload API requires
/// (§5.2.1): the first SVID with a hint keeps it, later SVIDs with the same
/// hint are sent with none, and that is logged. Empty hints are no hints.
pub(super) fn unique_hints(svids: &[Arc<WorkloadSvid>]) -> Vec<String> {
    let mut seen = HashSet::new();
    svids
        .iter()
        .map(|s| {
            if s.hint.is_empty() || seen.insert(s.hint.as_str()) {
                return s.hint.clone();
            }
            warn!(
                entry_id = %s.entry_id,
                spiffe_id = %s.spiffe_id,
                hint = %s.hint,
                "hint already used by an earlier SVID of this response; sent without it"
            );
            String::new()
        })
        .collect()
}

/// A caller's X.509-SVIDs. Remembers the SVIDs last matched, so the timer
/// re-renders only when one of them has expired.
#[derive(Default)]
pub(super) struct SvidView {
    pub(super) matched: Vec<Arc<WorkloadSvid>>,
}

impl StreamView for SvidView {
    type Msg = pb::X509svidResponse;

    fn render(
        &mut self,
        snapshot: &Snapshot,
        selectors: &[Selector],
        now: i64,
    ) -> Result<Rendered<Self::Msg>, CallError> {
        let matched = snapshot.svids_for(selectors, now);
        let Some(default) = matched.first() else {
            debug!(selectors = %selectors.iter().map(|s| format!("--selector '{s}'")).collect::<Vec<_>>().join(" "), "no identity issued for the attested selectors (pass them to `sigil-server entry explain`)");
            return Err(CallError::NoIdentity);
        };
        let spiffe_id = default.spiffe_id.as_str().to_string();
        let bundle = snapshot.bundle.concat();
        let federated = federated_x509(snapshot, &matched);

        let mut d = Digest::new();
        d.count(matched.len());
        let hints = unique_hints(&matched);
        let mut svids = Vec::with_capacity(matched.len());
        for (s, hint) in matched.iter().zip(hints) {
            let svid = pb::X509svid {
                spiffe_id: s.spiffe_id.as_str().to_string(),
                x509_svid: s.cert_chain.concat(),
                x509_svid_key: s.key_pkcs8.clone(),
                bundle: bundle.clone(),
                hint,
            };
            d.field(svid.spiffe_id.as_bytes());
            d.field(&svid.x509_svid);
            d.field(&svid.x509_svid_key);
            d.field(&svid.bundle);
            d.field(svid.hint.as_bytes());
            svids.push(svid);
        }
        d.map(&federated);
        let count = svids.len();
        self.matched = matched;
        Ok(Rendered {
            msg: pb::X509svidResponse {
                svids,
                crl: Vec::new(),
                federated_bundles: federated.into_iter().collect(),
            },
            digest: d.finish(),
            spiffe_id,
            count,
        })
    }

    fn stale(&self, now: i64) -> bool {
        self.matched.iter().any(|s| s.not_after <= now)
    }
}

/// The X.509 bundles: the own trust domain's and those of the trust domains
/// the caller's SVIDs federate with (as SPIRE does: a workload is not told
/// of trust domains none of its entries federates with).
pub(super) struct BundleView;

impl StreamView for BundleView {
    type Msg = pb::X509BundlesResponse;

    fn render(
        &mut self,
        snapshot: &Snapshot,
        selectors: &[Selector],
        now: i64,
    ) -> Result<Rendered<Self::Msg>, CallError> {
        let mut bundles = federated_x509(snapshot, &snapshot.svids_for(selectors, now));
        bundles.insert(td_id(&snapshot.trust_domain), snapshot.bundle.concat());
        let mut d = Digest::new();
        d.map(&bundles);
        let count = bundles.len();
        Ok(Rendered {
            msg: pb::X509BundlesResponse {
                crl: Vec::new(),
                bundles: bundles.into_iter().collect::<HashMap<_, _>>(),
            },
            digest: d.finish(),
            spiffe_id: String::new(),
            count,
        })
    }
}

/// The foreign trust domains `svids` federate with (never the own one) of
/// which the agent holds a bundle: what a caller with those SVIDs may trust
/// besides its own trust domain (issue 16). One function for every view.
pub(super) fn federated_tds<'a>(
    snapshot: &'a Snapshot,
    svids: &'a [Arc<WorkloadSvid>],
) -> BTreeSet<&'a TrustDomain> {
    svids
        .iter()
        .flat_map(|s| s.federates_with.iter())
        .filter(|td| **td != snapshot.trust_domain && snapshot.federated.contains_key(*td))
        .collect()
}

/// [`federated_tds`]' X.509 bundles, keyed by trust domain ID, each the
/// concatenated DER of its CAs (empty when all are revoked).
fn federated_x509(snapshot: &Snapshot, svids: &[Arc<WorkloadSvid>]) -> BTreeMap<String, Vec<u8>> {
    federated_tds(snapshot, svids)
        .into_iter()
        .filter_map(|td| {
            snapshot
                .federated
                .get(td)
                .map(|certs| (td_id(td), certs.concat()))
        })
        .collect()
}

/// `spiffe://<td>`, the key of bundle maps.
pub(super) fn td_id(td: &TrustDomain) -> String {
    td.id().as_str().to_string()
}
