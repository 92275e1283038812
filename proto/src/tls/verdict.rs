//! TLS verdicts: why a handshake between an agent and the server failed,
//! told as a stable code, a one-line cause and the fix. [`Verdict::ALL`]
//! is the public table (README's troubleshooting table and `diagnose` use
//! the same codes); [`Diagnosis`] is one verdict with the values of the case
//! (the IDs, the issuer, the times), printed as `cause: fix [code]`.
//! [`diagnose_server_cert`] and [`diagnose_connect_error`] translate what
//! rustls and the socket say on the agent's side, [`diagnose_client_cert`]
//! names the refused peer on the server's side.

use std::error::Error as StdError;
use std::fmt;

use rustls::pki_types::UnixTime;
use rustls::{AlertDescription, CertificateError};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use crate::spiffe_id::{SpiffeId, TrustDomain};

mod peer;
pub use peer::PeerVerdict;

/// Why a handshake between agent and server failed. The codes are stable:
/// logs, tests and `diagnose` match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The agent: connection refused at `server_address`.
    NothingListening,
    /// The agent: something answers at `server_address`, but not the agent
    /// API (plaintext, HTTP, another TLS service).
    NotAgentApi,
    /// The agent: the server's SPIFFE ID is of another trust domain.
    WrongTrustDomain,
    /// The agent: the server's ID is in the trust domain but is not
    /// `spiffe://<td>/sigil/server`.
    WrongServerId,
    /// The agent: `trust_bundle_path` lacks the CA that signed the server.
    ServerCaNotInBundleFile,
    /// The agent: its synced bundle lacks the CA that signed the server.
    ServerCaNotInAgentBundle,
    /// The agent: the server's certificate expired (or this clock is ahead).
    ServerCertExpired,
    /// The agent: the server's certificate is not valid yet (or this clock
    /// is behind).
    ServerCertNotYetValid,
    /// The agent: the server's certificate breaks another rule.
    ServerCertInvalid,
    /// The agent: the server refused the agent's own SVID.
    AgentSvidRefused,
    /// The server: the client's SVID does not chain to the current bundle.
    ClientCaUnknown,
    /// The server: the client's SVID expired or is not valid yet.
    ClientCertOutOfValidity,
    /// The server: the client's SVID is valid but not an agent ID of this
    /// trust domain.
    ClientNotAgent,
    /// The server: the client's certificate breaks another rule.
    ClientCertInvalid,
    /// Anything else.
    Other,
    /// `diagnose`: any mTLS peer's certificate or TLS setup.
    Peer(PeerVerdict),
}

impl Verdict {
    /// Every verdict, in the order of the troubleshooting table.
    pub const ALL: [Verdict; 15] = [
        Verdict::NothingListening,
        Verdict::NotAgentApi,
        Verdict::WrongTrustDomain,
        Verdict::WrongServerId,
        Verdict::ServerCaNotInBundleFile,
        Verdict::ServerCaNotInAgentBundle,
        Verdict::ServerCertExpired,
        Verdict::ServerCertNotYetValid,
        Verdict::ServerCertInvalid,
        Verdict::AgentSvidRefused,
        Verdict::ClientCaUnknown,
        Verdict::ClientCertOutOfValidity,
        Verdict::ClientNotAgent,
        Verdict::ClientCertInvalid,
        Verdict::Other,
    ];

