//! `sigil-agent helper` against a real server and agent: the files appear
//! and verify, rotations rewrite them and reload the consumer exactly once
//! per update, a reader racing the writes never sees a mismatched or
//! partial set, an nginx-style consumer (reload on SIGHUP, mTLS from the
//! files) keeps serving a client through a rotation, `--once` works for
//! init containers, and the example config loads.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sigil_agent::helper::config::{HelperConfig, ReloadConfig};
use sigil_proto::SpiffeId;
use sigil_tests::poll::wait_for;
use sigil_tests::{ServerOptions, TestAgent, TestServer, bin, mtls, sigil_agent, text};

fn uid_selector() -> String {
    format!("unix:uid:{}", nix::unistd::getuid().as_raw())
}

fn register(s: &TestServer, a: &TestAgent, id: &str, hint: &str) -> String {
    let sel = uid_selector();
    s.cli_json(&[
        "entry",
        "create",
        "--spiffe-id",
        id,
        "--parent-id",
        &a.agent_id,
        "--selector",
        &sel,
        "--hint",
        hint,
    ])["entries"][0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A `sigil-agent helper` process, stopped on drop.
struct Helper {
    child: Option<Child>,
    log: PathBuf,
}

impl Helper {
    fn start(config: &Path, log: PathBuf) -> Helper {
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin("sigil-agent"))
            .args(["helper", "--log-level", "debug", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Helper {
            child: Some(child),
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Serials of the "wrote SVID files" log lines, in order.
    fn written_serials(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("wrote SVID files"))
            .filter_map(|l| {
                let rest = &l[l.find("serial=")? + "serial=".len()..];
                Some(rest.split_whitespace().next()?.to_string())
            })
            .collect()
    }

    /// SIGTERM, then wait (bounded); the helper must exit 0.
    fn stop(&mut self) {
        let mut c = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = wait_for(Duration::from_secs(10), "helper exit", || {
            c.try_wait().unwrap()
        });
        assert!(status.success(), "helper exited with {status}");
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn write_config(dir: &Path, socket: &Path, cert_dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("helper.toml");
    std::fs::write(
        &p,
        format!(
            "agent_address = \"unix://{}\"\ncert_dir = \"{}\"\n{extra}",
            socket.display(),
            cert_dir.display()
        ),
    )
    .unwrap();
    p
}

struct Set {
    chain: Vec<Vec<u8>>,
    key_pkcs8: Vec<u8>,
    bundle: Vec<Vec<u8>>,
}

/// Parses the three files; `None` if any is partial or malformed.
fn parse_set(svid: &[u8], key: &[u8], bundle: &[u8]) -> Option<Set> {
    let chain = sigil_proto::pem::from_pem(svid).ok()?;
    let bundle = sigil_proto::pem::from_pem(bundle).ok()?;
    let key = pem::parse_many(key).ok()?;
    if chain.is_empty() || bundle.is_empty() || key.len() != 1 || key[0].tag() != "PRIVATE KEY" {
        return None;
    }
    Some(Set {
        chain,
        key_pkcs8: key[0].contents().to_vec(),
        bundle,
    })
}

fn serial(der: &[u8]) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    hex(c.raw_serial())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn key_matches(set: &Set) -> bool {
    let Ok(pair) = rcgen::KeyPair::try_from(set.key_pkcs8.as_slice()) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&set.chain[0]) else {
        return false;
    };
    pair.public_key_raw() == cert.public_key().subject_public_key.data.as_ref()
}

/// Each certificate is signed by the next; the last by a bundle CA.
fn chain_verifies(set: &Set) -> bool {
    let certs: Vec<_> = set
        .chain
        .iter()
        .map(|d| x509_parser::parse_x509_certificate(d).unwrap().1)
        .collect();
    let roots: Vec<_> = set
        .bundle
        .iter()
        .map(|d| x509_parser::parse_x509_certificate(d).unwrap().1)
        .collect();
    let linked = certs
        .windows(2)
        .all(|w| w[0].verify_signature(Some(w[1].public_key())).is_ok());
    let last = certs.last().unwrap();
    linked
        && roots
            .iter()
            .any(|r| last.verify_signature(Some(r.public_key())).is_ok())
}

/// The three files' bytes as read from one version directory.
struct RawRead {
    version: String,
    svid: Vec<u8>,
    key: Vec<u8>,
    bundle: Vec<u8>,
}

/// Reads the set through `..data`, resolved once.
fn read_via_data(cert_dir: &Path) -> std::io::Result<RawRead> {
    let version = std::fs::read_link(cert_dir.join("..data"))?;
    let v = cert_dir.join(&version);
    Ok(RawRead {
        version: version.display().to_string(),
        svid: std::fs::read(v.join("svid.pem"))?,
        key: std::fs::read(v.join("svid_key.pem"))?,
        bundle: std::fs::read(v.join("bundle.pem"))?,
    })
}

fn current_set(cert_dir: &Path) -> Option<Set> {
    let r = read_via_data(cert_dir).ok()?;
    parse_set(&r.svid, &r.key, &r.bundle)
}

/// Failures the race reader keeps (the counters count them all).
const MAX_ERRORS: usize = 20;

#[derive(Default, Debug)]
struct RaceReport {
    reads: u64,
    mismatched_pairs: u64,
    partial_files: u64,
    errors: Vec<String>,
    serials: std::collections::BTreeSet<String>,
}

/// Reads in a tight loop until `stop`: the set through `..data` (resolved
/// once per read) must always be complete and matching; each file read by
/// its own name must always be complete. Byte strings already validated
/// are not parsed again (parsing is slow in a debug build and the same
/// bytes always give the same answer), so the loop stays tight; a partial
/// read is a new byte string and is always checked.
fn race_reader(cert_dir: PathBuf, stop: Arc<AtomicBool>) -> RaceReport {
    use std::collections::HashSet;
    let mut r = RaceReport::default();
    let mut good_sets: HashSet<(Vec<u8>, Vec<u8>, Vec<u8>)> = HashSet::new();
    let mut good_files: HashSet<Vec<u8>> = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        r.reads += 1;
        r.errors.truncate(MAX_ERRORS);
        match read_via_data(&cert_dir) {
            Ok(RawRead {
                version,
                svid,
                key,
                bundle,
            }) => {
                let triple = (svid, key, bundle);
                if !good_sets.contains(&triple) {
                    match parse_set(&triple.0, &triple.1, &triple.2) {
                        Some(set) if key_matches(&set) => {
                            r.serials.insert(serial(&set.chain[0]));
                            good_sets.insert(triple);
                        }
                        Some(_) => {
                            r.mismatched_pairs += 1;
                            r.errors.push(format!("{version}: key does not match cert"));
                        }
                        None => {
                            r.partial_files += 1;
                            r.errors
                                .push(format!("{version}: partial or malformed set"));
                        }
                    }
                }
            }
            Err(e) => r.errors.push(format!("reading via ..data: {e}")),
        }
        for name in ["svid.pem", "svid_key.pem", "bundle.pem"] {
            match std::fs::read(cert_dir.join(name)) {
                Ok(b) if good_files.contains(&b) => {}
                Ok(b) => {
                    let ok = match name {
                        "svid_key.pem" => pem::parse_many(&b).is_ok_and(|v| v.len() == 1),
                        _ => sigil_proto::pem::from_pem(&b).is_ok_and(|v| !v.is_empty()),
                    };
                    if ok {
                        good_files.insert(b);
                    } else {
                        r.partial_files += 1;
                        r.errors
                            .push(format!("{name}: partial ({} bytes)", b.len()));
                    }
                }
                Err(e) => r.errors.push(format!("{name}: {e}")),
            }
        }
    }
    r
}

#[test]
fn files_rotate_reload_once_per_update_and_racing_readers_see_matching_sets() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    // Two SVIDs for this uid; the hint picks the second one.
    register(&s, &a, "spiffe://example.org/other", "other");
    let web = register(&s, &a, "spiffe://example.org/web", "web");
    let work = tempfile::tempdir().unwrap();
    let cert_dir = work.path().join("certs");
    let reloads = work.path().join("reloads.log");
    let cfg = write_config(
        work.path(),
        &a.socket,
        &cert_dir,
        &format!(
            "hint = \"web\"\ncmd = \"/bin/sh\"\n\
             cmd_args = [\"-c\", \"cksum < {}/svid.pem >> {}\"]\ncmd_timeout = \"10s\"\n",
            cert_dir.display(),
            reloads.display()
        ),
    );
    let mut helper = Helper::start(&cfg, work.path().join("helper.log"));
    let first = wait_for(Duration::from_secs(30), "first files", || {
        current_set(&cert_dir)
    });
    let log = helper.log_text();
    assert!(!log.contains("PRIVATE KEY"), "key material in the log");

    // Files: key matches cert, chain verifies to bundle.pem, the hinted ID,
    // modes, and the configured names are symlinks into ..data.
    assert!(key_matches(&first), "key does not match cert");
    assert!(
        chain_verifies(&first),
        "chain does not verify to bundle.pem"
    );
    assert_eq!(
        sigil_proto::tls::spiffe_id_from_cert(&first.chain[0])
            .unwrap()
            .to_string(),
        "spiffe://example.org/web"
    );
    assert_eq!(first.bundle, s.bundle());
    let mode = |n: &str| {
        std::fs::metadata(cert_dir.join(n))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("svid_key.pem"), 0o600);
    assert_eq!(mode("svid.pem"), 0o644);
    assert_eq!(mode("bundle.pem"), 0o644);
    for n in ["svid.pem", "svid_key.pem", "bundle.pem"] {
        assert_eq!(
            std::fs::read_link(cert_dir.join(n)).unwrap(),
            Path::new("..data").join(n)
        );
    }

    // A reader races the writes for the rest of the test.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (d, st) = (cert_dir.clone(), stop.clone());
        std::thread::spawn(move || race_reader(d, st))
    };

    // Five rotations: each entry update re-issues the SVID at once.
    let mut last = serial(&first.chain[0]);
    for i in 0..5 {
        s.cli_ok(&[
            "entry",
            "update",
            "--entry-id",
            &web,
            "--dns-name",
            &format!("web{i}.example.org"),
        ]);
        last = wait_for(Duration::from_secs(20), "rotated files", || {
            current_set(&cert_dir)
                .map(|set| serial(&set.chain[0]))
                .filter(|s| *s != last)
        });
    }
    // The last write is logged and its reload has run once its line is there.
    let written = wait_for(Duration::from_secs(15), "a reload line per write", || {
        let w = helper.written_serials();
        let n = std::fs::read_to_string(&reloads)
            .unwrap_or_default()
            .lines()
            .count();
        (w.last() == Some(&last) && n >= w.len()).then_some(w)
    });
    stop.store(true, Ordering::Relaxed);
    let report = reader.join().unwrap();
    helper.stop();

    let written_after = helper.written_serials();
    assert_eq!(written, written_after, "no write after the last rotation");
    let distinct: std::collections::BTreeSet<_> = written.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        written.len(),
        "a write without a new serial: {written:?}"
    );
    assert_eq!(written.len(), 6, "first SVID + 5 rotations: {written:?}");
    assert_eq!(written.last(), Some(&last));
    let lines: Vec<String> = std::fs::read_to_string(&reloads)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        lines.len(),
        written.len(),
        "reload command ran once per update: {lines:?}\n{}",
        helper.log_text()
    );
    let distinct_reloads: std::collections::BTreeSet<_> = lines.iter().collect();
    assert_eq!(
        distinct_reloads.len(),
        lines.len(),
        "each reload saw its own files"
    );

    // Only the current and the previous version remain.
    let versions = std::fs::read_dir(&cert_dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("..v"))
        .count();
    assert_eq!(versions, 2, "current + previous version kept");

    eprintln!(
        "race reader: {} reads, {} serials seen",
        report.reads,
        report.serials.len()
    );
    assert!(
        report.errors.is_empty(),
        "reader errors: {:?}",
        &report.errors[..report.errors.len().min(5)]
    );
    assert_eq!((report.mismatched_pairs, report.partial_files), (0, 0));
    assert!(
        report.reads > 100,
        "the reader barely ran: {}",
        report.reads
    );
    assert!(
        report.serials.len() >= 3,
        "the reader saw rotations: {:?}",
        report.serials
    );
    let log = helper.log_text();
    assert!(!log.contains("PRIVATE KEY"), "key material in the log");
}

