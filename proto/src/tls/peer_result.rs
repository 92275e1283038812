//! The result of one mTLS handshake as a proxy counts and logs it: a small,
//! closed set of classes ([`PeerResult`], the `result` label of
//! `sigil_proxy_handshakes_total`) that says why a peer was refused without
//! naming values. [`classify`] maps what rustls and the SPIFFE verifiers of
//! [`super::verify`] report; the one class rustls cannot tell apart (a peer
//! of a trust domain no bundle is held for) is decided by the caller, which
//! knows the bundle set.

use rustls::{CertificateError, Error};

use crate::svid_profile::ProfileError;

/// Why a handshake ended as it did. The labels are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerResult {
    /// Verified and allowed.
    Ok,
    /// The client sent no certificate.
    NoClientCert,
    /// The chain leads to no CA of the peer's trust domain bundle.
    UnknownCa,
    /// The peer's certificate (or one of its chain) has expired.
    Expired,
    /// The peer's certificate (or one of its chain) is not valid yet.
    NotYetValid,
    /// The peer's SPIFFE ID is of a trust domain no bundle is held for.
    WrongTrustDomain,
    /// The peer's SVID is valid but its SPIFFE ID is not allowed.
    IdNotAllowed,
    /// The leaf has no single URI SAN that is a SPIFFE ID with a path, or
    /// breaks another X.509-SVID leaf rule.
    BadSan,
    /// Anything else (protocol errors, a peer that closed mid-handshake).
    TlsError,
}

impl PeerResult {
    /// Every class, in label order.
    pub const ALL: [PeerResult; 9] = [
        PeerResult::Ok,
        PeerResult::NoClientCert,
        PeerResult::UnknownCa,
        PeerResult::Expired,
        PeerResult::NotYetValid,
        PeerResult::WrongTrustDomain,
        PeerResult::IdNotAllowed,
        PeerResult::BadSan,
        PeerResult::TlsError,
    ];

    /// The metric label and log `reason`.
    pub fn label(self) -> &'static str {
        match self {
            PeerResult::Ok => "ok",
            PeerResult::NoClientCert => "no_client_cert",
            PeerResult::UnknownCa => "unknown_ca",
            PeerResult::Expired => "expired",
            PeerResult::NotYetValid => "not_yet_valid",
            PeerResult::WrongTrustDomain => "wrong_trust_domain",
            PeerResult::IdNotAllowed => "id_not_allowed",
            PeerResult::BadSan => "bad_san",
            PeerResult::TlsError => "tls_error",
        }
    }
}

impl std::fmt::Display for PeerResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// The class of a handshake error `err` (this side's refusal or an alert
/// from the peer).
pub fn classify(err: &Error) -> PeerResult {
    match err {
        Error::NoCertificatesPresented => PeerResult::NoClientCert,
        Error::InvalidCertificate(c) => classify_cert_error(c),
        _ => PeerResult::TlsError,
    }
}

fn classify_cert_error(c: &CertificateError) -> PeerResult {
    match c {
        // A bad signature under a known issuer name is a CA the bundle
        // does not hold (re-keyed, or a forgery).
        CertificateError::UnknownIssuer | CertificateError::BadSignature => PeerResult::UnknownCa,
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => PeerResult::Expired,
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            PeerResult::NotYetValid
        }
        CertificateError::ApplicationVerificationFailure => PeerResult::IdNotAllowed,
        CertificateError::Other(o) if o.0.downcast_ref::<ProfileError>().is_some() => {
            PeerResult::BadSan
        }
        _ => PeerResult::TlsError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique() {
        let mut l: Vec<_> = PeerResult::ALL.iter().map(|r| r.label()).collect();
        l.sort();
        l.dedup();
        assert_eq!(l.len(), PeerResult::ALL.len());
    }

    #[test]
    fn rustls_errors_map_to_their_class() {
        use std::sync::Arc;
        let cases = [
            (Error::NoCertificatesPresented, PeerResult::NoClientCert),
            (
                Error::InvalidCertificate(CertificateError::UnknownIssuer),
                PeerResult::UnknownCa,
            ),
            (
                Error::InvalidCertificate(CertificateError::Expired),
                PeerResult::Expired,
            ),
            (
                Error::InvalidCertificate(CertificateError::NotValidYet),
                PeerResult::NotYetValid,
            ),
            (
                Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure),
                PeerResult::IdNotAllowed,
            ),
            (
                Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
                    ProfileError::LeafIsCa,
                )))),
                PeerResult::BadSan,
            ),
            (Error::HandshakeNotComplete, PeerResult::TlsError),
        ];
        for (e, want) in cases {
            assert_eq!(classify(&e), want, "{e}");
        }
    }
}
