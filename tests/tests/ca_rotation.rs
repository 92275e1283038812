//! CA rotation end to end (issue 5, DESIGN §3), with the real binaries:
//! a prepared CA is published everywhere before it signs anything; the CA
//! journal survives `kill -9` right after prepare and right after activate;
//! `ca show` prints both slots and the timeline; forced operations are
//! checked; SVID TTLs above `ca_ttl / 6` are refused with both numbers; and a
//! soak keeps two workloads doing rustls mTLS handshakes through several CA
//! rotations and a forced taint with zero failed handshakes.
//!
//! When a test fails, the tails of the server and agent logs are printed and
//! the full logs are copied to a directory that is kept (its path is printed).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sigil_proto::{TrustDomain, bundle, svid_profile};
use sigil_tests::{ServerOptions, TestAgent, TestServer, mtls, sigil_server, text};
use spiffe::WorkloadApiClient;

const TD: &str = "example.org";

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

fn me() -> String {
    format!("unix:uid:{}", uid())
}

fn td() -> TrustDomain {
    TrustDomain::parse(TD).unwrap()
}

// ---------------------------------------------------------------------------
// Diagnostics: on a panic, print the log tails and keep the full logs.

/// Last `n` lines of `s`.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Prints the tails of the server and agent logs if the test panics, and
/// copies the full logs to a kept directory.
struct DumpLogsOnPanic {
    test: &'static str,
    server_log: PathBuf,
    agent_log: Option<PathBuf>,
}

impl DumpLogsOnPanic {
    fn new(test: &'static str, s: &TestServer, a: Option<&TestAgent>) -> Self {
        DumpLogsOnPanic {
            test,
            server_log: s.log.clone(),
            agent_log: a.map(|a| a.log.clone()),
        }
    }
}

impl Drop for DumpLogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let keep = std::env::temp_dir().join(format!(
            "sigil-ca-rotation-{}-{}",
            self.test,
            std::process::id()
        ));
        let _ = std::fs::create_dir_all(&keep);
        let mut logs = vec![("server", self.server_log.clone())];
        if let Some(a) = &self.agent_log {
            logs.push(("agent", a.clone()));
        }
        for (who, path) in logs {
            let body = std::fs::read_to_string(&path).unwrap_or_default();
            let kept = keep.join(format!("{who}.log"));
            let _ = std::fs::write(&kept, &body);
            eprintln!(
                "==== {}: {who} log, last 60 lines (full log kept in {}) ====\n{}\n==== end of {who} log ====",
                self.test,
                kept.display(),
                tail(&body, 60)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Log parsing (text format, with or without ANSI colours).

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lines of `log` that carry the message `msg`.
fn log_lines(log: &str, msg: &str) -> Vec<String> {
    strip_ansi(log)
        .lines()
        .filter(|l| l.contains(msg))
        .map(str::to_string)
        .collect()
}

/// The value of field `key` in a text log line (quotes removed).
fn field(line: &str, key: &str) -> Option<String> {
    let pat = format!("{key}=");
    let mut from = 0;
    while let Some(i) = line[from..].find(&pat) {
        let at = from + i;
        let standalone = at == 0 || line.as_bytes()[at - 1] == b' ';
        if standalone {
            let rest = &line[at + pat.len()..];
            let v = if let Some(q) = rest.strip_prefix('"') {
                q.split('"').next().unwrap_or_default()
            } else {
                rest.split_whitespace().next().unwrap_or_default()
            };
            return Some(v.to_string());
        }
        from = at + pat.len();
    }
    None
}

/// The number of "SVID issued" agent log lines with `reason=<reason>`.
fn issued_with_reason(agent_log: &str, reason: &str) -> usize {
    log_lines(agent_log, "SVID issued")
        .iter()
        .filter(|l| field(l, "reason").as_deref() == Some(reason))
        .count()
}

/// Asserts that the server logged `msg` with `slot=<slot>` and the serial.
fn assert_ca_logged(server_log: &str, msg: &str, slot: &str, serial: &str) {
    let lines = log_lines(server_log, msg);
    assert!(
        lines.iter().any(|l| {
            field(l, "slot").as_deref() == Some(slot)
                && field(l, "serial").is_some_and(|s| norm_serial(&s) == norm_serial(serial))
        }),
        "no {msg:?} log line with slot={slot} serial={serial}; lines with the message: {lines:#?}"
    );
}

// ---------------------------------------------------------------------------
// Certificates.

/// Lowercase hex without leading zeros, so `00ab…` and `ab…` compare equal.
fn norm_serial(s: &str) -> String {
    let s = s.trim().trim_start_matches("0x").to_ascii_lowercase();
    let s = s.replace(':', "");
    s.trim_start_matches('0').to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cert_serial(der: &[u8]) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(der).expect("certificate parses");
    norm_serial(&hex(c.raw_serial()))
}

fn find_by_serial(certs: &[Vec<u8>], serial: &str) -> Option<Vec<u8>> {
    let want = norm_serial(serial);
    certs.iter().find(|c| cert_serial(c) == want).cloned()
}

fn serials(certs: &[Vec<u8>]) -> BTreeSet<String> {
    certs.iter().map(|c| cert_serial(c)).collect()
}

/// The subjectKeyIdentifier of a CA certificate (checked against the
/// signing-certificate profile).
fn ski(ca: &[u8]) -> Vec<u8> {
    svid_profile::check_signing_cert(ca, &td())
        .expect("CA certificate profile")
        .ski
}

/// The authorityKeyIdentifier of an SVID leaf.
fn aki(leaf: &[u8]) -> Vec<u8> {
    svid_profile::check_leaf(leaf)
        .expect("leaf profile")
        .aki
        .expect("leaf has an AKI")
}

/// True when `ca` signed `leaf`: AKI == SKI, and the signature verifies with
/// the CA's public key (the two must agree).
fn signed_by(leaf: &[u8], ca: &[u8]) -> bool {
    let (_, l) = x509_parser::parse_x509_certificate(leaf).unwrap();
    let (_, c) = x509_parser::parse_x509_certificate(ca).unwrap();
    let by_sig = l.verify_signature(Some(c.public_key())).is_ok();
    let by_id = aki(leaf) == ski(ca);
    assert_eq!(
        by_sig, by_id,
        "AKI/SKI match ({by_id}) and signature check ({by_sig}) disagree"
    );
    by_sig
}

// ---------------------------------------------------------------------------
// `ca show` views.

fn ca_show(s: &TestServer) -> Value {
    s.cli_json(&["ca", "show"])
}

fn slots(v: &Value) -> &Vec<Value> {
    v["slots"]
        .as_array()
        .unwrap_or_else(|| panic!("no slots array in {v:#}"))
}

fn slots_in<'a>(v: &'a Value, state: &str) -> Vec<&'a Value> {
    slots(v).iter().filter(|s| s["state"] == state).collect()
}

