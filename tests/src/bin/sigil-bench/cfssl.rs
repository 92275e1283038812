//! The cfssl baseline for P1: a throwaway CA from `cfssl gencert -initca`,
//! `cfssl serve` on loopback, and the same CSRs posted to
//! `/api/v1/cfssl/sign` at the same concurrency over keep-alive HTTP/1.1
//! (a minimal client: requests are tiny, responses carry Content-Length or
//! are chunked). cfssl (Debian's 2016 build) drops URI SANs, so this is a
//! speed baseline only.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::common::{bounded, poll};

/// `cfssl` on PATH, if any.
pub fn find() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("cfssl"))
        .find(|p| p.is_file())
}

pub struct Cfssl {
    child: Child,
    pub addr: std::net::SocketAddr,
}

impl Drop for Cfssl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cfssl {
    /// Makes a P-256 CA in `dir` and serves it on a free loopback port.
    pub async fn start(cfssl: &Path, dir: &Path) -> anyhow::Result<Cfssl> {
        let csr = dir.join("ca-csr.json");
        std::fs::write(
            &csr,
            r#"{"CN":"sigil-bench cfssl CA","key":{"algo":"ecdsa","size":256}}"#,
        )?;
        let out = Command::new(cfssl)
            .args(["gencert", "-initca"])
            .arg(&csr)
            .stdin(Stdio::null())
            .output()
            .context("running cfssl gencert -initca")?;
        if !out.status.success() {
            bail!(
                "cfssl gencert -initca failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("cfssl gencert output is not JSON")?;
        let (ca, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
        std::fs::write(&ca, v["cert"].as_str().context("cfssl gencert: no cert")?)?;
        std::fs::write(&key, v["key"].as_str().context("cfssl gencert: no key")?)?;
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?
        };
        let log = std::fs::File::create(dir.join("cfssl.log"))?;
        let child = Command::new(cfssl)
            .args(["serve", "-address", "127.0.0.1", "-port"])
            .arg(addr.port().to_string())
            .arg("-ca")
            .arg(&ca)
            .arg("-ca-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning cfssl serve")?;
        let c = Cfssl { child, addr };
        poll(
            "cfssl serve listening",
            Duration::from_secs(30),
            Duration::from_millis(20),
            || async { Ok(TcpStream::connect(addr).await.ok().map(|_| ())) },
        )
        .await?;
        Ok(c)
    }
}

/// One keep-alive connection to cfssl.
pub struct Conn {
    io: BufReader<TcpStream>,
}

impl Conn {
    pub async fn open(addr: std::net::SocketAddr) -> anyhow::Result<Conn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            io: BufReader::new(s),
        })
    }

    /// Signs one PEM CSR; returns the certificate PEM.
    pub async fn sign(&mut self, csr_pem: &str) -> anyhow::Result<String> {
        let body = serde_json::json!({ "certificate_request": csr_pem }).to_string();
        let req = format!(
            "POST /api/v1/cfssl/sign HTTP/1.1\r\nHost: cfssl\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.io.get_mut().write_all(req.as_bytes()).await?;
        let mut status = String::new();
        self.io.read_line(&mut status).await?;
        let mut len = None;
        let mut chunked = false;
        loop {
            let mut h = String::new();
            if self.io.read_line(&mut h).await? == 0 {
                bail!("cfssl closed the connection");
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = Some(v.trim().parse::<usize>()?);
            } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if let Some(n) = len {
            body.resize(n, 0);
            self.io.read_exact(&mut body).await?;
        } else if chunked {
            loop {
                let mut line = String::new();
                self.io.read_line(&mut line).await?;
                let n = usize::from_str_radix(line.trim(), 16)?;
                let mut chunk = vec![0; n + 2];
                self.io.read_exact(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            bail!("cfssl answered without a length: {status}");
        }
        if !status.contains(" 200 ") {
            bail!(
                "cfssl sign answered {}: {}",
                status.trim(),
                String::from_utf8_lossy(&body)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        Ok(v["result"]["certificate"]
            .as_str()
            .context("cfssl sign: no certificate in the answer")?
            .to_string())
    }
}

/// Signs `csrs` (PEM) over `concurrency` connections; returns certificates
/// per second.
pub async fn sign_all(
    addr: std::net::SocketAddr,
    csrs: Vec<String>,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let mut conns = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut c = Conn::open(addr).await?;
        // Warm up each connection (and cfssl) outside the clock.
        c.sign(&csrs[0]).await?;
        conns.push(c);
    }
    let per = csrs.len().div_ceil(concurrency);
    let parts: Vec<Vec<String>> = csrs.chunks(per).map(<[String]>::to_vec).collect();
    let t0 = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(parts)
        .map(|(mut c, part)| {
            tokio::spawn(async move {
                for csr in &part {
                    c.sign(csr).await?;
                }
                anyhow::Ok(part.len())
            })
        })
        .collect();
    let mut done = 0;
    bounded("cfssl signing", Duration::from_secs(300), async {
        for t in tasks {
            done += t.await??;
        }
        Ok(())
    })
    .await?;
    Ok(done as f64 / t0.elapsed().as_secs_f64())
}
