//! Tests of SPIFFE TLS: real in-memory handshakes between the configs this
//! module builds, with test certificates that break one rule each.

use std::sync::Mutex;

use rcgen::{ExtendedKeyUsagePurpose, KeyPair};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::{ClientConnection, Connection, ServerConnection};
use time::{Duration, OffsetDateTime};

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::danger::ClientCertVerifier as _;
use rustls::{CertificateError, ClientConfig, Error, OtherError, ServerConfig};

use super::config::client_config_with_versions;
use super::*;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use crate::svid_profile::ProfileError;
use crate::test_pki::{TestCa, leaf_params, self_signed};

const SERVER_ID: &str = "spiffe://example.org/sigil/server";
const AGENT_ID: &str = "spiffe://example.org/sigil/agent/join_token/abc";

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn key_der(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

/// A certificate chain and its key, ready for a rustls config.
struct Svid {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Svid {
    fn new(chain: Vec<Vec<u8>>, key: &KeyPair) -> Self {
        Svid {
            chain: chain.into_iter().map(CertificateDer::from).collect(),
            key: key_der(key),
        }
    }

    fn leaf(ca: &TestCa, id: &str) -> Self {
        let (der, key) = ca.leaf(id);
        Svid::new(vec![der], &key)
    }

    fn pair(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (self.chain.clone(), self.key.clone_key())
    }
}

/// An authorizer that records every ID it is asked about.
fn recording(inner: Authorizer) -> (Authorizer, Arc<Mutex<Vec<SpiffeId>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let authorizer: Authorizer = Arc::new(move |peer: &SpiffeId| {
        log.lock().unwrap().push(peer.clone());
        inner(peer)
    });
    (authorizer, seen)
}

fn seen(log: &Arc<Mutex<Vec<SpiffeId>>>) -> Vec<String> {
    log.lock().unwrap().iter().map(|i| i.to_string()).collect()
}

#[derive(Debug, Default)]
struct Outcome {
    client_err: Option<Error>,
    server_err: Option<Error>,
    /// The client's leaf as the server saw it, on success.
    client_leaf: Option<Vec<u8>>,
    /// The server's leaf as the client saw it, on success.
    server_leaf: Option<Vec<u8>>,
    version: Option<rustls::ProtocolVersion>,
}

impl Outcome {
    fn assert_ok(&self) {
        assert!(
            self.client_err.is_none() && self.server_err.is_none(),
            "handshake failed: {self:?}"
        );
    }

    fn server_refused(&self) -> &Error {
        self.server_err
            .as_ref()
            .unwrap_or_else(|| panic!("server accepted: {self:?}"))
    }

    fn client_refused(&self) -> &Error {
        self.client_err
            .as_ref()
            .unwrap_or_else(|| panic!("client accepted: {self:?}"))
    }
}

/// Moves every pending TLS record from `from` to `to`.
fn transfer(from: &mut Connection, to: &mut Connection) -> Result<usize, Error> {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets()?;
    }
    Ok(buf.len())
}

/// Runs a full handshake in memory, then sends application data both
/// ways. The client dials a name that is in no certificate: SPIFFE
/// verification must not look at DNS names.
fn handshake(client: ClientConfig, server: ServerConfig) -> Outcome {
    let name = ServerName::try_from("no-such-name.invalid").unwrap();
    let mut c = Connection::Client(ClientConnection::new(Arc::new(client), name).unwrap());
    let mut s = Connection::Server(ServerConnection::new(Arc::new(server)).unwrap());
    let mut out = Outcome::default();
    for _ in 0..20 {
        if let Err(e) = transfer(&mut c, &mut s) {
            out.server_err = Some(e);
            out.client_err = transfer(&mut s, &mut c).err();
            return out;
        }
        if let Err(e) = transfer(&mut s, &mut c) {
            out.client_err = Some(e);
            out.server_err = transfer(&mut c, &mut s).err();
            return out;
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            break;
        }
    }
    assert!(
        !c.is_handshaking() && !s.is_handshaking(),
        "handshake stalled"
    );

    use std::io::{Read, Write};
    c.writer().write_all(b"ping").unwrap();
    transfer(&mut c, &mut s).unwrap();
    let mut got = [0u8; 4];
    s.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    s.writer().write_all(b"pong").unwrap();
    transfer(&mut s, &mut c).unwrap();
    c.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");

    out.client_leaf = s
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|leaf| leaf.to_vec());
    out.server_leaf = c
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|leaf| leaf.to_vec());
    out.version = c.protocol_version();
    assert_eq!(out.version, s.protocol_version());
    out
}

