//! RSA key generation for JWT signing keys (`jwt_key_type = "rsa-2048"` or
//! `"rsa-4096"`). ring signs with RSA keys but cannot generate them, so the
//! pure-Rust `rsa` crate generates the key and encodes it as PKCS#8; it
//! never signs (ring does, through rcgen's `KeyPair` or the JWT signer).

use rcgen::KeyPair;
use rsa::pkcs8::EncodePrivateKey;

use super::KeyError;

/// A new RSA key of `bits` bits (public exponent 65537) from the OS CSPRNG.
pub fn generate(bits: usize) -> Result<KeyPair, KeyError> {
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
        .map_err(|e| KeyError::Generate(format!("RSA-{bits}: {e}")))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| KeyError::Generate(format!("RSA-{bits} PKCS#8 encoding: {e}")))?;
    let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_bytes());
    KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| KeyError::Generate(format!("RSA-{bits} key refused by the signer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_rsa_key_round_trips_through_pkcs8() {
        let k = generate(2048).unwrap();
        let again = super::super::from_pkcs8("jwt-x", k.serialized_der()).unwrap();
        assert_eq!(again.algorithm(), &rcgen::PKCS_RSA_SHA256);
        assert_eq!(again.public_key_raw(), k.public_key_raw());
    }
}
