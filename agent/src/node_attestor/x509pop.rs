//! The `x509pop` node attestor, agent half: the node holds a certificate
//! chain (PEM, leaf first) issued under a CA the server trusts, and the
//! leaf's private key (PKCS#8 PEM: ECDSA P-256, ECDSA P-384, Ed25519 or RSA).
//! The payload is the chain in the encoding of
//! [`sigil_proto::attestation::encode_chain`]; the answer to a challenge is
//! the leaf key's signature over
//! [`sigil_proto::attestation::x509pop_signed_message`] (the challenge bound
//! to the TLS connection it came on), with the algorithm
//! the server verifies for that key type
//! ([`sigil_proto::attestation::X509PopKeyAlg`]). Both files are checked
//! when loaded, including that the key belongs to the leaf, so a wrong pair
//! fails at startup naming the files rather than at the server. The private
//! key never leaves ring's key types and never appears in `Debug`.

use std::fmt;
use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use rustls_pki_types::pem::{PemObject as _, SectionKind};
use sigil_proto::attestation::{
    ChannelBinding, X509POP, X509POP_CHALLENGE_LEN, X509PopKeyAlg, decode_chain, encode_chain,
    x509pop_public_key, x509pop_signed_message,
};
use sigil_proto::pem::certs_from_pem_or_der;

use super::{AttestorError, NodeAttestorClient};

/// Proves possession of a node certificate's private key.
pub struct X509PopClient {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// The payload: the chain, encoded and size-checked at load time.
    payload: Vec<u8>,
    chain_len: usize,
    key: NodeKey,
    rng: SystemRandom,
}

/// The leaf's private key, in the ring type that signs for its algorithm.
enum NodeKey {
    Ecdsa(EcdsaKeyPair, X509PopKeyAlg),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

impl NodeKey {
    /// Parses PKCS#8 `der` as any supported key type. ring checks the
    /// algorithm identifier, so at most one of these succeeds.
    fn from_pkcs8(der: &[u8], rng: &SystemRandom) -> Option<NodeKey> {
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, rng) {
            return Some(NodeKey::Ecdsa(k, X509PopKeyAlg::EcdsaP256Sha256));
        }
        if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, der, rng) {
            return Some(NodeKey::Ecdsa(k, X509PopKeyAlg::EcdsaP384Sha384));
        }
        // "maybe_unchecked" accepts PKCS#8 v1 without the public key, as
        // OpenSSL writes Ed25519 keys; v2 keys still have theirs checked.
        if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            return Some(NodeKey::Ed25519(k));
        }
        if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
            return Some(NodeKey::Rsa(k));
        }
        None
    }

    fn alg(&self) -> X509PopKeyAlg {
        match self {
            NodeKey::Ecdsa(_, alg) => *alg,
            NodeKey::Ed25519(_) => X509PopKeyAlg::Ed25519,
            NodeKey::Rsa(_) => X509PopKeyAlg::RsaPkcs1Sha256,
        }
    }

    /// The public key in the form the certificate's SPKI carries it (see
    /// [`sigil_proto::attestation::X509PopPublicKey`]).
    fn public_key(&self) -> &[u8] {
        match self {
            NodeKey::Ecdsa(k, _) => k.public_key().as_ref(),
            NodeKey::Ed25519(k) => k.public_key().as_ref(),
            NodeKey::Rsa(k) => k.public_key().as_ref(),
        }
    }

    fn sign(&self, rng: &SystemRandom, message: &[u8]) -> Result<Vec<u8>, AttestorError> {
        match self {
            NodeKey::Ecdsa(k, _) => k
                .sign(rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| AttestorError::Sign),
            NodeKey::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
            NodeKey::Rsa(k) => {
                let mut signature = vec![0; k.public().modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, rng, message, &mut signature)
                    .map_err(|_| AttestorError::Sign)?;
                Ok(signature)
            }
        }
    }
}

impl X509PopClient {
    /// Loads the node's certificate chain (PEM, leaf first) from `cert_path`
    /// and its private key (PKCS#8 PEM) from `key_path`, and checks that
    /// they belong together.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, AttestorError> {
        let cert_err = |reason: String| AttestorError::Certificate {
            path: cert_path.to_path_buf(),
            reason,
        };
        let chain =
            certs_from_pem_or_der(&read(cert_path)?).map_err(|e| cert_err(e.to_string()))?;
        // Refuse here what the server would refuse, with the file's name.
        let payload = encode_chain(&chain);
        decode_chain(&payload).map_err(|e| cert_err(e.to_string()))?;
        let leaf = chain
            .first()
            .ok_or_else(|| cert_err("no certificate in the file".to_string()))?;
        let leaf_key = x509pop_public_key(leaf).map_err(|e| cert_err(e.to_string()))?;