/// A server presenting `server` and requiring client SVIDs from
/// `roots` accepted by `authorizer`.
fn server_cfg(server: &Svid, roots: &TrustRoots, authorizer: Authorizer) -> ServerConfig {
    let verifier = Arc::new(SpiffeClientVerifier::new(roots.clone(), authorizer));
    let (chain, key) = server.pair();
    server_config(chain, key, verifier).unwrap()
}

fn client_cfg(client: Option<&Svid>, roots: &TrustRoots, authorizer: Authorizer) -> ClientConfig {
    let verifier = Arc::new(SpiffeServerVerifier::new(roots.clone(), authorizer));
    client_config(verifier, client.map(Svid::pair)).unwrap()
}

/// The profile rule carried by a refusal for a bad SPIFFE ID SAN.
fn profile_error(e: &Error) -> ProfileError {
    match e {
        Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => inner
            .downcast_ref::<ProfileError>()
            .unwrap_or_else(|| panic!("not a profile error: {e:?}"))
            .clone(),
        other => panic!("not a profile error: {other:?}"),
    }
}

fn is_cert_error(e: &Error, want: fn(&CertificateError) -> bool) -> bool {
    matches!(e, Error::InvalidCertificate(ce) if want(ce))
}

/// One CA, its roots, a server SVID and an agent SVID.
struct World {
    ca: TestCa,
    roots: TrustRoots,
    server: Svid,
    agent: Svid,
}

fn world() -> World {
    let ca = TestCa::new("example.org");
    let roots = TrustRoots::new(vec![ca.der.clone()]).unwrap();
    let server = Svid::leaf(&ca, SERVER_ID);
    let agent = Svid::leaf(&ca, AGENT_ID);
    World {
        ca,
        roots,
        server,
        agent,
    }
}

/// Server expects agents of example.org; client expects the server ID.
/// Returns the outcome and what each side's authorizer saw.
fn agent_to_server(w: &World, client: Option<&Svid>) -> (Outcome, Vec<String>, Vec<String>) {
    let (server_auth, server_seen) = recording(authorize_any_in(td()));
    let (client_auth, client_seen) = recording(authorize_exact(id(SERVER_ID)));
    let out = handshake(
        client_cfg(client, &w.roots, client_auth),
        server_cfg(&w.server, &w.roots, server_auth),
    );
    (out, seen(&server_seen), seen(&client_seen))
}

