//! The helper's JWT files: a token per configured audience for the SPIFFE
//! ID of the X.509-SVID it writes, fetched again at half the token's life
//! (so the file is replaced well before `exp`), and the JWK Set of that
//! SPIFFE ID's trust domain from the `FetchJWTBundles` stream. The files
//! are published with the X.509 ones, as one set (`files`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use sigil_proto::workload as wl;
use tracing::info;

use super::config::HelperConfig;
use super::files::OutFile;
use super::status_error;
use crate::workload_client::Client;

/// A token is fetched again at least this long after the last fetch.
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// The JWT material the helper holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct JwtState {
    /// The SPIFFE ID the tokens are for.
    pub(super) spiffe_id: String,
    /// Token per audience.
    pub(super) tokens: BTreeMap<String, String>,
    /// When to fetch the tokens again (half of the shortest life).
    pub(super) refresh_at: Option<tokio::time::Instant>,
    /// The JWK Set of the trust domain, as the agent sent it.
    pub(super) bundle: Option<Vec<u8>>,
}

impl JwtState {
    /// Whether the tokens must be fetched (again) for `spiffe_id`.
    pub(super) fn tokens_due(&self, cfg: &HelperConfig, spiffe_id: &str) -> bool {
        !cfg.jwt.svids.is_empty()
            && (self.spiffe_id != spiffe_id
                || self.tokens.len() != cfg.jwt.svids.len()
                || self
                    .refresh_at
                    .is_some_and(|t| t <= tokio::time::Instant::now()))
    }

    /// Whether every configured JWT file has its contents.
    pub(super) fn complete(&self, cfg: &HelperConfig) -> bool {
        (cfg.jwt.bundle_file_name.is_none() || self.bundle.is_some())
            && cfg
                .jwt
                .svids
                .iter()
                .all(|s| self.tokens.contains_key(&s.audience))
    }

    /// Fetches a token for every configured audience for `spiffe_id`.
    pub(super) async fn fetch_tokens(
        &mut self,
        client: &mut Client,
        cfg: &HelperConfig,
        spiffe_id: &str,
    ) -> anyhow::Result<()> {
        let mut tokens = BTreeMap::new();
        let mut refresh_in: Option<Duration> = None;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for f in &cfg.jwt.svids {
            let r = client
                .fetch_jwtsvid(wl::JwtsvidRequest {
                    audience: vec![f.audience.clone()],
                    spiffe_id: spiffe_id.to_string(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let svid = r
                .svids
                .into_iter()
                .next()
                .with_context(|| format!("no JWT-SVID for audience {:?}", f.audience))?;
            let t = sigil_proto::jwt::Token::parse(&svid.svid)
                .context("the agent sent a JWT-SVID that does not parse")?;
            let exp = t.time_claim("exp")?.unwrap_or(now);
            let iat = t.time_claim("iat")?.unwrap_or(now).min(now);
            let half = Duration::from_secs(u64::try_from(iat + (exp - iat) / 2 - now).unwrap_or(0));
            refresh_in = Some(refresh_in.map_or(half, |r| r.min(half)));
            tokens.insert(f.audience.clone(), svid.svid);
        }
        info!(
            spiffe_id,
            tokens = tokens.len(),
            refresh_in_s = refresh_in.unwrap_or_default().as_secs(),
            "fetched JWT-SVIDs"
        );
        self.spiffe_id = spiffe_id.to_string();
        self.tokens = tokens;
        self.refresh_at = refresh_in.map(|d| tokio::time::Instant::now() + d.max(MIN_REFRESH));
        Ok(())
    }

    /// Takes the JWK Set of `spiffe_id`'s trust domain from a bundles
    /// update; false when the update has none for it.
    pub(super) fn take_bundle(&mut self, r: wl::JwtBundlesResponse, spiffe_id: &str) -> bool {
        let Ok(id) = sigil_proto::SpiffeId::parse(spiffe_id) else {
            return false;
        };
        let td = id.trust_domain().id().to_string();
        match r.bundles.into_iter().find(|(k, _)| *k == td) {
            Some((_, jwks)) => {
                self.bundle = Some(jwks);
                true
            }
            None => false,
        }
    }

    /// The JWT files to publish with the X.509 ones.
    pub(super) fn files<'a>(&'a self, cfg: &'a HelperConfig) -> Vec<OutFile<'a>> {
        let mut out = Vec::new();
        for f in &cfg.jwt.svids {
            if let Some(t) = self.tokens.get(&f.audience) {
                out.push(OutFile {
                    name: &f.file_name,
                    contents: t.as_bytes(),
                    mode: cfg.key_file_mode,
                });
            }
        }
        if let (Some(name), Some(b)) = (&cfg.jwt.bundle_file_name, &self.bundle) {
            out.push(OutFile {
                name,
                contents: b,
                mode: cfg.cert_file_mode,
            });
        }
        out
    }
}
