//! A throwaway PostgreSQL cluster for the tests of the PostgreSQL store:
//! Debian's `postgresql` binaries (`/usr/lib/postgresql/<version>/bin`, the
//! newest version found, else `initdb` on `PATH`), `initdb` into a temp dir
//! and `postgres` on a free loopback port (no Unix socket), run as the
//! `postgres` user when the tests run as root (PostgreSQL refuses root; the
//! temp dir is made traversable for that user). One cluster per test
//! process, started on first use; each test takes its own database from
//! [`PgCluster::create_database`].
//!
//! Missing binaries (or a `postgres` user, as root) skip the test with a
//! message naming what is missing, except with `CI=true`, where they fail
//! it ([`crate::interop::available`]). `.ci/run` installs the package.
//!
//! The server is a child of a thread that lives as long as the test
//! process, with a parent-death signal (SIGQUIT: immediate shutdown), so it
//! goes when the process does, also when a test panics. Its readiness is
//! the line it logs ("ready to accept connections"), not a poll. Data dirs
//! of test processes that are gone are removed at the next start.
//!
//! [`PgCluster::stop`] and [`PgCluster::start_again`] restart the cluster
//! on the same port (an outage); they affect every test of the process,
//! so a test that uses them has a test binary of its own.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::unistd::{Gid, Uid, User};
use sigil_server::config::PostgresConfig;

/// How long `initdb` plus the server's start may take.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// The one role that must give a password (SCRAM); every other role is
/// trusted on loopback.
pub const PASSWORD_ROLE: &str = "sigil_pw";
/// Prefix of the cluster temp dirs (followed by the test process's pid).
const DIR_PREFIX: &str = "sigil-pg-";

/// A running throwaway cluster.
#[derive(Debug)]
pub struct PgCluster {
    pub bin_dir: PathBuf,
    pub port: u16,
    /// The temp dir (data dir, log).
    pub dir: PathBuf,
    /// Asks the keeper to start the server again; it answers on the sender.
    restart: mpsc::Sender<mpsc::Sender<Result<(), String>>>,
    /// One message each time the server process exits.
    exited: Mutex<mpsc::Receiver<()>>,
}

/// The cluster of this test process, started on first use; `None` (after
/// printing why) when PostgreSQL is not installed, outside CI.
pub fn cluster() -> Option<&'static PgCluster> {
    static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();
    let r = CLUSTER.get_or_init(|| start().map_err(|e| format!("{e:#}")));
    match r {
        Ok(c) => Some(c),
        Err(e) if crate::interop::in_ci() => {
            panic!("PostgreSQL is required in CI (CI=true) but is not available: {e}")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: PostgreSQL is not available (CI=true makes this a failure; \
                 apt-get install postgresql): {e}"
            );
            None
        }
    }
}