#[test]
fn mutual_spiffe_tls_13() {
    let w = world();
    let (out, server_saw, client_saw) = agent_to_server(&w, Some(&w.agent));
    out.assert_ok();
    assert_eq!(out.version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(server_saw, vec![AGENT_ID]);
    assert_eq!(client_saw, vec![SERVER_ID]);
    let leaf = out.client_leaf.unwrap();
    assert_eq!(spiffe_id_from_cert(&leaf).unwrap().as_str(), AGENT_ID);
}

#[test]
fn mutual_spiffe_tls_12() {
    let w = world();
    let (server_auth, server_seen) = recording(authorize_any_in(td()));
    let (client_auth, client_seen) = recording(authorize_exact(id(SERVER_ID)));
    let verifier = Arc::new(SpiffeServerVerifier::new(w.roots.clone(), client_auth));
    let client =
        client_config_with_versions(verifier, Some(w.agent.pair()), &[&rustls::version::TLS12])
            .unwrap();
    let out = handshake(client, server_cfg(&w.server, &w.roots, server_auth));
    out.assert_ok();
    assert_eq!(out.version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(seen(&server_seen), vec![AGENT_ID]);
    assert_eq!(seen(&client_seen), vec![SERVER_ID]);
}

#[test]
fn chain_through_an_intermediate() {
    let root = TestCa::new("example.org");
    let intermediate = root.intermediate("example.org");
    let roots = TrustRoots::new(vec![root.der.clone()]).unwrap();
    let (leaf, key) = intermediate.leaf(AGENT_ID);
    let agent = Svid::new(vec![leaf, intermediate.der.clone()], &key);
    let (sleaf, skey) = intermediate.leaf(SERVER_ID);
    let server = Svid::new(vec![sleaf, intermediate.der.clone()], &skey);
    let out = handshake(
        client_cfg(Some(&agent), &roots, authorize_exact(id(SERVER_ID))),
        server_cfg(&server, &roots, authorize_exact(id(AGENT_ID))),
    );
    out.assert_ok();

    // Without the intermediate in the chain, the leaf has no path.
    let (leaf, key) = intermediate.leaf(AGENT_ID);
    let bare = Svid::new(vec![leaf], &key);
    let out = handshake(
        client_cfg(Some(&bare), &roots, authorize_exact(id(SERVER_ID))),
        server_cfg(&server, &roots, authorize_exact(id(AGENT_ID))),
    );
    assert!(is_cert_error(out.server_refused(), |e| matches!(
        e,
        CertificateError::UnknownIssuer
    )));
}

#[test]
fn client_cert_from_another_ca_is_refused() {
    let w = world();
    let other = TestCa::new("example.org");
    let stranger = Svid::leaf(&other, AGENT_ID);
    let (out, server_saw, _) = agent_to_server(&w, Some(&stranger));
    assert!(
        is_cert_error(out.server_refused(), |e| matches!(
            e,
            CertificateError::UnknownIssuer
        )),
        "{out:?}"
    );
    assert!(
        server_saw.is_empty(),
        "authorizer must not run: {server_saw:?}"
    );
}

#[test]
fn ca_forging_our_ca_name_is_refused() {
    // A different key under the very same subject name as the real CA.
    let params = crate::test_pki::ca_params("example.org");
    let real = TestCa::from_params(params.clone());
    let forged = TestCa::from_params(params);
    let w = World {
        roots: TrustRoots::new(vec![real.der.clone()]).unwrap(),
        server: Svid::leaf(&real, SERVER_ID),
        agent: Svid::leaf(&forged, AGENT_ID),
        ca: real,
    };
    let (out, server_saw, _) = agent_to_server(&w, Some(&w.agent));
    assert!(
        is_cert_error(out.server_refused(), |e| matches!(
            e,
            CertificateError::BadSignature
        )),
        "{out:?}"
    );
    assert!(server_saw.is_empty());
}

#[test]
fn self_signed_leaf_is_refused() {
    let w = world();
    let (der, key) = self_signed(&leaf_params(&[AGENT_ID]));
    let forged = Svid::new(vec![der], &key);
    let (out, server_saw, _) = agent_to_server(&w, Some(&forged));
    assert!(is_cert_error(out.server_refused(), |e| matches!(
        e,
        CertificateError::UnknownIssuer
    )));
    assert!(server_saw.is_empty());
}

#[test]
fn expired_client_cert_is_refused() {
    let w = world();
    let mut p = leaf_params(&[AGENT_ID]);
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(2);
    p.not_after = now - Duration::hours(1);
    let (der, key) = w.ca.sign(&p);
    let expired = Svid::new(vec![der], &key);
    let (out, _, _) = agent_to_server(&w, Some(&expired));
    assert!(
        is_cert_error(out.server_refused(), |e| matches!(
            e,
            CertificateError::ExpiredContext { .. }
        )),
        "{out:?}"
    );

    let mut p = leaf_params(&[AGENT_ID]);
    p.not_before = now + Duration::hours(1);
    p.not_after = now + Duration::hours(2);
    let (der, key) = w.ca.sign(&p);
    let future = Svid::new(vec![der], &key);
    let (out, _, _) = agent_to_server(&w, Some(&future));
    assert!(is_cert_error(out.server_refused(), |e| matches!(
        e,
        CertificateError::NotValidYetContext { .. }
    )));
}

#[test]
fn unauthorized_client_id_is_refused() {
    let w = world();
    let intruder_id = "spiffe://example.org/workload/not-an-agent";
    let intruder = Svid::leaf(&w.ca, intruder_id);
    let (server_auth, server_seen) = recording(authorize_exact(id(AGENT_ID)));
    let out = handshake(
        client_cfg(Some(&intruder), &w.roots, authorize_exact(id(SERVER_ID))),
        server_cfg(&w.server, &w.roots, server_auth),
    );
    assert!(is_cert_error(out.server_refused(), |e| matches!(
        e,
        CertificateError::ApplicationVerificationFailure
    )));
    assert_eq!(seen(&server_seen), vec![intruder_id]);
    // The client learns it was refused.
    assert!(out.client_err.is_some(), "{out:?}");
}

#[test]
fn unauthorized_server_id_is_refused() {
    let w = world();
    let (client_auth, client_seen) =
        recording(authorize_exact(id("spiffe://example.org/somebody/else")));
    let out = handshake(
        client_cfg(Some(&w.agent), &w.roots, client_auth),
        server_cfg(&w.server, &w.roots, authorize_any_in(td())),
    );
    assert!(is_cert_error(out.client_refused(), |e| matches!(
        e,
        CertificateError::ApplicationVerificationFailure
    )));
    assert_eq!(seen(&client_seen), vec![SERVER_ID]);
}

/// SPIFFE X509-SVID (2026): a leaf whose URI SAN is a bare trust-domain
/// ID is no SVID, on either side of the handshake, whatever the
/// authorizer would allow.
#[test]
fn server_with_a_trust_domain_id_is_refused() {
    let w = world();
    let root_id = Svid::leaf(&w.ca, "spiffe://example.org");
    let (client_auth, client_seen) = recording(authorize_any_in(td()));
    let out = handshake(
        client_cfg(Some(&w.agent), &w.roots, client_auth),
        server_cfg(&root_id, &w.roots, authorize_any_in(td())),
    );
    assert_eq!(
        profile_error(out.client_refused()),
        ProfileError::LeafWithoutPath {
            id: "spiffe://example.org".into()
        }
    );
    assert!(seen(&client_seen).is_empty(), "the authorizer never ran");
}

#[test]
fn server_cert_from_another_ca_is_refused() {
    let w = world();
    let other = TestCa::new("example.org");
    let impostor = Svid::leaf(&other, SERVER_ID);
    let out = handshake(
        client_cfg(Some(&w.agent), &w.roots, authorize_exact(id(SERVER_ID))),
        server_cfg(&impostor, &w.roots, authorize_any_in(td())),
    );
    assert!(is_cert_error(out.client_refused(), |e| matches!(
        e,
        CertificateError::UnknownIssuer
    )));
}

#[test]
fn missing_client_cert_is_refused() {
    let w = world();
    let (out, server_saw, _) = agent_to_server(&w, None);
    assert!(
        matches!(out.server_refused(), Error::NoCertificatesPresented),
        "{out:?}"
    );
    assert!(server_saw.is_empty());
    // Under TLS 1.2 as well.
    let verifier = Arc::new(SpiffeServerVerifier::new(
        w.roots.clone(),
        authorize_exact(id(SERVER_ID)),
    ));
    let client = client_config_with_versions(verifier, None, &[&rustls::version::TLS12]).unwrap();
    let out = handshake(
        client,
        server_cfg(&w.server, &w.roots, authorize_any_in(td())),
    );
    assert!(matches!(
        out.server_refused(),
        Error::NoCertificatesPresented
    ));
}

#[test]
fn client_cert_needs_exactly_one_uri_san() {
    let w = world();
    let (der, key) =
        w.ca.sign(&leaf_params(&[AGENT_ID, "spiffe://example.org/second"]));
    let two = Svid::new(vec![der], &key);
    let (out, server_saw, _) = agent_to_server(&w, Some(&two));
    assert_eq!(
        profile_error(out.server_refused()),
        ProfileError::UriSanCount {
            role: crate::svid_profile::ROLE_LEAF,
            found: 2
        }
    );
    // The log line names the rule.
    assert!(
        out.server_refused().to_string().contains("UriSanCount"),
        "{}",
        out.server_refused()
    );
    assert!(server_saw.is_empty());

    let mut p = leaf_params(&[]);
    p.subject_alt_names = vec![crate::test_pki::dns("agent.example.org")];
    let (der, key) = w.ca.sign(&p);
    let none = Svid::new(vec![der], &key);
    let (out, server_saw, _) = agent_to_server(&w, Some(&none));
    assert_eq!(
        profile_error(out.server_refused()),
        ProfileError::UriSanCount {
            role: crate::svid_profile::ROLE_LEAF,
            found: 0
        }
    );
    assert!(server_saw.is_empty());

    // A trust domain ID is not a workload identity.
    let root_id = Svid::leaf(&w.ca, "spiffe://example.org");
    let (out, _, _) = agent_to_server(&w, Some(&root_id));
    assert_eq!(
        profile_error(out.server_refused()),
        ProfileError::LeafWithoutPath {
            id: "spiffe://example.org".into()
        }
    );
}

#[test]
fn key_usage_is_enforced() {
    let w = world();
    // A leaf only good for serverAuth cannot authenticate a client.
    let mut p = leaf_params(&[AGENT_ID]);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let (der, key) = w.ca.sign(&p);
    let server_only = Svid::new(vec![der], &key);
    let (out, _, _) = agent_to_server(&w, Some(&server_only));
    assert!(is_cert_error(out.server_refused(), |e| matches!(
        e,
        CertificateError::InvalidPurpose
    )));
    // A CA certificate (even one with the right URI SAN form) is not a
    // leaf.
    let mut ca_leaf_params = crate::test_pki::ca_params("example.org");
    ca_leaf_params.subject_alt_names = vec![crate::test_pki::uri(AGENT_ID)];
    let (der, key) = w.ca.sign(&ca_leaf_params);
    let ca_leaf = Svid::new(vec![der], &key);
    let (out, server_saw, _) = agent_to_server(&w, Some(&ca_leaf));
    assert!(
        matches!(
            out.server_refused(),
            Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))
                if inner.to_string().contains("CaUsedAsEndEntity")
        ),
        "{out:?}"
    );
    assert!(server_saw.is_empty());
}

