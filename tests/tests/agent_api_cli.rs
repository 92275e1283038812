//! `sigil-agent api …` against a real server and agent (issue 22 item 6):
//! `api fetch x509` prints, per SVID, the SPIFFE ID, serial, validity
//! (RFC 3339) and chain (subject and issuer of each certificate), then the
//! bundle's CAs, in text and as JSON; `api watch` shows bundle changes as
//! well as SVID changes, prints one JSON object per line with `--output
//! json`, and reconnects (logged, with backoff) when the agent restarts.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sigil_tests::{ServerOptions, TestAgent, TestServer, bin, sigil_agent, text};

const ID: &str = "spiffe://example.org/api-cli";

/// `api fetch x509` with `args` until it succeeds (bounded); its stdout.
fn fetch(a: &TestAgent, args: &[&str]) -> String {
    let sock = a.socket.display().to_string();
    let base = [
        "api",
        "fetch",
        "x509",
        "--timeout",
        "20s",
        "--socket",
        &sock,
    ];
    let out = sigil_agent(&[&base[..], args].concat(), &[]);
    assert!(
        out.status.success(),
        "fetch {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn rfc3339(v: &serde_json::Value) -> time::OffsetDateTime {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("not RFC 3339: {s:?}: {e}"))
}

struct CertFacts {
    subject: String,
    issuer: String,
    serial: String,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
}

fn facts(der: &[u8]) -> CertFacts {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    CertFacts {
        subject: c.subject().to_string(),
        issuer: c.issuer().to_string(),
        serial: c.raw_serial().iter().map(|b| format!("{b:02x}")).collect(),
        not_before: c.validity().not_before.to_datetime(),
        not_after: c.validity().not_after.to_datetime(),
    }
}

fn pem_file(path: &Path) -> Vec<Vec<u8>> {
    sigil_proto::pem::from_pem(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn i22_6_api_fetch_x509_prints_serial_chain_and_bundle() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    s.register_uid(&a, ID);
    // The SVID as written to files: what the printout must describe.
    let dir = a.dir.path().join("files");
    fetch(&a, &["--write", dir.to_str().unwrap()]);
    let chain = pem_file(&dir.join("svid.pem"));
    let leaf = facts(&chain[0]);
    let bundle = s.bundle();

    let v: serde_json::Value = serde_json::from_str(&fetch(&a, &["--output", "json"])).unwrap();
    let svid = &v["svids"][0];
    assert_eq!(svid["spiffe_id"], ID, "{v:#}");
    assert_eq!(svid["serial"], leaf.serial.as_str(), "{v:#}");
    assert_eq!(rfc3339(&svid["not_before"]), leaf.not_before, "{v:#}");
    assert_eq!(rfc3339(&svid["not_after"]), leaf.not_after, "{v:#}");
    let json_chain = svid["chain"].as_array().unwrap();
    assert_eq!(json_chain.len(), chain.len(), "{v:#}");
    let json_bundle = v["bundle"].as_array().unwrap();
    assert_eq!(json_bundle.len(), bundle.len(), "{v:#}");
    for (j, der) in json_chain
        .iter()
        .zip(&chain)
        .chain(json_bundle.iter().zip(&bundle))
    {
        let f = facts(der);
        assert_eq!(j["subject"], f.subject.as_str(), "{v:#}");
        assert_eq!(j["issuer"], f.issuer.as_str(), "{v:#}");
        assert_eq!(j["serial"], f.serial.as_str(), "{v:#}");
        assert_eq!(rfc3339(&j["not_before"]), f.not_before, "{v:#}");
        assert_eq!(rfc3339(&j["not_after"]), f.not_after, "{v:#}");
    }

    let t = fetch(&a, &[]);
    let fmt = |d: time::OffsetDateTime| {
        d.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    for want in [
        format!("SPIFFE ID:  {ID}"),
        format!("Serial:     {}", leaf.serial),
        format!("Not before: {}", fmt(leaf.not_before)),
        format!("Not after:  {}", fmt(leaf.not_after)),
        format!("subject: {}", leaf.subject),
        format!("issuer: {}", leaf.issuer),
    ] {
        assert!(t.contains(&want), "text output lacks {want:?}:\n{t}");
    }
    for der in &bundle {
        let f = facts(der);
        assert!(
            t.contains(&f.subject) && t.contains(&f.serial),
            "text output lacks bundle CA {} {}:\n{t}",
            f.subject,
            f.serial
        );
    }
    assert!(t.contains("Bundle"), "{t}");
}

/// A running `api watch`, its stdout and stderr lines on channels.
struct Watch {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    err_seen: Vec<String>,
}

impl Watch {
    fn start(socket: &Path, json: bool) -> Watch {
        let mut cmd = Command::new(bin("sigil-agent"));
        cmd.args(["api", "watch", "--socket"]).arg(socket);
        if json {
            cmd.args(["--output", "json"]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = |r: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for l in std::io::BufReader::new(r).lines() {
                    let Ok(l) = l else { break };
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let out = lines(Box::new(child.stdout.take().unwrap()));
        let err = lines(Box::new(child.stderr.take().unwrap()));
        Watch {
            child,
            out,
            err,
            err_seen: Vec::new(),
        }
    }

    /// The next stdout line that satisfies `pred` (bounded).
    fn next_out(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(l) if pred(&l) => return l,
                Ok(_) => {}
                Err(e) => {
                    self.drain_err();
                    panic!(
                        "no {what} from api watch ({e}); running: {:?}; stderr: {:?}",
                        self.child.try_wait(),
                        self.err_seen
                    )
                }
            }
        }
    }

    /// Waits for a stderr line containing every one of `parts` (bounded).
    fn await_err(&mut self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self
                .err_seen
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(l) => self.err_seen.push(l),
                Err(e) => panic!("no stderr line with {parts:?} ({e}): {:?}", self.err_seen),
            }
        }
    }

    fn drain_err(&mut self) {
        while let Ok(l) = self.err.try_recv() {
            self.err_seen.push(l);
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn i22_6_api_watch_reconnects_after_agent_restart() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let mut a = TestAgent::start(&s).unwrap();
    s.register_uid(&a, ID);
    // Issued first: a watch that starts without an identity exits.
    fetch(&a, &[]);
    let mut w = Watch::start(&a.socket, false);
    let first = w.next_out("first SVID update", |l| l.contains("update: 1 SVID"));
    let serial_line = w.next_out("the SVID line", |l| l.contains(ID));

    a.kill();
    w.await_err(&["reconnecting", "retry_in_ms"]);
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "api watch exited when the agent stopped"
    );
    a.spawn(None).unwrap();
    // The restarted agent issues its SVIDs anew: the watch prints them.
    w.next_out("an SVID update after the restart", |l| {
        l.contains("update: 1 SVID")
    });
    let after = w.next_out("the SVID line after the restart", |l| l.contains(ID));
    assert_ne!(
        after, serial_line,
        "the update after the restart is a new SVID (first: {first})"
    );
    w.await_err(&["reconnected"]);
}

#[test]
fn i22_6_api_watch_json_lines() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    s.register_uid(&a, ID);
    fetch(&a, &[]);
    let mut w = Watch::start(&a.socket, true);
    // JWT bundle updates are lines of their own (`jwt_bundle_changed`).
    let x509 = |l: &str| l.contains("\"svids_changed\"");
    let line = w.next_out("a first JSON line", x509);
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not one JSON object: {e}: {line}"));
    rfc3339(&v["time"]);
    assert_eq!(v["svids_changed"], true, "{line}");
    assert_eq!(v["bundle_changed"], true, "{line}");
    assert_eq!(v["svids"][0]["spiffe_id"], ID, "{line}");
    rfc3339(&v["svids"][0]["not_after"]);
    assert!(v["svids"][0]["serial"].as_str().is_some(), "{line}");
    assert_eq!(v["bundle"].as_array().unwrap().len(), 1, "{line}");

    // A bundle change alone is an update too.
    s.cli_ok(&["ca", "prepare"]);
    let line = w.next_out("the bundle change", x509);
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not one JSON object: {e}: {line}"));
    assert_eq!(v["bundle_changed"], true, "{line}");
    assert_eq!(v["svids_changed"], false, "{line}");
    let cas = v["bundle"].as_array().unwrap();
    assert_eq!(cas.len(), 2, "{line}");
    let bundle = s.bundle();
    for (j, der) in cas.iter().zip(&bundle) {
        assert_eq!(j["serial"], facts(der).serial.as_str(), "{line}");
    }
}