/// The only slot in `state` (panics if there are none or several).
fn only<'a>(v: &'a Value, state: &str) -> &'a Value {
    let found = slots_in(v, state);
    assert_eq!(found.len(), 1, "expected exactly one {state} slot in {v:#}");
    found[0]
}

fn slot_named<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    slots(v).iter().find(|s| s["slot"] == name)
}

fn serial_of(slot: &Value) -> String {
    slot["serial"].as_str().expect("serial").to_string()
}

fn name_of(slot: &Value) -> String {
    slot["slot"].as_str().expect("slot name").to_string()
}

fn seq(v: &Value) -> u64 {
    v["bundle_sequence"]
        .as_u64()
        .unwrap_or_else(|| panic!("bundle_sequence in {v:#}"))
}

fn other_slot(name: &str) -> &'static str {
    if name == "a" { "b" } else { "a" }
}

/// Files in `<data_dir>/keys`.
fn key_files(s: &TestServer) -> BTreeSet<String> {
    std::fs::read_dir(s.data_dir.join("keys"))
        .expect("keys dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// `keys/` holds exactly one 0600 key file per slot in the journal (the
/// JWT key slots of `ca show --kind jwt` included, issue 15).
fn assert_keys_match_journal(s: &TestServer, view: &Value, when: &str) {
    use std::os::unix::fs::PermissionsExt;
    let jwt = s.cli_json(&["ca", "show", "--kind", "jwt"]);
    let want: BTreeSet<String> = slots(view)
        .iter()
        .chain(slots(&jwt).iter())
        .map(|s| format!("{}.pk8", s["key_id"].as_str().expect("key_id")))
        .collect();
    assert_eq!(
        key_files(s),
        want,
        "{when}: keys/ must hold exactly the journal's keys (no orphans, none missing); journal: {view:#}"
    );
    for f in &want {
        let mode = std::fs::metadata(s.data_dir.join("keys").join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{when}: key file {f} mode {mode:o}");
    }
}

/// Runs an admin command off the async workers (for the soak's control loop).
async fn cli_async(socket: &Path, args: &[&str]) -> Output {
    let sock = socket.display().to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        sigil_server(&a, &[("SIGIL_ADMIN_SOCKET", &sock)])
    })
    .await
    .unwrap()
}

async fn ca_show_async(socket: &Path) -> Value {
    let out = cli_async(socket, &["ca", "show", "--output", "json"]).await;
    assert!(
        out.status.success(),
        "ca show failed: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ca show JSON")
}

/// A failed admin command: exit code 1 and a one-line error; returns it.
fn assert_refused(out: &Output, what: &str) -> String {
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what} must exit 1; stdout: {} stderr: {err}",
        text(&out.stdout)
    );
    assert_eq!(
        err.trim().lines().count(),
        1,
        "{what}: the error must be one line: {err:?}"
    );
    err
}

// ---------------------------------------------------------------------------
// Agent and workloads.

