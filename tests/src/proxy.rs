//! A `sigil-agent proxy` process for the proxy tests and `sigil-bench
//! proxy`: writes its config, starts it (as another uid through `setpriv`
//! when asked), waits until `/ready` answers 200, and reads its metrics and
//! JSON log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::prom::{self, Family};

/// A running proxy.
pub struct Proxy {
    pub config: PathBuf,
    pub log: PathBuf,
    pub health: SocketAddr,
    child: Option<Child>,
}

impl Proxy {
    /// Writes `body` plus `[health]` (on `health`) as `<name>.toml` in
    /// `dir` and starts `agent_bin proxy` on it, as `run_as` (uid = gid)
    /// when given; returns once `/ready` is 200.
    pub fn start(
        agent_bin: &Path,
        dir: &Path,
        name: &str,
        body: &str,
        health: SocketAddr,
        run_as: Option<u32>,
    ) -> anyhow::Result<Proxy> {
        use std::os::unix::fs::PermissionsExt;
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!("{body}\n[health]\naddress = \"{health}\"\n"),
        )?;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644))?;
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let mut cmd = crate::command_as(agent_bin, run_as);
        let child = cmd
            .args(["proxy", "--config"])
            .arg(&config)
            .args(["--log-level", "debug", "--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawning sigil-agent proxy")?;
        let mut p = Proxy {
            config,
            log,
            health,
            child: Some(child),
        };
        p.wait_ready()?;
        Ok(p)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + crate::READY_TIMEOUT;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!("the proxy exited with {status}: {}", self.log_text());
            }
            if matches!(prom::http_get(self.health, "/ready"), Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the proxy is not ready after 30 s: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The JSON log lines whose message is `msg`.
    pub fn log_events(&self, msg: &str) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"] == msg)
            .collect()
    }

    pub fn metrics(&self) -> anyhow::Result<BTreeMap<String, Family>> {
        let (code, body) = prom::http_get(self.health, "/metrics")?;
        anyhow::ensure!(code == 200, "/metrics answered {code}: {body}");
        prom::parse(&body)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::stop_child(&mut c);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