    /// The server's certificate chains to no CA of the roots it was checked
    /// with (a bundle file or the agent's synced bundle): fetching a newer
    /// bundle may fix it; nothing else about the connection failed.
    pub fn is_unknown_server_ca(self) -> bool {
        matches!(
            self,
            Verdict::ServerCaNotInBundleFile | Verdict::ServerCaNotInAgentBundle
        )
    }

    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            Verdict::NothingListening => "tls_nothing_listening",
            Verdict::NotAgentApi => "tls_not_agent_api",
            Verdict::WrongTrustDomain => "tls_wrong_trust_domain",
            Verdict::WrongServerId => "tls_wrong_server_id",
            Verdict::ServerCaNotInBundleFile => "tls_stale_bundle_file",
            Verdict::ServerCaNotInAgentBundle => "tls_stale_agent_bundle",
            Verdict::ServerCertExpired => "tls_server_cert_expired",
            Verdict::ServerCertNotYetValid => "tls_server_cert_not_yet_valid",
            Verdict::ServerCertInvalid => "tls_server_cert_invalid",
            Verdict::AgentSvidRefused => "tls_agent_svid_refused",
            Verdict::ClientCaUnknown => "tls_client_ca_unknown",
            Verdict::ClientCertOutOfValidity => "tls_client_cert_out_of_validity",
            Verdict::ClientNotAgent => "tls_client_not_agent",
            Verdict::ClientCertInvalid => "tls_client_cert_invalid",
            Verdict::Other => "tls_other",
            Verdict::Peer(p) => p.code(),
        }
    }

    /// The cause in general terms (a [`Diagnosis`] names the values).
    pub fn cause(self) -> &'static str {
        match self {
            Verdict::NothingListening => "nothing listens on server_address",
            Verdict::NotAgentApi => "server_address answers but is not the agent API",
            Verdict::WrongTrustDomain => {
                "the server's SPIFFE ID is in another trust domain than this agent's trust_domain"
            }
            Verdict::WrongServerId => "the server's SPIFFE ID is not spiffe://<td>/sigil/server",
            Verdict::ServerCaNotInBundleFile => {
                "trust_bundle_path lacks the CA that signed the server's certificate"
            }
            Verdict::ServerCaNotInAgentBundle => {
                "the agent's bundle lacks the CA that signed the server's certificate"
            }
            Verdict::ServerCertExpired => "the server's certificate has expired at this clock",
            Verdict::ServerCertNotYetValid => {
                "the server's certificate is not valid yet at this clock"
            }
            Verdict::ServerCertInvalid => "the server's certificate is not a valid X.509-SVID",
            Verdict::AgentSvidRefused => "the server refused this agent's SVID",
            Verdict::ClientCaUnknown => "the agent's SVID does not chain to the current bundle",
            Verdict::ClientCertOutOfValidity => "the agent's SVID is expired or not valid yet",
            Verdict::ClientNotAgent => "the client's SVID is not an agent ID of this trust domain",
            Verdict::ClientCertInvalid => "the client's certificate is not a valid X.509-SVID",
            Verdict::Other => "the TLS handshake failed",
            Verdict::Peer(p) => p.cause(),
        }
    }

    /// What to do about it.
    pub fn fix(self) -> &'static str {
        match self {
            Verdict::NothingListening => {
                "check server_address against the server's bind_address and that sigil-server runs"
            }
            Verdict::NotAgentApi => {
                "set server_address to the server's bind_address (not the bundle endpoint, \
                 health or another service)"
            }
            Verdict::WrongTrustDomain => {
                "set trust_domain to the server's trust domain, or server_address to a server of \
                 this one"
            }
            Verdict::WrongServerId => "point server_address at a sigil-server of this trust domain",
            Verdict::ServerCaNotInBundleFile => {
                "refresh it with `sigil-server bundle show > <trust_bundle_path>`"
            }
            Verdict::ServerCaNotInAgentBundle => {
                "the server's CA changed while the agent missed it: re-attest with \
                 `sigil-agent run --reset-identity`"
            }
            Verdict::ServerCertExpired => {
                "check both hosts' clocks (NTP); if they are right, the server did not renew \
                 its SVID: read its log"
            }
            Verdict::ServerCertNotYetValid => "this host's clock is behind: sync it (NTP)",
            Verdict::ServerCertInvalid => "point server_address at a sigil-server's agent API",
            Verdict::AgentSvidRefused => {
                "its CA was revoked or the agent was evicted: re-attest with \
                 `sigil-agent run --reset-identity`"
            }
            Verdict::ClientCaUnknown => {
                "its CA was revoked or it comes from another server: the agent must re-attest \
                 (`sigil-agent run --reset-identity`)"
            }
            Verdict::ClientCertOutOfValidity => {
                "check both hosts' clocks; an agent whose SVID expired must re-attest"
            }
            Verdict::ClientNotAgent => {
                "only agent SVIDs of this trust domain may call the agent API"
            }
            Verdict::ClientCertInvalid => "the client must present a sigil agent SVID",
            Verdict::Other => "read the other side's log for its view of the handshake",
            Verdict::Peer(p) => p.fix(),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One verdict with the values of the case: `detail` is the cause with the
/// IDs, issuer, times or address filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub verdict: Verdict,
    pub detail: String,
}