/// X509-SVID §5.2: a validator refuses a leaf with keyCertSign or
/// cRLSign, on both sides, even when cA=false and the chain, the URI SAN
/// and the authorizer are all fine (webpki does not look at these bits
/// on an end entity). The same CA's correct leaf is accepted.
#[test]
fn leaf_with_a_signing_key_usage_is_refused_by_both_verifiers() {
    let w = world();
    for (usage, name) in [
        (rcgen::KeyUsagePurpose::KeyCertSign, "keyCertSign"),
        (rcgen::KeyUsagePurpose::CrlSign, "cRLSign"),
    ] {
        let mut p = leaf_params(&[AGENT_ID]);
        p.key_usages.push(usage);
        let (der, key) = w.ca.sign(&p);
        let bad = Svid::new(vec![der], &key);
        let want = ProfileError::LeafKeyUsageForbidden { usage: name };
        // As a client certificate (the agent API's server side).
        let (out, server_saw, _) = agent_to_server(&w, Some(&bad));
        assert_eq!(profile_error(out.server_refused()), want);
        assert!(server_saw.is_empty());
        // As a server certificate (the agent's and helpers' client side).
        let mut p = leaf_params(&[SERVER_ID]);
        p.key_usages.push(usage);
        let (der, key) = w.ca.sign(&p);
        let bad_server = Svid::new(vec![der], &key);
        let out = handshake(
            client_cfg(Some(&w.agent), &w.roots, authorize_exact(id(SERVER_ID))),
            server_cfg(&bad_server, &w.roots, authorize_any_in(td())),
        );
        assert_eq!(profile_error(out.client_refused()), want);
    }
    let (out, server_saw, client_saw) = agent_to_server(&w, Some(&w.agent));
    out.assert_ok();
    assert_eq!(server_saw, vec![AGENT_ID]);
    assert_eq!(client_saw, vec![SERVER_ID]);
}

