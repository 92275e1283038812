//! Every kind of certificate and CSR Sigil emits, collected from the real
//! binaries and labelled, for checks by independent parsers
//! (tests/tests/strict_der.rs): the workload X.509-SVID from the Workload
//! API, the agent's own SVID from its data_dir, the server SVID from the
//! agent API's TLS handshake, `x509 mint` SVIDs, the self-signed CAs (active
//! and prepared), Sigil's intermediate under an upstream CA, and the CSRs the
//! agent generates (built with the agent's own function: they never leave
//! the agent–server channel).

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{ServerOptions, TestAgent, TestServer, sigil_agent, text};

/// What an item is, for the checks that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An X.509-SVID leaf.
    Leaf,
    /// A signing (CA) certificate.
    Ca,
    /// A PKCS#10 certificate signing request.
    Csr,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Leaf => "leaf",
            Kind::Ca => "ca",
            Kind::Csr => "csr",
        }
    }
}

/// One emitted certificate (or CSR) with what it should chain to.
#[derive(Debug, Clone)]
pub struct Emitted {
    pub label: String,
    pub kind: Kind,
    /// DER: the item first, then the rest of the chain as Sigil hands it
    /// out (intermediates, no trust anchor); a CSR alone.
    pub chain: Vec<Vec<u8>>,
    /// DER trust anchors the item must chain to (empty for a CSR).
    pub roots: Vec<Vec<u8>>,
    /// The one URI SAN expected (the trust domain ID for a CA).
    pub spiffe_id: String,
}