        let rng = SystemRandom::new();
        let key = load_key(key_path, &rng)?;
        if key.alg() != leaf_key.alg || key.public_key() != leaf_key.key.as_slice() {
            return Err(AttestorError::KeyMismatch {
                cert_path: cert_path.to_path_buf(),
                key_path: key_path.to_path_buf(),
            });
        }
        Ok(X509PopClient {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            payload,
            chain_len: chain.len(),
            key,
            rng,
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, AttestorError> {
    std::fs::read(path).map_err(|e| AttestorError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads the one PKCS#8 private key of the PEM file `path`.
fn load_key(path: &Path, rng: &SystemRandom) -> Result<NodeKey, AttestorError> {
    let key_err = |reason: &str| AttestorError::Key {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let text = read(path)?;
    if text
        .windows(b"-----BEGIN ENCRYPTED PRIVATE KEY-----".len())
        .any(|w| w == b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    {
        return Err(key_err(
            "the private key is encrypted; give an unencrypted PKCS#8 key \
             (\"-----BEGIN PRIVATE KEY-----\") in a file only the agent can read",
        ));
    }
    let mut pkcs8 = Vec::new();
    let mut other_key = false;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&text) {
        // PEM errors describe the file's structure, and may quote a line of
        // it: say only that it is not valid PEM.
        let (kind, der) = section.map_err(|_| key_err("not a valid PEM file"))?;
        match kind {
            SectionKind::PrivateKey => pkcs8.push(der),
            SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => other_key = true,
            _ => {}
        }
    }
    let der = match pkcs8.as_slice() {
        [der] => der,
        [] if other_key => {
            return Err(key_err(
                "the key is in PKCS#1 or SEC1 form; convert it to PKCS#8 with \
                 `openssl pkcs8 -topk8 -nocrypt`",
            ));
        }
        [] => {
            return Err(key_err(
                "no \"-----BEGIN PRIVATE KEY-----\" (PKCS#8) block found",
            ));
        }
        _ => {
            return Err(key_err(
                "more than one private key found; the file must hold exactly one",
            ));
        }
    };
    NodeKey::from_pkcs8(der, rng).ok_or_else(|| {
        key_err(
            "not a usable PKCS#8 private key: supported are ECDSA P-256, ECDSA P-384, \
             Ed25519 and RSA (2048 to 4096 bits)",
        )
    })
}

impl fmt::Debug for X509PopClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509PopClient")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("chain_len", &self.chain_len)
            .field("key", &self.key.alg().name())
            .finish_non_exhaustive()
    }
}

impl NodeAttestorClient for X509PopClient {
    fn name(&self) -> &'static str {
        X509POP
    }

    fn payload(&self) -> Result<Vec<u8>, AttestorError> {
        Ok(self.payload.clone())
    }

    /// Signs the challenge. The challenge length is part of the contract,
    /// so anything else is refused rather than signed.
    fn answer(&self, challenge: &[u8], channel: &ChannelBinding) -> Result<Vec<u8>, AttestorError> {
        if challenge.len() != X509POP_CHALLENGE_LEN {
            return Err(AttestorError::BadChallenge {
                len: challenge.len(),
            });
        }
        self.key
            .sign(&self.rng, &x509pop_signed_message(challenge, channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, SignatureAlgorithm,
    };
    use ring::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, ED25519, UnparsedPublicKey,
        VerificationAlgorithm,
    };
    use sigil_proto::pem::to_pem;
    use sigil_proto::test_pki::{NodePki, node_leaf_params};

    /// A node's files in a temporary directory.
    struct Files {
        dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
        chain: Vec<Vec<u8>>,
        /// The leaf's public key as ring verifies it.
        public: Vec<u8>,
        key_pem: String,
    }

    fn files(alg: &'static SignatureAlgorithm) -> Files {
        let pki = NodePki::new("node");
        let (leaf, key) = pki.sign(&node_leaf_params("node-1"), alg);
        let chain = vec![leaf, pki.intermediate.clone()];
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("node.crt");
        let key_path = dir.path().join("node.key");
        std::fs::write(&cert, to_pem(&chain)).unwrap();
        let key_pem = key.serialize_pem();
        std::fs::write(&key_path, &key_pem).unwrap();
        Files {
            dir,
            cert,
            key: key_path,
            chain,
            public: key.public_key_raw().to_vec(),
            key_pem,
        }
    }

    /// `der` as a PEM block labelled `label`.
    fn pem_block(label: &str, der: &[u8]) -> String {
        to_pem(&[der.to_vec()]).replace("CERTIFICATE", label)
    }

    /// The channel binding the tests answer on.
    const CH: ChannelBinding = ChannelBinding([0x3c; 32]);

    /// The server's verification, written independently with ring, for an
    /// answer on a connection with channel binding [`CH`].
    fn verifies(
        alg: &'static dyn VerificationAlgorithm,
        public: &[u8],
        challenge: &[u8],
        sig: &[u8],
    ) -> bool {
        let mut message = b"sigil x509pop challenge v1\0".to_vec();
        message.extend_from_slice(challenge);
        message.extend_from_slice(&CH.0);
        UnparsedPublicKey::new(alg, public)
            .verify(&message, sig)
            .is_ok()
    }

    #[test]
    fn answers_verify_for_every_key_type() {
        let cases: [(
            &'static SignatureAlgorithm,
            &'static dyn VerificationAlgorithm,
        ); 3] = [
            (&PKCS_ECDSA_P256_SHA256, &ECDSA_P256_SHA256_ASN1),
            (&PKCS_ECDSA_P384_SHA384, &ECDSA_P384_SHA384_ASN1),
            (&PKCS_ED25519, &ED25519),
        ];
        for (alg, verify_alg) in cases {
            let f = files(alg);
            let client = X509PopClient::load(&f.cert, &f.key).unwrap();
            assert_eq!(client.name(), "x509pop");
            assert_eq!(decode_chain(&client.payload().unwrap()).unwrap(), f.chain);
            let challenge = [7u8; 32];
            let sig = client.answer(&challenge, &CH).unwrap();
            assert!(verifies(verify_alg, &f.public, &challenge, &sig), "{alg:?}");
            assert!(
                !verifies(verify_alg, &f.public, &[8u8; 32], &sig),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn challenges_of_the_wrong_length_are_not_signed() {
        let f = files(&PKCS_ECDSA_P256_SHA256);
        let client = X509PopClient::load(&f.cert, &f.key).unwrap();
        for len in [0, 31, 33, 1024] {
            assert!(matches!(
                client.answer(&vec![0; len], &CH),
                Err(AttestorError::BadChallenge { .. })
            ));
        }
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_the_files() {
        let a = files(&PKCS_ECDSA_P256_SHA256);
        let b = files(&PKCS_ECDSA_P256_SHA256);
        let c = files(&PKCS_ECDSA_P384_SHA384);
        for key in [&b.key, &c.key] {
            let err = X509PopClient::load(&a.cert, key).unwrap_err();
            assert!(matches!(err, AttestorError::KeyMismatch { .. }), "{err:?}");
            let message = err.to_string();
            assert!(message.contains(&*key.to_string_lossy()), "{message}");
            assert!(message.contains(&*a.cert.to_string_lossy()), "{message}");
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let f = files(&PKCS_ED25519);
        let client = X509PopClient::load(&f.cert, &f.key).unwrap();
        let debug = format!("{client:?} {client:#?}");
        assert!(debug.contains("ed25519"), "{debug}");
        assert!(debug.contains("node.key"), "{debug}");
        for line in f.key_pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!debug.contains(line), "{debug}");
        }
        let pkcs8 = KeyPair::from_pem(&f.key_pem).unwrap().serialize_der();
        assert!(!debug.contains(&format!("{:?}", &pkcs8[pkcs8.len() - 8..])));
        assert!(!debug.to_lowercase().contains("private"), "{debug}");
    }

    #[test]
    fn openssl_style_ed25519_pkcs8_v1_loads() {
        let f = files(&PKCS_ED25519);
        // PKCS#8 v2 from ring: a 16-byte header, the 32-byte seed, then
        // the public key. v1 is the same header (version 0) and seed only.
        let v2 = KeyPair::from_pem(&f.key_pem).unwrap().serialize_der();
        let mut v1 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        v1.extend_from_slice(&v2[16..48]);
        std::fs::write(&f.key, pem_block("PRIVATE KEY", &v1)).unwrap();
        let client = X509PopClient::load(&f.cert, &f.key).unwrap();
        let sig = client.answer(&[1u8; 32], &CH).unwrap();
        assert!(verifies(&ED25519, &f.public, &[1u8; 32], &sig));
    }

    #[test]
    fn unusable_key_files_are_refused_naming_the_file() {
        let f = files(&PKCS_ECDSA_P256_SHA256);
        let der = KeyPair::from_pem(&f.key_pem).unwrap().serialize_der();
        let cases = [
            (String::new(), "no \"-----BEGIN PRIVATE KEY-----\""),
            (pem_block("EC PRIVATE KEY", &der), "PKCS#1 or SEC1"),
            (pem_block("ENCRYPTED PRIVATE KEY", &der), "encrypted"),
            (
                pem_block("PRIVATE KEY", b"not a key"),
                "not a usable PKCS#8",
            ),
            (format!("{}{}", f.key_pem, f.key_pem), "more than one"),
            (
                "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n".to_string(),
                "not a valid PEM",
            ),
        ];
        for (content, expected) in cases {
            std::fs::write(&f.key, &content).unwrap();
            let err = X509PopClient::load(&f.cert, &f.key).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(expected), "{expected}: {message}");
            assert!(message.contains("node.key"), "{message}");
        }
        let missing = f.dir.path().join("missing.key");
        let err = X509PopClient::load(&f.cert, &missing).unwrap_err();
        assert!(matches!(err, AttestorError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.key"));
    }

    #[test]
    fn unusable_certificate_files_are_refused_naming_the_file() {
        let f = files(&PKCS_ECDSA_P256_SHA256);
        let leaf = f.chain[0].clone();
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"hello".to_vec(),
            f.key_pem.clone().into_bytes(),
            to_pem(&vec![leaf; 9]).into_bytes(),
        ];
        for content in cases {
            std::fs::write(&f.cert, &content).unwrap();
            let err = X509PopClient::load(&f.cert, &f.key).unwrap_err();
            assert!(matches!(err, AttestorError::Certificate { .. }), "{err:?}");
            assert!(err.to_string().contains("node.crt"), "{err}");
        }
    }
}