#[test]
fn roots_can_be_replaced_at_run_time() {
    let w = world();
    let new_ca = TestCa::new("example.org");
    let new_agent = Svid::leaf(&new_ca, AGENT_ID);
    let server_cfg = Arc::new(server_cfg(&w.server, &w.roots, authorize_any_in(td())));
    let client = |svid: &Svid| {
        // The client trusts both CAs so only the server's view matters.
        let both = TrustRoots::new(vec![w.ca.der.clone(), new_ca.der.clone()]).unwrap();
        client_cfg(Some(svid), &both, authorize_exact(id(SERVER_ID)))
    };

    handshake(client(&w.agent), (*server_cfg).clone()).assert_ok();
    let out = handshake(client(&new_agent), (*server_cfg).clone());
    assert!(out.server_err.is_some(), "new CA not trusted yet: {out:?}");

    // Rotate: the same server config now trusts only the new CA.
    w.roots.set(vec![new_ca.der.clone()]).unwrap();
    assert_eq!(w.roots.get().len(), 1);
    assert_eq!(w.roots.get()[0].as_ref(), new_ca.der.as_slice());
    handshake(client(&new_agent), (*server_cfg).clone()).assert_ok();
    let out = handshake(client(&w.agent), (*server_cfg).clone());
    assert!(is_cert_error(out.server_refused(), |e| matches!(
        e,
        CertificateError::UnknownIssuer
    )));

    // A bad replacement is refused and leaves the roots as they were.
    assert_eq!(w.roots.set(vec![]), Err(TlsError::NoRoots));
    assert!(matches!(
        w.roots.set(vec![b"garbage".to_vec()]),
        Err(TlsError::BadRoot { index: 0, .. })
    ));
    assert_eq!(w.roots.get()[0].as_ref(), new_ca.der.as_slice());
}

