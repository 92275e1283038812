//! An independent check of JWT-SVIDs for the end-to-end tests: splits a
//! compact JWS, verifies its signature with ring against a JWK (EC P-256 /
//! P-384, RSA) and returns header and claims. Deliberately not Sigil's own
//! validator (`sigil_proto::jwt`), so a shared bug cannot hide; and a
//! forger of bad tokens for the refusal tables.

use anyhow::{Context, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// A token's decoded header and claims.
#[derive(Debug, Clone)]
pub struct Jwt {
    pub header: Value,
    pub claims: Value,
}

fn b64json(part: &str) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part)?)?)
}

/// Header and claims, without any check.
pub fn decode(token: &str) -> anyhow::Result<Jwt> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("not a compact JWS (three dot-separated parts)");
    };
    Ok(Jwt {
        header: b64json(h)?,
        claims: b64json(c)?,
    })
}

/// The public key of `jwk` as ring wants it, with its verification
/// algorithm for `alg`.
fn ring_key(
    jwk: &Value,
    alg: &str,
) -> anyhow::Result<(Vec<u8>, &'static dyn ring::signature::VerificationAlgorithm)> {
    let member = |m: &str| -> anyhow::Result<Vec<u8>> {
        Ok(URL_SAFE_NO_PAD.decode(jwk[m].as_str().with_context(|| format!("jwk has no {m}"))?)?)
    };
    match (jwk["kty"].as_str(), alg) {
        (Some("EC"), "ES256") | (Some("EC"), "ES384") => {
            let point = [vec![4u8], member("x")?, member("y")?].concat();
            let a: &'static dyn ring::signature::VerificationAlgorithm = if alg == "ES256" {
                &ring::signature::ECDSA_P256_SHA256_FIXED
            } else {
                &ring::signature::ECDSA_P384_SHA384_FIXED
            };
            Ok((point, a))
        }
        (Some("RSA"), "RS256") => {
            // ring takes an RSAPublicKey DER for RSA.
            let der = |b: Vec<u8>| {
                let mut v = b;
                if v.first().is_some_and(|x| x & 0x80 != 0) {
                    v.insert(0, 0);
                }
                tlv(0x02, &v)
            };
            let key = tlv(0x30, &[der(member("n")?), der(member("e")?)].concat());
            Ok((key, &ring::signature::RSA_PKCS1_2048_8192_SHA256))
        }
        (kty, alg) => bail!("no verifier for kty {kty:?} with alg {alg}"),
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let b = len.to_be_bytes();
        let skip = b.iter().take_while(|x| **x == 0).count();
        out.push(0x80 | (b.len() - skip) as u8);
        out.extend_from_slice(&b[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Verifies `token` against the key of its `kid` in `jwks` (a JWK Set: the
/// SPIFFE bundle's `jwt-svid` keys or OIDC `/keys`); returns it decoded.
pub fn verify(token: &str, jwks: &Value) -> anyhow::Result<Jwt> {
    let jwt = decode(token)?;
    let kid = jwt.header["kid"].as_str().context("no kid")?;
    let alg = jwt.header["alg"].as_str().context("no alg")?;
    let jwk = jwks["keys"]
        .as_array()
        .context("no keys")?
        .iter()
        .find(|k| k["kid"] == kid)
        .with_context(|| format!("kid {kid} is not in the key set"))?;
    let (key, algorithm) = ring_key(jwk, alg)?;
    let (signed, sig) = token.rsplit_once('.').context("no signature")?;
    let sig = URL_SAFE_NO_PAD.decode(sig)?;
    ring::signature::UnparsedPublicKey::new(algorithm, key)
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| anyhow::anyhow!("signature does not verify with kid {kid}"))?;
    ensure!(jwt.header["typ"] == "JWT", "typ: {}", jwt.header);
    Ok(jwt)
}

/// `header.claims.signature` from JSON values and raw signature bytes.
pub fn assemble(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}
