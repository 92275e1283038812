//! The real daemons under test: `sigil-server` and `sigil-agent` from the
//! directory of this binary (`target/release`), each in its own temp dir on
//! loopback, logging to a file there, killed on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sigil_proto::admin_api::{self as apb, admin_api_client::AdminApiClient};
use tonic::transport::Channel;

use crate::common::poll;

pub const TRUST_DOMAIN: &str = "example.org";
/// How long a daemon may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A binary built next to this one.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating sigil-bench")?;
    let dir = exe.parent().context("sigil-bench has no directory")?;
    let p = dir.join(name);
    if !p.is_file() {
        bail!(
            "{} not found: build it first with `cargo build --release -p sigil-server -p sigil-agent -p sigil-tests --bin sigil-server --bin sigil-agent --bin sigil-test-attacker`",
            p.display()
        );
    }
    Ok(p)
}

use sigil_tests::stop_child;

fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// A running `sigil-server`.
pub struct Server {
    /// Removed on drop.
    _dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub agent_addr: SocketAddr,
    /// `[health] address`: `/ready` is what start-up time is measured to.
    pub health_addr: SocketAddr,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Starts a server whose rate limits do not get in a benchmark's way.
    pub async fn start() -> anyhow::Result<Server> {
        Self::start_with("").await
    }