#[test]
fn every_connection_is_verified_again() {
    let w = world();
    let (server_auth, server_seen) = recording(authorize_any_in(td()));
    let (client_auth, client_seen) = recording(authorize_exact(id(SERVER_ID)));
    let server = server_cfg(&w.server, &w.roots, server_auth);
    let client = client_cfg(Some(&w.agent), &w.roots, client_auth);
    for _ in 0..2 {
        handshake(client.clone(), server.clone()).assert_ok();
    }
    assert_eq!(seen(&server_seen), vec![AGENT_ID, AGENT_ID]);
    assert_eq!(seen(&client_seen), vec![SERVER_ID, SERVER_ID]);
}

#[test]
fn anonymous_server_accepts_clients_without_certs() {
    let w = world();
    let (chain, key) = w.server.pair();
    let server = server_config_allowing_anonymous_clients(chain, key).unwrap();
    let out = handshake(
        client_cfg(None, &w.roots, authorize_exact(id(SERVER_ID))),
        server,
    );
    out.assert_ok();
    assert!(out.client_leaf.is_none());
}

#[test]
fn client_verifier_always_requires_a_cert() {
    let v = SpiffeClientVerifier::new(
        TrustRoots::new(vec![TestCa::new("example.org").der]).unwrap(),
        authorize_any_in(td()),
    );
    assert!(v.offer_client_auth());
    assert!(v.client_auth_mandatory());
    assert!(v.root_hint_subjects().is_empty());
    assert!(!v.supported_verify_schemes().is_empty());
}

#[test]
fn authorizers() {
    let web = id("spiffe://example.org/web");
    let db = id("spiffe://example.org/db");
    let foreign = id("spiffe://other.org/web");
    let any = authorize_any_in(td());
    assert!(any(&web) && any(&db) && !any(&foreign));
    let exact = authorize_exact(web.clone());
    assert!(exact(&web) && !exact(&db) && !exact(&foreign));
    let one_of = authorize_one_of(vec![web.clone(), foreign.clone()]);
    assert!(one_of(&web) && one_of(&foreign) && !one_of(&db));
    assert!(!authorize_one_of(vec![])(&web));
}

#[test]
fn trust_roots_validate_their_input() {
    assert_eq!(TrustRoots::new(vec![]).unwrap_err(), TlsError::NoRoots);
    let ca = TestCa::new("example.org");
    let err = TrustRoots::new(vec![ca.der.clone(), b"junk".to_vec()]).unwrap_err();
    assert!(matches!(err, TlsError::BadRoot { index: 1, .. }), "{err:?}");
    let roots = TrustRoots::new(vec![ca.der.clone()]).unwrap();
    assert_eq!(format!("{roots:?}"), "TrustRoots { certs: 1 }");
}

