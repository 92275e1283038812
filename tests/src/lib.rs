//! Test support for the end-to-end suite: builds and starts the real
//! `sigil-server` binary in a temp dir on loopback, runs its CLI, and tears
//! everything down. Every wait is bounded.

pub mod agent_client;
pub mod bundle_endpoint;
pub mod der;
pub mod emitted;
pub mod ha;
pub mod interop;
pub mod jwt_check;
pub mod mtls;
pub mod oidc;
pub mod pg;
pub mod pg_server;
pub mod ping;
pub mod poll;
pub mod prom;
pub mod proxy;
pub mod stall_fs;
pub mod sync_stream;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a daemon may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

fn target_dir() -> PathBuf {
    // Test binaries live in target/<profile>/deps.
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary is in target/<profile>/deps")
        .to_path_buf()
}

/// Path of a workspace binary, built (once per test process) with the same
/// profile as the tests, so a stale binary is never used.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let dir = target_dir();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        // The package variables `cargo test` sets for this test process
        // make ring's build script rerun (it tracks CARGO_PKG_NAME, …), so
        // everything was rebuilt here and again by the next shell build.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_BIN_",
                "CARGO_CRATE_",
            ]
            .iter()
            .any(|p| k.starts_with(p))
                || [
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                ]
                .contains(&k.as_ref())
            {
                cmd.env_remove(k.as_ref());
            }
        }
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "sigil-server",
            "-p",
            "sigil-agent",
            "--bins",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(())
    });
    if let Err(e) = built {
        panic!("building the binaries failed: {e}");
    }
    dir.join(name)
}

/// A command running `program` as `run_as` (uid = gid, no supplementary
/// groups, through `setpriv`; needs root), or as this process's user.
pub fn command_as(program: &Path, run_as: Option<u32>) -> Command {
    match run_as {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".to_string(),
            ])
            .arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr")
}

/// Runs `sigil-server` with `args` and returns its output (bounded: the
/// command is killed after 60 s).
pub fn sigil_server(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_bounded(
        Command::new(bin("sigil-server"))
            .args(args)
            .envs(env.iter().copied()),
    )
}

/// Runs a command, killing it if it takes more than 60 s.
pub fn run_bounded(cmd: &mut Command) -> Output {
    let (out, killed) = run_limited(cmd, Duration::from_secs(60));
    assert!(!killed, "command {cmd:?} did not finish in 60 s");
    out
}

/// Runs a command for at most `limit`; returns its output and whether it
/// was still running then (it is then killed with SIGKILL).
pub fn run_limited(cmd: &mut Command, limit: Duration) -> (Output, bool) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => (out.expect("wait"), false),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let out = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("killed child reaped");
            (out.expect("wait"), true)
        }
    }
}

/// Output as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// SIGTERM, then SIGKILL if the process has not exited within 15 s.
pub fn stop_child(c: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(c.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// The agent ID the server gives an agent attested with join token `token`:
/// the token's hash, never the token.
pub fn join_token_agent_id(trust_domain: &str, token: &str) -> String {
    use sigil_server::store::join_token_ids::{agent_path, sha256_hex};
    format!("spiffe://{trust_domain}{}", agent_path(&sha256_hex(token)))
}

/// Options for a test server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub trust_domain: String,
    /// Extra TOML appended to the generated config.
    pub extra: String,
    pub bundle_endpoint: bool,
    /// Run the daemon as this uid (and gid) through `setpriv`; needs root.
    pub run_as: Option<u32>,
    /// The daemon's open-file limit (`ulimit -n`, set in the child only).
    pub nofile: Option<u64>,
}

impl ServerOptions {
    /// The default options with the x509pop attestor on, trusting the node
    /// CA certificates in `ca_bundle`.
    pub fn x509pop(ca_bundle: &Path) -> ServerOptions {
        ServerOptions {
            extra: format!(
                "[node_attestor.x509pop]\nca_bundle_path = \"{}\"\n",
                ca_bundle.display()
            ),
            ..Default::default()
        }
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            trust_domain: "example.org".into(),
            extra: String::new(),
            bundle_endpoint: true,
            run_as: None,
            nofile: None,
        }
    }
}

/// A running `sigil-server` in a temp dir.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    pub bundle_addr: Option<SocketAddr>,
    /// The agent API address.
    pub agent_addr: SocketAddr,
    pub trust_domain: String,
    pub log: PathBuf,
    run_as: Option<u32>,
    nofile: Option<u64>,
    child: Option<Child>,
}

