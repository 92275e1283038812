//! Issue 20 against the real binaries: the agent's own identity through
//! taint + revoke, evict, an outage longer than `agent_svid_ttl`,
//! re-attestation after a CA rotation (and an impostor server), and a start
//! before the server is up. Each recovers by itself or says why not.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sigil_tests::prom::http_get;
use sigil_tests::{ServerOptions, TestServer, bin, free_addr, sigil_agent, stop_child, text};

/// A `sigil-agent` this file starts itself: with or without a join token,
/// x509pop, a health endpoint, and a config the test may rewrite.
struct Agent {
    dir: tempfile::TempDir,
    config: PathBuf,
    data_dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    health: std::net::SocketAddr,
    child: Option<Child>,
}

impl Agent {
    /// Writes the config; `trust` is the line that says how the server is
    /// trusted (a `trust_bundle_path` written from `s`, or
    /// `insecure_bootstrap = true` when `None`).
    fn new(s: &TestServer, bundle_file: bool, extra: &str) -> Agent {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data_dir = dir.path().join("data");
        let socket = dir.path().join("run/agent.sock");
        let health = free_addr();
        let trust = if bundle_file {
            let b = dir.path().join("bundle.pem");
            std::fs::write(&b, s.cli_ok(&["bundle", "show"])).unwrap();
            format!("trust_bundle_path = \"{}\"\n", b.display())
        } else {
            "insecure_bootstrap = true\n".to_string()
        };
        let a = Agent {
            config: dir.path().join("agent.toml"),
            log: dir.path().join("agent.log"),
            data_dir,
            socket,
            health,
            dir,
            child: None,
        };
        a.write_config(s, &trust, extra);
        a
    }

    fn write_config(&self, s: &TestServer, trust: &str, extra: &str) {
        std::fs::write(
            &self.config,
            format!(
                "trust_domain = \"{}\"\ndata_dir = \"{}\"\nserver_address = \"{}\"\n\
                 socket_path = \"{}\"\n{trust}{extra}\n[health]\naddress = \"{}\"\n",
                s.trust_domain,
                self.data_dir.display(),
                s.agent_addr,
                self.socket.display(),
                self.health,
            ),
        )
        .unwrap();
    }