impl Diagnosis {
    pub fn new(verdict: Verdict, detail: impl Into<String>) -> Diagnosis {
        Diagnosis {
            verdict,
            detail: detail.into(),
        }
    }
}

/// `cause: fix [code]`, the cause said once.
impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} [{}]",
            self.detail,
            self.verdict.fix(),
            self.verdict.code()
        )
    }
}

impl StdError for Diagnosis {}

/// What a log needs of a presented certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// The leaf's URI SAN, or `-` when it has none.
    pub spiffe_id: String,
    /// Lowercase hex serial.
    pub serial: String,
    /// The issuer's distinguished name.
    pub issuer: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl CertFacts {
    /// The facts of a DER certificate; `None` when it does not parse.
    pub fn of(der: &[u8]) -> Option<CertFacts> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let uri = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    san.general_names.iter().find_map(|n| match n {
                        GeneralName::URI(u) => Some(u.to_string()),
                        _ => None,
                    })
                }
                _ => None,
            });
        Some(CertFacts {
            spiffe_id: uri.unwrap_or_else(|| "-".to_string()),
            serial: hex::encode(cert.raw_serial()),
            issuer: cert.issuer().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

/// A unix time in RFC 3339 (shared with `diagnose` and `entry explain`).
pub fn rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("unix time {secs}"))
}

fn now_secs(now: UnixTime) -> i64 {
    i64::try_from(now.as_secs()).unwrap_or(i64::MAX)
}

/// Where the agent's trust anchors came from, for [`diagnose_server_cert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleSource {
    /// `trust_bundle_path` (first attestation).
    File,
    /// The bundle the agent synced from the server.
    Synced,
}

/// Translates the agent's refusal `err` of the server certificate
/// `end_entity` (expected to be `spiffe://<td>/sigil/server`), checked at
/// `now` against the anchors of `source`.
pub fn diagnose_server_cert(
    err: &rustls::Error,
    end_entity: &[u8],
    td: &TrustDomain,
    source: BundleSource,
    now: UnixTime,
) -> Diagnosis {
    let facts = CertFacts::of(end_entity);
    let id = SpiffeId::parse(facts.as_ref().map_or("-", |f| f.spiffe_id.as_str())).ok();
    let issuer = facts.as_ref().map_or("?", |f| f.issuer.as_str());
    let Some(id) = id else {
        let subject = X509Certificate::from_der(end_entity)
            .map(|(_, c)| c.subject().to_string())
            .unwrap_or_else(|_| "an unparsable certificate".into());
        return Diagnosis::new(
            Verdict::NotAgentApi,
            format!(
                "server_address answers but is not the agent API: its certificate ({subject}) \
                 has no SPIFFE ID"
            ),
        );
    };
    let cert_error = match err {
        rustls::Error::InvalidCertificate(c) => c,
        other => {
            return Diagnosis::new(
                Verdict::ServerCertInvalid,
                format!("the server's certificate ({id}) is refused: {other}"),
            );
        }
    };
    let now = now_secs(now);
    match cert_error {
        // A bad signature under a known name is a CA of that name the roots
        // do not hold (re-keyed): the same cause as an unknown issuer.
        CertificateError::UnknownIssuer | CertificateError::BadSignature => match source {
            BundleSource::File => Diagnosis::new(
                Verdict::ServerCaNotInBundleFile,
                format!(
                    "trust_bundle_path lacks the CA that signed the server's certificate \
                     (issuer {issuer})"
                ),
            ),
            BundleSource::Synced => Diagnosis::new(
                Verdict::ServerCaNotInAgentBundle,
                format!(
                    "the agent's bundle lacks the CA that signed the server's certificate \
                     (issuer {issuer})"
                ),
            ),
        },
        CertificateError::ApplicationVerificationFailure => {
            if id.trust_domain() != *td {
                Diagnosis::new(
                    Verdict::WrongTrustDomain,
                    format!(
                        "the server is {id} but this agent's trust_domain is {}",
                        td.as_str()
                    ),
                )
            } else {
                Diagnosis::new(
                    Verdict::WrongServerId,
                    format!(
                        "the server presented {id}, not spiffe://{}/sigil/server",
                        td.as_str()
                    ),
                )
            }
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => Diagnosis::new(
            Verdict::ServerCertExpired,
            format!(
                "the server's certificate ({id}) is valid until {} but this host's clock says {}",
                facts.as_ref().map_or("?".into(), |f| rfc3339(f.not_after)),
                rfc3339(now)
            ),
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            Diagnosis::new(
                Verdict::ServerCertNotYetValid,
                format!(
                    "the server's certificate ({id}) is valid from {} but this host's clock \
                     says {}",
                    facts.as_ref().map_or("?".into(), |f| rfc3339(f.not_before)),
                    rfc3339(now)
                ),
            )
        }
        CertificateError::Other(o) => Diagnosis::new(
            Verdict::ServerCertInvalid,
            format!("the server's certificate ({id}) is refused: {}", o.0),
        ),
        other => Diagnosis::new(
            Verdict::ServerCertInvalid,
            format!("the server's certificate ({id}) is refused: {other:?}"),
        ),
    }
}

/// A client certificate the server refused: the peer, named for the log,
/// and the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedClient {
    pub diagnosis: Diagnosis,
    /// `None` when the certificate does not parse.
    pub facts: Option<CertFacts>,
}