    /// [`Server::start`] with `extra` TOML appended to its config (e.g. a
    /// `[store.postgres]` section).
    pub async fn start_with(extra: &str) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let data_dir = dir.path().join("data");
        let socket = data_dir.join("admin.sock");
        let agent_addr = free_addr()?;
        let health_addr = free_addr()?;
        let config = dir.path().join("server.toml");
        std::fs::write(
            &config,
            format!(
                "trust_domain = \"{TRUST_DOMAIN}\"\ndata_dir = \"{}\"\nbind_address = \"{agent_addr}\"\n\
                 [rate_limit]\nattestations_per_second = 10000\ncsrs_per_second = 10000000\n\
                 [health]\naddress = \"{health_addr}\"\n{extra}",
                data_dir.display()
            ),
        )?;
        let log = dir.path().join("server.log");
        let mut s = Server {
            _dir: dir,
            config,
            socket,
            agent_addr,
            health_addr,
            log,
            child: None,
        };
        s.spawn().await?;
        Ok(s)
    }

    /// Execs the server and waits until `/ready` answers 200 (store open,
    /// entries loaded, CA active, listeners bound); returns the time from
    /// exec to that answer.
    pub async fn spawn(&mut self) -> anyhow::Result<Duration> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(bin("sigil-server")?);
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let t0 = Instant::now();
        self.child = Some(cmd.spawn().context("spawning sigil-server")?);
        let health = self.health_addr;
        let child = self.child.as_mut().context("child")?;
        let log = self.log.clone();
        poll(
            "sigil-server /ready",
            READY_TIMEOUT,
            Duration::from_millis(2),
            || {
                let exited = child.try_wait();
                let log = log.clone();
                async move {
                    if let Some(st) = exited? {
                        bail!(
                            "sigil-server exited with {st}: {}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        );
                    }
                    Ok(ready(health).await.then_some(()))
                }
            },
        )
        .await?;
        Ok(t0.elapsed())
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .context("server not running")
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c);
        }
    }

    pub async fn admin(&self) -> anyhow::Result<AdminApiClient<Channel>> {
        sigil_server::admin::client::connect(&self.socket).await
    }

    /// The trust bundle (DER certificates).
    pub async fn bundle(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        Ok(self
            .admin()
            .await?
            .get_bundle(apb::GetBundleRequest {})
            .await?
            .into_inner()
            .x509_authorities)
    }

    pub async fn join_token(&self) -> anyhow::Result<String> {
        Ok(self
            .admin()
            .await?
            .generate_join_token(apb::GenerateJoinTokenRequest {
                ttl_seconds: 600,
                spiffe_id: String::new(),
            })
            .await?
            .into_inner()
            .token)
    }

    /// Creates entries in batches of `batch`; returns their ids in order.
    pub async fn create_entries(
        &self,
        entries: Vec<apb::Entry>,
        batch: usize,
    ) -> anyhow::Result<Vec<String>> {
        let mut admin = self.admin().await?;
        let mut ids = Vec::with_capacity(entries.len());
        for chunk in entries.chunks(batch) {
            let r = admin
                .create_entries(apb::CreateEntriesRequest {
                    entries: chunk.to_vec(),
                    allow_unknown_selectors: false,
                })
                .await?
                .into_inner();
            for res in r.results {
                match res.result {
                    Some(apb::entry_result::Result::Entry(e)) => ids.push(e.id),
                    other => bail!("creating an entry failed: {other:?}"),
                }
            }
        }
        Ok(ids)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether `/ready` answers 200.
async fn ready(addr: SocketAddr) -> bool {
    tokio::task::spawn_blocking(move || sigil_tests::prom::http_get(addr, "/ready"))
        .await
        .is_ok_and(|r| r.is_ok_and(|(code, _)| code == 200))
}

/// A simulated agent: attested with `token` over a new anonymous
/// connection to `addr` (trusting `bundle`); its key and SVID.
pub async fn attest_simulated(
    addr: SocketAddr,
    bundle: &[Vec<u8>],
    token: String,
) -> anyhow::Result<sigil_tests::agent_client::AgentIdentity> {
    use sigil_tests::agent_client;
    let mut c = agent_client::connect(addr, bundle.to_vec(), TRUST_DOMAIN, None).await?;
    let (key, csr) = crate::limit::key_and_csr()?;
    let svid = agent_client::attest(
        &mut c,
        sigil_proto::attestation::JOIN_TOKEN,
        token.into_bytes(),
        csr,
    )
    .await
    .context("attesting a simulated agent")?;
    Ok(agent_client::identity(&key, &svid))
}

/// A workload entry for `spiffe_id` under `parent` with `selectors`.
pub fn entry(spiffe_id: &str, parent: &str, selectors: &[(&str, &str)]) -> apb::Entry {
    apb::Entry {
        spiffe_id: spiffe_id.to_string(),
        parent_id: parent.to_string(),
        selectors: selectors
            .iter()
            .map(|(t, v)| apb::Selector {
                r#type: t.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

/// A running `sigil-agent` attached to a [`Server`].
pub struct Agent {
    /// Removed on drop.
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub agent_id: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Agent {
    pub async fn start(server: &Server) -> anyhow::Result<Agent> {
        Self::start_with(server, "").await
    }

    /// [`Agent::start`] with `limits` appended to its `[limits]` table.
    pub async fn start_with(server: &Server, limits: &str) -> anyhow::Result<Agent> {
        let dir = tempfile::tempdir()?;
        let bundle = dir.path().join("bundle.pem");
        let pem_text: String = server
            .bundle()
            .await?
            .into_iter()
            .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der)))
            .collect();
        std::fs::write(&bundle, pem_text)?;
        let data_dir = dir.path().join("data");
        let socket = dir.path().join("run/agent.sock");
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "trust_domain = \"{TRUST_DOMAIN}\"\ndata_dir = \"{}\"\nserver_address = \"{}\"\n\
                 trust_bundle_path = \"{}\"\nsocket_path = \"{}\"\n\
                 # One bench process (one pid, one uid) stands in for 1,000 workloads.\n\
                 [limits]\nworkload_api_max_streams_per_workload = 10000\n\
                 workload_api_max_streams_per_uid = 10000\n\
                 # 1,000 connections of that uid whatever RLIMIT_NOFILE is (the default\n\
                 # is a quarter of the global cap; never above the global cap).\n\
                 workload_api_max_connections_per_uid = 1100\n{limits}",
                data_dir.display(),
                server.agent_addr,
                bundle.display(),
                socket.display()
            ),
        )?;
        let token = server.join_token().await?;
        let agent_id = sigil_tests::join_token_agent_id(TRUST_DOMAIN, &token);
        let log = dir.path().join("agent.log");
        let logf = std::fs::File::create(&log)?;
        let child = Command::new(bin("sigil-agent")?)
            .args(["run", "--config"])
            .arg(&config)
            .args(["--log-level", "info", "--join-token", &token])
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .context("spawning sigil-agent")?;
        let mut a = Agent {
            _dir: dir,
            socket,
            agent_id,
            log,
            child: Some(child),
        };
        let sock = a.socket.clone();
        let log = a.log.clone();
        let child = a.child.as_mut().context("child")?;
        poll(
            "sigil-agent Workload API socket",
            READY_TIMEOUT,
            Duration::from_millis(10),
            || {
                let exited = child.try_wait();
                let sock = sock.clone();
                let log = log.clone();
                async move {
                    if let Some(st) = exited? {
                        bail!(
                            "sigil-agent exited with {st}: {}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        );
                    }
                    Ok(tokio::net::UnixStream::connect(&sock)
                        .await
                        .ok()
                        .map(|_| ()))
                }
            },
        )
        .await?;
        Ok(a)
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .context("agent not running")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