    /// Starts the process; does not wait.
    fn spawn(&mut self, args: &[&str]) {
        let out = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log);
        let out = out.unwrap();
        let mut cmd = Command::new(bin("sigil-agent"));
        cmd.arg("run").arg("--config").arg(&self.config);
        cmd.args(["--log-level", "debug"]).args(args);
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        self.child = Some(cmd.spawn().unwrap());
    }

    /// Waits (bounded) for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.exited() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "the agent must exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Rewrites the config to trust the bundle file written at start.
    fn write_file_config(&self, s: &TestServer) {
        let b = self.dir.path().join("bundle.pem");
        self.write_config(s, &format!("trust_bundle_path = \"{}\"\n", b.display()), "");
    }

    fn healthcheck(&self) -> (bool, String) {
        let out = sigil_agent(
            &[
                "healthcheck",
                "--socket",
                &self.socket.display().to_string(),
            ],
            &[],
        );
        (
            out.status.success(),
            format!("{}{}", text(&out.stdout), text(&out.stderr)),
        )
    }

    /// Waits until `healthcheck` succeeds.
    fn wait_healthy(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("sigil-agent exited with {st}: {}", self.log_text());
            }
            if self.healthcheck().0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent not healthy after {limit:?}: {}",
                tail(&self.log_text())
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ready(&self) -> (u16, String) {
        http_get(self.health, "/ready").unwrap_or((0, String::new()))
    }

    fn metric(&self, state: &str) -> Option<f64> {
        let (_, body) = http_get(self.health, "/metrics").ok()?;
        let fams = sigil_tests::prom::parse(&body).ok()?;
        fams.get("sigil_agent_identity_state")?
            .value("sigil_agent_identity_state", &[("state", state)])
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The stored agent SVID's leaf.
    fn svid(&self) -> Vec<u8> {
        let t = std::fs::read(self.data_dir.join("agent_svid.pem")).unwrap();
        pem::parse_many(&t)
            .unwrap()
            .into_iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .expect("a certificate in agent_svid.pem")
            .into_contents()
    }

    fn agent_id(&self) -> String {
        sigil_proto::tls::spiffe_id_from_cert(&self.svid())
            .unwrap()
            .to_string()
    }

    fn stored_bundle(&self) -> Vec<Vec<u8>> {
        // Read the way the agent reads it at start (one file: SVID, key, bundle).
        sigil_agent::persist::DataDir::open(&self.data_dir)
            .and_then(|d| d.load())
            .ok()
            .flatten()
            .map(|stored| stored.bundle)
            .unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c);
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = &self.dir;
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn token(s: &TestServer) -> String {
    s.cli_json(&["token", "generate"])["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// An agent attested with a new join token, healthy.
fn joined(s: &TestServer, bundle_file: bool) -> Agent {
    let mut a = Agent::new(s, bundle_file, "");
    a.spawn(&["--join-token", &token(s)]);
    a.wait_healthy(Duration::from_secs(30));
    a
}

fn key_id(der: &[u8], subject: bool) -> Option<Vec<u8>> {
    use x509_parser::extensions::ParsedExtension;
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) if subject => Some(k.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(a) if !subject => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
}

fn signed_by(leaf: &[u8], ca: &[u8]) -> bool {
    key_id(leaf, false).is_some() && key_id(leaf, false) == key_id(ca, true)
}

fn not_after(der: &[u8]) -> i64 {
    x509_parser::parse_x509_certificate(der)
        .unwrap()
        .1
        .validity()
        .not_after
        .timestamp()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Polls `probe` every 100 ms until it holds; panics after `limit`.
fn wait_for(what: &str, limit: Duration, mut probe: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !probe() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// Rotates the CA: prepare, activate (forced); returns the old slot name
/// and the (old, new) CA certificates (the bundle before and what prepare
/// added to it).
fn rotate(s: &TestServer) -> (String, Vec<u8>, Vec<u8>) {
    let old_slot = s.ca_slot("active");
    let before = s.bundle();
    assert_eq!(before.len(), 1, "one CA before the rotation");
    s.cli_ok(&["ca", "prepare"]);
    let mut added: Vec<Vec<u8>> = s.bundle();
    added.retain(|c| !before.contains(c));
    assert_eq!(added.len(), 1, "prepare publishes one CA");
    s.cli_ok(&["ca", "activate", "--force"]);
    (old_slot, before[0].clone(), added.remove(0))
}

/// Registers an entry for this uid under `parent`.
fn register(s: &TestServer, parent: &str, id: &str) {
    let sel = format!("unix:uid:{}", nix::unistd::getuid().as_raw());
    let args = ["entry", "create", "--selector", &sel, "--parent-id", parent];
    s.cli_ok(&[&args[..], &["--spiffe-id", id]].concat());
}

/// Whether this process is served `id` by the agent.
fn served(a: &Agent, id: &str) -> bool {
    let sock = a.socket.display().to_string();
    let args = ["api", "fetch", "x509", "--socket", &sock];
    let out = sigil_agent(
        &[&args[..], &["--output", "json", "--timeout", "1s"]].concat(),
        &[],
    );
    out.status.success() && text(&out.stdout).contains(id)
}

/// `ca revoke`, unforced: the callers wait until every agent's own SVID
/// has moved to the new CA, so the server accepts it (while one still
/// chains to the old CA it refuses: `ca_revoke_agents.rs`).
fn revoke(s: &TestServer, slot: &str) {
    s.cli_ok(&["ca", "revoke", "--slot", slot]);
}

const WORKLOAD: &str = "spiffe://example.org/lifecycle/w";

#[test]
fn i20_1_taint_moves_every_agent_svid_within_seconds() {
    let mut s = TestServer::start(ServerOptions::default()).unwrap();
    let mut agents: Vec<Agent> = (0..2).map(|_| joined(&s, true)).collect();
    register(&s, &agents[0].agent_id(), WORKLOAD);
    wait_for("workload served", Duration::from_secs(15), || {
        served(&agents[0], WORKLOAD)
    });
    let (old_slot, old_ca, new_ca) = rotate(&s);
    for a in &agents {
        assert!(signed_by(&a.svid(), &old_ca), "agent SVID by the old CA");
        // The agent knows the new CA before the taint.
        wait_for(
            "new CA in the agent's bundle",
            Duration::from_secs(15),
            || a.stored_bundle().contains(&new_ca),
        );
    }
    s.cli_ok(&["ca", "taint", "--slot", &old_slot]);
    for (i, a) in agents.iter().enumerate() {
        let took = wait_for(
            &format!("agent {i}'s own SVID re-signed by the new CA after the taint"),
            Duration::from_secs(15),
            || signed_by(&a.svid(), &new_ca),
        );
        eprintln!(
            "agent {i}: own SVID moved {} ms after the taint",
            took.as_millis()
        );
    }
    // Revoke the old CA and restart the server: everyone keeps working.
    revoke(&s, &old_slot);
    s.stop();
    s.spawn().unwrap();
    register(
        &s,
        &agents[1].agent_id(),
        "spiffe://example.org/lifecycle/w2",
    );
    wait_for(
        "a new entry reaches agent 1 after revoke + restart",
        Duration::from_secs(40),
        || served(&agents[1], "spiffe://example.org/lifecycle/w2"),
    );
    for a in &mut agents {
        assert!(
            served(a, "") || a.healthcheck().0,
            "{}",
            tail(&a.log_text())
        );
        assert_eq!(a.ready().0, 200, "{}", a.ready().1);
    }
    assert!(served(&agents[0], WORKLOAD));
}

/// A node CA (written to `dir/nodes-ca.pem`) and one node certificate and
/// key for x509pop; returns the server's and the agent's config snippets.
fn x509pop_files(dir: &Path) -> (String, String) {
    use sigil_proto::test_pki::TestCa;
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca = TestCa::from_params(ca_params);
    let mut node = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    node.is_ca = rcgen::IsCa::ExplicitNoCa;
    node.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let (cert, key) = ca.sign(&node);
    let ca_path = dir.join("nodes-ca.pem");
    let cert_path = dir.join("node.pem");
    let key_path = dir.join("node_key.pem");
    std::fs::write(&ca_path, sigil_proto::pem::to_pem(&[ca.der])).unwrap();
    std::fs::write(&cert_path, sigil_proto::pem::to_pem(&[cert])).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (
        format!(
            "[node_attestor.x509pop]\nca_bundle_path = \"{}\"\n",
            ca_path.display()
        ),
        format!(
            "[node_attestor.x509pop]\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
            cert_path.display(),
            key_path.display()
        ),
    )
}

/// An x509pop agent (config snippet `extra`), healthy, serving
/// [`WORKLOAD`] to this process; returns it with its agent ID.
fn x509pop_agent_serving(s: &TestServer, extra: &str) -> (Agent, String) {
    let mut a = Agent::new(s, true, extra);
    a.spawn(&[]);
    a.wait_healthy(Duration::from_secs(30));
    let id = a.agent_id();
    assert!(id.contains("/x509pop/"), "{id}");
    register(s, &id, WORKLOAD);
    wait_for("workload served", Duration::from_secs(15), || {
        served(&a, WORKLOAD)
    });
    (a, id)
}

/// Waits for `/ready` to answer 503 with a body containing `needle`.
fn wait_not_ready(a: &Agent, needle: &str, limit: Duration) -> String {
    let mut last = (0, String::new());
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        last = a.ready();
        if last.0 == 503 && last.1.contains(needle) {
            return last.1;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "/ready never said 503 {needle:?} (last: {last:?}): {}",
        tail(&a.log_text())
    );
}

#[test]
fn i20_2_evicted_agent_reports_and_reattests_with_new_token() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let mut a = joined(&s, true);
    let first_id = a.agent_id();
    register(&s, &first_id, WORKLOAD);
    wait_for("workload served", Duration::from_secs(15), || {
        served(&a, WORKLOAD)
    });
    assert_eq!(a.ready().0, 200);

    s.cli_ok(&["agent", "evict", "--spiffe-id", &first_id]);
    let body = wait_not_ready(&a, "evicted", Duration::from_secs(60));
    eprintln!("/ready after evict: {body}");
    assert!(body.contains("token"), "the reason says what to do: {body}");
    let (ok, out) = a.healthcheck();
    assert!(!ok, "healthcheck must fail for an evicted agent: {out}");
    assert!(out.contains("evicted"), "{out}");
    assert_eq!(a.metric("refused"), Some(1.0));
    assert_eq!(a.metric("attested"), Some(0.0));
    // Logged once per change, not in a loop.
    let log = a.log_text();
    assert_eq!(
        log.matches("agent identity state changed").count(),
        1,
        "{}",
        tail(&log)
    );

    // Restarted with a new token: attests again although an identity is
    // stored, and its workloads are served again.
    a.stop();
    a.spawn(&["--join-token", &token(&s)]);
    a.wait_healthy(Duration::from_secs(30));
    let second_id = a.agent_id();
    assert_ne!(second_id, first_id, "a new identity from the new token");
    register(&s, &second_id, "spiffe://example.org/lifecycle/w2");
    wait_for("workload served again", Duration::from_secs(15), || {
        served(&a, "spiffe://example.org/lifecycle/w2")
    });
    assert_eq!(a.ready().0, 200, "{}", a.ready().1);

    // No token: the stored identity is kept.
    a.stop();
    a.spawn(&[]);
    a.wait_healthy(Duration::from_secs(30));
    assert_eq!(a.agent_id(), second_id);

    // --reset-identity with x509pop absent and no token is refused at once.
    a.stop();
    a.spawn(&["--reset-identity"]);
    let st = a.wait_exit(Duration::from_secs(20));
    assert!(!st.success());
    assert!(
        a.log_text().contains("nothing to attest with"),
        "{}",
        tail(&a.log_text())
    );
}

#[test]
fn i20_2_x509pop_agent_reattests_by_itself_after_evict() {
    let dir = tempfile::tempdir().unwrap();
    let (server_x, agent_x) = x509pop_files(dir.path());
    let s = TestServer::start(ServerOptions {
        extra: server_x,
        ..Default::default()
    })
    .unwrap();
    let (a, id) = x509pop_agent_serving(&s, &agent_x);
    let before = a.svid();
    s.cli_ok(&["agent", "evict", "--spiffe-id", &id]);
    let took = wait_for(
        "the x509pop agent attests again after evict",
        Duration::from_secs(60),
        || {
            a.svid() != before
                && s.cli_ok(&["agent", "list"]).contains(&id)
                && a.log_text().matches("node attested").count() >= 2
        },
    );
    eprintln!("re-attested {} ms after evict", took.as_millis());
    register(&s, &id, "spiffe://example.org/lifecycle/w2");
    wait_for(
        "workloads served after re-attestation",
        Duration::from_secs(30),
        || served(&a, "spiffe://example.org/lifecycle/w2") && a.ready().0 == 200,
    );
}

#[test]
fn i20_3_outage_longer_than_agent_svid_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let (server_x, agent_x) = x509pop_files(dir.path());
    let mut s = TestServer::start(ServerOptions {
        extra: format!(
            "ca_ttl = \"1h\"\ndefault_x509_svid_ttl = \"5m\"\nagent_svid_ttl = \"8s\"\n{server_x}"
        ),
        ..Default::default()
    })
    .unwrap();
    let mut pop = Agent::new(&s, true, &agent_x);
    pop.spawn(&[]);
    pop.wait_healthy(Duration::from_secs(30));
    let tok = joined(&s, true);
    register(&s, &pop.agent_id(), WORKLOAD);
    wait_for("workload served", Duration::from_secs(15), || {
        served(&pop, WORKLOAD)
    });

    // The server is down longer than the agents' SVIDs live.
    s.stop();
    let expiry = not_after(&pop.svid()).max(not_after(&tok.svid()));
    wait_for("both agent SVIDs expired", Duration::from_secs(30), || {
        now() > expiry + 1
    });
    s.spawn().unwrap();

    // x509pop: back by itself.
    let took = wait_for(
        "the x509pop agent attests again after the outage",
        Duration::from_secs(60),
        || not_after(&pop.svid()) > now() && pop.ready().0 == 200,
    );
    eprintln!(
        "x509pop agent back {} ms after the server",
        took.as_millis()
    );
    assert!(served(&pop, WORKLOAD));
    // Join token: not ready, saying why and what to do.
    let body = wait_not_ready(&tok, "expired", Duration::from_secs(30));
    assert!(body.contains("token generate"), "{body}");
    let (ok, out) = tok.healthcheck();
    assert!(!ok && out.contains("expired"), "{out}");
    assert_eq!(tok.metric("expired"), Some(1.0));
}

#[test]
fn i20_4_reattest_after_rotation_uses_stored_bundle_and_refuses_an_impostor() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    // Two agents: one first started with insecure_bootstrap, one with a
    // bundle file that the rotation makes stale.
    let mut insecure = joined(&s, false);
    let mut filed = joined(&s, true);

    // Rotate the CA and revoke the old one: the install-time bundle file
    // now trusts nothing the server presents.
    let (old_slot, old_ca, new_ca) = rotate(&s);
    for a in [&insecure, &filed] {
        wait_for(
            "new CA in the stored bundle",
            Duration::from_secs(15),
            || a.stored_bundle().contains(&new_ca),
        );
    }
    s.cli_ok(&["ca", "taint", "--slot", &old_slot]);
    for a in [&insecure, &filed] {
        wait_for("agent SVID by the new CA", Duration::from_secs(30), || {
            signed_by(&a.svid(), &new_ca)
        });
    }
    revoke(&s, &old_slot);
    for a in [&insecure, &filed] {
        wait_for(
            "old CA gone from the stored bundle",
            Duration::from_secs(15),
            || !a.stored_bundle().contains(&old_ca),
        );
    }

    // Forced re-attestation (a new token): it trusts the stored bundle.
    for a in [&mut insecure, &mut filed] {
        let before = a.agent_id();
        a.stop();
        a.spawn(&["--join-token", &token(&s)]);
        a.wait_healthy(Duration::from_secs(30));
        assert_ne!(a.agent_id(), before, "attested again with the new token");
        assert!(signed_by(&a.svid(), &new_ca));
    }

    // An impostor: another server (another CA) at the configured address.
    // The agent first started with insecure_bootstrap refuses it.
    let impostor = TestServer::start(ServerOptions::default()).unwrap();
    insecure.stop();
    insecure.write_config(&impostor, "insecure_bootstrap = true\n", "");
    let stolen = token(&impostor);
    let kept = insecure.svid();
    insecure.spawn(&["--join-token", &stolen]);
    let log_start = insecure.log_text().len();
    wait_for(
        "the agent refuses the impostor's certificate",
        Duration::from_secs(30),
        || {
            let log = insecure.log_text();
            let new = &log[log_start.min(log.len())..];
            new.contains("node attestation failed") && new.contains("with the stored bundle")
        },
    );
    assert!(insecure.exited().is_none(), "the agent keeps retrying");
    assert_eq!(insecure.svid(), kept, "no identity from the impostor");
    assert!(
        !insecure.log_text()[log_start..].contains("insecure_bootstrap: trusting"),
        "never insecure once a bundle is known"
    );
    let agents = impostor.cli_ok(&["agent", "list"]);
    assert!(
        !agents.contains("join_token"),
        "the impostor attested no agent: {agents}"
    );
}

#[test]
fn i20_6_agent_started_before_server_attests_once_it_appears() {
    let mut s = TestServer::start(ServerOptions::default()).unwrap();
    let t = token(&s);
    let mut a = Agent::new(&s, true, "");
    s.stop();
    a.spawn(&["--join-token", &t]);
    // The server is not there: the agent waits (not ready), it does not exit.
    let body = wait_not_ready(&a, "attesting", Duration::from_secs(15));
    eprintln!("/ready while the server is down: {body}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(a.exited().is_none(), "{}", tail(&a.log_text()));
    assert!(a.log_text().contains("retrying"), "{}", tail(&a.log_text()));
    assert!(
        !a.log_text().contains("sigil-agent ready"),
        "not ready before serving"
    );
    s.spawn().unwrap();
    a.wait_healthy(Duration::from_secs(45));
    assert!(a.log_text().contains("node attested"));
}

#[test]
fn i20_6_unbindable_socket_fails_before_the_token_is_spent() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let t = token(&s);
    let mut a = Agent::new(&s, true, "");
    // The socket's parent is a regular file: it can never be bound.
    let good = a.socket.clone();
    let blocker = a.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    a.socket = blocker.join("agent.sock");
    a.write_file_config(&s);
    a.spawn(&["--join-token", &t]);
    let st = a.wait_exit(Duration::from_secs(20));
    assert!(!st.success());
    let log = a.log_text();
    assert!(log.contains("socket_path"), "{log}");
    assert!(
        !log.contains("node attested"),
        "attested before binding: {log}"
    );
    // The token was not spent: the same token attests with a good path.
    a.socket = good;
    a.write_file_config(&s);
    a.spawn(&["--join-token", &t]);
    a.wait_healthy(Duration::from_secs(30));
}

/// The leaf of the first SVID this process is served by `a` (through
/// `api fetch x509 --write`).
fn workload_leaf(a: &Agent) -> Option<Vec<u8>> {
    let out_dir = tempfile::tempdir().ok()?;
    let sock = a.socket.display().to_string();
    let dir = out_dir.path().display().to_string();
    let args = ["api", "fetch", "x509", "--socket", &sock, "--write", &dir];
    let out = sigil_agent(&[&args[..], &["--timeout", "1s"]].concat(), &[]);
    if !out.status.success() {
        return None;
    }
    let pem = std::fs::read(out_dir.path().join("svid.pem")).ok()?;
    sigil_proto::pem::from_pem(&pem).ok()?.into_iter().next()
}

/// A web PKI for the `https_web` bundle endpoint: a CA (written to
/// `dir/web-ca.pem`) and a certificate for `localhost`; returns the CA
/// file, the certificate file and the key file.
fn web_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (ca_der, cert, key) = sigil_proto::test_pki::web_server_cert("localhost");
    let paths = (
        dir.join("web-ca.pem"),
        dir.join("web.pem"),
        dir.join("web_key.pem"),
    );
    std::fs::write(&paths.0, sigil_proto::pem::to_pem(&[ca_der])).unwrap();
    std::fs::write(&paths.1, sigil_proto::pem::to_pem(&[cert])).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    std::fs::set_permissions(
        &paths.2,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    paths
}

#[test]
fn i14_offline_x509pop_agent_comes_back_through_the_web_bundle_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (server_x, agent_x) = x509pop_files(dir.path());
    let (web_ca, web_cert, web_key) = web_pki(dir.path());
    let web = free_addr();
    let s = TestServer::start(ServerOptions {
        bundle_endpoint: false,
        extra: format!(
            "{server_x}[bundle_endpoint]\naddress = \"{web}\"\nprofile = \"https_web\"\n\
             cert_file = \"{}\"\nkey_file = \"{}\"\n",
            web_cert.display(),
            web_key.display()
        ),
        ..Default::default()
    })
    .unwrap();
    let agent_extra = format!(
        "{agent_x}[bundle_endpoint]\nurl = \"https://localhost:{}/\"\nca_file = \"{}\"\n",
        web.port(),
        web_ca.display()
    );
    let (mut a, id) = x509pop_agent_serving(&s, &agent_extra);

    // The agent is offline through a whole rotation: prepare, activate,
    // taint, revoke (forced: its own SVID still chains to the old CA).
    a.stop();
    let (old_slot, old_ca, new_ca) = rotate(&s);
    s.cli_ok(&["ca", "taint", "--slot", &old_slot]);
    s.cli_ok(&["ca", "revoke", "--slot", &old_slot, "--force"]);
    assert_eq!(s.bundle(), vec![new_ca.clone()], "only the new CA is left");
    assert!(a.stored_bundle().contains(&old_ca) && !a.stored_bundle().contains(&new_ca));

    // Restarted, it cannot verify the server with its stored bundle: it
    // fetches the bundle from the web endpoint, attests again by x509pop,
    // and the workload gets an SVID from the new CA.
    let log_start = a.log_text().len();
    a.spawn(&[]);
    let took = wait_for(
        "the agent back through the bundle endpoint: own SVID and the workload's by the new CA",
        Duration::from_secs(90),
        || {
            signed_by(&a.svid(), &new_ca)
                && workload_leaf(&a).is_some_and(|l| signed_by(&l, &new_ca))
                && a.ready().0 == 200
        },
    );
    eprintln!("back {} ms after the restart", took.as_millis());
    let log = a.log_text()[log_start..].to_string();
    assert!(
        log.contains("trust bundle refreshed from the bundle endpoint"),
        "{}",
        tail(&log)
    );
    assert!(log.contains("node attested"), "{}", tail(&log));
    assert_eq!(a.stored_bundle(), vec![new_ca]);
    assert_eq!(a.agent_id(), id, "the same node, attested again");
}

/// The value of `sigil_agent_ready` on `/metrics`.
fn ready_metric(a: &Agent) -> Option<f64> {
    let (_, body) = http_get(a.health, "/metrics").ok()?;
    let fams = sigil_tests::prom::parse(&body).ok()?;
    fams.get("sigil_agent_ready")?
        .value("sigil_agent_ready", &[])
}

#[test]
fn i22_8_healthcheck_fails_when_the_agent_is_cut_off() {
    // The default server_unreachable_grace: 30 s.
    const GRACE: Duration = Duration::from_secs(30);
    let mut s = TestServer::start(ServerOptions::default()).unwrap();
    let a = joined(&s, true);
    assert_eq!(a.ready().0, 200, "{}", a.ready().1);
    assert_eq!(ready_metric(&a), Some(1.0));

    // Cut off: the server stops. Within the grace plus a bound, both the
    // healthcheck and /ready say not ready, with the same reason.
    s.stop();
    let cut = Instant::now();
    let mut last = (true, String::new());
    let took = wait_for(
        "healthcheck fails after the server stopped",
        GRACE + Duration::from_secs(20),
        || {
            last = a.healthcheck();
            !last.0
        },
    );
    assert!(
        cut.elapsed() >= GRACE - Duration::from_secs(1),
        "not ready only after the grace ({took:?})"
    );
    let (ok, out) = last;
    assert!(
        !ok && out.contains("degraded: the server is unreachable"),
        "{out}"
    );
    let (code, body) = a.ready();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("degraded: the server is unreachable"),
        "{body}"
    );
    assert_eq!(ready_metric(&a), Some(0.0));

    // The server is back: both healthy again.
    s.spawn().unwrap();
    wait_for(
        "healthcheck and /ready healthy once the server is back",
        Duration::from_secs(60),
        || a.healthcheck().0 && a.ready().0 == 200,
    );
    assert_eq!(ready_metric(&a), Some(1.0));
}
