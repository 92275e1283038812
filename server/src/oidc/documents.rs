//! The two documents of OIDC discovery, as pure functions of the issuer
//! and the published bundle: the provider configuration
//! (`/.well-known/openid-configuration`: `issuer`, `jwks_uri` = issuer +
//! `/keys`, the signing algorithms of the published JWT keys, `id_token`
//! responses, `public` subjects) and the key set (`/keys`: the JWT keys
//! only, each with `kid`, `alg` and `use: "sig"`; never the X.509 CAs).

use std::time::Duration;

use serde_json::json;
use sigil_proto::bundle::{KeyRule, jws_alg, signing_jwk};

use crate::store::BundleRecord;

/// Path of the provider configuration, relative to the issuer.
pub const CONFIGURATION_PATH: &str = "/.well-known/openid-configuration";
/// Path of the key set, relative to the issuer.
pub const KEYS_PATH: &str = "/keys";

/// Why a document could not be written: a published key that has no JWK
/// form (a bug upstream: the CA publishes only keys it can sign with).
#[derive(Debug, thiserror::Error)]
#[error("JWT key {kid:?} cannot be published: {rule}")]
pub struct DocumentError {
    pub kid: String,
    pub rule: KeyRule,
}

/// `issuer` + `suffix`, without a doubled `/` when the issuer ends in one.
pub fn issuer_url(issuer: &str, suffix: &str) -> String {
    format!("{}{suffix}", issuer.trim_end_matches('/'))
}

/// The path part of the issuer URL (`""` for `https://host`), where a
/// relying party looks for the documents when no proxy strips it.
pub fn issuer_path(issuer: &str) -> &str {
    let rest = issuer.strip_prefix("https://").unwrap_or(issuer);
    rest.find('/')
        .map_or("", |i| rest[i..].trim_end_matches('/'))
}

/// The provider configuration for `issuer` with the keys of `bundle`.
pub fn configuration(issuer: &str, bundle: &BundleRecord) -> Result<String, DocumentError> {
    let mut algs: Vec<&'static str> = Vec::new();
    for k in &bundle.jwt_authorities {
        let alg = jws_alg(&k.public_key).map_err(|rule| DocumentError {
            kid: k.kid.clone(),
            rule,
        })?;
        if !algs.contains(&alg) {
            algs.push(alg);
        }
    }
    let doc = json!({
        "issuer": issuer,
        "jwks_uri": issuer_url(issuer, KEYS_PATH),
        "authorization_endpoint": "",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
    });
    Ok(doc.to_string())
}

/// The key set: every JWT key of `bundle`, X.509 authorities left out.
pub fn keys(bundle: &BundleRecord) -> Result<String, DocumentError> {
    let keys = bundle
        .jwt_authorities
        .iter()
        .map(|k| {
            signing_jwk(&k.kid, &k.public_key).map_err(|rule| DocumentError {
                kid: k.kid.clone(),
                rule,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({ "keys": keys }).to_string())
}

/// `Cache-Control` of both documents: public, for at most the bundle's
/// refresh hint (a key published for rotation reaches caches in time).
pub fn cache_control(refresh_hint: Duration) -> String {
    format!("public, max-age={}", refresh_hint.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JwtAuthority;
    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PublicKeyData};
    use serde_json::Value;
    use sigil_proto::TrustDomain;

    fn bundle_with_jwt_keys() -> BundleRecord {
        let key = |alg| {
            KeyPair::generate_for(alg)
                .unwrap()
                .subject_public_key_info()
        };
        BundleRecord {
            trust_domain: TrustDomain::parse("example.org").unwrap(),
            x509_authorities: vec![sigil_proto::test_pki::TestCa::new("example.org").der],
            jwt_authorities: vec![
                JwtAuthority {
                    kid: "kid-a".into(),
                    public_key: key(&PKCS_ECDSA_P256_SHA256),
                    expires_at: 10,
                },
                JwtAuthority {
                    kid: "kid-b".into(),
                    public_key: key(&PKCS_ECDSA_P384_SHA384),
                    expires_at: 20,
                },
                JwtAuthority {
                    kid: "kid-c".into(),
                    public_key: key(&PKCS_ECDSA_P256_SHA256),
                    expires_at: 30,
                },
            ],
            tainted_key_ids: vec![],
            tainted_jwt_key_ids: vec![],
            sequence: 3,
        }
    }

    #[test]
    fn item1_configuration_names_the_issuer_keys_and_published_algs() {
        let b = bundle_with_jwt_keys();
        let doc: Value =
            serde_json::from_str(&configuration("https://oidc.example.org", &b).unwrap()).unwrap();
        assert_eq!(doc["issuer"], "https://oidc.example.org");
        assert_eq!(doc["jwks_uri"], "https://oidc.example.org/keys");
        assert_eq!(doc["response_types_supported"], json!(["id_token"]));
        assert_eq!(doc["subject_types_supported"], json!(["public"]));
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            json!(["ES256", "ES384"])
        );
        let doc: Value =
            serde_json::from_str(&configuration("https://a.org/t/", &b).unwrap()).unwrap();
        assert_eq!(
            doc["issuer"], "https://a.org/t/",
            "the issuer is kept verbatim"
        );
        assert_eq!(doc["jwks_uri"], "https://a.org/t/keys");
        assert_eq!(issuer_path("https://a.org/t/"), "/t");
        assert_eq!(issuer_path("https://a.org:8444"), "");
    }

    #[test]
    fn item1_keys_holds_the_jwt_keys_only_with_kid_alg_and_sig_use() {
        let b = bundle_with_jwt_keys();
        let doc: Value = serde_json::from_str(&keys(&b).unwrap()).unwrap();
        let keys = doc["keys"].as_array().unwrap();
        assert_eq!(
            keys.len(),
            3,
            "the X.509 authority is not a signing key: {doc}"
        );
        let kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert_eq!(kids, ["kid-a", "kid-b", "kid-c"]);
        for (k, alg) in keys.iter().zip(["ES256", "ES384", "ES256"]) {
            assert_eq!(k["use"], "sig");
            assert_eq!(k["alg"], alg);
            assert!(k.get("x5c").is_none(), "{k}");
        }
        assert_eq!(
            cache_control(Duration::from_secs(120)),
            "public, max-age=120"
        );
    }

    #[test]
    fn item1_an_unpublishable_key_is_an_error_naming_its_kid() {
        let mut b = bundle_with_jwt_keys();
        b.jwt_authorities[1].public_key = b"junk".to_vec();
        let e = keys(&b).unwrap_err().to_string();
        assert!(e.contains("kid-b"), "{e}");
        assert!(configuration("https://x.org", &b).is_err());
    }
}
