//! The handshake-signature half of rustls' verifier traits. Every verifier
//! in Sigil (SPIFFE peer checks, the proxy's recording check, `diagnose`'s
//! recorder, the agent's bootstrap and diagnosing wrappers, the server's
//! attestation-friendly listener) checks the peer's handshake signature the
//! same way: with ring's algorithms, whatever it decides about the chain.
//! [`crate::tls_signature_methods`] writes those three trait methods once.

use std::sync::LazyLock;

use rustls::crypto::WebPkiSupportedAlgorithms;

static RING: LazyLock<WebPkiSupportedAlgorithms> =
    LazyLock::new(|| rustls::crypto::ring::default_provider().signature_verification_algorithms);

/// ring's signature verification algorithms: the ones every Sigil verifier
/// uses for chains and handshake signatures.
pub fn ring_algorithms() -> &'static WebPkiSupportedAlgorithms {
    &RING
}

/// Writes `verify_tls12_signature`, `verify_tls13_signature` and
/// `supported_verify_schemes` of `ServerCertVerifier` or
/// `ClientCertVerifier` (inside its `impl` block), checking with
/// [`ring_algorithms`]. Pass the `self` keyword: `tls_signature_methods!(self);`.
#[macro_export]
macro_rules! tls_signature_methods {
    ($self:ident) => {
        fn verify_tls12_signature(
            &$self,
            message: &[u8],
            cert: &::rustls::pki_types::CertificateDer<'_>,
            dss: &::rustls::DigitallySignedStruct,
        ) -> ::std::result::Result<::rustls::client::danger::HandshakeSignatureValid, ::rustls::Error>
        {
            ::rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                $crate::tls::signatures::ring_algorithms(),
            )
        }

        fn verify_tls13_signature(
            &$self,
            message: &[u8],
            cert: &::rustls::pki_types::CertificateDer<'_>,
            dss: &::rustls::DigitallySignedStruct,
        ) -> ::std::result::Result<::rustls::client::danger::HandshakeSignatureValid, ::rustls::Error>
        {
            ::rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                $crate::tls::signatures::ring_algorithms(),
            )
        }

        fn supported_verify_schemes(&$self) -> ::std::vec::Vec<::rustls::SignatureScheme> {
            $crate::tls::signatures::ring_algorithms().supported_schemes()
        }
    };
}