#[test]
fn spiffe_id_from_cert_reads_the_single_uri_san() {
    let ca = TestCa::new("example.org");
    let (leaf, _) = ca.leaf(AGENT_ID);
    assert_eq!(spiffe_id_from_cert(&leaf).unwrap().as_str(), AGENT_ID);
    let (two, _) = ca.sign(&leaf_params(&[AGENT_ID, SERVER_ID]));
    assert_eq!(
        spiffe_id_from_cert(&two).unwrap_err(),
        ProfileError::UriSanCount {
            role: crate::svid_profile::ROLE_LEAF,
            found: 2
        }
    );
    assert!(matches!(
        spiffe_id_from_cert(b"junk"),
        Err(ProfileError::NotX509 { .. })
    ));
}

/// [`super::SvidResolver`]: the SVID a `watch` channel holds is presented,
/// and a new one is presented from the next handshake on, by both sides.
#[cfg(feature = "tls-resolver")]
mod resolver {
    use rustls::sign::CertifiedKey;
    use tokio::sync::watch;

    use super::*;
    use crate::tls::{SvidResolver, certified_key};

    fn cert(svid: &Svid) -> Arc<CertifiedKey> {
        certified_key(svid.chain.clone(), &svid.key).unwrap()
    }

    fn leaf(svid: &Svid) -> Option<Vec<u8>> {
        Some(svid.chain[0].to_vec())
    }

    fn resolving_server(w: &World, resolver: SvidResolver) -> ServerConfig {
        let verifier = SpiffeClientVerifier::new(w.roots.clone(), authorize_any_in(td()));
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(resolver))
    }

    fn resolving_client(w: &World, resolver: SvidResolver) -> ClientConfig {
        let verifier = SpiffeServerVerifier::new(w.roots.clone(), authorize_exact(id(SERVER_ID)));
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(resolver))
    }

    #[test]
    fn server_presents_the_current_svid_of_the_channel() {
        let w = world();
        let (tx, rx) = watch::channel(cert(&w.server));
        let server = Arc::new(resolving_server(&w, SvidResolver::new(rx)));
        let client = || client_cfg(Some(&w.agent), &w.roots, authorize_exact(id(SERVER_ID)));

        let out = handshake(client(), (*server).clone());
        out.assert_ok();
        assert_eq!(out.server_leaf, leaf(&w.server));

        // Rotation: the same config serves the new SVID at once.
        let rotated = Svid::leaf(&w.ca, SERVER_ID);
        tx.send_replace(cert(&rotated));
        let out = handshake(client(), (*server).clone());
        out.assert_ok();
        assert_eq!(out.server_leaf, leaf(&rotated));
    }

    #[test]
    fn client_presents_the_current_svid_of_the_channel() {
        let w = world();
        let (tx, rx) = watch::channel(cert(&w.agent));
        let client = Arc::new(resolving_client(&w, SvidResolver::new(rx)));
        let server = || server_cfg(&w.server, &w.roots, authorize_any_in(td()));

        let out = handshake((*client).clone(), server());
        out.assert_ok();
        assert_eq!(out.client_leaf, leaf(&w.agent));

        let rotated = Svid::leaf(&w.ca, AGENT_ID);
        tx.send_replace(cert(&rotated));
        let out = handshake((*client).clone(), server());
        out.assert_ok();
        assert_eq!(out.client_leaf, leaf(&rotated));
    }

    #[test]
    fn a_fixed_resolver_outlives_its_sender() {
        let w = world();
        let resolver = SvidResolver::fixed(cert(&w.server));
        assert_eq!(resolver.current().cert, w.server.chain);
        let out = handshake(
            client_cfg(Some(&w.agent), &w.roots, authorize_exact(id(SERVER_ID))),
            resolving_server(&w, resolver),
        );
        out.assert_ok();
        assert_eq!(out.server_leaf, leaf(&w.server));
    }
}