/// Which CA a scenario runs.
#[derive(Debug, Clone, Copy)]
pub enum CaMode {
    /// A self-signed CA with this `ca_key_type`.
    SelfSigned(&'static str),
    /// An intermediate with this `ca_key_type` under an upstream root
    /// (generated here with rcgen) of this algorithm.
    Upstream(&'static str, &'static rcgen::SignatureAlgorithm),
}

const TD: &str = "example.org";

/// Every `ca_key_type` the server accepts (server/src/config.rs `KeyType`).
pub const CA_KEY_TYPES: [&str; 2] = ["ec-p256", "ec-p384"];

/// Starts a server (and an agent) in `mode` and returns everything they
/// emit. Every wait is bounded (the helpers' timeouts).
pub fn collect(mode: CaMode) -> anyhow::Result<Vec<Emitted>> {
    let up = tempfile::tempdir()?;
    let (tag, extra, upstream_root) = match mode {
        CaMode::SelfSigned(kt) => (
            format!("self-signed {kt}"),
            format!("ca_key_type = \"{kt}\"\n"),
            None,
        ),
        CaMode::Upstream(kt, alg) => {
            let (cert, key, root) = crate::write_upstream_root(up.path(), alg)?;
            (
                format!("{kt} under upstream {}", alg_name(alg)),
                format!(
                    "ca_key_type = \"{kt}\"\n[upstream.disk]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                    cert.display(),
                    key.display()
                ),
                Some(root),
            )
        }
    };
    let server = TestServer::start(ServerOptions {
        extra,
        ..Default::default()
    })?;
    let bundle = server.bundle();
    ensure!(!bundle.is_empty(), "empty bundle");
    if let Some(root) = &upstream_root {
        ensure!(
            bundle == vec![root.clone()],
            "upstream mode: the bundle must be the upstream root"
        );
    }
    let mut out = Vec::new();
    let leaf = |label: &str, chain: Vec<Vec<u8>>, id: &str| Emitted {
        label: format!("{label} [{tag}]"),
        kind: Kind::Leaf,
        chain,
        roots: bundle.clone(),
        spiffe_id: id.to_string(),
    };

    // Workload SVID over the Workload API (with a DNS name: CN + dNSName).
    let agent = TestAgent::start(&server)?;
    let wid = "spiffe://example.org/workload";
    let uid = nix::unistd::getuid().as_raw();
    server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        wid,
        "--parent-id",
        &agent.agent_id,
        "--selector",
        &format!("unix:uid:{uid}"),
        "--dns-name",
        "workload.example.org",
    ]);
    let wdir = server.dir.path().join("workload");
    let sock = agent.socket.display().to_string();
    let fetched = sigil_agent(
        &[
            "api",
            "fetch",
            "x509",
            "--socket",
            &sock,
            "--timeout",
            "30s",
            "--write",
            wdir.to_str().context("path")?,
        ],
        &[],
    );
    ensure!(
        fetched.status.success(),
        "api fetch x509: {}{}",
        text(&fetched.stdout),
        text(&fetched.stderr)
    );
    let chain = read_certs(&wdir.join("svid.pem"))?;
    out.push(leaf("workload X.509-SVID (Workload API)", chain, wid));

    // The agent's own SVID, as stored in its data_dir.
    let chain = read_certs(&agent.data_dir.join("agent_svid.pem"))?;
    out.push(leaf("agent SVID (data_dir)", chain, &agent.agent_id));

    // The server SVID, as presented on the agent API.
    let chain = presented_chain(&server)?;
    out.push(leaf(
        "server SVID (agent API TLS)",
        chain,
        "spiffe://example.org/sigil/server",
    ));

    // `x509 mint`, without and with DNS names.
    for (name, dns) in [
        ("minted", &[][..]),
        ("minted-dns", &["a.example.org", "b.example.org"][..]),
    ] {
        let id = format!("spiffe://{TD}/{name}");
        let dir = server.dir.path().join(name);
        let mut args = vec![
            "x509",
            "mint",
            "--spiffe-id",
            &id,
            "--write",
            dir.to_str().context("path")?,
        ];
        for d in dns {
            args.extend(["--dns-name", d]);
        }
        server.cli_ok(&args);
        let chain = read_certs(&dir.join("svid.pem"))?;
        out.push(leaf(&format!("x509 mint SVID ({name})"), chain, &id));
    }

    // Signing certificates: the active one, then a prepared one.
    let td_id = format!("spiffe://{TD}");
    let ca = |label: &str, chain: Vec<Vec<u8>>, roots: Vec<Vec<u8>>| Emitted {
        label: format!("{label} [{tag}]"),
        kind: Kind::Ca,
        chain,
        roots,
        spiffe_id: td_id.clone(),
    };
    match &upstream_root {
        None => {
            server.cli_ok(&["ca", "prepare"]);
            let all = server.bundle();
            ensure!(all.len() >= 2, "a prepared CA is published in the bundle");
            for (i, c) in all.iter().enumerate() {
                out.push(ca(
                    &format!("self-signed CA #{i} (bundle)"),
                    vec![c.clone()],
                    vec![c.clone()],
                ));
            }
        }
        Some(root) => {
            // Sigil's intermediate travels in every leaf chain.
            let inter = out[0]
                .chain
                .get(1)
                .cloned()
                .context("no intermediate in chain")?;
            out.push(ca(
                "intermediate CA under upstream (leaf chain)",
                vec![inter.clone()],
                vec![root.clone()],
            ));
            server.cli_ok(&["ca", "prepare"]);
            // Forced: this collects what the CA emits, no agent waits.
            server.cli_ok(&["ca", "activate", "--force"]);
            let id = format!("spiffe://{TD}/after-activate");
            let dir2 = server.dir.path().join("after-activate");
            server.cli_ok(&[
                "x509",
                "mint",
                "--spiffe-id",
                &id,
                "--write",
                dir2.to_str().context("path")?,
            ]);
            let chain = read_certs(&dir2.join("svid.pem"))?;
            out.push(leaf("x509 mint SVID (after activate)", chain.clone(), &id));
            let inter2 = chain.get(1).context("no intermediate")?;
            ensure!(*inter2 != inter, "activation changed the intermediate");
            out.push(ca(
                "intermediate CA under upstream (activated)",
                vec![inter2.clone()],
                vec![root.clone()],
            ));
        }
    }
    drop(agent);
    Ok(out)
}