/// Translates the server's refusal `err` of the client certificate
/// `end_entity` at `now`.
pub fn diagnose_client_cert(
    err: &rustls::Error,
    end_entity: &[u8],
    now: UnixTime,
) -> RefusedClient {
    let facts = CertFacts::of(end_entity);
    let diagnosis = match err {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => Diagnosis::new(
            Verdict::ClientCaUnknown,
            // The log names the issuer in its own field.
            "the agent's SVID does not chain to the current bundle",
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => Diagnosis::new(
            Verdict::ClientCertOutOfValidity,
            format!(
                "the agent's SVID expired at {} (the server's clock says {})",
                facts.as_ref().map_or("?".into(), |f| rfc3339(f.not_after)),
                rfc3339(now_secs(now))
            ),
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => Diagnosis::new(
            Verdict::ClientCertOutOfValidity,
            format!(
                "the agent's SVID is valid only from {} (the server's clock says {})",
                facts.as_ref().map_or("?".into(), |f| rfc3339(f.not_before)),
                rfc3339(now_secs(now))
            ),
        ),
        rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure) => {
            Diagnosis::new(
                Verdict::ClientNotAgent,
                format!(
                    "the client's SVID {} is not an agent ID of this trust domain",
                    facts.as_ref().map_or("-", |f| f.spiffe_id.as_str())
                ),
            )
        }
        rustls::Error::InvalidCertificate(CertificateError::Other(o)) => Diagnosis::new(
            Verdict::ClientCertInvalid,
            format!("the client's certificate is refused: {}", o.0),
        ),
        other => Diagnosis::new(
            Verdict::ClientCertInvalid,
            format!("the client's certificate is refused: {other}"),
        ),
    };
    RefusedClient { diagnosis, facts }
}

/// Translates a failed connection to the agent API at `addr` (the error of
/// the socket, of rustls or of the layers above, which keep them as their
/// source): a [`Diagnosis`] found in the chain is returned as is. `None`
/// when nothing in the chain is recognised.
pub fn diagnose_connect_error(addr: &str, err: &(dyn StdError + 'static)) -> Option<Diagnosis> {
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    // Bounded: error chains are short, but a cycle must not hang a log line.
    for _ in 0..32 {
        let e = next?;
        if let Some(d) = e.downcast_ref::<Diagnosis>() {
            return Some(d.clone());
        }
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return diagnose_rustls(addr, r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return Some(Diagnosis::new(
                    Verdict::NothingListening,
                    format!("nothing listens on {addr} (connection refused)"),
                ));
            }
            if let Some(inner) = io.get_ref() {
                if let Some(d) = alert_in_text(addr, &inner.to_string()) {
                    return Some(d);
                }
                // `io::Error::source` skips the wrapped error itself.
                next = Some(inner as &(dyn StdError + 'static));
                continue;
            }
            if io.kind() == std::io::ErrorKind::UnexpectedEof {
                return Some(not_agent_api(
                    addr,
                    "it closed the connection mid-handshake",
                ));
            }
        }
        next = e.source();
    }
    None
}

/// The alert of a rustls error that h2 turned into text (it keeps an I/O
/// error's kind and message only): `received fatal alert: <name>`.
fn alert_in_text(addr: &str, text: &str) -> Option<Diagnosis> {
    const CERT_ALERTS: [AlertDescription; 8] = [
        AlertDescription::UnknownCA,
        AlertDescription::BadCertificate,
        AlertDescription::CertificateExpired,
        AlertDescription::CertificateRevoked,
        AlertDescription::CertificateUnknown,
        AlertDescription::UnsupportedCertificate,
        AlertDescription::AccessDenied,
        AlertDescription::CertificateRequired,
    ];
    let name = text.strip_prefix("received fatal alert: ")?;
    let alert = CERT_ALERTS.into_iter().find(|a| format!("{a:?}") == name)?;
    diagnose_rustls(addr, &rustls::Error::AlertReceived(alert))
}

fn not_agent_api(addr: &str, what: &str) -> Diagnosis {
    Diagnosis::new(
        Verdict::NotAgentApi,
        format!("{addr} answers but is not the agent API ({what})"),
    )
}

fn diagnose_rustls(addr: &str, e: &rustls::Error) -> Option<Diagnosis> {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(CertificateError::Other(o)) => {
            o.0.downcast_ref::<Diagnosis>().cloned()
        }
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::PeerMisbehaved(_) => {
            Some(not_agent_api(
                addr,
                &format!("it does not speak TLS as the agent API does: {e}"),
            ))
        }
        E::InappropriateHandshakeMessage { .. } | E::PeerIncompatible(_) => Some(not_agent_api(
            addr,
            &format!("its TLS does not match the agent API's: {e}"),
        )),
        E::AlertReceived(a) => Some(match a {
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired => Diagnosis::new(
                Verdict::AgentSvidRefused,
                format!("the server at {addr} refused this agent's SVID (TLS alert {a:?})"),
            ),
            _ => not_agent_api(addr, &format!("it sent TLS alert {a:?}")),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_every_verdict_has_cause_and_fix() {
        let all: Vec<Verdict> = Verdict::ALL
            .into_iter()
            .chain(PeerVerdict::ALL.map(Verdict::Peer))
            .collect();
        let mut codes: Vec<_> = all.iter().map(|v| v.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        for v in all {
            assert!(!v.cause().is_empty() && !v.fix().is_empty(), "{v}");
        }
    }

    #[test]
    fn connection_refused_names_the_address() {
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let d = diagnose_connect_error("127.0.0.1:9", &e).unwrap();
        assert_eq!(d.verdict, Verdict::NothingListening);
        assert!(
            d.to_string().contains("nothing listens on 127.0.0.1:9"),
            "{d}"
        );
    }

    #[test]
    fn a_wrapped_rustls_error_is_found() {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        );
        let d = diagnose_connect_error("a:1", &e).unwrap();
        assert_eq!(d.verdict, Verdict::AgentSvidRefused);
    }

    #[test]
    fn expired_server_cert_names_the_times() {
        let ca = crate::test_pki::TestCa::new("example.org");
        let (der, _) = ca.leaf("spiffe://example.org/sigil/server");
        let td = TrustDomain::parse("example.org").unwrap();
        let err = rustls::Error::InvalidCertificate(CertificateError::Expired);
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(4_000_000_000));
        let d = diagnose_server_cert(&err, &der, &td, BundleSource::File, now);
        assert_eq!(d.verdict, Verdict::ServerCertExpired);
        assert!(d.detail.contains("this host's clock says 2096-"), "{d}");
    }
}