fn register(s: &TestServer, a: &TestAgent, id: &str) -> String {
    let me = me();
    s.cli_json(&[
        "entry",
        "create",
        "--spiffe-id",
        id,
        "--parent-id",
        &a.agent_id,
        "--selector",
        &me,
    ])["entries"][0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

type Svids = Vec<Arc<spiffe::X509Svid>>;

/// Fetches with the `spiffe` crate until `pred` holds (bounded).
async fn fetch_until(a: &TestAgent, limit: Duration, pred: impl Fn(&Svids) -> bool) -> Svids {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last: String;
    loop {
        match WorkloadApiClient::connect_to(a.endpoint()).await {
            Ok(c) => match c.fetch_all_x509_svids().await {
                Ok(v) => {
                    let v: Svids = v.into_iter().map(Arc::new).collect();
                    if pred(&v) {
                        return v;
                    }
                    last = format!("{} SVIDs", v.len());
                }
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "workload condition not met in {limit:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn svid_for<'a>(v: &'a Svids, id: &str) -> Option<&'a Arc<spiffe::X509Svid>> {
    v.iter().find(|s| s.spiffe_id().to_string() == id)
}

/// The trust domain's X.509 authorities over the Workload API
/// (`FetchX509Bundles`, a new connection each time).
async fn workload_bundle(a: &TestAgent) -> Result<Vec<Vec<u8>>, String> {
    let c = WorkloadApiClient::connect_to(a.endpoint())
        .await
        .map_err(|e| e.to_string())?;
    let set = c.fetch_x509_bundles().await.map_err(|e| e.to_string())?;
    let td = spiffe::TrustDomain::new(TD).unwrap();
    Ok(set
        .get(&td)
        .map(|b| {
            b.authorities()
                .iter()
                .map(|c| c.as_bytes().to_vec())
                .collect()
        })
        .unwrap_or_default())
}

/// The bundle endpoint's JWK Set, decoded. The endpoint presents the
/// server's SVID; `roots` are the trust anchors to check it with.
async fn endpoint_bundle(
    s: &TestServer,
    roots: &[Vec<u8>],
) -> Result<bundle::SpiffeBundle, String> {
    let body = sigil_tests::bundle_endpoint::get_jwks_trusting(s, roots.to_vec()).await?;
    let decoded = bundle::decode(&td(), body.as_bytes()).map_err(|e| e.to_string())?;
    // Sigil's own endpoint publishes only keys a consumer can use: a skipped
    // key is a bug, not a state to poll through.
    assert_eq!(decoded.skipped, vec![], "bundle endpoint published {body}");
    Ok(decoded.bundle)
}

/// Polls `probe` every 200 ms until it returns `Some`, or panics after
/// `limit`. Returns the value and the instant it was first seen.
async fn poll_until<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> (T, Instant)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + limit;
    let mut last: String;
    loop {
        match probe().await {
            Ok(Some(v)) => return (v, Instant::now()),
            Ok(None) => last = "not yet".into(),
            Err(e) => last = e,
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within {limit:?} (last: {last})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every distinct leaf an `X509Source` served, with the instant it was
/// first seen.
#[derive(Default)]
struct SeenSvids {
    leaves: Vec<(Instant, Vec<u8>)>,
}

impl SeenSvids {
    fn record(&mut self, leaf: &[u8]) {
        if !self.leaves.iter().any(|(_, l)| l == leaf) {
            self.leaves.push((Instant::now(), leaf.to_vec()));
        }
    }
}

/// Records every leaf `source` serves, until the task is aborted.
fn watch_svids(
    source: Arc<spiffe::X509Source>,
) -> (Arc<Mutex<SeenSvids>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(SeenSvids::default()));
    let rec = seen.clone();
    let task = tokio::spawn(async move {
        let mut updates = source.updated();
        loop {
            if let Ok(svid) = source.svid() {
                rec.lock().unwrap().record(svid.leaf().as_bytes());
            }
            if updates.changed().await.is_err() {
                return;
            }
        }
    });
    (seen, task)
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

// ---------------------------------------------------------------------------
// 1. Publication before signing.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prepared_ca_is_published_before_it_signs() {
    // Short TTLs so the workload's SVID renews (at half life) within seconds
    // of the activation; the automatic prepare (at 1 min) does not come
    // before the forced one.
    let s = TestServer::start(ServerOptions {
        extra: "ca_ttl = \"2m\"\ndefault_x509_svid_ttl = \"20s\"\nagent_svid_ttl = \"20s\"\n"
            .into(),
        ..Default::default()
    })
    .unwrap();
    let a = TestAgent::start(&s).unwrap();
    let _logs = DumpLogsOnPanic::new("prepared_ca_is_published_before_it_signs", &s, Some(&a));
    const WL: &str = "spiffe://example.org/published";
    register(&s, &a, WL);
    fetch_until(&a, Duration::from_secs(20), |v| v.len() == 1).await;

    let before = ca_show(&s);
    assert_eq!(
        slots(&before).len(),
        1,
        "a fresh server has one CA: {before:#}"
    );
    let old_serial = serial_of(only(&before, "active"));
    let bundle0 = s.bundle();
    assert_eq!(
        serials(&bundle0),
        BTreeSet::from([norm_serial(&old_serial)])
    );
    let old_ca = bundle0[0].clone();

    let source = mtls::source(&a.endpoint(), WL).await.unwrap();
    let (seen, watcher) = watch_svids(source.clone());

    // Prepare.
    let prepared_view = s.cli_json(&["ca", "prepare"]);
    let t_prepared = Instant::now();
    let new_serial = serial_of(only(&prepared_view, "prepared"));
    assert_eq!(serial_of(only(&prepared_view, "active")), old_serial);
    assert!(
        seq(&prepared_view) > seq(&before),
        "bundle_sequence must increase at prepare: {} -> {}",
        seq(&before),
        seq(&prepared_view)
    );
    assert_eq!(only(&prepared_view, "prepared")["in_bundle"], true);

    // (a) `bundle show`.
    let (new_ca, t_cli) = poll_until(
        "prepared CA in `bundle show`",
        Duration::from_secs(10),
        || {
            let b = s.bundle();
            let found = find_by_serial(&b, &new_serial);
            async move { Ok(found) }
        },
    )
    .await;
    assert_eq!(
        serials(&s.bundle()),
        BTreeSet::from([norm_serial(&old_serial), norm_serial(&new_serial)]),
        "after prepare the bundle holds the active and the prepared CA"
    );
    let new_ski = ski(&new_ca);
    assert_ne!(new_ski, ski(&old_ca), "a new key");

    // (b) the bundle endpoint's JWKS.
    let ((jwks_seq, _), t_jwks) = poll_until(
        "prepared CA in the bundle endpoint's JWKS",
        Duration::from_secs(20),
        || {
            let roots = bundle0.clone();
            let new_ca = new_ca.clone();
            let s = &s;
            async move {
                let b = endpoint_bundle(s, &roots).await?;
                Ok(b.x509_authorities
                    .contains(&new_ca)
                    .then_some((b.sequence, b.x509_authorities.len())))
            }
        },
    )
    .await;
    let jwks_seq = jwks_seq.expect("spiffe_sequence in the JWKS");
    assert!(
        jwks_seq >= seq(&prepared_view) && jwks_seq > seq(&before),
        "JWKS spiffe_sequence {jwks_seq} must be the prepare's ({}) or later",
        seq(&prepared_view)
    );

    // (c) the Workload API (FetchX509Bundles), and the workload's own
    // X509Source stream.
    let (_, t_wl) = poll_until(
        "prepared CA in the Workload API bundle",
        Duration::from_secs(20),
        || {
            let new_ca = new_ca.clone();
            let a = &a;
            async move { Ok(workload_bundle(a).await?.contains(&new_ca).then_some(())) }
        },
    )
    .await;
    let (_, t_src) = poll_until(
        "prepared CA in the X509Source's bundle",
        Duration::from_secs(20),
        || {
            let found = source
                .bundle_set()
                .ok()
                .and_then(|set| set.get(&spiffe::TrustDomain::new(TD).unwrap()))
                .is_some_and(|b| b.authorities().iter().any(|c| c.as_bytes() == new_ca));
            async move { Ok(found.then_some(())) }
        },
    )
    .await;

    // Nothing is signed by the prepared CA yet: a minted SVID and every SVID
    // the workload received so far come from the active one.
    let mint_dir = s.dir.path().join("minted");
    s.cli_ok(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://example.org/minted",
        "--write",
        mint_dir.to_str().unwrap(),
    ]);
    let minted =
        sigil_tests::pem_certs(&std::fs::read_to_string(mint_dir.join("svid.pem")).unwrap());
    assert!(
        signed_by(&minted[0], &old_ca),
        "mint before activation must use the active CA"
    );
    assert!(!signed_by(&minted[0], &new_ca));

    // Activate (forced: the bundle reached every consumer above, which is
    // what the minimum publication time is for).
    let t_activate = Instant::now();
    let activated_view = s.cli_json(&["ca", "activate", "--force"]);
    assert_eq!(serial_of(only(&activated_view, "active")), new_serial);
    let old_slot = only(&activated_view, "old");
    assert_eq!(serial_of(old_slot), old_serial);
    assert_eq!(
        old_slot["in_bundle"], true,
        "the old CA stays in the bundle until it expires"
    );

    // The workload's SVID moves to the new CA.
    let deadline = Instant::now() + Duration::from_secs(45);
    let t_first_new = loop {
        let first = seen
            .lock()
            .unwrap()
            .leaves
            .iter()
            .find(|(_, l)| signed_by(l, &new_ca))
            .map(|(t, _)| *t);
        if let Some(t) = first {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "no SVID signed by the new CA within 45 s of the activation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    watcher.abort();
    // The Workload API agrees.
    let v = fetch_until(&a, Duration::from_secs(20), |v| {
        svid_for(v, WL).is_some_and(|s| signed_by(s.leaf().as_bytes(), &new_ca))
    })
    .await;
    assert_eq!(v.len(), 1);

    // Ordering.
    let seen = seen.lock().unwrap();
    let ms = |t: Instant| t.saturating_duration_since(t_prepared).as_millis();
    eprintln!(
        "after prepare: bundle show +{} ms, JWKS +{} ms (seq {jwks_seq}), Workload API +{} ms, \
         X509Source +{} ms; activate issued +{} ms; first SVID by the new CA +{} ms; \
         {} distinct SVIDs seen",
        ms(t_cli),
        ms(t_jwks),
        ms(t_wl),
        ms(t_src),
        ms(t_activate),
        ms(t_first_new),
        seen.leaves.len()
    );
    for (what, t) in [
        ("bundle show", t_cli),
        ("bundle endpoint", t_jwks),
        ("Workload API", t_wl),
        ("X509Source", t_src),
    ] {
        assert!(
            t < t_activate,
            "the new CA reached {what} only after activation"
        );
    }
    assert!(
        t_first_new > t_activate,
        "an SVID signed by the new CA existed before activation"
    );
    for (t, leaf) in &seen.leaves {
        if *t < t_activate {
            assert!(
                signed_by(leaf, &old_ca),
                "an SVID seen before the activation is not signed by the old CA"
            );
        }
    }
    // The issuance logs agree with the journal.
    let log = s.log_text();
    let new_slot = name_of(only(&activated_view, "active"));
    assert_ca_logged(&log, "CA prepared", &new_slot, &new_serial);
    assert_ca_logged(&log, "CA activated", &new_slot, &new_serial);
}

// ---------------------------------------------------------------------------
// 2. Crash safety of the journal.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn journal_survives_kill_9_after_prepare_and_after_activate() {
    let mut s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    let _logs = DumpLogsOnPanic::new(
        "journal_survives_kill_9_after_prepare_and_after_activate",
        &s,
        Some(&a),
    );
    register(&s, &a, "spiffe://example.org/w0");
    fetch_until(&a, Duration::from_secs(20), |v| v.len() == 1).await;
    let v0 = ca_show(&s);
    assert_keys_match_journal(&s, &v0, "fresh server");
    let active0 = only(&v0, "active").clone();

    // kill -9 right after prepare answered.
    let p = s.cli_json(&["ca", "prepare"]);
    s.kill();
    let prepared = only(&p, "prepared").clone();
    assert_eq!(only(&p, "active")["serial"], active0["serial"]);
    s.spawn().unwrap();
    let r1 = ca_show(&s);
    assert_eq!(slots(&r1).len(), 2, "after restart: {r1:#}");
    let p1 = only(&r1, "prepared");
    assert_eq!(
        p1["serial"], prepared["serial"],
        "the prepared CA survived: {r1:#}"
    );
    assert_eq!(
        p1["key_id"], prepared["key_id"],
        "the same prepared key: {r1:#}"
    );
    let a1 = only(&r1, "active");
    assert_eq!(
        a1["serial"], active0["serial"],
        "the same active CA: {r1:#}"
    );
    assert_eq!(a1["key_id"], active0["key_id"]);
    assert!(
        seq(&r1) >= seq(&p),
        "bundle_sequence went back: {} -> {}",
        seq(&p),
        seq(&r1)
    );
    assert_keys_match_journal(&s, &r1, "restart after prepare");
    assert_eq!(
        serials(&s.bundle()),
        BTreeSet::from([
            norm_serial(&serial_of(&active0)),
            norm_serial(&serial_of(&prepared))
        ]),
        "the bundle after restart holds the active and the prepared CA"
    );
    // The agent reconnects and gets a new SVID, signed by the active CA.
    register(&s, &a, "spiffe://example.org/w1");
    let v = fetch_until(&a, Duration::from_secs(60), |v| v.len() == 2).await;
    let bundle = s.bundle();
    let old_ca = find_by_serial(&bundle, &serial_of(&active0)).unwrap();
    let new_ca = find_by_serial(&bundle, &serial_of(&prepared)).unwrap();
    let w1 = svid_for(&v, "spiffe://example.org/w1").unwrap();
    assert!(
        signed_by(w1.leaf().as_bytes(), &old_ca),
        "signed by the active CA after restart"
    );

    // kill -9 right after activate answered (forced: published moments ago).
    let act = s.cli_json(&["ca", "activate", "--force"]);
    s.kill();
    assert_eq!(only(&act, "active")["serial"], prepared["serial"]);
    s.spawn().unwrap();
    let r2 = ca_show(&s);
    let a2 = only(&r2, "active");
    assert_eq!(
        a2["serial"], prepared["serial"],
        "the activation survived: {r2:#}"
    );
    assert_eq!(a2["key_id"], prepared["key_id"]);
    let o2 = only(&r2, "old");
    assert_eq!(
        o2["serial"], active0["serial"],
        "the previous CA is old: {r2:#}"
    );
    assert_eq!(o2["in_bundle"], true);
    assert!(
        slots_in(&r2, "prepared").is_empty(),
        "no second prepared CA: {r2:#}"
    );
    assert_eq!(slots(&r2).len(), 2);
    assert!(
        seq(&r2) >= seq(&act) && seq(&r2) >= seq(&r1),
        "bundle_sequence went back: {} -> {}",
        seq(&act),
        seq(&r2)
    );
    assert_keys_match_journal(&s, &r2, "restart after activate");
    assert_eq!(
        serials(&s.bundle()),
        BTreeSet::from([
            norm_serial(&serial_of(&active0)),
            norm_serial(&serial_of(&prepared))
        ]),
        "the bundle after the second restart still holds both CAs"
    );
    // New SVIDs are signed with the activated key, loaded back from disk.
    register(&s, &a, "spiffe://example.org/w2");
    let v = fetch_until(&a, Duration::from_secs(60), |v| v.len() == 3).await;
    let w2 = svid_for(&v, "spiffe://example.org/w2").unwrap();
    assert!(
        signed_by(w2.leaf().as_bytes(), &new_ca),
        "after restart the activated CA signs"
    );
    // One more restart, nothing pending: the journal is stable.
    s.kill();
    s.spawn().unwrap();
    let r3 = ca_show(&s);
    assert_eq!(
        slots(&r3),
        slots(&r2),
        "a restart with nothing due changes nothing"
    );
    assert!(seq(&r3) >= seq(&r2));
    assert_keys_match_journal(&s, &r3, "third restart");
}

// ---------------------------------------------------------------------------
// 3. `ca show`.

/// Unix seconds of an RFC 3339 time in `ca show --output json`.
fn unix_of(v: &Value) -> Option<i64> {
    let t = v.as_str()?;
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// `2026-11-23T12:34:56` or `2026-11-23 12:34:56`, the unix time itself
/// also accepted.
fn mentions_time(text: &str, unix: i64) -> bool {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap();
    let date = format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day());
    let clock = format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second());
    text.contains(&format!("{date}T{clock}"))
        || text.contains(&format!("{date} {clock}"))
        || text.contains(&unix.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ca_show_prints_both_slots_and_the_timeline() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let _logs = DumpLogsOnPanic::new("ca_show_prints_both_slots_and_the_timeline", &s, None);
    // Fresh server: one active CA, and its timeline at 1/2 and 5/6 of life.
    let v = ca_show(&s);
    let act = only(&v, "active");
    let nb = unix_of(&act["not_before"]).expect("not_before");
    let na = unix_of(&act["not_after"]).expect("not_after");
    assert!(
        (na - nb - 24 * 3600).abs() <= 60,
        "default ca_ttl is 24h: {v:#}"
    );
    let life = na - nb;
    let prepare_at = unix_of(&v["prepare_at"]).expect("prepare_at is RFC 3339");
    let activate_at = unix_of(&v["activate_at"]).expect("activate_at is RFC 3339");
    assert!(
        (prepare_at - (nb + life / 2)).abs() <= 2,
        "prepare at 1/2 of the active CA's life: {v:#}"
    );
    assert!(
        (activate_at - (nb + life * 5 / 6)).abs() <= 2,
        "activate at 5/6 of the active CA's life: {v:#}"
    );

    s.cli_ok(&["ca", "prepare"]);
    let text_out = s.cli_ok(&["ca", "show"]);
    let v = ca_show(&s);
    eprintln!("ca show (text):\n{text_out}\nca show (json):\n{v:#}");
    let all = slots(&v);
    assert_eq!(all.len(), 2, "{v:#}");
    let names: BTreeSet<&str> = all.iter().map(|s| s["slot"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["a", "b"]));
    let states: BTreeSet<&str> = all.iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert_eq!(states, BTreeSet::from(["active", "prepared"]));
    for slot in all {
        for k in ["not_before", "not_after"] {
            assert!(unix_of(&slot[k]).is_some(), "{k} is RFC 3339: {slot:#}");
        }
        assert!(slot["serial"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(slot["key_id"].as_str().is_some_and(|s| !s.is_empty()));
        assert_eq!(slot["tainted"], false);
        assert_eq!(slot["in_bundle"], true);
    }
    let prepare_at = unix_of(&v["prepare_at"]).expect("prepare_at is RFC 3339");
    let activate_at = unix_of(&v["activate_at"]).expect("activate_at is RFC 3339");
    assert!(activate_at > prepare_at, "{v:#}");
    assert!(v["bundle_sequence"].is_u64());

    // The text view: both slots with their state and serial, and the times.
    let lower = text_out.to_ascii_lowercase();
    for slot in all {
        let name = slot["slot"].as_str().unwrap();
        let state = slot["state"].as_str().unwrap();
        assert!(
            lower
                .lines()
                .any(|l| l.contains(&format!("slot {name}")) && l.contains(state)),
            "text output must show slot {name} as {state}:\n{text_out}"
        );
        assert!(
            lower.contains(&slot["serial"].as_str().unwrap().to_ascii_lowercase()),
            "text output must show slot {name}'s serial:\n{text_out}"
        );
        for k in ["not_before", "not_after"] {
            assert!(
                mentions_time(&text_out, unix_of(&slot[k]).unwrap()),
                "text output must show slot {name}'s {k}:\n{text_out}"
            );
        }
    }
    assert!(
        mentions_time(&text_out, prepare_at),
        "text output must show the prepare time:\n{text_out}"
    );
    assert!(
        mentions_time(&text_out, activate_at),
        "text output must show the activate time:\n{text_out}"
    );
    assert!(
        lower.contains("prepare") && lower.contains("activate"),
        "{text_out}"
    );
}

// ---------------------------------------------------------------------------
// 4. Forced operations.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forced_operations_are_checked() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    let _logs = DumpLogsOnPanic::new("forced_operations_are_checked", &s, Some(&a));
    const WL: &str = "spiffe://example.org/forced";
    register(&s, &a, WL);
    let first = fetch_until(&a, Duration::from_secs(20), |v| v.len() == 1).await;

    let v0 = ca_show(&s);
    let act0 = only(&v0, "active").clone();
    let slot0 = name_of(&act0);
    let serial0 = serial_of(&act0);
    let other = other_slot(&slot0);
    let ca0 = find_by_serial(&s.bundle(), &serial0).unwrap();
    assert!(signed_by(first[0].leaf().as_bytes(), &ca0));

    // Nothing prepared: activate is refused.
    assert_refused(
        &s.cli(&["ca", "activate"]),
        "activate without a prepared CA",
    );
    // The active slot cannot be tainted or revoked.
    let err = assert_refused(
        &s.cli(&["ca", "taint", "--slot", &slot0]),
        "taint of the active slot",
    );
    assert!(err.to_ascii_lowercase().contains("active"), "{err}");
    assert_refused(
        &s.cli(&["ca", "revoke", "--slot", &slot0]),
        "revoke of the active (untainted) slot",
    );
    // The empty slot neither.
    assert_refused(
        &s.cli(&["ca", "taint", "--slot", other]),
        "taint of an empty slot",
    );
    assert_refused(
        &s.cli(&["ca", "revoke", "--slot", other]),
        "revoke of an empty slot",
    );
    assert_eq!(ca_show(&s), v0, "refused operations change nothing");

    // Prepare; a second prepare is refused; an untainted prepared CA
    // cannot be revoked.
    let p = s.cli_json(&["ca", "prepare"]);
    let prep = only(&p, "prepared").clone();
    assert_eq!(name_of(&prep), other);
    let serial1 = serial_of(&prep);
    assert!(seq(&p) > seq(&v0));
    assert_refused(&s.cli(&["ca", "prepare"]), "prepare with a prepared CA");
    assert_refused(
        &s.cli(&["ca", "revoke", "--slot", other]),
        "revoke of an untainted prepared CA",
    );
    assert_keys_match_journal(&s, &p, "after prepare");

    // Activate right after prepare: refused for the minimum publication
    // time; forced, it activates. Now the other slot holds the unexpired
    // old CA: no prepare.
    let err = assert_refused(&s.cli(&["ca", "activate"]), "unforced activate");
    assert!(err.contains("--force"), "{err}");
    let act = s.cli_json(&["ca", "activate", "--force"]);
    assert_eq!(serial_of(only(&act, "active")), serial1);
    assert_eq!(serial_of(only(&act, "old")), serial0);
    let err = assert_refused(
        &s.cli(&["ca", "prepare"]),
        "prepare while the old CA is unexpired",
    );
    eprintln!("prepare refused with: {err}");
    assert_refused(
        &s.cli(&["ca", "revoke", "--slot", &slot0]),
        "revoke of an untainted old CA",
    );
    assert_refused(
        &s.cli(&["ca", "taint", "--slot", other]),
        "taint of the (new) active slot",
    );
    let bundle = s.bundle();
    let ca1 = find_by_serial(&bundle, &serial1).unwrap();
    assert_eq!(bundle.len(), 2);

    // The workload's SVID is still the one from the old CA (1h TTL, far
    // from half life): the taint is what moves it.
    let before_taint = fetch_until(&a, Duration::from_secs(5), |v| v.len() == 1).await;
    assert!(signed_by(before_taint[0].leaf().as_bytes(), &ca0));
    let tainted_reissues_before = issued_with_reason(&a.log_text(), "ca_tainted");

    // Taint the old slot.
    let t = s.cli_json(&["ca", "taint", "--slot", &slot0]);
    let t0 = slot_named(&t, &slot0).expect("tainted slot still there");
    assert_eq!(t0["tainted"], true, "{t:#}");
    assert_eq!(t0["state"], "old");
    let shown = ca_show(&s);
    let shown0 = slot_named(&shown, &slot0).unwrap();
    assert_eq!(shown0["tainted"], true, "ca show says tainted: {shown:#}");
    assert_eq!(
        shown0["in_bundle"], true,
        "a tainted CA stays in the bundle until no SVID can depend on it (ca_ttl / 6 = 4h)"
    );
    let shown_text = s.cli_ok(&["ca", "show"]);
    assert!(
        shown_text.to_ascii_lowercase().contains("tainted"),
        "the text view shows the taint:\n{shown_text}"
    );
    // The agent re-issues the SVID signed by the tainted CA at once.
    let t_taint = Instant::now();
    let after = fetch_until(&a, Duration::from_secs(15), |v| {
        v.len() == 1 && signed_by(v[0].leaf().as_bytes(), &ca1)
    })
    .await;
    eprintln!(
        "SVID re-issued by the new CA {} ms after the taint",
        t_taint.elapsed().as_millis()
    );
    assert_ne!(
        after[0].leaf().as_bytes(),
        before_taint[0].leaf().as_bytes()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while issued_with_reason(&a.log_text(), "ca_tainted") <= tainted_reissues_before {
        assert!(
            Instant::now() < deadline,
            "agent log has no new `SVID issued` with reason=ca_tainted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Revoke the tainted old CA: out of the bundle at once, key deleted.
    let seq_before = seq(&shown);
    // Unforced: the agent renews its own SVID from the new CA within
    // seconds of the taint (issue 20 item 1); until then the revoke is
    // refused, naming the agent that still chains to the old CA.
    let deadline = Instant::now() + Duration::from_secs(15);
    let r = loop {
        let out = s.cli(&["ca", "revoke", "--slot", &slot0, "--output", "json"]);
        if out.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
        }
        let err = text(&out.stderr);
        assert!(
            err.contains("agent"),
            "revoke refused for another reason: {err}"
        );
        assert!(
            Instant::now() < deadline,
            "the agent's own SVID still chains to the tainted CA after 15 s: {err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        slot_named(&r, &slot0).is_none_or(|x| x["in_bundle"] == false),
        "revoked CA must not be in the bundle: {r:#}"
    );
    assert!(seq(&r) > seq_before, "revoke changes the bundle: {r:#}");
    assert_eq!(
        serials(&s.bundle()),
        BTreeSet::from([norm_serial(&serial1)]),
        "`bundle show` after revoke holds only the active CA"
    );
    let view = ca_show(&s);
    assert_keys_match_journal(&s, &view, "after revoke");
    let key0 = format!("{}.pk8", act0["key_id"].as_str().unwrap());
    assert!(
        !key_files(&s).contains(&key0),
        "the revoked CA's key file is gone"
    );
    // Revoking again is refused.
    assert_refused(&s.cli(&["ca", "revoke", "--slot", &slot0]), "second revoke");
    // Everyone else learns it.
    poll_until(
        "revoked CA gone from the Workload API bundle",
        Duration::from_secs(15),
        || {
            let a = &a;
            let ca0 = ca0.clone();
            async move {
                let b = workload_bundle(a).await?;
                Ok((!b.contains(&ca0) && b.len() == 1).then_some(()))
            }
        },
    )
    .await;
    poll_until(
        "revoked CA gone from the bundle endpoint",
        Duration::from_secs(15),
        || {
            let roots = vec![ca1.clone()];
            let s = &s;
            let ca0 = ca0.clone();
            async move {
                let b = endpoint_bundle(s, &roots).await?;
                Ok((!b.x509_authorities.contains(&ca0)).then_some(()))
            }
        },
    )
    .await;

    // The slot is free again: a prepare is accepted.
    let p2 = s.cli_json(&["ca", "prepare"]);
    let prep2 = only(&p2, "prepared");
    assert_eq!(name_of(prep2), slot0);
    assert_ne!(norm_serial(&serial_of(prep2)), norm_serial(&serial0));
    assert_keys_match_journal(&s, &p2, "prepare after revoke");

    let log = s.log_text();
    assert_ca_logged(&log, "CA prepared", other, &serial1);
    assert_ca_logged(&log, "CA activated", other, &serial1);
    assert_ca_logged(&log, "CA tainted", &slot0, &serial0);
    assert_ca_logged(&log, "CA revoked", &slot0, &serial0);
}

// ---------------------------------------------------------------------------
// 5. TTL safety.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ttl_refusals_name_both_ttls_and_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = format!(
        "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nbind_address = \"127.0.0.1:0\"\nca_ttl = \"6h\"\n",
        data.display()
    );
    for key in ["default_x509_svid_ttl", "agent_svid_ttl"] {
        let path = dir.path().join(format!("{key}.toml"));
        std::fs::write(&path, format!("{base}{key} = \"2h\"\n")).unwrap();
        for cmd in ["validate", "run"] {
            let out = sigil_server(&[cmd, "--config", path.to_str().unwrap()], &[]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{cmd} with {key} = 2h: {err}");
            for needle in [key, "2h", "1h", "6h", "ca_ttl / 6", "ca_ttl / 6 = 1h"] {
                assert!(
                    err.contains(needle),
                    "{cmd} {key}: {needle:?} missing in: {err}"
                );
            }
            eprintln!("{cmd} {key}: {}", err.trim());
        }
        assert!(!data.exists(), "nothing written for a refused config");
        // Exactly at the limit is fine.
        std::fs::write(&path, format!("{base}{key} = \"1h\"\n")).unwrap();
        let out = sigil_server(&["validate", "--config", path.to_str().unwrap()], &[]);
        assert!(
            out.status.success(),
            "{key} = 1h is ca_ttl / 6: {}",
            text(&out.stderr)
        );
    }

    // Entries, against a default server (ca_ttl 24h: at most 4h).
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let _logs = DumpLogsOnPanic::new("ttl_refusals_name_both_ttls_and_the_rule", &s, None);
    const PARENT: &str = "spiffe://example.org/sigil/agent/join_token/ttl";
    let create = |ttl: &str| {
        s.cli(&[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/ttl",
            "--parent-id",
            PARENT,
            "--selector",
            "unix:uid:1",
            "--x509-svid-ttl",
            ttl,
        ])
    };
    let out = create("5h");
    let err = assert_refused(&out, "entry create --x509-svid-ttl 5h");
    for needle in ["5h", "4h", "ca_ttl / 6 = 4h"] {
        assert!(
            err.contains(needle),
            "entry create: {needle:?} missing in: {err}"
        );
    }
    // The CA TTL itself, however it is written.
    assert!(
        err.contains("24h") || err.contains("1d"),
        "entry create: the CA TTL is missing in: {err}"
    );
    eprintln!("entry create: {}", err.trim());
    assert_eq!(s.cli_json(&["entry", "count"])["count"], 0);
    // At the limit it is accepted; an update above it is refused.
    let out = create("4h");
    assert!(
        out.status.success(),
        "4h = ca_ttl / 6 must be accepted: {}",
        text(&out.stderr)
    );
    let list = s.cli_json(&["entry", "show", "--parent-id", PARENT]);
    let id = list["entries"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("entry id in {list:#}"))
        .to_string();
    let out = s.cli(&[
        "entry",
        "update",
        "--entry-id",
        &id,
        "--x509-svid-ttl",
        "5h",
    ]);
    let err = assert_refused(&out, "entry update --x509-svid-ttl 5h");
    for needle in ["5h", "4h", "ca_ttl / 6 = 4h"] {
        assert!(
            err.contains(needle),
            "entry update: {needle:?} missing in: {err}"
        );
    }
    // The CA TTL itself, however it is written.
    assert!(
        err.contains("24h") || err.contains("1d"),
        "entry update: the CA TTL is missing in: {err}"
    );
    eprintln!("entry update: {}", err.trim());
    let after = s.cli_json(&["entry", "show", "--parent-id", PARENT]);
    assert_eq!(
        after["entries"], list["entries"],
        "a refused update changes nothing"
    );
}

// ---------------------------------------------------------------------------
// 6. Soak: mTLS through rotations and a taint.

/// What the handshake loop saw.
#[derive(Default)]
struct Traffic {
    ok: Vec<f64>,
    failures: Vec<(f64, String)>,
}

/// One full mTLS exchange: new TCP connection, new handshake, 4 bytes each
/// way.
async fn exchange(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
) -> Result<(), String> {
    sigil_tests::ping::ping(connector, addr).await
}

/// Distinct leaves and distinct signing CAs (AKIs) a source served.
fn rotation_summary(seen: &SeenSvids) -> (usize, usize) {
    let akis: BTreeSet<Vec<u8>> = seen.leaves.iter().map(|(_, l)| aki(l)).collect();
    (seen.leaves.len(), akis.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_zero_failed_handshakes_through_rotations_and_a_taint() {
    const CAP: Duration = Duration::from_secs(240);
    const AFTER: Duration = Duration::from_secs(15);
    const BACKEND: &str = "spiffe://example.org/backend";
    const FRONTEND: &str = "spiffe://example.org/frontend";
    let started = Instant::now();
    let s = TestServer::start(ServerOptions {
        extra: "ca_ttl = \"1m\"\ndefault_x509_svid_ttl = \"10s\"\nagent_svid_ttl = \"10s\"\n"
            .into(),
        ..Default::default()
    })
    .unwrap();
    let a = TestAgent::start(&s).unwrap();
    let _logs = DumpLogsOnPanic::new(
        "soak_zero_failed_handshakes_through_rotations_and_a_taint",
        &s,
        Some(&a),
    );
    register(&s, &a, BACKEND);
    register(&s, &a, FRONTEND);
    fetch_until(&a, Duration::from_secs(20), |v| v.len() == 2).await;

    let backend = mtls::source(&a.endpoint(), BACKEND).await.unwrap();
    let frontend = mtls::source(&a.endpoint(), FRONTEND).await.unwrap();
    let (backend_seen, bw) = watch_svids(backend.clone());
    let (frontend_seen, fw) = watch_svids(frontend.clone());

    // Each side trusts the bundle its own source receives.
    let (acceptor, connector) =
        sigil_tests::ping::soak_ends(&backend, BACKEND, &frontend, FRONTEND, TD).unwrap();

    let t0 = Instant::now();
    let secs = move || t0.elapsed().as_secs_f64();
    let server_failures: Arc<Mutex<Vec<(f64, String)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sf = server_failures.clone();
    let server_task = sigil_tests::ping::serve_pong(listener, acceptor, move |e| {
        sf.lock().unwrap().push((secs(), e));
    });

    let traffic: Arc<Mutex<Traffic>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let client_task = {
        let traffic = traffic.clone();
        let stop = stop.clone();
        let connector = connector.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = exchange(&connector, addr).await;
                let now = secs();
                {
                    let mut t = traffic.lock().unwrap();
                    match r {
                        Ok(()) => t.ok.push(now),
                        Err(e) => {
                            eprintln!("[{now:8.3}s] FAILED handshake: {e}");
                            t.failures.push((now, e));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Control loop: watch the journal, taint right after the second
    // activation, stop AFTER past the third activation and the tainted CA's
    // departure from the bundle.
    let sock = s.socket.clone();
    let first = ca_show_async(&sock).await;
    let mut active = serial_of(only(&first, "active"));
    let mut activate_at = unix_of(&first["activate_at"]);
    let mut activations: Vec<(f64, String, Option<i64>)> = Vec::new();
    // (seen at, tainted at, slot, serial, lag after the planned activation)
    let mut taint: Option<(f64, f64, String, String, i64)> = None;
    let mut tainted_gone_at: Option<f64> = None;
    let mut bundle_sizes: BTreeSet<usize> = BTreeSet::new();
    let mut finish_at: Option<Instant> = None;
    let mut last_view = first.clone();
    loop {
        assert!(
            started.elapsed() < CAP,
            "soak did not reach its goals within {CAP:?}: activations {activations:?}, taint {taint:?}, \
             tainted CA gone at {tainted_gone_at:?}; last ca show: {last_view:#}"
        );
        if finish_at.is_some_and(|f| Instant::now() >= f) {
            break;
        }
        let v = ca_show_async(&sock).await;
        bundle_sizes.insert(slots(&v).iter().filter(|s| s["in_bundle"] == true).count());
        let now_active = serial_of(only(&v, "active"));
        if now_active != active {
            let when = secs();
            eprintln!(
                "[{when:8.3}s] CA activated: {now_active} (planned at {activate_at:?}, now {})",
                unix_now()
            );
            activations.push((when, now_active.clone(), activate_at));
            active = now_active;
            if activations.len() == 2 && taint.is_none() {
                let old = only(&v, "old");
                let (slot, serial) = (name_of(old), serial_of(old));
                let out = cli_async(&sock, &["ca", "taint", "--slot", &slot]).await;
                assert!(
                    out.status.success(),
                    "taint of the old slot {slot} failed: {}",
                    text(&out.stderr)
                );
                let at = secs();
                let lag = unix_now() - activate_at.unwrap_or(0);
                eprintln!(
                    "[{at:8.3}s] tainted old slot {slot} (serial {serial}), {:.0} ms after seeing the activation, \
                     ~{lag} s after the planned activation",
                    (at - when) * 1000.0
                );
                taint = Some((when, at, slot, serial, lag));
            }
        }
        activate_at = unix_of(&v["activate_at"]);
        if let Some((_, _, slot, serial, _)) = &taint
            && tainted_gone_at.is_none()
        {
            let still = slot_named(&v, slot).is_some_and(|x| {
                norm_serial(&serial_of(x)) == norm_serial(serial) && x["in_bundle"] == true
            });
            if !still {
                let at = secs();
                eprintln!("[{at:8.3}s] tainted CA {serial} left the bundle");
                tainted_gone_at = Some(at);
            }
        }
        if finish_at.is_none() && activations.len() >= 3 && tainted_gone_at.is_some() {
            finish_at = Some(Instant::now() + AFTER);
            eprintln!("[{:8.3}s] goals reached; {AFTER:?} more traffic", secs());
        }
        last_view = v;
        // Poll fast when an activation is due, so the taint follows it closely.
        let due_soon = activate_at.is_some_and(|t| (t - unix_now()).abs() <= 2);
        let pause = if due_soon { 50 } else { 250 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    stop.store(true, Ordering::Relaxed);
    client_task.await.unwrap();
    server_task.abort();
    bw.abort();
    fw.abort();
    let end = secs();

    let traffic = traffic.lock().unwrap();
    let server_failures = server_failures.lock().unwrap();
    let (b_leaves, b_cas) = rotation_summary(&backend_seen.lock().unwrap());
    let (f_leaves, f_cas) = rotation_summary(&frontend_seen.lock().unwrap());
    let agent_log = a.log_text();
    let tainted_reissues = issued_with_reason(&agent_log, "ca_tainted");
    let reasons: Vec<String> = [
        "missing",
        "entry_changed",
        "half_life",
        "ca_changed",
        "ca_tainted",
        "expired",
    ]
    .iter()
    .map(|r| format!("{r}={}", issued_with_reason(&agent_log, r)))
    .collect();
    let server_log = s.log_text();
    let dropped = log_lines(&server_log, "CA dropped from the bundle");
    eprintln!(
        "soak: {:.1} s of traffic, {} handshakes ok, {} failed on the client, {} failed on the server; \
         activations {activations:?}; taint {taint:?}; tainted CA gone at {tainted_gone_at:?}; \
         bundle sizes seen {bundle_sizes:?}; backend: {b_leaves} SVIDs from {b_cas} CAs, \
         frontend: {f_leaves} SVIDs from {f_cas} CAs; agent `SVID issued` reasons: {}; \
         server `CA activated` lines: {}, `CA dropped from the bundle` lines: {}",
        end,
        traffic.ok.len(),
        traffic.failures.len(),
        server_failures.len(),
        reasons.join(" "),
        log_lines(&server_log, "CA activated").len(),
        dropped.len(),
    );
    for (t, e) in traffic.failures.iter() {
        eprintln!("client failure at {t:8.3}s: {e}");
    }
    for (t, e) in server_failures.iter() {
        eprintln!("server failure at {t:8.3}s: {e}");
    }

    assert!(
        traffic.failures.is_empty() && server_failures.is_empty(),
        "{} client and {} server handshake failures (listed above)",
        traffic.failures.len(),
        server_failures.len()
    );
    assert!(
        activations.len() >= 3,
        "only {} CA activations",
        activations.len()
    );
    assert!(
        traffic.ok.len() >= 1000,
        "only {} handshakes in {end:.0} s",
        traffic.ok.len()
    );
    // Traffic went on across every event, not just around them.
    let (_, taint_at, _, tainted_serial, _) = taint.clone().expect("a taint was done");
    let gone = tainted_gone_at.unwrap();
    for (what, at) in [
        ("the last activation", activations.last().unwrap().0),
        ("the taint", taint_at),
        ("the tainted CA's departure", gone),
    ] {
        let n = traffic.ok.iter().filter(|t| **t > at).count();
        assert!(n >= 50, "only {n} handshakes after {what}");
    }
    assert!(
        dropped
            .iter()
            .any(|l| field(l, "serial")
                .is_some_and(|x| norm_serial(&x) == norm_serial(&tainted_serial))),
        "no `CA dropped from the bundle` line for the tainted CA {tainted_serial}: {dropped:#?}"
    );
    assert!(
        tainted_reissues >= 1,
        "no taint-driven re-issue (`SVID issued` with reason=ca_tainted) in the agent log"
    );
    for (who, leaves, cas) in [("backend", b_leaves, b_cas), ("frontend", f_leaves, f_cas)] {
        assert!(leaves >= 5, "{who}: only {leaves} distinct SVIDs seen");
        assert!(cas >= 3, "{who}: SVIDs from only {cas} distinct CAs");
    }
}

/// `ca prepare && ca activate` would lock out agents that were offline for
/// that moment: activation waits until the prepared CA has been published
/// for 2 × the bundle refresh hint (here 2 × 2m), unless `--force`.
#[test]
fn item10_activate_right_after_prepare_is_refused_unless_forced() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let p = s.cli_json(&["ca", "prepare"]);
    let prepared = serial_of(only(&p, "prepared"));
    let err = assert_refused(&s.cli(&["ca", "activate"]), "activate right after prepare");
    assert!(
        err.contains("the minimum is 4m") && err.contains("--force") && err.contains(&prepared),
        "{err}"
    );
    assert_eq!(ca_show(&s), p, "a refused activate changes nothing");

    let out = s.cli(&["ca", "activate", "--force", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let warning = text(&out.stderr);
    assert!(
        warning.contains("--force") && warning.contains("reject"),
        "{warning}"
    );
    let act: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(serial_of(only(&act, "active")), prepared);
    assert_ca_logged(
        &s.log_text(),
        "activating a CA published for less than the minimum, as forced",
        &name_of(only(&act, "active")),
        &prepared,
    );
}