impl PgCluster {
    /// A new, empty database; its name.
    pub fn create_database(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "sigil_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("creating database {name}: {e:#}"));
        name
    }

    /// Runs one SQL command with `psql` on database `db`; its output.
    pub fn psql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let out = Command::new(self.bin_dir.join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!(
                "psql -c {sql:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The libpq connection string of database `db` (user `postgres`, no
    /// password: the cluster trusts loopback).
    pub fn connection_string(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    /// Stops the server (fast shutdown: sessions are terminated) and waits
    /// until its process has exited.
    pub fn stop(&self) {
        let pid_file = self.dir.join("data").join("postmaster.pid");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", pid_file.display()))
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid in {}", pid_file.display()));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap_or_else(|e| panic!("signalling PostgreSQL (pid {pid}): {e}"));
        self.exited
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .recv_timeout(START_TIMEOUT)
            .unwrap_or_else(|e| panic!("PostgreSQL (pid {pid}) did not exit: {e}"));
    }

    /// Starts the server again after [`PgCluster::stop`], on the same
    /// port; returns once it accepts connections.
    pub fn start_again(&self) {
        let (tx, rx) = mpsc::channel();
        self.restart
            .send(tx)
            .expect("the PostgreSQL keeper thread is gone");
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("PostgreSQL did not start again: {e}"),
            Err(_) => panic!("PostgreSQL did not report ready within {START_TIMEOUT:?}"),
        }
    }

    /// A `[store.postgres]` for database `db` with `max_connections`.
    pub fn store_config(&self, db: &str, max_connections: usize) -> PostgresConfig {
        PostgresConfig {
            connection_string: self.connection_string(db),
            password_file: None,
            ca_file: None,
            max_connections,
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// Where the binaries are: the newest `/usr/lib/postgresql/*/bin` with
/// `initdb`, `postgres` and `psql`, else `initdb`'s directory on `PATH`.
pub fn bin_dir() -> Result<PathBuf, String> {
    let has_all = |d: &Path| {
        ["initdb", "postgres", "psql"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_all(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Ok(d);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|d| has_all(d))
        .ok_or_else(|| {
            "no initdb, postgres and psql under /usr/lib/postgresql/*/bin or on PATH \
             (Debian package postgresql)"
                .to_string()
        })
}

/// The user the server runs as: `postgres` when we are root, else us.
fn run_as() -> anyhow::Result<Option<(Uid, Gid)>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name("postgres")
        .context("looking up user postgres")?
        .context("running as root, and there is no postgres user to run PostgreSQL as")?;
    Ok(Some((user.uid, user.gid)))
}

fn start() -> anyhow::Result<PgCluster> {
    let bin_dir = bin_dir().map_err(anyhow::Error::msg)?;
    let owner = run_as()?;
    remove_stale_dirs();
    let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // The temp dir must be traversable by the postgres user.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let data = dir.join("data");
    std::fs::create_dir(&data)?;
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(&data, Some(uid), Some(gid)).context("chown data dir to postgres")?;
    }
    let mut initdb = Command::new(bin_dir.join("initdb"));
    initdb
        .args(["-D"])
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ])
        .args(["--no-sync"])
        .current_dir(&dir)
        .stdin(Stdio::null());
    as_owner(&mut initdb, owner, false);
    let out = initdb.output().context("running initdb")?;
    if !out.status.success() {
        bail!(
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Loopback only; trusted except for the role that tests passwords.
    std::fs::write(
        data.join("pg_hba.conf"),
        format!(
            "host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n"
        ),
    )
    .context("writing pg_hba.conf")?;
    let port = free_port()?;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let (restart, restarts) = mpsc::channel();
    let (exited_tx, exited) = mpsc::channel();
    let (bin, data2, dir2) = (bin_dir.clone(), data.clone(), dir.clone());
    // The keeper thread: spawns the server (again on each restart request)
    // and lives until the process ends (the server's parent-death signal
    // is tied to this thread).
    std::thread::Builder::new()
        .name("pg-keeper".into())
        .spawn(move || {
            let mut ready = ready_tx;
            loop {
                keep(&bin, &data2, &dir2, port, owner, ready);
                let _ = exited_tx.send(());
                match restarts.recv() {
                    Ok(next) => ready = next,
                    Err(_) => return,
                }
            }
        })
        .context("starting the PostgreSQL keeper thread")?;
    match ready_rx.recv_timeout(START_TIMEOUT) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("PostgreSQL did not start: {e}"),
        Err(_) => bail!("PostgreSQL did not report ready within {START_TIMEOUT:?}"),
    }
    Ok(PgCluster {
        bin_dir,
        port,
        dir,
        restart,
        exited: Mutex::new(exited),
    })
}

/// Spawns the server and reports readiness from its log; never returns
/// while the server runs.
fn keep(
    bin: &Path,
    data: &Path,
    dir: &Path,
    port: u16,
    owner: Option<(Uid, Gid)>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.arg("-D").arg(data).args(["-p", &port.to_string()]);
    for setting in [
        "listen_addresses=127.0.0.1",
        "unix_socket_directories=",
        "max_connections=400",
        "fsync=off",
        "logging_collector=off",
    ] {
        cmd.args(["-c", setting]);
    }
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_owner(&mut cmd, owner, true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(format!("spawning postgres: {e}")));
            return;
        }
    };
    let log_path = dir.join("postgres.log");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .ok();
    let mut seen = Vec::new();
    let mut reported = false;
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(f) = log.as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
            if !reported {
                if line.contains("ready to accept connections") {
                    let _ = ready.send(Ok(()));
                    reported = true;
                } else {
                    seen.push(line);
                }
            }
        }
    }
    let status = child.wait();
    if !reported {
        let _ = ready.send(Err(format!(
            "postgres exited ({status:?}) before it was ready: {}",
            seen.join(" | ")
        )));
    }
}

/// Runs `cmd` as `owner` (set in the child before exec); `die_with_parent`
/// also gives it SIGQUIT when the spawning thread ends.
fn as_owner(cmd: &mut Command, owner: Option<(Uid, Gid)>, die_with_parent: bool) {
    // SAFETY: the closure only makes async-signal-safe system calls
    // (setgroups, setgid, setuid, prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = owner {
                nix::unistd::setgroups(&[gid])?;
                nix::unistd::setgid(gid)?;
                nix::unistd::setuid(uid)?;
            }
            if die_with_parent {
                // After setuid, which clears the parent-death signal.
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGQUIT)?;
            }
            Ok(())
        });
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Removes cluster dirs left by test processes that are gone.
fn remove_stale_dirs() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
