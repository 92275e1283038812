//! Where `diagnose` gets what it checks against: a PEM chain or bundle
//! file, or this workload's own SVID, chain and bundles from the Workload
//! API (the first answer of the X.509-SVID stream, bounded in time).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use sigil_proto::pem::certs_from_pem_or_der;
use sigil_proto::workload as wl;
use sigil_proto::{SpiffeId, TrustDomain};

use super::facts::CertFacts;
use super::judge::Trust;
use crate::workload_client;

/// How long the Workload API may take to answer.
const WORKLOAD_API_TIMEOUT: Duration = Duration::from_secs(5);

/// This workload's default SVID and what it trusts.
pub struct OwnSvid {
    pub spiffe_id: SpiffeId,
    /// DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 DER.
    pub key: Vec<u8>,
    pub trust: Trust,
}

/// DER certificates of a PEM (or DER) file; `what` names it in errors.
pub fn read_certs(path: &Path, what: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("{what} {}: cannot read", path.display()))?;
    let certs = certs_from_pem_or_der(&bytes)
        .with_context(|| format!("{what} {}: not PEM or DER certificates", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{what} {}: holds no certificate",
        path.display()
    );
    Ok(certs)
}

/// The trust domains CA certificates name in their `spiffe://<td>` URI SAN.
pub fn domains_of(cas: &[Vec<u8>]) -> BTreeSet<TrustDomain> {
    cas.iter()
        .filter_map(|d| CertFacts::parse(d).ok())
        .flat_map(|f| f.uri_sans)
        .filter_map(|u| SpiffeId::parse(&u).ok())
        .map(|id| id.trust_domain())
        .collect()
}

/// A bundle file as [`Trust`].
pub fn trust_from_file(path: &Path) -> anyhow::Result<Trust> {
    let roots = read_certs(path, "--bundle")?;
    Ok(Trust {
        domains: domains_of(&roots),
        roots,
        known_intermediates: Vec::new(),
    })
}

/// The default SVID and bundles the Workload API at `socket` gives this
/// process.
pub async fn own_svid(socket: Option<std::path::PathBuf>) -> anyhow::Result<OwnSvid> {
    let path = workload_client::socket_path(socket)?;
    let first = tokio::time::timeout(WORKLOAD_API_TIMEOUT, async {
        let mut c = workload_client::connect(&path).await?;
        let mut s = c
            .fetch_x509svid(wl::X509svidRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
            .into_inner();
        s.message()
            .await
            .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
            .context("the Workload API closed the stream without an answer")
    })
    .await
    .with_context(|| {
        format!(
            "no answer from the Workload API at {} in {WORKLOAD_API_TIMEOUT:?}",
            path.display()
        )
    })??;
    let svid = first
        .svids
        .first()
        .context("the Workload API sent no SVID")?;
    let spiffe_id = SpiffeId::parse(&svid.spiffe_id)
        .with_context(|| format!("the Workload API sent SPIFFE ID {:?}", svid.spiffe_id))?;
    let chain = certs_from_pem_or_der(&svid.x509_svid).context("the SVID's chain")?;
    let mut roots = certs_from_pem_or_der(&svid.bundle).context("the SVID's bundle")?;
    let mut domains: BTreeSet<TrustDomain> = [spiffe_id.trust_domain()].into();
    for (td, bundle) in &first.federated_bundles {
        if let Ok(id) = SpiffeId::parse(td).or_else(|_| SpiffeId::parse(&format!("spiffe://{td}")))
        {
            domains.insert(id.trust_domain());
        }
        roots.extend(certs_from_pem_or_der(bundle).context("a federated bundle")?);
    }
    Ok(OwnSvid {
        spiffe_id,
        key: svid.x509_svid_key.clone(),
        trust: Trust {
            roots,
            domains,
            known_intermediates: chain.get(1..).unwrap_or_default().to_vec(),
        },
        chain,
    })
}
