//! An upstream CA whose certificate and PKCS#8 key are files on disk
//! (`[upstream.disk] cert_file, key_file, bundle_file`). Loading checks them
//! all (see [`super::chain`] for the path, validity, pathLen and key-mode
//! rules): a refusal names the file and the rule, at `validate` as at start.

use std::path::Path;

use rcgen::{CertificateParams, Issuer, KeyPair};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::*;

use super::{UpstreamAuthority, UpstreamError, chain};
use crate::config::DiskUpstreamConfig;

pub struct DiskUpstream {
    issuer: Issuer<'static, KeyPair>,
    /// The upstream signing cert and the rest of `cert_file`, minus anchors.
    intermediates: Vec<Vec<u8>>,
    anchors: Vec<Vec<u8>>,
    not_after: i64,
}

impl std::fmt::Debug for DiskUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskUpstream")
            .field("anchors", &self.anchors.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, UpstreamError> {
    std::fs::read(path).map_err(|source| UpstreamError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

fn invalid(what: &'static str, path: &Path, message: impl Into<String>) -> UpstreamError {
    UpstreamError::Invalid {
        what,
        path: path.display().to_string(),
        message: message.into(),
    }
}

impl DiskUpstream {
    /// Loads and checks the files: the certificate must be a CA allowed to
    /// sign certificates and match the key, and chain (valid now, pathLen
    /// leaving room for Sigil's intermediate) to the anchors, which come from
    /// `bundle_file`, or are the certificate itself when it is self-signed;
    /// the key file must be the owner's alone.
    pub fn load(cfg: &DiskUpstreamConfig, now: i64) -> Result<DiskUpstream, UpstreamError> {
        let cert_bytes = read("upstream cert_file", &cfg.cert_file)?;
        let certs = sigil_proto::pem::certs_from_pem_or_der(&cert_bytes)
            .map_err(|e| invalid("upstream cert_file", &cfg.cert_file, e.to_string()))?;
        chain::check_key_mode(&cfg.key_file)
            .map_err(|m| invalid("upstream key_file", &cfg.key_file, m))?;
        let key_bytes = read("upstream key_file", &cfg.key_file)?;
        let key_text = std::str::from_utf8(&key_bytes).map_err(|_| {
            invalid(
                "upstream key_file",
                &cfg.key_file,
                "not a PEM file (not UTF-8)",
            )
        })?;
        let key = KeyPair::from_pem(key_text).map_err(|e| {
            invalid(
                "upstream key_file",
                &cfg.key_file,
                format!(
                    "not a usable PKCS#8 PEM key ('BEGIN PRIVATE KEY'): {e}; convert with \
                     `openssl pkcs8 -topk8 -nocrypt`"
                ),
            )
        })?;
        let signing = &certs[0];
        let (_, cert) = X509Certificate::from_der(signing)
            .map_err(|e| invalid("upstream cert_file", &cfg.cert_file, e.to_string()))?;
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        let can_sign = cert
            .key_usage()
            .ok()
            .flatten()
            .is_none_or(|ku| ku.value.key_cert_sign());
        if !is_ca || !can_sign {
            return Err(invalid(
                "upstream cert_file",
                &cfg.cert_file,
                "the first certificate is not a CA allowed to sign certificates \
                 (needs basicConstraints cA=true and keyUsage keyCertSign)",
            ));
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(invalid(
                "upstream key_file",
                &cfg.key_file,
                "the key does not match the first certificate of cert_file",
            ));
        }
        let not_after = cert.validity().not_after.timestamp();
        let self_signed = cert.subject() == cert.issuer() && cert.verify_signature(None).is_ok();
        let anchors = match &cfg.bundle_file {
            Some(path) => {
                let b = read("upstream bundle_file", path)?;
                sigil_proto::pem::certs_from_pem_or_der(&b)
                    .map_err(|e| invalid("upstream bundle_file", path, e.to_string()))?
            }
            None if self_signed => vec![signing.clone()],
            None => {
                return Err(invalid(
                    "upstream cert_file",
                    &cfg.cert_file,
                    "the certificate is not self-signed, so bundle_file must give the \
                     upstream root(s)",
                ));
            }
        };
        // webpki fails closed on URI name constraints: every SVID under
        // such a CA would be refused by Sigil's own verifiers.
        if certs
            .iter()
            .chain(anchors.iter())
            .any(|c| crate::web_cert::has_uri_name_constraints(c))
        {
            return Err(invalid(
                "upstream cert_file",
                &cfg.cert_file,
                "a certificate of the upstream chain or bundle carries URI name constraints; \
                 webpki-based verifiers (Sigil's included) refuse every SVID under such a CA",
            ));
        }
        chain::check_chain(&certs, &anchors, now).map_err(|m| {
            let m = match &cfg.bundle_file {
                Some(b) => format!("{m} (bundle_file {})", b.display()),
                None => m,
            };
            invalid("upstream cert_file", &cfg.cert_file, m)
        })?;
        let intermediates = certs
            .iter()
            .filter(|c| !anchors.contains(c))
            .cloned()
            .collect();
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(signing.as_slice()), key)
            .map_err(|e| invalid("upstream cert_file", &cfg.cert_file, e.to_string()))?;
        Ok(DiskUpstream {
            issuer,
            intermediates,
            anchors,
            not_after,
        })
    }
}

impl UpstreamAuthority for DiskUpstream {
    fn mint_ca(
        &self,
        params: &CertificateParams,
        key: &KeyPair,
    ) -> Result<Vec<Vec<u8>>, UpstreamError> {
        let cert = params
            .signed_by(key, &self.issuer)
            .map_err(|e| UpstreamError::Mint(e.to_string()))?;
        let mut chain = vec![cert.der().to_vec()];
        chain.extend(self.intermediates.iter().cloned());
        Ok(chain)
    }

    fn trust_anchors(&self) -> Vec<Vec<u8>> {
        self.anchors.clone()
    }

    fn not_after(&self) -> i64 {
        self.not_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_ca_with_uri_name_constraints_is_refused() {
        let (der, _, key) = crate::web_cert::tests::uri_constrained_ca();
        let dir = tempfile::tempdir().unwrap();
        let cert_file = dir.path().join("up.pem");
        let key_file = dir.path().join("up.key");
        std::fs::write(&cert_file, sigil_proto::pem::to_pem(&[der])).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let owner_only = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&key_file, owner_only).unwrap();
        let cfg = DiskUpstreamConfig {
            cert_file,
            key_file,
            bundle_file: None,
        };
        let Err(e) = DiskUpstream::load(&cfg, 0) else {
            panic!("an upstream CA with URI name constraints was loaded");
        };
        let e = e.to_string();
        assert!(e.contains("URI name constraints"), "{e}");
        assert!(e.contains("up.pem"), "names the file: {e}");
    }
}
