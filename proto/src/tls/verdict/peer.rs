//! The verdicts of `sigil-agent diagnose` about any mTLS peer (a workload's
//! client or server, not only the agent API): one [`PeerVerdict`] per way a
//! presented certificate or a peer's TLS setup breaks an mTLS connection.
//! They are [`super::Verdict::Peer`] codes, in the same code space as the
//! agent-API verdicts, printed through the same [`super::Diagnosis`].

/// Why an mTLS connection with a peer would fail, or is not mTLS at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerVerdict {
    /// The certificate's notAfter is before the check time.
    Expired,
    /// The certificate's notBefore is after the check time.
    NotYetValid,
    /// The certificate chains to no CA of the bundle.
    UntrustedCa,
    /// An intermediate between the certificate and the bundle is missing
    /// from the presented chain.
    ChainIncomplete,
    /// The SPIFFE ID's trust domain is not one the bundle is for.
    WrongTrustDomain,
    /// No URI SAN, several, or one that is not a SPIFFE ID with a path.
    NotSvid,
    /// The SPIFFE ID is not in the allow-list (or is not the expected
    /// server ID).
    NotAllowed,
    /// keyUsage or extKeyUsage forbid this use.
    WrongKeyUsage,
    /// The leaf is a CA certificate (cA=true).
    CaAsLeaf,
    /// The certificate breaks another rule of the verifier.
    Invalid,
    /// The server completed the handshake without asking for a client
    /// certificate: it authenticates nobody.
    NoClientCertRequested,
    /// The peer refused this workload's SVID.
    RefusedUs,
    /// The peer does not speak TLS.
    Plaintext,
    /// Nothing accepts connections at the address.
    Unreachable,
}

impl PeerVerdict {
    /// Every peer verdict.
    pub const ALL: [PeerVerdict; 14] = [
        PeerVerdict::Expired,
        PeerVerdict::NotYetValid,
        PeerVerdict::UntrustedCa,
        PeerVerdict::ChainIncomplete,
        PeerVerdict::WrongTrustDomain,
        PeerVerdict::NotSvid,
        PeerVerdict::NotAllowed,
        PeerVerdict::WrongKeyUsage,
        PeerVerdict::CaAsLeaf,
        PeerVerdict::Invalid,
        PeerVerdict::NoClientCertRequested,
        PeerVerdict::RefusedUs,
        PeerVerdict::Plaintext,
        PeerVerdict::Unreachable,
    ];

    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            PeerVerdict::Expired => "tls_peer_expired",
            PeerVerdict::NotYetValid => "tls_peer_not_yet_valid",
            PeerVerdict::UntrustedCa => "tls_peer_untrusted_ca",
            PeerVerdict::ChainIncomplete => "tls_peer_chain_incomplete",
            PeerVerdict::WrongTrustDomain => "tls_peer_wrong_trust_domain",
            PeerVerdict::NotSvid => "tls_peer_not_svid",
            PeerVerdict::NotAllowed => "tls_peer_not_allowed",
            PeerVerdict::WrongKeyUsage => "tls_peer_wrong_key_usage",
            PeerVerdict::CaAsLeaf => "tls_peer_ca_as_leaf",
            PeerVerdict::Invalid => "tls_peer_invalid",
            PeerVerdict::NoClientCertRequested => "tls_no_client_cert_requested",
            PeerVerdict::RefusedUs => "tls_peer_refused_our_svid",
            PeerVerdict::Plaintext => "tls_plaintext",
            PeerVerdict::Unreachable => "tls_unreachable",
        }
    }

    /// The cause in general terms.
    pub fn cause(self) -> &'static str {
        match self {
            PeerVerdict::Expired => "the certificate has expired at the check time",
            PeerVerdict::NotYetValid => "the certificate is not valid yet at the check time",
            PeerVerdict::UntrustedCa => "the certificate chains to no CA of the bundle",
            PeerVerdict::ChainIncomplete => "the presented chain lacks an intermediate CA",
            PeerVerdict::WrongTrustDomain => "the SPIFFE ID is of a trust domain not trusted",
            PeerVerdict::NotSvid => "the certificate is not an X.509-SVID (URI SANs)",
            PeerVerdict::NotAllowed => "the SPIFFE ID is not allowed",
            PeerVerdict::WrongKeyUsage => "keyUsage or extKeyUsage forbid this use",
            PeerVerdict::CaAsLeaf => "a CA certificate is presented as the leaf",
            PeerVerdict::Invalid => "the certificate is refused by the SPIFFE verifier",
            PeerVerdict::NoClientCertRequested => {
                "the server does not request a client certificate"
            }
            PeerVerdict::RefusedUs => "the peer refused this workload's SVID",
            PeerVerdict::Plaintext => "the peer does not speak TLS",
            PeerVerdict::Unreachable => "nothing accepts connections at the address",
        }
    }

    /// What to do about it.
    pub fn fix(self) -> &'static str {
        match self {
            PeerVerdict::Expired => {
                "check both hosts' clocks (NTP); if they are right, the peer does not renew its \
                 SVID: have it read the Workload API (or sigil-agent helper) instead of a file"
            }
            PeerVerdict::NotYetValid => "a clock is behind: sync both hosts (NTP)",
            PeerVerdict::UntrustedCa => {
                "give the peer an SVID from this trust domain's server, or add its CA \
                 (federation) to the bundle; if the issuer is an intermediate, the peer must \
                 send it"
            }
            PeerVerdict::ChainIncomplete => {
                "the peer must send its whole chain (leaf, then every intermediate)"
            }
            PeerVerdict::WrongTrustDomain => {
                "federate with that trust domain, or give the peer an SVID of this one"
            }
            PeerVerdict::NotSvid => {
                "the peer must present an X.509-SVID: exactly one spiffe:// URI SAN"
            }
            PeerVerdict::NotAllowed => {
                "add the ID to the allow-list, or give the peer the expected identity"
            }
            PeerVerdict::WrongKeyUsage => {
                "an X.509-SVID leaf needs digitalSignature, no keyCertSign/cRLSign, and \
                 serverAuth and clientAuth"
            }
            PeerVerdict::CaAsLeaf => "present a leaf SVID (cA=false), not the CA certificate",
            PeerVerdict::Invalid => "present a profile-conforming X.509-SVID",
            PeerVerdict::NoClientCertRequested => {
                "configure the server to require (not merely accept) client certificates \
                 chaining to the bundle"
            }
            PeerVerdict::RefusedUs => {
                "read the peer's log: its bundle or allow-list does not accept this SVID"
            }
            PeerVerdict::Plaintext => {
                "connect to the peer's TLS port, or put it behind `sigil-agent proxy`"
            }
            PeerVerdict::Unreachable => "check the address and that the service runs",
        }
    }
}
