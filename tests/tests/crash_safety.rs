//! Crash safety of the server: a few concurrent writers create entries
//! through the admin API while the server is killed with SIGKILL at random
//! moments and restarted each time. Afterwards every acknowledged entry is
//! there exactly once with the content that was sent, nothing was
//! duplicated or invented, the store opened after every kill (within a
//! bound), and the CA is the same one, in the bundle, signing SVIDs that
//! chain to the bundle.
//!
//! 20 kills by default; 100 with `SIGIL_LONG_TESTS=1` (or run the ignored
//! `..._long` twin). The random delays come from a seed that is printed;
//! `SIGIL_CRASH_SEED=<n>` replays one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sigil_proto::admin_api as pb;
use sigil_tests::{ServerOptions, TestServer, pem_certs};

/// Writers creating entries at the same time.
const WRITERS: usize = 3;
/// A restarted server must answer its healthcheck within this.
const RESTART_BOUND: Duration = Duration::from_secs(15);

/// xorshift64*: small, seedable, good enough to spread kill times.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What one writer asked for, and what it was told.
#[derive(Debug, Clone)]
struct Attempt {
    spiffe_id: String,
    parent_id: String,
    selectors: BTreeSet<(String, String)>,
    ttl: i64,
    /// The entry id, when the create was acknowledged.
    acked: Option<String>,
}