/// One mTLS request to the consumer; returns the serial it presented.
async fn call(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(
            rustls_pki_types::ServerName::try_from("nginx.invalid").unwrap(),
            tcp,
        )
        .await
        .map_err(|e| e.to_string())?;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| serial(c))
        .ok_or("no server certificate")?;
    tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut b = [0u8; 4];
    tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    if &b != b"pong" {
        return Err(format!("bad answer {b:?}"));
    }
    Ok(presented)
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_style_consumer_reloads_on_sighup_and_serves_through_a_rotation() {
    let s = TestServer::start(ServerOptions {
        extra: "ca_ttl = \"3m\"\ndefault_x509_svid_ttl = \"20s\"\nagent_svid_ttl = \"30s\"\n"
            .into(),
        ..Default::default()
    })
    .unwrap();
    let a = TestAgent::start(&s).unwrap();
    register(&s, &a, "spiffe://example.org/nginx", "nginx");
    register(&s, &a, "spiffe://example.org/client", "client");
    let work = tempfile::tempdir().unwrap();
    let cert_dir = work.path().join("certs");
    let pid_file = work.path().join("nginx.pid");
    let addr_file = work.path().join("nginx.addr");
    let cfg = write_config(
        work.path(),
        &a.socket,
        &cert_dir,
        &format!(
            "hint = \"nginx\"\nrenew_signal = \"SIGHUP\"\npid_file_name = \"{}\"\n",
            pid_file.display()
        ),
    );
    // Like an init container: files first, then the server starts.
    let out = tokio::task::block_in_place(|| {
        sigil_agent(
            &[
                "helper",
                "--once",
                "--timeout",
                "30s",
                "--config",
                cfg.to_str().unwrap(),
            ],
            &[],
        )
    });
    assert!(out.status.success(), "--once: {}", text(&out.stderr));
    let consumer_log = work.path().join("consumer.log");
    let f = std::fs::File::create(&consumer_log).unwrap();
    let mut consumer = Command::new(env!("CARGO_BIN_EXE_sigil-test-consumer"))
        .arg(&cert_dir)
        .arg(&pid_file)
        .arg(&addr_file)
        .arg("spiffe://example.org/client")
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = wait_for(Duration::from_secs(10), "consumer address", || {
        std::fs::read_to_string(&addr_file).ok()?.parse().ok()
    });
    let mut helper = Helper::start(&cfg, work.path().join("helper.log"));

    let client = mtls::source(&a.endpoint(), "spiffe://example.org/client")
        .await
        .unwrap();
    let roots = mtls::roots(&client, "example.org").unwrap();
    let ccfg = Arc::new(
        mtls::client_config(
            Some(client),
            roots,
            SpiffeId::parse("spiffe://example.org/nginx").unwrap(),
        )
        .unwrap(),
    );
    let first = call(addr, ccfg.clone()).await.expect("first request");
    // Keep calling until the server presents a new serial, and a while
    // after; every request must succeed.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut served = vec![first.clone()];
    let mut after_rotation = 0;
    while after_rotation < 10 {
        assert!(
            Instant::now() < deadline,
            "no rotation seen by the client in 45s; served {served:?}\nhelper:\n{}\nconsumer:\n{}",
            helper.log_text(),
            std::fs::read_to_string(&consumer_log).unwrap_or_default()
        );
        let got = call(addr, ccfg.clone()).await.unwrap_or_else(|e| {
            panic!(
                "request failed during rotation: {e}\nconsumer:\n{}",
                std::fs::read_to_string(&consumer_log).unwrap_or_default()
            )
        });
        if got != first {
            after_rotation += 1;
        }
        if served.last() != Some(&got) {
            served.push(got);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The server presents the serial the helper wrote last (polled: a
    // further rotation may land between two reads).
    let mut now = String::new();
    let mut on_disk = String::new();
    for _ in 0..50 {
        on_disk = serial(&current_set(&cert_dir).unwrap().chain[0]);
        now = call(addr, ccfg.clone()).await.unwrap();
        if now == on_disk {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(now, on_disk, "the consumer serves the files on disk");
    assert_ne!(now, first, "the consumer serves the rotated SVID");
    assert!(helper.written_serials().contains(&now));
    let clog = std::fs::read_to_string(&consumer_log).unwrap();
    assert!(clog.contains("reloaded serial="), "{clog}");
    assert!(!clog.contains("reload failed"), "{clog}");
    assert!(helper.log_text().contains("signalled the consumer"));
    helper.stop();
    let _ = consumer.kill();
    let _ = consumer.wait();
}

/// Issue 21 item 3, through the real helper: after writing the files it
/// refuses to signal through a symlinked pid file, or a pid file written
/// before the process it names started (a reused pid); the process named
/// lives on. (Owner, mode, pid 1 and the process group: the unit tests in
/// `agent/src/helper/reload.rs`.)
#[test]
fn i21_3_helper_refuses_a_symlinked_or_stale_pid_file() {
    use std::os::unix::process::ExitStatusExt;
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    register(&s, &a, "spiffe://example.org/reloaded", "");
    let work = tempfile::tempdir().unwrap();
    let real = work.path().join("real.pid");
    let link = work.path().join("consumer.pid");
    let stale = work.path().join("stale.pid");
    let mut victim = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(&real, format!("{}\n", victim.id())).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    std::fs::write(&stale, format!("{}\n", victim.id())).unwrap();
    // Written a minute before the victim started, as far as the mtime says.
    let earlier = std::fs::FileTimes::new()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(60));
    let f = std::fs::File::options().write(true).open(&stale).unwrap();
    f.set_times(earlier).unwrap();
    for (pid_file, refusal) in [
        (&link, "is a symbolic link"),
        (&stale, "after the pid file was last written"),
    ] {
        let cert_dir = work.path().join("certs");
        let reload = format!(
            "renew_signal = \"SIGUSR1\"\npid_file_name = \"{}\"\n",
            pid_file.display()
        );
        let cfg = write_config(work.path(), &a.socket, &cert_dir, &reload);
        let out = sigil_agent(
            &[
                "helper",
                "--once",
                "--timeout",
                "20s",
                "--config",
                cfg.to_str().unwrap(),
            ],
            &[],
        );
        let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{log}");
        assert!(current_set(&cert_dir).is_some(), "files written: {log}");
        assert!(
            log.contains("reload failed") && log.contains(refusal),
            "expected the refusal {refusal:?}: {log}"
        );
    }
    // Not signalled: our SIGKILL is what ends it (a SIGUSR1 sent before
    // would have been its exit status).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(
        victim.wait().unwrap().signal(),
        Some(nix::sys::signal::Signal::SIGKILL as i32)
    );
}

#[test]
fn once_times_out_without_identity_then_writes_and_exits_zero() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    let work = tempfile::tempdir().unwrap();
    let cert_dir = work.path().join("certs");
    let cfg = write_config(work.path(), &a.socket, &cert_dir, "");
    let cfg_s = cfg.to_str().unwrap();
    // No entry yet: the agent answers "no identity issued" until the timeout.
    let t = Instant::now();
    let out = sigil_agent(
        &["helper", "--once", "--timeout", "2s", "--config", cfg_s],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("within 2s") && err.contains("no identity issued"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(15));
    assert!(!cert_dir.join("svid.pem").exists());

    register(&s, &a, "spiffe://example.org/init", "");
    let out = sigil_agent(
        &["helper", "--once", "--timeout", "20s", "--config", cfg_s],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let set = current_set(&cert_dir).expect("files written");
    assert!(key_matches(&set) && chain_verifies(&set));

    // The socket from SPIFFE_ENDPOINT_SOCKET when agent_address is absent.
    let cfg2 = work.path().join("env.toml");
    std::fs::write(
        &cfg2,
        format!("cert_dir = \"{}/env\"\n", work.path().display()),
    )
    .unwrap();
    let out = sigil_agent(
        &["helper", "--once", "--config", cfg2.to_str().unwrap()],
        &[("SPIFFE_ENDPOINT_SOCKET", &a.endpoint())],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(current_set(&work.path().join("env")).is_some());

    // A bad config names the key, before anything else happens.
    let bad = work.path().join("bad.toml");
    std::fs::write(
        &bad,
        "cert_dir = \"/tmp/x\"\nrenew_signal = \"SIGBOGUS\"\npid_file_name = \"/run/x.pid\"\n",
    )
    .unwrap();
    let out = sigil_agent(
        &["helper", "--once", "--config", bad.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("renew_signal"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn example_helper_config_loads() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/helper.toml");
    let c = HelperConfig::load(&path).unwrap();
    assert_eq!(c.svid_key_file_name, "svid_key.pem");
    assert_eq!(c.key_file_mode, 0o600);
    assert!(matches!(
        c.reload,
        ReloadConfig::Signal {
            signal: nix::sys::signal::Signal::SIGHUP,
            ..
        }
    ));
    let out = sigil_agent(
        &["helper", "validate", "--config", path.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("valid"));
}

#[test]
fn helper_waits_for_the_agent_and_reconnects_after_a_restart() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let mut a = TestAgent::start(&s).unwrap();
    let id = register(&s, &a, "spiffe://example.org/patient", "");
    // The agent is down when the helper starts.
    a.kill();
    let work = tempfile::tempdir().unwrap();
    let cert_dir = work.path().join("certs");
    let cfg = write_config(work.path(), &a.socket, &cert_dir, "");
    let mut helper = Helper::start(&cfg, work.path().join("helper.log"));
    wait_for(
        Duration::from_secs(10),
        "a failed connection attempt",
        || {
            helper
                .log_text()
                .contains("Workload API stream failed; retrying")
                .then_some(())
        },
    );
    assert!(!cert_dir.join("..data").exists());
    a.spawn(None).unwrap();
    let first = wait_for(
        Duration::from_secs(30),
        "files once the agent is up",
        || current_set(&cert_dir).map(|set| serial(&set.chain[0])),
    );
    // The agent restarts under the open stream; the helper reconnects and
    // keeps following updates.
    a.kill();
    a.spawn(None).unwrap();
    s.cli_ok(&[
        "entry",
        "update",
        "--entry-id",
        &id,
        "--dns-name",
        "patient.example.org",
    ]);
    wait_for(Duration::from_secs(30), "files after the restart", || {
        current_set(&cert_dir)
            .map(|set| serial(&set.chain[0]))
            .filter(|s| *s != first)
    });
    helper.stop();
}