impl TestServer {
    /// Writes a config and starts the server; returns once `healthcheck`
    /// answers.
    pub fn start(opts: ServerOptions) -> anyhow::Result<TestServer> {
        let dir = tempfile::tempdir()?;
        let data_dir = dir.path().join("data");
        let socket = data_dir.join("admin.sock");
        let bundle_addr = opts.bundle_endpoint.then(free_addr);
        let agent_addr = free_addr();
        let mut cfg = format!(
            "trust_domain = \"{}\"\ndata_dir = \"{}\"\nbind_address = \"{}\"\n",
            opts.trust_domain,
            data_dir.display(),
            agent_addr
        );
        cfg.push_str(&opts.extra);
        if let Some(a) = bundle_addr {
            cfg.push_str(&format!(
                "\n[bundle_endpoint]\naddress = \"{a}\"\nrefresh_hint = \"2m\"\n"
            ));
        }
        let config = dir.path().join("server.toml");
        std::fs::write(&config, cfg)?;
        if let Some(uid) = opts.run_as {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
            std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644))?;
            std::fs::create_dir(&data_dir)?;
            // Owner-only: the server refuses a data_dir others can reach.
            std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))?;
            let id = Some(nix::unistd::Uid::from_raw(uid));
            nix::unistd::chown(&data_dir, id, Some(nix::unistd::Gid::from_raw(uid)))?;
        }
        let log = dir.path().join("server.log");
        let mut s = TestServer {
            agent_addr,
            trust_domain: opts.trust_domain.clone(),
            run_as: opts.run_as,
            nofile: opts.nofile,
            dir,
            config,
            socket,
            data_dir,
            bundle_addr,
            log,
            child: None,
        };
        s.spawn()?;
        Ok(s)
    }

    /// Starts (again) the server process and waits until it is healthy.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = command_as(&bin("sigil-server"), self.run_as);
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; it runs in the child
            // between fork and exec and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = cmd
            .args(["run", "--config"])
            .arg(&self.config)
            .args(["--log-level", "debug"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning sigil-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!("sigil-server exited with {status}: {}", self.log_text());
            }
            let out = self.cli(&["healthcheck"]);
            // Up: healthy, or answering but refusing this caller's uid.
            if out.status.success() || text(&out.stderr).contains("may not use the admin socket") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "sigil-server not healthy after {READY_TIMEOUT:?}: {}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs an admin command against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        let sock = self.socket.display().to_string();
        sigil_server(args, &[("SIGIL_ADMIN_SOCKET", &sock)])
    }

    /// Runs an admin command that must succeed; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "sigil-server {args:?} failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs an admin command with `--output json` that must succeed.
    /// The name of the CA slot in `state` (`active`, `prepared`, `old`)
    /// per `ca show`; panics when there is none.
    pub fn ca_slot(&self, state: &str) -> String {
        let v = self.cli_json(&["ca", "show"]);
        let slots = v["slots"].as_array().cloned().unwrap_or_default();
        let found = slots.iter().find(|x| x["state"] == state);
        let found = found.unwrap_or_else(|| panic!("no {state} slot: {v:#}"));
        found["slot"].as_str().unwrap().to_string()
    }

    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let out = self.cli_ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: bad JSON {e}: {out}"))
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, no cleanup.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded), then SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c);
        }
    }

    /// Registers `spiffe_id` for this test process's uid under `agent`.
    pub fn register_uid(&self, agent: &TestAgent, spiffe_id: &str) -> String {
        let uid = nix::unistd::getuid().as_raw();
        self.register(agent, spiffe_id, &format!("unix:uid:{uid}"))
    }

    /// Registers `spiffe_id` for workloads with `selector` under `agent`.
    pub fn register(&self, agent: &TestAgent, spiffe_id: &str, selector: &str) -> String {
        self.cli_ok(&[
            "entry",
            "create",
            "--spiffe-id",
            spiffe_id,
            "--parent-id",
            &agent.agent_id,
            "--selector",
            selector,
        ])
    }

    /// The trust bundle (DER) as `bundle show` prints it.
    pub fn bundle(&self) -> Vec<Vec<u8>> {
        pem_certs(&self.cli_ok(&["bundle", "show"]))
    }

    /// A client of the agent API, with or without an agent identity.
    pub async fn agent_client(
        &self,
        ident: Option<&agent_client::AgentIdentity>,
    ) -> anyhow::Result<
        sigil_proto::agent_api::agent_api_client::AgentApiClient<tonic::transport::Channel>,
    > {
        agent_client::connect(self.agent_addr, self.bundle(), &self.trust_domain, ident).await
    }

    /// An anonymous client of the agent API over one TLS connection, with
    /// that connection's channel binding (what x509pop answers are bound to).
    pub async fn attestation_client(
        &self,
    ) -> anyhow::Result<(
        sigil_proto::agent_api::agent_api_client::AgentApiClient<tonic::transport::Channel>,
        sigil_proto::attestation::ChannelBinding,
    )> {
        agent_client::connect_for_attestation(self.agent_addr, self.bundle(), &self.trust_domain)
            .await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A gRPC channel to the Workload API socket at `path` (each new
/// connection of the channel dials the socket).
pub async fn workload_channel(
    path: &Path,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let p = path.to_path_buf();
    tonic::transport::Endpoint::from_static("http://workload.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
}

/// DER certificates from PEM text.
pub fn pem_certs(text: &str) -> Vec<Vec<u8>> {
    sigil_proto::pem::from_pem(text.as_bytes()).expect("PEM certificates")
}

/// Runs `sigil-agent` with `args` (bounded like [`sigil_server`]).
pub fn sigil_agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_bounded(
        Command::new(bin("sigil-agent"))
            .args(args)
            .envs(env.iter().copied()),
    )
}

/// A running `sigil-agent` attached to a [`TestServer`].
pub struct TestAgent {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub agent_id: String,
    /// `RLIMIT_NOFILE` of the agent process alone (never the test's).
    nofile: Option<u64>,
    child: Option<Child>,
}

impl TestAgent {
    /// Generates a join token, writes a config trusting the server's bundle
    /// and starts the agent; returns once its Workload API answers.
    pub fn start(server: &TestServer) -> anyhow::Result<TestAgent> {
        Self::start_with(server, "")
    }

    pub fn start_with(server: &TestServer, extra: &str) -> anyhow::Result<TestAgent> {
        Self::start_limited(server, extra, None)
    }

    /// [`TestAgent::start_with`], the agent process running with
    /// `RLIMIT_NOFILE` = `nofile` (set in the child only).
    pub fn start_limited(
        server: &TestServer,
        extra: &str,
        nofile: Option<u64>,
    ) -> anyhow::Result<TestAgent> {
        let at = format!("\"{}\"", server.agent_addr);
        Self::start_at(server, &at, extra, nofile)
    }

    /// [`TestAgent::start_limited`] with `server_address` set to the TOML
    /// value `server_address` (a string or an array; issue 17), the join
    /// token and the bundle taken from `server`.
    pub fn start_at(
        server: &TestServer,
        server_address: &str,
        extra: &str,
        nofile: Option<u64>,
    ) -> anyhow::Result<TestAgent> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        // Workloads of other uids must reach the socket.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, server.cli_ok(&["bundle", "show"]))?;
        let data_dir = dir.path().join("data");
        let socket = dir.path().join("run/agent.sock");
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "trust_domain = \"{}\"\ndata_dir = \"{}\"\nserver_address = {server_address}\n\
                 trust_bundle_path = \"{}\"\nsocket_path = \"{}\"\n{extra}",
                server.trust_domain,
                data_dir.display(),
                bundle.display(),
                socket.display()
            ),
        )?;
        let token = server.cli_json(&["token", "generate"])["token"]
            .as_str()
            .context("token")?
            .to_string();
        let agent_id = join_token_agent_id(&server.trust_domain, &token);
        let log = dir.path().join("agent.log");
        let mut a = TestAgent {
            dir,
            config,
            socket,
            data_dir,
            log,
            agent_id,
            nofile,
            child: None,
        };
        a.spawn(Some(&token))?;
        Ok(a)
    }

    /// Starts (again) the agent process; waits until `healthcheck` passes.
    pub fn spawn(&mut self, join_token: Option<&str>) -> anyhow::Result<()> {
        self.start_process(join_token)?;
        self.wait_healthy()
    }

    /// Starts (again) the agent process without waiting for it.
    pub fn start_process(&mut self, join_token: Option<&str>) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(bin("sigil-agent"));
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .args(["--log-level", "debug"]);
        if let Some(t) = join_token {
            cmd.args(["--join-token", t]);
        }
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs
            // between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning sigil-agent")?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until `healthcheck` passes (ready: attested and synced).
    fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let sock = self.socket.display().to_string();
        loop {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!("sigil-agent exited with {status}: {}", self.log_text());
            }
            if sigil_agent(&["healthcheck", "--socket", &sock], &[])
                .status
                .success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "sigil-agent not healthy after {READY_TIMEOUT:?}: {}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `unix:<socket>` for SPIFFE clients.
    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded), then SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c);
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An upstream root as an operator's OpenSSL would make it: its subject key
/// identifier is not the one rcgen would compute, so an intermediate whose
/// authority key identifier does not copy it is caught.
/// Written to `dir` as `upstream.pem` and `upstream_key.pem`; returns
/// (certificate path, key path, certificate DER).
pub fn write_upstream_root(
    dir: &Path,
    alg: &'static rcgen::SignatureAlgorithm,
) -> anyhow::Result<(PathBuf, PathBuf, Vec<u8>)> {
    let (cert, key) = sigil_proto::test_pki::upstream_root(alg);
    let cert_path = dir.join("upstream.pem");
    let key_path = dir.join("upstream_key.pem");
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    // The owner's alone: the server refuses a key others can read.
    std::fs::set_permissions(
        &key_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    Ok((cert_path, key_path, cert.der().to_vec()))
}