fn selectors_of(e: &pb::Entry) -> BTreeSet<(String, String)> {
    e.selectors
        .iter()
        .map(|s| (s.r#type.clone(), s.value.clone()))
        .collect()
}

/// One writer: batches of 1–3 new entries (fresh SPIFFE IDs, never retried,
/// so a duplicate can only come from the server) until `stop`.
async fn writer(
    w: usize,
    socket: std::path::PathBuf,
    seed: u64,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Vec<Attempt>>>,
    acks: Arc<AtomicU64>,
) {
    let mut rng = Rng::new(seed ^ (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(Ok(mut client)) = tokio::time::timeout(
            Duration::from_secs(2),
            sigil_server::admin::client::connect(&socket),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            let batch = 1 + rng.below(3) as usize;
            let attempts: Vec<Attempt> = (0..batch)
                .map(|_| {
                    n += 1;
                    let k = 1 + rng.below(3);
                    let selectors: BTreeSet<(String, String)> = (0..k)
                        .map(|i| ("unix".to_string(), format!("uid:{}", w as u64 * 1000 + i)))
                        .chain([("unix".to_string(), format!("path:/w{w}/{n}"))])
                        .collect();
                    Attempt {
                        spiffe_id: format!("spiffe://example.org/crash/w{w}/{n}"),
                        parent_id: format!("spiffe://example.org/parent/{}", rng.below(4)),
                        selectors,
                        ttl: 60 + rng.below(3000) as i64,
                        acked: None,
                    }
                })
                .collect();
            let req = pb::CreateEntriesRequest {
                entries: attempts
                    .iter()
                    .map(|a| pb::Entry {
                        spiffe_id: a.spiffe_id.clone(),
                        parent_id: a.parent_id.clone(),
                        selectors: a
                            .selectors
                            .iter()
                            .map(|(t, v)| pb::Selector {
                                r#type: t.clone(),
                                value: v.clone(),
                            })
                            .collect(),
                        x509_svid_ttl_seconds: a.ttl,
                        ..Default::default()
                    })
                    .collect(),
                allow_unknown_selectors: false,
            };
            let r = tokio::time::timeout(Duration::from_secs(10), client.create_entries(req)).await;
            let mut attempts = attempts;
            let mut broken = true;
            if let Ok(Ok(resp)) = r {
                broken = false;
                let results = resp.into_inner().results;
                assert_eq!(results.len(), attempts.len(), "one result per entry");
                for (a, res) in attempts.iter_mut().zip(results) {
                    match res.result {
                        Some(pb::entry_result::Result::Entry(e)) => {
                            // The answer itself must describe what was sent.
                            assert_eq!(e.spiffe_id, a.spiffe_id);
                            assert_eq!(e.parent_id, a.parent_id);
                            assert_eq!(selectors_of(&e), a.selectors);
                            assert_eq!(e.x509_svid_ttl_seconds, a.ttl);
                            a.acked = Some(e.id);
                            acks.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("valid entry {} refused: {other:?}", a.spiffe_id),
                    }
                }
            }
            ledger.lock().unwrap().extend(attempts);
            if broken {
                // The server went away mid-call: reconnect.
                break;
            }
        }
    }
}

fn cli_json(s: &TestServer, args: &[&str]) -> Value {
    s.cli_json(args)
}

fn norm_serial(s: &str) -> String {
    s.trim()
        .trim_start_matches("0x")
        .to_ascii_lowercase()
        .replace(':', "")
        .trim_start_matches('0')
        .to_string()
}

fn cert_serial(der: &[u8]) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(der).expect("certificate parses");
    norm_serial(&hex(c.raw_serial()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The active slot of `ca show`, and the whole view.
fn active_slot(s: &TestServer) -> (Value, Value) {
    let v = cli_json(s, &["ca", "show"]);
    let active: Vec<&Value> = v["slots"]
        .as_array()
        .unwrap_or_else(|| panic!("no slots in {v:#}"))
        .iter()
        .filter(|x| x["state"] == "active")
        .collect();
    assert_eq!(active.len(), 1, "exactly one active CA: {v:#}");
    (active[0].clone(), v)
}

/// The CA is whole: one active slot whose certificate is in the bundle and
/// whose key file exists (0600); a freshly minted SVID chains to the bundle.
fn assert_ca_consistent(s: &TestServer, want_serial: &str, when: &str) {
    use std::os::unix::fs::PermissionsExt;
    let (active, view) = active_slot(s);
    let serial = norm_serial(active["serial"].as_str().expect("serial"));
    assert_eq!(
        serial, want_serial,
        "{when}: the active CA changed: {view:#}"
    );
    let bundle = s.bundle();
    let ca = bundle
        .iter()
        .find(|c| cert_serial(c) == serial)
        .unwrap_or_else(|| panic!("{when}: active CA {serial} is not in the bundle"));
    let key = s.data_dir.join("keys").join(format!(
        "{}.pk8",
        active["key_id"].as_str().expect("key_id")
    ));
    let mode = std::fs::metadata(&key)
        .unwrap_or_else(|e| panic!("{when}: active CA key {}: {e}", key.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{when}: key mode {mode:o}");

    let dir = tempfile::tempdir().unwrap();
    s.cli_ok(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://example.org/after-crash",
        "--write",
        dir.path().to_str().unwrap(),
    ]);
    let chain = pem_certs(&std::fs::read_to_string(dir.path().join("svid.pem")).unwrap());
    let leaf = sigil_proto::svid_profile::check_leaf(&chain[0]).expect("minted leaf profile");
    assert_eq!(leaf.spiffe_id.as_str(), "spiffe://example.org/after-crash");
    let (_, l) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let (_, c) = x509_parser::parse_x509_certificate(ca).unwrap();
    l.verify_signature(Some(c.public_key()))
        .unwrap_or_else(|e| panic!("{when}: minted SVID does not verify with the active CA: {e}"));
    // And through a real chain validation against the bundle.
    let roots = sigil_proto::tls::TrustRoots::new(bundle.clone()).expect("bundle roots");
    let verifier = sigil_proto::tls::SpiffeClientVerifier::new(roots, Arc::new(|_| true));
    use rustls::server::danger::ClientCertVerifier;
    let leaf_der = rustls_pki_types::CertificateDer::from(chain[0].clone());
    let inter: Vec<_> = chain[1..]
        .iter()
        .map(|c| rustls_pki_types::CertificateDer::from(c.clone()))
        .collect();
    verifier
        .verify_client_cert(&leaf_der, &inter, rustls_pki_types::UnixTime::now())
        .unwrap_or_else(|e| panic!("{when}: minted SVID does not chain to the bundle: {e}"));
}

async fn list_all(socket: &std::path::Path) -> Vec<pb::Entry> {
    let mut c = sigil_server::admin::client::connect(socket).await.unwrap();
    let mut st = c
        .list_entries(pb::ListEntriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut out = vec![];
    while let Some(e) = tokio::time::timeout(Duration::from_secs(30), st.message())
        .await
        .expect("list bounded")
        .unwrap()
    {
        out.push(e);
    }
    out
}

fn seed() -> u64 {
    match std::env::var("SIGIL_CRASH_SEED") {
        Ok(s) => s.parse().expect("SIGIL_CRASH_SEED must be a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

async fn kill_while_writing(kills: usize) {
    let seed = seed();
    println!("crash_safety: seed {seed} (replay with SIGIL_CRASH_SEED={seed}), {kills} kills");
    let s = TestServer::start(ServerOptions {
        bundle_endpoint: false,
        ..Default::default()
    })
    .unwrap();
    let (active0, _) = active_slot(&s);
    let serial0 = norm_serial(active0["serial"].as_str().unwrap());
    assert_ca_consistent(&s, &serial0, "before the first kill");

    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Mutex::new(Vec::new()));
    let acks = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            tokio::spawn(writer(
                w,
                s.socket.clone(),
                seed,
                stop.clone(),
                ledger.clone(),
                acks.clone(),
            ))
        })
        .collect();

    // The kill loop runs on a blocking thread: it spawns and waits.
    let acks2 = acks.clone();
    let (s, restarts) = tokio::task::spawn_blocking(move || {
        let mut s = s;
        let mut rng = Rng::new(seed);
        let mut restarts = Vec::with_capacity(kills);
        for k in 0..=kills {
            // Wait for writes to flow again after the restart, then a random
            // delay: sometimes at once, mostly in the middle of writes.
            let before = acks2.load(Ordering::Relaxed);
            let deadline = Instant::now() + Duration::from_secs(20);
            while acks2.load(Ordering::Relaxed) == before {
                assert!(
                    Instant::now() < deadline,
                    "no write acknowledged for 20 s after restart {k}: {}",
                    s.log_text()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            if k == kills {
                break;
            }
            let delay = match rng.below(4) {
                0 => rng.below(20),
                _ => 20 + rng.below(600),
            };
            std::thread::sleep(Duration::from_millis(delay));
            s.kill();
            let t = Instant::now();
            s.spawn()
                .unwrap_or_else(|e| panic!("restart {} after kill failed: {e:#}", k + 1));
            restarts.push(t.elapsed());
        }
        (s, restarts)
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .expect("writer stops")
            .expect("writer did not panic");
    }
    // One last kill after the final writes, so they are crash-tested too.
    let mut s = s;
    s.kill();
    s.spawn().unwrap();

    let max_restart = restarts.iter().max().copied().unwrap_or_default();
    let attempts = ledger.lock().unwrap().clone();
    let acked: Vec<&Attempt> = attempts.iter().filter(|a| a.acked.is_some()).collect();
    let stored = list_all(&s.socket).await;
    println!(
        "crash_safety: {} kills, {} creates attempted, {} acknowledged, {} stored, \
         slowest restart {:?}",
        restarts.len(),
        attempts.len(),
        acked.len(),
        stored.len(),
        max_restart
    );
    assert_eq!(restarts.len(), kills);
    assert!(
        max_restart < RESTART_BOUND,
        "a restart took {max_restart:?} (bound {RESTART_BOUND:?})"
    );
    assert!(
        acked.len() > kills,
        "too few writes acknowledged to mean anything"
    );

    // No duplicates; nothing invented.
    let mut by_id: BTreeMap<&str, Vec<&pb::Entry>> = BTreeMap::new();
    for e in &stored {
        by_id.entry(e.spiffe_id.as_str()).or_default().push(e);
    }
    let dups: Vec<_> = by_id.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(dups.is_empty(), "duplicated entries: {dups:#?}");
    let asked: BTreeMap<&str, &Attempt> =
        attempts.iter().map(|a| (a.spiffe_id.as_str(), a)).collect();
    for e in &stored {
        let a = asked
            .get(e.spiffe_id.as_str())
            .unwrap_or_else(|| panic!("stored entry nobody created: {e:?}"));
        // Also the unacknowledged ones that made it are whole.
        assert_eq!(e.parent_id, a.parent_id, "{e:?}");
        assert_eq!(selectors_of(e), a.selectors, "{e:?}");
        assert_eq!(e.x509_svid_ttl_seconds, a.ttl, "{e:?}");
    }
    // Every acknowledged create is there, with the id that was returned.
    let mut lost = vec![];
    for a in &acked {
        match by_id.get(a.spiffe_id.as_str()) {
            Some(v) => assert_eq!(Some(&v[0].id), a.acked.as_ref(), "{}", a.spiffe_id),
            None => lost.push(a.spiffe_id.clone()),
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged entries lost (seed {seed}): {lost:?}",
        lost.len()
    );
    // The count agrees with the list.
    let count = s.cli_json(&["entry", "count"])["count"].as_u64().unwrap();
    assert_eq!(count as usize, stored.len());

    assert_ca_consistent(&s, &serial0, "after the kills");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_entries_survive_random_sigkills() {
    let long = std::env::var("SIGIL_LONG_TESTS").is_ok_and(|v| v == "1");
    kill_while_writing(if long { 100 } else { 20 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long: 100 kills; run with --ignored"]
async fn acknowledged_entries_survive_random_sigkills_long() {
    kill_while_writing(100).await;
}