/// A CA that outlives 2049 (`ca_ttl = "10000d"`): its notAfter must be a
/// GeneralizedTime (RFC 5280 4.1.2.5), and an SVID it signs must chain.
pub fn collect_long_lived() -> anyhow::Result<Vec<Emitted>> {
    let server = TestServer::start(ServerOptions {
        extra: "ca_ttl = \"10000d\"\n".into(),
        ..Default::default()
    })?;
    let bundle = server.bundle();
    let ca = bundle.first().context("empty bundle")?.clone();
    let id = format!("spiffe://{TD}/long-lived-ca");
    let dir = server.dir.path().join("minted");
    server.cli_ok(&[
        "x509",
        "mint",
        "--spiffe-id",
        &id,
        "--write",
        dir.to_str().context("path")?,
    ]);
    let chain = read_certs(&dir.join("svid.pem"))?;
    Ok(vec![
        Emitted {
            label: "self-signed CA valid past 2049 [ca_ttl 10000d]".into(),
            kind: Kind::Ca,
            chain: vec![ca],
            roots: bundle.clone(),
            spiffe_id: format!("spiffe://{TD}"),
        },
        Emitted {
            label: "x509 mint SVID [ca_ttl 10000d]".into(),
            kind: Kind::Leaf,
            chain,
            roots: bundle,
            spiffe_id: id,
        },
    ])
}

/// The CSRs the agent sends (for its own SVID at attestation and renewal,
/// and for every workload SVID), from the agent's own function. Sigil emits
/// no CSR of another key type.
pub fn agent_csrs() -> anyhow::Result<Vec<Emitted>> {
    let (_, csr) = sigil_agent::identity::key_and_csr()?;
    Ok(vec![Emitted {
        label: "agent CSR (sigil_agent::identity::key_and_csr)".into(),
        kind: Kind::Csr,
        chain: vec![csr],
        roots: vec![],
        spiffe_id: String::new(),
    }])
}

fn alg_name(alg: &rcgen::SignatureAlgorithm) -> &'static str {
    if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        "ec-p384"
    } else if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        "ec-p256"
    } else {
        "other"
    }
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let t = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // agent_svid.pem also holds the key: keep only CERTIFICATE blocks.
    let certs: Vec<Vec<u8>> = pem::parse_many(t.as_bytes())?
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    ensure!(!certs.is_empty(), "{}: no certificate", path.display());
    Ok(certs)
}

/// Records the chain a TLS server presents, then refuses it (the handshake
/// never completes: nothing is trusted here, only read).
#[derive(Debug)]
struct Recorder {
    seen: Mutex<Option<Vec<Vec<u8>>>>,
    schemes: Vec<rustls::SignatureScheme>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.to_vec()];
        chain.extend(intermediates.iter().map(|c| c.to_vec()));
        if let Ok(mut s) = self.seen.lock() {
            *s = Some(chain);
        }
        Err(rustls::Error::General("recorded; not trusted".into()))
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("not used".into()))
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("not used".into()))
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes.clone()
    }
}

/// The certificate chain the server presents on its agent API.
fn presented_chain(server: &TestServer) -> anyhow::Result<Vec<Vec<u8>>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let rec = Arc::new(Recorder {
        seen: Mutex::new(None),
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
    });
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(rec.clone())
        .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("sigil-server")?)?;
    let mut sock = TcpStream::connect_timeout(&server.agent_addr, Duration::from_secs(5))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    sock.set_write_timeout(Some(Duration::from_secs(10)))?;
    // Drive the handshake until the recorder refuses the certificate.
    for _ in 0..20 {
        if conn.complete_io(&mut sock).is_err() {
            break;
        }
        if !conn.is_handshaking() {
            bail!("handshake completed although the recorder refuses");
        }
    }
    let _ = sock.flush();
    let chain = rec
        .seen
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .take()
        .context("the server presented no certificate")?;
    Ok(chain)
}
