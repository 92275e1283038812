//! The bad-input catalogue (issue 8, item 3; DESIGN §6.6): one table of
//! cases against the real binaries and code — SPIFFE IDs, selectors, TTLs
//! and durations, entry JSON files, server and agent config files, CSRs sent
//! to the agent API's `SignSvids`, certificates and JWKS, oversized gRPC
//! messages and metadata on both APIs, the Workload API security header,
//! and thousands of idle connections plus hundreds of open streams on the
//! workload socket. Every case states its input and the refusal it expects
//! (exit code, gRPC code, error text naming the value and the rule), and is
//! checked for no panic and no partial write (entry count unchanged, no
//! data_dir created by a refused config, the daemons still answer). All
//! cases run; failures are reported together, by name.
//!
//! One server and one agent serve every case.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, KeyPair};
use sigil_proto::agent_api as pb;
use sigil_proto::workload as wl;
use sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use sigil_proto::{TrustDomain, attestation};
use sigil_proto::{bundle, pem};
use sigil_tests::agent_client::{AgentIdentity, attest, identity, key_and_csr};
use sigil_tests::{ServerOptions, TestAgent, TestServer, bin, text};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

/// What a case must produce. (Some fields are only printed, in failure
/// reports, where the check needs more than the value.)
#[derive(Debug, Clone)]
#[allow(dead_code)]
enum Expect {
    /// A process exits with this code and its stderr has every needle.
    Exit(i32, Vec<&'static str>),
    /// A gRPC call fails with this code; the message has every needle.
    Grpc(Code, Vec<&'static str>),
    /// A gRPC call fails with one of these codes (limits enforced by the
    /// transport, whose code is the transport's choice).
    GrpcAnyOf(Vec<Code>),
    /// A `SignSvids` item fails with this code and message needles.
    Item(Code, Vec<&'static str>),
    /// A `SignSvids` item is signed, and the leaf is a valid X.509-SVID
    /// (cA=false, no CA key usage) for the entry's SPIFFE ID only, with the
    /// entry's DNS names only, whatever the CSR asked for.
    SignedForEntryOnly,
    /// A library call returns an error whose text has every needle.
    Error(Vec<&'static str>),
    /// A bundle document decodes to a bundle of this many authorities, and
    /// the report of the keys it left out has every needle.
    Decoded(usize, Vec<&'static str>),
    /// The call succeeds within the time bound (liveness under load).
    Answers(Duration),
}

/// One row of the catalogue.
struct Case {
    name: String,
    input: String,
    expect: Expect,
}

/// Every outcome, reported together at the end.
#[derive(Default)]
struct Report {
    ran: Vec<String>,
    failures: Vec<String>,
}

impl Report {
    fn record(&mut self, case: &Case, outcome: Result<(), String>) {
        self.ran.push(case.name.clone());
        if let Err(why) = outcome {
            self.failures.push(format!(
                "- {}\n    input:  {}\n    expect: {:?}\n    got:    {why}",
                case.name,
                truncate(&case.input, 300),
                case.expect
            ));
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

fn case(name: impl Into<String>, input: impl Into<String>, expect: Expect) -> Case {
    Case {
        name: name.into(),
        input: input.into(),
        expect,
    }
}

fn no_panic(out: &Output) -> Result<(), String> {
    let err = text(&out.stderr);
    if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
        return Err(format!("the process panicked: {err}"));
    }
    // 101 is Rust's panic exit code; signals have no code.
    match out.status.code() {
        Some(101) | None => Err(format!("abnormal exit {:?}: {err}", out.status)),
        _ => Ok(()),
    }
}

fn check_exit(out: &Output, expect: &Expect) -> Result<(), String> {
    no_panic(out)?;
    let Expect::Exit(code, needles) = expect else {
        return Err(format!("not an exit expectation: {expect:?}"));
    };
    let err = text(&out.stderr);
    if out.status.code() != Some(*code) {
        return Err(format!(
            "exit {:?} (want {code}); stderr: {err}; stdout: {}",
            out.status.code(),
            text(&out.stdout)
        ));
    }
    for n in needles {
        if !err.contains(n) {
            return Err(format!("stderr lacks {n:?}: {err}"));
        }
    }
    Ok(())
}

fn check_status(r: Result<(), tonic::Status>, expect: &Expect) -> Result<(), String> {
    let e = match r {
        Ok(()) => return Err("the call succeeded".into()),
        Err(e) => e,
    };
    match expect {
        Expect::Grpc(code, needles) => {
            if e.code() != *code {
                return Err(format!(
                    "code {:?} (want {code:?}): {}",
                    e.code(),
                    e.message()
                ));
            }
            for n in needles {
                if !e.message().contains(n) {
                    return Err(format!("message lacks {n:?}: {}", e.message()));
                }
            }
            Ok(())
        }
        Expect::GrpcAnyOf(codes) => {
            if codes.contains(&e.code()) {
                Ok(())
            } else {
                Err(format!(
                    "code {:?} not in {codes:?}: {}",
                    e.code(),
                    e.message()
                ))
            }
        }
        other => Err(format!("not a gRPC expectation: {other:?}")),
    }
}

/// Runs a command with a time bound; never panics (a hang is a failure).
fn run_for(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().map_err(|e| e.to_string()),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().map_err(|e| e.to_string())?;
                return Err(format!(
                    "still running after {limit:?} (it should have refused); stderr: {}",
                    text(&out.stderr)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn entry_count(s: &TestServer) -> Result<u64, String> {
    let out = s.cli(&["entry", "count", "--output", "json"]);
    if !out.status.success() {
        return Err(format!("entry count failed: {}", text(&out.stderr)));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    v["count"]
        .as_u64()
        .ok_or_else(|| format!("no count in {v}"))
}

/// Every non-directory path under `dir` (none if it does not exist).
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

// ---------------------------------------------------------------------------
// 1. The admin CLI: SPIFFE IDs, selectors, TTLs, entry JSON files.

const PARENT: &str = "spiffe://example.org/sigil/agent/join_token/parent";

/// `entry create` with one flag changed from a valid baseline.
fn create_args(spiffe_id: &str, selector: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "entry",
        "create",
        "--spiffe-id",
        spiffe_id,
        "--parent-id",
        PARENT,
        "--selector",
        selector,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    a.extend(extra.iter().map(ToString::to_string));
    a
}

fn cli_cases() -> Vec<(Case, Vec<String>)> {
    let ok_id = "spiffe://example.org/web";
    let ok_sel = "unix:uid:1000";
    let id_case = |name: &str, id: &str, needles: Vec<&'static str>| {
        (
            case(
                format!("spiffe_id/{name}"),
                format!("entry create --spiffe-id {id:?}"),
                Expect::Exit(2, needles),
            ),
            create_args(id, ok_sel, &[]),
        )
    };
    let long_id = format!("spiffe://example.org/{}", "a".repeat(2040));
    let long_td = format!("spiffe://{}/x", "a".repeat(256));
    let mut v = vec![
        id_case("empty", "", vec!["empty"]),
        id_case("no scheme", "example.org/web", vec!["scheme"]),
        id_case("wrong scheme", "https://example.org/web", vec!["scheme"]),
        id_case(
            "uppercase scheme",
            "SPIFFE://example.org/web",
            vec!["scheme"],
        ),
        id_case(
            "uppercase trust domain",
            "spiffe://Example.org/web",
            vec!["lowercase"],
        ),
        id_case("port", "spiffe://example.org:8443/web", vec!["port"]),
        id_case(
            "userinfo",
            "spiffe://admin@example.org/web",
            vec!["userinfo"],
        ),
        id_case("query", "spiffe://example.org/web?x=1", vec!["query"]),
        id_case("fragment", "spiffe://example.org/web#x", vec!["fragment"]),
        id_case(
            "dot segment",
            "spiffe://example.org/./web",
            vec!["'.' and '..'"],
        ),
        id_case(
            "dot-dot segment",
            "spiffe://example.org/a/../web",
            vec!["'.' and '..'"],
        ),
        id_case(
            "empty segment",
            "spiffe://example.org/a//web",
            vec!["empty path segment"],
        ),
        id_case(
            "trailing slash",
            "spiffe://example.org/web/",
            vec!["trailing '/'"],
        ),
        id_case(
            "percent-encoding",
            "spiffe://example.org/w%65b",
            vec!["percent-encoding"],
        ),
        id_case("over-long (2061 bytes)", &long_id, vec!["2048"]),
        id_case("trust domain over 255 bytes", &long_td, vec!["255"]),
        id_case(
            "non-ASCII path",
            "spiffe://example.org/wéb",
            vec!["not allowed in a SPIFFE ID path"],
        ),
        id_case(
            "non-ASCII trust domain",
            "spiffe://exämple.org/web",
            vec!["not allowed in a trust domain"],
        ),
        id_case(
            "space in path",
            "spiffe://example.org/a b",
            vec!["not allowed in a SPIFFE ID path"],
        ),
        id_case(
            "missing trust domain",
            "spiffe:///web",
            vec!["trust domain is missing"],
        ),
    ];
    // Valid IDs the server refuses for this entry (server-side rules).
    for (name, id, needles) in [
        (
            "other trust domain",
            "spiffe://other.org/web",
            vec!["not in this server's trust domain"],
        ),
        (
            "trust domain ID without path",
            "spiffe://example.org",
            vec!["has no path"],
        ),
        (
            "reserved /sigil/ path",
            "spiffe://example.org/sigil/agent/x",
            vec!["reserved"],
        ),
    ] {
        v.push((
            case(
                format!("spiffe_id/{name}"),
                format!("entry create --spiffe-id {id:?}"),
                Expect::Exit(1, needles),
            ),
            create_args(id, ok_sel, &[]),
        ));
    }
    v.push((
        case(
            "parent_id/percent-encoding",
            "entry create --parent-id spiffe://example.org/%2e",
            Expect::Exit(2, vec!["percent-encoding"]),
        ),
        [
            "entry",
            "create",
            "--spiffe-id",
            ok_id,
            "--parent-id",
            "spiffe://example.org/%2e",
            "--selector",
            ok_sel,
        ]
        .iter()
        .map(ToString::to_string)
        .collect(),
    ));
    // Selectors.
    for (name, sel, needles) in [
        ("missing type", ":uid:1000", vec!["empty type"]),
        ("missing value", "unix:", vec!["empty value"]),
        ("no colon", "unix", vec!["no ':'"]),
        ("uppercase type", "Unix:uid:1000", vec!["[a-z0-9_-]+"]),
        ("space in type", "un ix:uid:1000", vec!["[a-z0-9_-]+"]),
        (
            "control character in value",
            "unix:uid:10\u{7}00",
            vec!["control character"],
        ),
        (
            "value over 4096 bytes",
            &*format!("unix:{}", "x".repeat(4097)),
            vec!["4096"],
        ),
    ] {
        v.push((
            case(
                format!("selector/{name}"),
                format!("--selector {:?}", truncate(sel, 40)),
                Expect::Exit(2, needles),
            ),
            create_args(ok_id, sel, &[]),
        ));
    }
    v.push((
        case(
            "selector/none",
            "entry create without --selector",
            Expect::Exit(1, vec!["at least one --selector"]),
        ),
        [
            "entry",
            "create",
            "--spiffe-id",
            ok_id,
            "--parent-id",
            PARENT,
        ]
        .iter()
        .map(ToString::to_string)
        .collect(),
    ));
    // TTLs and durations.
    for (name, flag, value, code, needles) in [
        (
            "zero",
            "--x509-svid-ttl",
            "0s",
            2,
            vec!["0s", "at least 1s"],
        ),
        (
            "negative",
            "--x509-svid-ttl=-5m",
            "",
            2,
            vec!["\"-5m\"", "negative"],
        ),
        (
            "garbage",
            "--x509-svid-ttl",
            "soon",
            2,
            vec!["\"soon\"", "a unit must follow a number"],
        ),
        (
            "unknown unit",
            "--x509-svid-ttl",
            "1w",
            2,
            vec!["\"1w\"", "unknown unit"],
        ),
        (
            "bare number",
            "--x509-svid-ttl",
            "3600",
            2,
            vec!["missing unit"],
        ),
        (
            "overflow",
            "--x509-svid-ttl",
            "99999999999999999999s",
            2,
            vec!["too large"],
        ),
        (
            "over 100 years",
            "--x509-svid-ttl",
            "36501d",
            2,
            vec!["100 years"],
        ),
        (
            "above ca_ttl / 6 (24h CA: 4h max)",
            "--x509-svid-ttl",
            "5h",
            1,
            vec!["5h", "ca_ttl / 6 = 4h"],
        ),
        (
            "jwt ttl above 24h",
            "--jwt-svid-ttl",
            "25h",
            1,
            vec!["limit of 24h"],
        ),
        (
            "expires_at not RFC 3339",
            "--expires-at",
            "tomorrow",
            2,
            vec!["RFC 3339"],
        ),
        (
            "bad DNS name",
            "--dns-name=-bad-.example.org",
            "",
            2,
            vec!["\"-bad-.example.org\"", "DNS name"],
        ),
    ] {
        v.push((
            case(
                format!("ttl/{name}"),
                format!("{flag} {value}"),
                Expect::Exit(code, needles),
            ),
            create_args(
                ok_id,
                ok_sel,
                &[flag, value]
                    .into_iter()
                    .filter(|a| !a.is_empty())
                    .collect::<Vec<_>>(),
            ),
        ));
    }
    v
}

/// Entry JSON files: each is refused as a whole (nothing created).
fn entry_file_cases() -> Vec<(Case, String)> {
    let good = format!(
        r#"{{"spiffe_id":"spiffe://example.org/f1","parent_id":"{PARENT}","selectors":[{{"type":"unix","value":"uid:1"}}]}}"#
    );
    let entry = |id: &str, extra: &str| {
        format!(
            r#"{{"spiffe_id":"{id}","parent_id":"{PARENT}","selectors":[{{"type":"unix","value":"uid:2"}}]{extra}}}"#
        )
    };
    let file = |entries: &[String]| format!(r#"{{"entries":[{}]}}"#, entries.join(","));
    let rows: Vec<(&str, String, i32, Vec<&'static str>)> = vec![
        (
            "malformed JSON",
            "{\"entries\": [".into(),
            1,
            vec!["invalid entry JSON"],
        ),
        (
            "not JSON at all",
            "spiffe://example.org/x".into(),
            1,
            vec!["invalid entry JSON"],
        ),
        ("empty file", String::new(), 1, vec!["invalid entry JSON"]),
        (
            "unknown top-level field",
            r#"{"entries":[],"entires":[]}"#.into(),
            1,
            vec!["unknown field", "entires"],
        ),
        (
            "unknown entry field",
            file(&[
                good.clone(),
                entry("spiffe://example.org/f2", r#","ttl":60"#),
            ]),
            1,
            vec!["unknown field", "ttl"],
        ),
        (
            "unknown selector field",
            file(&[format!(
                r#"{{"spiffe_id":"spiffe://example.org/f2","parent_id":"{PARENT}","selectors":[{{"type":"unix","value":"uid:1","kind":"x"}}]}}"#
            )]),
            1,
            vec!["unknown field", "kind"],
        ),
        (
            "entries is a string",
            r#"{"entries":"all"}"#.into(),
            1,
            vec!["invalid entry JSON", "invalid type"],
        ),
        (
            "selectors is a string",
            file(&[format!(
                r#"{{"spiffe_id":"spiffe://example.org/f2","parent_id":"{PARENT}","selectors":"unix:uid:1"}}"#
            )]),
            1,
            vec!["invalid type"],
        ),
        (
            "ttl is a boolean",
            file(&[
                good.clone(),
                entry("spiffe://example.org/f2", r#","x509_svid_ttl":true"#),
            ]),
            1,
            vec!["invalid entry JSON"],
        ),
        (
            "negative ttl seconds",
            file(&[
                good.clone(),
                entry("spiffe://example.org/f2", r#","x509_svid_ttl":-60"#),
            ]),
            1,
            vec!["entry 1", "x509_svid_ttl", "negative"],
        ),
        (
            "garbage ttl text",
            file(&[
                good.clone(),
                entry("spiffe://example.org/f2", r#","x509_svid_ttl":"1 hour""#),
            ]),
            1,
            vec!["entry 1", "x509_svid_ttl", "\"1 hour\""],
        ),
        (
            "missing selectors",
            file(&[
                good.clone(),
                format!(
                    r#"{{"spiffe_id":"spiffe://example.org/f2","parent_id":"{PARENT}","selectors":[]}}"#
                ),
            ]),
            1,
            vec!["entry 1", "at least one selector"],
        ),
        (
            "bad SPIFFE ID in entry 1",
            file(&[good.clone(), entry("spiffe://example.org/f2/", "")]),
            1,
            vec!["entry 1", "trailing '/'"],
        ),
        // Checks only the server can make: before the all-or-nothing fix
        // entry 0 was created and the file half-applied.
        (
            "duplicate entries in one file",
            file(&[good.clone(), good.clone()]),
            1,
            vec!["entry 1", "duplicates entry 0"],
        ),
        (
            "entry 1 ttl above ca_ttl / 6",
            file(&[
                good.clone(),
                entry("spiffe://example.org/f2", r#","x509_svid_ttl":"5h""#),
            ]),
            1,
            vec!["entry 1", "ca_ttl / 6"],
        ),
        (
            "entry 1 in another trust domain",
            file(&[good.clone(), entry("spiffe://other.org/f2", "")]),
            1,
            vec!["entry 1", "not in this server's trust domain"],
        ),
        (
            "entry 1 already exists",
            file(&[good.clone(), entry("spiffe://example.org/existing", "")]),
            1,
            vec!["entry 1", "already exists"],
        ),
        (
            "entry 1 hint too long",
            file(&[
                good.clone(),
                entry(
                    "spiffe://example.org/f2",
                    &format!(r#","hint":"{}""#, "h".repeat(300)),
                ),
            ]),
            1,
            vec!["entry 1", "hint"],
        ),
    ];
    rows.into_iter()
        .map(|(name, body, code, needles)| {
            (
                case(
                    format!("entry_file/{name}"),
                    body.clone(),
                    Expect::Exit(code, needles),
                ),
                body,
            )
        })
        .collect()
}

fn run_cli_cases(s: &TestServer, report: &mut Report) {
    let baseline = entry_count(s).expect("entry count");
    let run_one = |c: &Case, args: &[String]| -> Result<(), String> {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_for(
            Command::new(bin("sigil-server"))
                .args(&a)
                .env("SIGIL_ADMIN_SOCKET", &s.socket),
            Duration::from_secs(30),
        )?;
        check_exit(&out, &c.expect)?;
        let after = entry_count(s)?;
        if after != baseline {
            return Err(format!("partial write: entry count {baseline} → {after}"));
        }
        Ok(())
    };
    for (c, args) in cli_cases() {
        let r = run_one(&c, &args);
        report.record(&c, r);
    }
    for (c, body) in entry_file_cases() {
        let path = s.dir.path().join("entries.json");
        let r = std::fs::write(&path, &body)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                run_one(
                    &c,
                    &[
                        "entry".into(),
                        "create".into(),
                        "--data".into(),
                        path.display().to_string(),
                    ],
                )
            });
        report.record(&c, r);
    }
}

// ---------------------------------------------------------------------------
// 2. Config files: the daemons refuse to start, name the key, create nothing.

fn server_config_cases(dir: &Path) -> Vec<(Case, String)> {
    let base = |data: &Path| {
        format!(
            "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nbind_address = \"127.0.0.1:0\"\n",
            data.display()
        )
    };
    let d = dir.join("data");
    let mut rows: Vec<(&str, String, Vec<&'static str>)> = vec![
        (
            "unknown top-level key",
            format!("{}trust_domian = \"x\"\n", base(&d)),
            vec!["unknown field", "trust_domian"],
        ),
        (
            "unknown key in [bundle_endpoint]",
            format!(
                "{}[bundle_endpoint]\naddress = \"127.0.0.1:0\"\nrefresh = \"5m\"\n",
                base(&d)
            ),
            vec!["unknown field", "refresh"],
        ),
        (
            "unknown key in [rate_limit]",
            format!("{}[rate_limit]\ncsrs_per_minute = 5\n", base(&d)),
            vec!["unknown field", "csrs_per_minute"],
        ),
        (
            "bad bind_address",
            base(&d).replace("127.0.0.1:0", "localhost"),
            vec!["bind_address"],
        ),
        (
            "bad bundle_endpoint address",
            format!(
                "{}[bundle_endpoint]\naddress = \"0.0.0.0:99999\"\n",
                base(&d)
            ),
            vec!["address"],
        ),
        (
            "missing trust_domain",
            base(&d).replace("trust_domain = \"example.org\"\n", ""),
            vec!["missing field", "trust_domain"],
        ),
        (
            "missing data_dir",
            "trust_domain = \"example.org\"\nbind_address = \"127.0.0.1:0\"\n".to_string(),
            vec!["missing field", "data_dir"],
        ),
        (
            "uppercase trust_domain",
            base(&d).replace("example.org", "Example.org"),
            vec!["trust_domain", "lowercase"],
        ),
        (
            "ca_ttl garbage",
            format!("{}ca_ttl = \"one day\"\n", base(&d)),
            vec!["ca_ttl", "\"one day\""],
        ),
        (
            "ca_ttl too short",
            format!("{}ca_ttl = \"30s\"\n", base(&d)),
            vec!["ca_ttl", "minimum 1m"],
        ),
        (
            "svid ttl above ca_ttl / 6",
            format!(
                "{}ca_ttl = \"6h\"\ndefault_x509_svid_ttl = \"2h\"\n",
                base(&d)
            ),
            vec!["default_x509_svid_ttl", "ca_ttl / 6 = 1h"],
        ),
        (
            "agent_svid_ttl zero",
            format!("{}agent_svid_ttl = \"0s\"\n", base(&d)),
            vec!["agent_svid_ttl", "at least 1s"],
        ),
        (
            "ca_key_type rsa",
            format!("{}ca_key_type = \"rsa-2048\"\n", base(&d)),
            vec!["ca_key_type", "rsa-2048"],
        ),
        (
            "wrong type for ca_ttl",
            format!("{}ca_ttl = 86400\n", base(&d)),
            vec!["ca_ttl"],
        ),
        (
            "rate limit zero",
            format!("{}[rate_limit]\ncsrs_per_second = 0\n", base(&d)),
            vec!["rate_limit", "at least 1"],
        ),
        (
            "item9 csr rate whose burst is below the agent batch",
            format!("{}[rate_limit]\ncsrs_per_second = 249\n", base(&d)),
            vec!["rate_limit.csrs_per_second", "249", "at least 250"],
        ),
        (
            "not TOML",
            "trust_domain = example.org\n[[[".into(),
            vec!["invalid config file"],
        ),
        (
            "https_web without cert",
            format!(
                "{}[bundle_endpoint]\naddress = \"127.0.0.1:0\"\nprofile = \"https_web\"\n",
                base(&d)
            ),
            vec!["bundle_endpoint", "cert_file"],
        ),
    ];
    // The per-agent rates of issue 14 item 1: 0 is refused, naming the key.
    for (name, key) in [
        ("renewal rate zero", "rate_limit.renewals_per_second"),
        (
            "sync stream rate zero",
            "rate_limit.sync_streams_per_second",
        ),
        (
            "bundle fetch rate zero",
            "rate_limit.bundle_fetches_per_second",
        ),
    ] {
        let field = key.trim_start_matches("rate_limit.");
        let body = format!("{}[rate_limit]\n{field} = 0\n", base(&d));
        rows.push((name, body, vec![key, "at least 1"]));
    }
    rows.into_iter()
        .map(|(name, body, needles)| {
            (
                case(
                    format!("server_config/{name}"),
                    body.clone(),
                    Expect::Exit(1, needles),
                ),
                body,
            )
        })
        .collect()
}

fn agent_config_cases(dir: &Path, bundle: &Path, garbage: &Path) -> Vec<(Case, String)> {
    let d = dir.join("data");
    let sock = dir.join("run/agent.sock");
    let base = format!(
        "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nserver_address = \"127.0.0.1:1\"\n\
         trust_bundle_path = \"{}\"\nsocket_path = \"{}\"\njoin_token = \"abc\"\n",
        d.display(),
        bundle.display(),
        sock.display()
    );
    let rows: Vec<(&str, String, Vec<&'static str>)> = vec![
        (
            "unknown key",
            format!("{base}sokcet_path = \"/x\"\n"),
            vec!["unknown field", "sokcet_path"],
        ),
        (
            "unknown key in [node_attestor.x509pop]",
            format!(
                "{base}[node_attestor.x509pop]\ncert_path = \"/a\"\nkey_path = \"/b\"\nkey_pass = \"x\"\n"
            ),
            vec!["unknown field", "key_pass"],
        ),
        (
            "missing server_address",
            base.replace("server_address = \"127.0.0.1:1\"\n", ""),
            vec!["missing field", "server_address"],
        ),
        (
            "server_address without port",
            base.replace("127.0.0.1:1", "sigil-server"),
            vec!["server_address", "host:port"],
        ),
        (
            "server_address port out of range",
            base.replace("127.0.0.1:1", "127.0.0.1:70000"),
            vec!["server_address", "host:port"],
        ),
        (
            "relative socket_path",
            base.replace(&sock.display().to_string(), "agent.sock"),
            vec!["socket_path", "absolute"],
        ),
        (
            "missing trust_bundle_path",
            base.replace(
                &format!("trust_bundle_path = \"{}\"\n", bundle.display()),
                "",
            ),
            vec!["trust_bundle_path", "required"],
        ),
        (
            "malformed join_token",
            base.replace("join_token = \"abc\"", "join_token = \"a/b\""),
            vec!["join_token"],
        ),
        (
            "bad trust_domain",
            base.replace(
                "trust_domain = \"example.org\"",
                "trust_domain = \"spiffe://example.org/x\"",
            ),
            vec!["trust_domain"],
        ),
        // `validate` checks the config text only; the daemon reads the file.
        (
            "garbage trust bundle file (run only)",
            base.replace(
                &bundle.display().to_string(),
                &garbage.display().to_string(),
            ),
            vec!["garbage.pem"],
        ),
    ];
    rows.into_iter()
        .map(|(name, body, needles)| {
            (
                case(
                    format!("agent_config/{name}"),
                    body.clone(),
                    Expect::Exit(1, needles),
                ),
                body,
            )
        })
        .collect()
}

fn run_config_cases(s: &TestServer, report: &mut Report) {
    let run_one = |c: &Case, exe: &str, body: &str, dir: &Path| -> Result<(), String> {
        let cfg = dir.join("config.toml");
        std::fs::write(&cfg, body).map_err(|e| e.to_string())?;
        let subs: &[&str] = if c.name.ends_with("(run only)") {
            &["run"]
        } else {
            &["validate", "run"]
        };
        for sub in subs {
            let out = run_for(
                Command::new(bin(exe)).args([sub, "--config"]).arg(&cfg),
                Duration::from_secs(20),
            )?;
            check_exit(&out, &c.expect).map_err(|e| format!("{sub}: {e}"))?;
        }
        // No state written: data_dir and the socket directory hold no file.
        // (The agent creates its empty data_dir before it reads the trust
        // bundle, which is only needed when it has no stored identity.)
        for created in ["data", "run"] {
            let files = files_under(&dir.join(created));
            if !files.is_empty() {
                return Err(format!("the refused config wrote {files:?}"));
            }
        }
        Ok(())
    };
    for (i, (c, body)) in server_config_cases(&s.dir.path().join("cfg-x"))
        .into_iter()
        .enumerate()
    {
        // Each case gets its own directory, so "nothing created" is exact.
        let dir = s.dir.path().join(format!("cfg-s{i}"));
        let body = body.replace(
            &s.dir.path().join("cfg-x").display().to_string(),
            &dir.display().to_string(),
        );
        let r = std::fs::create_dir_all(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| run_one(&c, "sigil-server", &body, &dir));
        report.record(&c, r);
    }
    let bundle = s.dir.path().join("bundle.pem");
    let garbage = s.dir.path().join("garbage.pem");
    std::fs::write(&bundle, s.cli_ok(&["bundle", "show"])).expect("bundle");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .expect("garbage");
    let template = s.dir.path().join("cfg-x");
    for (i, (c, body)) in agent_config_cases(&template, &bundle, &garbage)
        .into_iter()
        .enumerate()
    {
        let dir = s.dir.path().join(format!("cfg-a{i}"));
        let body = body.replace(&template.display().to_string(), &dir.display().to_string());
        let r = std::fs::create_dir_all(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| run_one(&c, "sigil-agent", &body, &dir));
        report.record(&c, r);
    }
}

// ---------------------------------------------------------------------------
// 3. Certificates and JWKS (the library every process uses to read them).

/// A library case: runs the real decoder on its input.
type Check = Box<dyn Fn() -> Result<(), String>>;

/// A CSR row: its name, the CSR (or why it could not be built), the outcome.
type CsrRow = (&'static str, Result<Vec<u8>, String>, Expect);

fn jwks_cases(ca_der: &[u8]) -> Vec<(Case, Check)> {
    let td = TrustDomain::parse("example.org").expect("td");
    let b64 = |b: &[u8]| b64_encode(b, false);
    let ca = b64(ca_der);
    let key = KeyPair::generate().expect("key");
    // x and y of an uncompressed P-256 point, base64url.
    let xy = |raw: &[u8]| {
        (
            b64_encode(&raw[1..33], true),
            b64_encode(&raw[33..65], true),
        )
    };
    let (x, y) = xy(key.public_key_raw());
    let cert_xy = {
        let (_, cert) = x509_parser::parse_x509_certificate(ca_der).expect("ca cert");
        xy(&cert.public_key().subject_public_key.data)
    };
    let jwk_x509 = |x5c: &str, x: &str, y: &str| {
        format!(
            r#"{{"use":"x509-svid","kty":"EC","crv":"P-256","x":"{x}","y":"{y}","x5c":[{x5c}]}}"#
        )
    };
    let doc = |keys: &[String]| format!(r#"{{"keys":[{}],"spiffe_sequence":1}}"#, keys.join(","));
    // Document-level faults refuse the whole document.
    let rows: Vec<(&str, Vec<u8>, Vec<&'static str>)> = vec![
        (
            "garbage bytes",
            b"\x00\xffnot json".to_vec(),
            vec!["not a valid JWK Set"],
        ),
        (
            "truncated document",
            doc(&[jwk_x509(&format!("\"{ca}\""), &cert_xy.0, &cert_xy.1)]).as_bytes()[..60]
                .to_vec(),
            vec!["not a valid JWK Set"],
        ),
        (
            "no keys member",
            br#"{"spiffe_sequence":1}"#.to_vec(),
            vec!["no \"keys\" member"],
        ),
        (
            "keys is not an array",
            br#"{"keys":{"use":"x509-svid"}}"#.to_vec(),
            vec!["not a valid JWK Set"],
        ),
        (
            "document over 1 MiB",
            format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(1024 * 1024)).into_bytes(),
            vec!["limit"],
        ),
    ];
    // A bad key is left out of the bundle and reported, naming the key, the
    // spec clause and the rule; the document still decodes. Rows: name,
    // document, authorities kept, needles of the report.
    let skip_rows: Vec<(&str, String, usize, Vec<&'static str>)> = vec![
        (
            "key is not an object",
            r#"{"keys":[42]}"#.to_string(),
            0,
            vec!["bundle key 0 skipped", "§4.1.3", "JSON object"],
        ),
        (
            "x509-svid key without x5c",
            doc(&[format!(
                r#"{{"use":"x509-svid","kty":"EC","crv":"P-256","x":"{}","y":"{}"}}"#,
                cert_xy.0, cert_xy.1
            )]),
            0,
            vec!["bundle key 0 skipped", "X509-SVID §6.2", "missing or empty"],
        ),
        (
            "x509-svid key with empty x5c",
            doc(&[jwk_x509("", &cert_xy.0, &cert_xy.1)]),
            0,
            vec!["bundle key 0 skipped", "X509-SVID §6.2", "missing or empty"],
        ),
        (
            "x509-svid key with two certificates (the first is used)",
            doc(&[jwk_x509(
                &format!("\"{ca}\",\"%%%\""),
                &cert_xy.0,
                &cert_xy.1,
            )]),
            1,
            vec![
                "bundle key 0 kept with its first certificate",
                "X509-SVID §6.2",
                "1 value(s) after the first",
            ],
        ),
        (
            "unknown use",
            doc(&[format!(
                r#"{{"use":"sig","kid":"k","kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}"#
            )]),
            0,
            vec!["bundle key 0 skipped", "§4.2.2", "\"sig\""],
        ),
        (
            "no use",
            doc(&[format!(
                r#"{{"kid":"k","kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}"#
            )]),
            0,
            vec!["bundle key 0 skipped", "§4.2.2", "no \"use\""],
        ),
        (
            "unknown kty",
            doc(&[
                r#"{"use":"jwt-svid","kid":"k","kty":"OKP","crv":"Ed25519","x":"AA"}"#.to_string(),
            ]),
            0,
            vec!["bundle key 0 skipped", "§4.2.1", "\"OKP\""],
        ),
        (
            "x5c not base64",
            doc(&[jwk_x509("\"%%%\"", &cert_xy.0, &cert_xy.1)]),
            0,
            vec!["bundle key 0 skipped", "§4.1.3", "x5c", "base64"],
        ),
        (
            "x5c truncated certificate",
            doc(&[jwk_x509(
                &format!("\"{}\"", b64(&ca_der[..ca_der.len() / 2])),
                &cert_xy.0,
                &cert_xy.1,
            )]),
            0,
            vec!["bundle key 0 skipped", "not a DER X.509 certificate"],
        ),
        (
            "x5c key does not match the JWK",
            doc(&[jwk_x509(&format!("\"{ca}\""), &x, &y)]),
            0,
            vec!["bundle key 0 skipped", "do not match"],
        ),
        (
            "unsupported curve",
            doc(&[format!(
                r#"{{"use":"jwt-svid","kid":"k","kty":"EC","crv":"P-521","x":"{x}","y":"{y}"}}"#
            )]),
            0,
            vec!["bundle key 0 skipped", "P-521"],
        ),
        (
            "EC coordinate of wrong length",
            doc(&[format!(
                r#"{{"use":"jwt-svid","kid":"k","kty":"EC","crv":"P-256","x":"AAAA","y":"{y}"}}"#
            )]),
            0,
            vec!["bundle key 0 skipped", "32 bytes"],
        ),
        (
            "jwt-svid key without kid",
            doc(&[format!(
                r#"{{"use":"jwt-svid","kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}"#
            )]),
            0,
            vec!["bundle key 0 skipped", "kid"],
        ),
        (
            "duplicate kid (the first is kept)",
            doc(&[
                format!(
                    r#"{{"use":"jwt-svid","kid":"k","kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}"#
                ),
                format!(
                    r#"{{"use":"jwt-svid","kid":"k","kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}"#
                ),
            ]),
            1,
            vec!["bundle key 1 skipped", "\"k\""],
        ),
        (
            "RSA key too small",
            doc(&[r#"{"use":"jwt-svid","kid":"r","kty":"RSA","n":"AQAB","e":"AQAB"}"#.to_string()]),
            0,
            vec!["bundle key 0 skipped", "RSA modulus", "2048"],
        ),
        (
            "a bad key between two good ones",
            doc(&[
                jwk_x509(&format!("\"{ca}\""), &cert_xy.0, &cert_xy.1),
                jwk_x509(&format!("\"{ca}\""), &x, &y),
                format!(
                    r#"{{"use":"jwt-svid","kid":"k","kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}"#
                ),
            ]),
            2,
            vec!["bundle key 1 skipped", "do not match"],
        ),
    ];
    let mut out: Vec<(Case, Check)> = Vec::new();
    for (name, bytes, needles) in rows {
        let td = td.clone();
        let c = case(
            format!("jwks/{name}"),
            String::from_utf8_lossy(&bytes).into_owned(),
            Expect::Error(needles.clone()),
        );
        out.push((
            c,
            Box::new(move || match bundle::decode(&td, &bytes) {
                Ok(d) => Err(format!("accepted: {d:?}")),
                Err(e) => contains_all(&e.to_string(), &needles),
            }),
        ));
    }
    for (name, text, kept, needles) in skip_rows {
        let td = td.clone();
        let c = case(
            format!("jwks/{name}"),
            text.clone(),
            Expect::Decoded(kept, needles.clone()),
        );
        out.push((
            c,
            Box::new(move || {
                let d = bundle::decode(&td, text.as_bytes()).map_err(|e| e.to_string())?;
                let n = d.bundle.x509_authorities.len() + d.bundle.jwt_authorities.len();
                if n != kept {
                    return Err(format!("kept {n} authorities, want {kept}: {d:?}"));
                }
                let report: Vec<String> = d.skipped.iter().map(ToString::to_string).collect();
                contains_all(&report.join("; "), &needles)
            }),
        ));
    }
    // A correct document decodes (the control that keeps the table honest).
    let good = doc(&[jwk_x509(&format!("\"{ca}\""), &cert_xy.0, &cert_xy.1)]);
    out.push((
        case(
            "jwks/valid document (control)",
            good.clone(),
            Expect::Answers(Duration::ZERO),
        ),
        Box::new(move || {
            let d = bundle::decode(&td, good.as_bytes()).map_err(|e| e.to_string())?;
            if d.bundle.x509_authorities.len() != 1 || !d.skipped.is_empty() {
                return Err(format!("want one authority and nothing skipped: {d:?}"));
            }
            Ok(())
        }),
    ));
    let pem_rows: Vec<(&str, Vec<u8>, Vec<&'static str>)> = vec![
        (
            "PEM: garbage",
            b"hello".to_vec(),
            vec!["not a PEM or DER certificate"],
        ),
        (
            "PEM: bad base64 in block",
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_vec(),
            vec!["PEM"],
        ),
        (
            "PEM: private key instead of certificate",
            key.serialize_pem().into_bytes(),
            vec!["PRIVATE KEY", "not a certificate"],
        ),
        (
            "PEM: truncated certificate",
            {
                let pem = pem::to_pem(&[ca_der.to_vec()]);
                pem.as_bytes()[..pem.len() / 2].to_vec()
            },
            vec!["PEM"],
        ),
        (
            "PEM: block holding a non-certificate",
            pem::to_pem(&[b"\x30\x03\x02\x01\x01".to_vec()]).into_bytes(),
            vec!["certificate 0", "not a valid DER X.509 certificate"],
        ),
        (
            "DER: truncated certificate list",
            {
                let mut d = ca_der.to_vec();
                d.extend_from_slice(&ca_der[..10]);
                d
            },
            vec!["DER certificate 1 does not parse"],
        ),
    ];
    for (name, bytes, needles) in pem_rows {
        let c = case(
            format!("certs/{name}"),
            String::from_utf8_lossy(&bytes).into_owned(),
            Expect::Error(needles.clone()),
        );
        out.push((
            c,
            Box::new(move || match pem::certs_from_pem_or_der(&bytes) {
                Ok(v) => Err(format!("accepted {} certificates", v.len())),
                Err(e) => contains_all(&e.to_string(), &needles),
            }),
        ));
    }
    out
}

/// Base64 (standard, padded) or base64url without padding.
fn b64_encode(bytes: &[u8], url: bool) -> String {
    let alphabet: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
        }
        if !url {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

fn contains_all(msg: &str, needles: &[&str]) -> Result<(), String> {
    for n in needles {
        if !msg.contains(n) {
            return Err(format!("error lacks {n:?}: {msg}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// 4. The agent API: CSRs through SignSvids, oversized messages/metadata.

fn openssl_csr(dir: &Path, name: &str, newkey: &[&str]) -> Result<Vec<u8>, String> {
    let out_path = dir.join(format!("{name}.csr.der"));
    let out = Command::new("openssl")
        .args(["req", "-new", "-nodes", "-subj", "/CN=test"])
        .args(newkey)
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .args(["-outform", "DER", "-out"])
        .arg(&out_path)
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    if !out.status.success() {
        return Err(format!("openssl: {}", text(&out.stderr)));
    }
    std::fs::read(&out_path).map_err(|e| e.to_string())
}

/// A CSR over a fresh P-256 key with the given request parameters.
fn rcgen_csr(params: CertificateParams) -> Vec<u8> {
    let key = KeyPair::generate().expect("key");
    params.serialize_request(&key).expect("csr").der().to_vec()
}

async fn sign_one(
    c: &mut sigil_proto::agent_api::agent_api_client::AgentApiClient<Channel>,
    entry_id: &str,
    csr: Vec<u8>,
) -> Result<pb::SvidResult, tonic::Status> {
    let mut r = c
        .sign_svids(pb::SignSvidsRequest {
            requests: vec![pb::SvidRequest {
                entry_id: entry_id.to_string(),
                csr,
            }],
        })
        .await?
        .into_inner()
        .results;
    r.pop().ok_or_else(|| tonic::Status::internal("no result"))
}

fn check_item(
    r: Result<pb::SvidResult, tonic::Status>,
    expect: &Expect,
    entry_id_uri: &str,
) -> Result<(), String> {
    let r = r.map_err(|e| format!("the call failed: {e}"))?;
    match (expect, r.result) {
        (Expect::Item(code, needles), Some(pb::svid_result::Result::Error(e))) => {
            if e.code != *code as i32 {
                return Err(format!(
                    "item code {} (want {code:?}): {}",
                    e.code, e.message
                ));
            }
            contains_all(&e.message, needles)
        }
        (Expect::SignedForEntryOnly, Some(pb::svid_result::Result::Svid(svid))) => {
            let leaf = svid.cert_chain.first().ok_or("empty chain")?;
            let info = sigil_proto::check_leaf(leaf)
                .map_err(|e| format!("leaf breaks the SVID profile: {e}"))?;
            if info.spiffe_id.as_str() != entry_id_uri || svid.spiffe_id != entry_id_uri {
                return Err(format!(
                    "leaf is for {} (want {entry_id_uri})",
                    info.spiffe_id
                ));
            }
            if !info.dns_names.is_empty() {
                return Err(format!(
                    "leaf has DNS names from the CSR: {:?}",
                    info.dns_names
                ));
            }
            let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
            let bc = cert.basic_constraints().map_err(|e| e.to_string())?;
            if bc.is_some_and(|b| b.value.ca) {
                return Err("leaf has cA=true".into());
            }
            let sans = cert
                .subject_alternative_name()
                .map_err(|e| e.to_string())?
                .map(|s| s.value.general_names.len())
                .unwrap_or(0);
            if sans != 1 {
                return Err(format!("leaf has {sans} SANs (want the entry's URI only)"));
            }
            Ok(())
        }
        (expect, got) => Err(format!("got {got:?}, want {expect:?}")),
    }
}

async fn run_agent_api_cases(s: &TestServer, report: &mut Report) {
    // A simulated agent with one entry to sign for.
    let token = s.cli_json(&["token", "generate"])["token"]
        .as_str()
        .expect("token")
        .to_string();
    let mut anon = s.agent_client(None).await.expect("connect");
    let (key, csr) = key_and_csr();
    let svid = attest(&mut anon, attestation::JOIN_TOKEN, token.into_bytes(), csr)
        .await
        .expect("attest");
    let me: AgentIdentity = identity(&key, &svid);
    let entry_uri = "spiffe://example.org/csr-target";
    let entry_id = s.cli_json(&[
        "entry",
        "create",
        "--spiffe-id",
        entry_uri,
        "--parent-id",
        &me.id,
        "--selector",
        "unix:uid:4242",
    ])["entries"][0]["id"]
        .as_str()
        .expect("entry id")
        .to_string();
    let mut c = s.agent_client(Some(&me)).await.expect("connect as agent");
    let tmp = tempfile::tempdir().expect("tmp");

    let valid = rcgen_csr(CertificateParams::default());
    let mut bad_sig = valid.clone();
    let n = bad_sig.len();
    bad_sig[n - 5] ^= 0x55;
    let p256 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    let ca_csr = openssl_csr(
        tmp.path(),
        "ca",
        &[
            &p256[..],
            &[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    let san_csr = openssl_csr(
        tmp.path(),
        "san",
        &[&p256[..], &["-addext", "subjectAltName=URI:spiffe://example.org/admin,URI:spiffe://other.org/x,DNS:evil.example.com"]].concat(),
    );
    let p384 = {
        let k = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384");
        CertificateParams::default()
            .serialize_request(&k)
            .expect("csr")
            .der()
            .to_vec()
    };
    let rows: Vec<CsrRow> = vec![
        (
            "empty",
            Ok(Vec::new()),
            Expect::Item(Code::InvalidArgument, vec!["CSR is empty"]),
        ),
        (
            "garbage bytes",
            Ok(b"\x30\x82garbage that is not DER".to_vec()),
            Expect::Item(Code::InvalidArgument, vec!["invalid CSR"]),
        ),
        (
            "truncated",
            Ok(valid[..valid.len() / 2].to_vec()),
            Expect::Item(Code::InvalidArgument, vec!["invalid CSR"]),
        ),
        (
            "bad signature",
            Ok(bad_sig),
            Expect::Item(Code::InvalidArgument, vec!["invalid CSR"]),
        ),
        (
            "over 8 KiB",
            Ok(vec![0x30; 9000]),
            Expect::Item(Code::InvalidArgument, vec!["9000 bytes", "limit of 8192"]),
        ),
        (
            "RSA 2048 key",
            openssl_csr(tmp.path(), "rsa", &["-newkey", "rsa:2048"]),
            Expect::Item(
                Code::InvalidArgument,
                vec!["EC P-256, EC P-384 or Ed25519", "1.2.840.113549.1.1.1"],
            ),
        ),
        (
            "EC P-521 key",
            openssl_csr(
                tmp.path(),
                "p521",
                &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"],
            ),
            Expect::Item(
                Code::InvalidArgument,
                vec!["EC P-256, EC P-384 or Ed25519", "1.3.132.0.35"],
            ),
        ),
        (
            "a certificate instead of a CSR",
            Ok(s.bundle()[0].clone()),
            Expect::Item(Code::InvalidArgument, vec!["invalid CSR"]),
        ),
        // Refused outright (rcgen does not accept CA extensions in a CSR); a
        // CSR's extensions could never reach the leaf anyway.
        (
            "asks for CA rights (basicConstraints cA=true, keyCertSign)",
            ca_csr,
            Expect::Item(
                Code::InvalidArgument,
                vec!["invalid CSR", "Unsupported extension"],
            ),
        ),
        (
            "carries its own URI and DNS SANs",
            san_csr,
            Expect::SignedForEntryOnly,
        ),
        (
            "EC P-384 key (allowed; control)",
            Ok(p384),
            Expect::SignedForEntryOnly,
        ),
    ];
    for (name, csr, expect) in rows {
        let c_ = case(
            format!("csr/{name}"),
            format!("SignSvids csr = {name}"),
            expect.clone(),
        );
        let r = match csr {
            Err(e) => Err(format!("could not build the input: {e}")),
            Ok(csr) => check_item(sign_one(&mut c, &entry_id, csr).await, &expect, entry_uri),
        };
        report.record(&c_, r);
    }
    // Requests that are refused as a whole or per item for other reasons.
    let unknown = case(
        "csr/unknown entry_id",
        "SignSvids entry_id = \"nope\"",
        Expect::Item(Code::PermissionDenied, vec!["nope", "not authorized"]),
    );
    let r = check_item(
        sign_one(&mut c, "nope", key_and_csr().1).await,
        &unknown.expect,
        entry_uri,
    );
    report.record(&unknown, r);
    let too_many = case(
        "agent_api/1001 CSRs in one call",
        "SignSvids with 1001 requests",
        Expect::Grpc(Code::InvalidArgument, vec!["1001", "limit of 1000"]),
    );
    let items: Vec<pb::SvidRequest> = (0..1001)
        .map(|_| pb::SvidRequest {
            entry_id: entry_id.clone(),
            csr: vec![0x30],
        })
        .collect();
    let r = c
        .sign_svids(pb::SignSvidsRequest { requests: items })
        .await
        .map(|_| ());
    report.record(&too_many, check_status(r, &too_many.expect));
    let renew = case(
        "agent_api/RenewAgent with a garbage CSR",
        "RenewAgent csr = b\"junk\"",
        Expect::Grpc(Code::InvalidArgument, vec!["invalid CSR"]),
    );
    let r = c
        .renew_agent(pb::RenewAgentRequest {
            csr: b"junk".to_vec(),
        })
        .await
        .map(|_| ());
    report.record(&renew, check_status(r, &renew.expect));
    let big = case(
        "agent_api/oversized message (5 MiB)",
        "SignSvids with a 5 MiB entry_id",
        Expect::GrpcAnyOf(vec![
            Code::OutOfRange,
            Code::ResourceExhausted,
            Code::InvalidArgument,
        ]),
    );
    let r = c
        .sign_svids(pb::SignSvidsRequest {
            requests: vec![pb::SvidRequest {
                entry_id: "e".repeat(5 * 1024 * 1024),
                csr: vec![],
            }],
        })
        .await
        .map(|_| ());
    report.record(&big, check_status(r, &big.expect));
    let meta = case(
        "agent_api/oversized metadata (64 KiB header)",
        "FetchBundle with x-pad: 64 KiB",
        Expect::GrpcAnyOf(vec![
            Code::Internal,
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::Unknown,
            Code::Cancelled,
        ]),
    );
    let mut req = tonic::Request::new(pb::FetchBundleRequest {});
    req.metadata_mut().insert(
        "x-pad",
        MetadataValue::try_from("p".repeat(64 * 1024)).expect("ascii"),
    );
    let mut c2 = s.agent_client(Some(&me)).await.expect("connect");
    let r = c2.fetch_bundle(req).await.map(|_| ());
    report.record(&meta, check_status(r, &meta.expect));
    // Still serving after all of the above.
    let alive = case(
        "agent_api/still answers after the bad inputs",
        "FetchBundle",
        Expect::Answers(Duration::from_secs(10)),
    );
    let r = match s.agent_client(Some(&me)).await {
        Ok(mut c3) => tokio::time::timeout(
            Duration::from_secs(10),
            c3.fetch_bundle(pb::FetchBundleRequest {}),
        )
        .await
        .map_err(|_| "no answer in 10 s".to_string())
        .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string())),
        Err(e) => Err(e.to_string()),
    };
    report.record(&alive, r);
    // No bad input created or changed an entry.
    let count = case(
        "agent_api/no entry written",
        "entry count",
        Expect::Answers(Duration::ZERO),
    );
    let r = match entry_count(s) {
        Ok(2) => Ok(()),
        Ok(n) => Err(format!("{n} entries (want 2)")),
        Err(e) => Err(e),
    };
    report.record(&count, r);
}

// ---------------------------------------------------------------------------
// 5. The Workload API: the security header, bad requests, oversized
// messages and metadata, and very many connections and streams.

async fn raw_channel(path: &Path) -> Result<Channel, String> {
    sigil_tests::workload_channel(path)
        .await
        .map_err(|e| e.to_string())
}

/// The ways a Workload API request can carry (or not) the header.
#[derive(Debug, Clone, Copy)]
enum Header {
    None,
    True,
    Twice,
    Value(&'static str),
}

fn wl_req<T>(msg: T, h: Header) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    let m = r.metadata_mut();
    match h {
        Header::None => {}
        Header::True => {
            m.insert("workload.spiffe.io", MetadataValue::from_static("true"));
        }
        Header::Twice => {
            m.append("workload.spiffe.io", MetadataValue::from_static("true"));
            m.append("workload.spiffe.io", MetadataValue::from_static("true"));
        }
        Header::Value(v) => {
            m.insert("workload.spiffe.io", MetadataValue::from_static(v));
        }
    }
    r
}

/// Opens FetchX509SVID and returns the first message's SVID count.
async fn fetch_svids(
    c: &mut SpiffeWorkloadApiClient<Channel>,
    h: Header,
) -> Result<usize, tonic::Status> {
    let mut s = c
        .fetch_x509svid(wl_req(wl::X509svidRequest {}, h))
        .await?
        .into_inner();
    match s.message().await? {
        Some(m) => Ok(m.svids.len()),
        None => Err(tonic::Status::unknown("stream ended")),
    }
}

/// Polls until the workload gets its SVID (bounded).
async fn svid_within(path: &Path, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        let attempt = async {
            let ch = raw_channel(path).await?;
            let mut c = SpiffeWorkloadApiClient::new(ch);
            fetch_svids(&mut c, Header::True)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), attempt).await {
            Ok(Ok(n)) if n > 0 => return Ok(start.elapsed()),
            Ok(Ok(_)) => last = "no SVIDs".into(),
            Ok(Err(e)) => last = e,
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("no SVID within {limit:?}; last: {last}"))
}

async fn run_workload_cases(a: &TestAgent, report: &mut Report) {
    let path = a.socket.clone();
    let ch = raw_channel(&path).await.expect("workload channel");
    let mut c = SpiffeWorkloadApiClient::new(ch.clone());
    let missing = "security header missing from request";
    let twice = "must be sent exactly once";
    let value = "must have the value \"true\"";
    for (name, h, expect) in [
        (
            "FetchX509SVID without the header",
            Header::None,
            Expect::Grpc(Code::InvalidArgument, vec![missing]),
        ),
        (
            "FetchX509SVID with the header twice",
            Header::Twice,
            Expect::Grpc(Code::InvalidArgument, vec![twice]),
        ),
        (
            "FetchX509SVID with value \"false\"",
            Header::Value("false"),
            Expect::Grpc(Code::InvalidArgument, vec![value]),
        ),
        (
            "FetchX509SVID with value \"TRUE\"",
            Header::Value("TRUE"),
            Expect::Grpc(Code::InvalidArgument, vec![value]),
        ),
        (
            "FetchX509SVID with value \"1\"",
            Header::Value("1"),
            Expect::Grpc(Code::InvalidArgument, vec![value]),
        ),
        (
            "FetchX509SVID with an empty value",
            Header::Value(""),
            Expect::Grpc(Code::InvalidArgument, vec![value]),
        ),
    ] {
        let c_ = case(format!("workload/{name}"), format!("{h:?}"), expect);
        let r = fetch_svids(&mut c, h).await.map(|_| ());
        report.record(&c_, check_status(r, &c_.expect));
    }
    let c_ = case(
        "workload/FetchX509Bundles without the header",
        "Header::None",
        Expect::Grpc(Code::InvalidArgument, vec![missing]),
    );
    let r = c
        .fetch_x509_bundles(wl_req(wl::X509BundlesRequest {}, Header::None))
        .await
        .map(|_| ());
    report.record(&c_, check_status(r, &c_.expect));
    let c_ = case(
        "workload/FetchJWTBundles with the header twice",
        "Header::Twice",
        Expect::Grpc(Code::InvalidArgument, vec![twice]),
    );
    let r = c
        .fetch_jwt_bundles(wl_req(wl::JwtBundlesRequest {}, Header::Twice))
        .await
        .map(|_| ());
    report.record(&c_, check_status(r, &c_.expect));
    let c_ = case(
        "workload/FetchJWTSVID with an empty audience",
        "audience = []",
        Expect::Grpc(Code::InvalidArgument, vec!["audience must not be empty"]),
    );
    let r = c
        .fetch_jwtsvid(wl_req(
            wl::JwtsvidRequest {
                audience: vec![],
                spiffe_id: String::new(),
            },
            Header::True,
        ))
        .await
        .map(|_| ());
    report.record(&c_, check_status(r, &c_.expect));
    let c_ = case(
        "workload/ValidateJWTSVID with an empty svid",
        "svid = \"\"",
        Expect::Grpc(Code::InvalidArgument, vec!["svid must not be empty"]),
    );
    let r = c
        .validate_jwtsvid(wl_req(
            wl::ValidateJwtsvidRequest {
                audience: "a".into(),
                svid: String::new(),
            },
            Header::True,
        ))
        .await
        .map(|_| ());
    report.record(&c_, check_status(r, &c_.expect));
    let c_ = case(
        "workload/oversized message (5 MiB)",
        "ValidateJWTSVID with a 5 MiB svid",
        Expect::GrpcAnyOf(vec![Code::OutOfRange, Code::ResourceExhausted]),
    );
    let r = c
        .validate_jwtsvid(wl_req(
            wl::ValidateJwtsvidRequest {
                audience: "a".into(),
                svid: "x".repeat(5 * 1024 * 1024),
            },
            Header::True,
        ))
        .await
        .map(|_| ());
    report.record(&c_, check_status(r, &c_.expect));
    let c_ = case(
        "workload/oversized metadata (64 KiB header)",
        "FetchX509SVID with x-pad: 64 KiB",
        Expect::GrpcAnyOf(vec![
            Code::Internal,
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::Unknown,
            Code::Cancelled,
        ]),
    );
    let r = async {
        let mut c2 = SpiffeWorkloadApiClient::new(
            raw_channel(&path)
                .await
                .map_err(tonic::Status::unavailable)?,
        );
        let mut req = wl_req(wl::X509svidRequest {}, Header::True);
        req.metadata_mut().insert(
            "x-pad",
            MetadataValue::try_from("p".repeat(64 * 1024)).expect("ascii"),
        );
        c2.fetch_x509svid(req).await.map(|_| ())
    }
    .await;
    report.record(&c_, check_status(r, &c_.expect));
    // Not HTTP/2 at all: the connection is dropped, nothing else happens.
    let c_ = case(
        "workload/garbage bytes on the socket",
        "50 connections writing 4 KiB of junk",
        Expect::Answers(Duration::from_secs(10)),
    );
    let r = async {
        use tokio::io::AsyncWriteExt;
        for i in 0..50u8 {
            let mut s = tokio::net::UnixStream::connect(&path)
                .await
                .map_err(|e| e.to_string())?;
            let _ = s.write_all(&[i.wrapping_mul(37); 4096]).await;
        }
        svid_within(&path, Duration::from_secs(10))
            .await
            .map(|_| ())
    }
    .await;
    report.record(&c_, r);

    // 2,000 idle connections held open: another client is still served.
    let c_ = case(
        "workload/2000 idle connections held open",
        "2000 UnixStream connects, no bytes sent, then FetchX509SVID",
        Expect::Answers(Duration::from_secs(10)),
    );
    let r = async {
        let mut idle = Vec::with_capacity(2000);
        for _ in 0..2000 {
            idle.push(
                tokio::net::UnixStream::connect(&path)
                    .await
                    .map_err(|e| format!("connect {}: {e}", idle.len()))?,
            );
        }
        let took = svid_within(&path, Duration::from_secs(10)).await?;
        eprintln!(
            "SVID served in {took:?} with {} idle connections open",
            idle.len()
        );
        drop(idle);
        Ok::<(), String>(())
    }
    .await;
    report.record(&c_, r);

    // 500 concurrent open streams (over 10 connections): still served.
    let c_ = case(
        "workload/500 concurrent open streams",
        "500 FetchX509SVID streams held open, then a new client",
        Expect::Answers(Duration::from_secs(10)),
    );
    let r = async {
        let mut channels = Vec::new();
        for _ in 0..10 {
            channels.push(raw_channel(&path).await?);
        }
        let mut opens = Vec::new();
        for i in 0..500 {
            let mut c = SpiffeWorkloadApiClient::new(channels[i % 10].clone());
            opens.push(tokio::spawn(async move {
                let mut s = c
                    .fetch_x509svid(wl_req(wl::X509svidRequest {}, Header::True))
                    .await?
                    .into_inner();
                let first = s.message().await?;
                Ok::<_, tonic::Status>((s, first.map_or(0, |m| m.svids.len())))
            }));
        }
        let mut streams = Vec::new();
        for o in opens {
            match tokio::time::timeout(Duration::from_secs(60), o).await {
                Ok(Ok(Ok((s, n)))) if n > 0 => streams.push(s),
                Ok(Ok(Ok(_))) => return Err("a stream got no SVID".to_string()),
                Ok(Ok(Err(e))) => return Err(format!("a stream failed: {e}")),
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("opening a stream took over 60 s".into()),
            }
        }
        let took = svid_within(&path, Duration::from_secs(10)).await?;
        eprintln!(
            "SVID served in {took:?} with {} streams open",
            streams.len()
        );
        Ok(())
    }
    .await;
    report.record(&c_, r);
    // The control: a correct call is served.
    let c_ = case(
        "workload/correct call (control)",
        "FetchX509SVID with workload.spiffe.io: true",
        Expect::Answers(Duration::from_secs(10)),
    );
    let r = svid_within(&path, Duration::from_secs(10))
        .await
        .map(|_| ());
    report.record(&c_, r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_catalogue() {
    let started = Instant::now();
    let s = TestServer::start(ServerOptions::default()).expect("server");
    // This process stands in for the 500 workloads of the open-streams
    // case and the 2,000 idle connections; the per-process cap (default
    // 100) is tested in abuse.rs, the per-uid cap (default 1,000) in
    // workload_attack.rs.
    let a = TestAgent::start_with(
        &s,
        "[limits]\nworkload_api_max_streams_per_workload = 1000\n\
         workload_api_max_streams_per_uid = 5000\n",
    )
    .expect("agent");
    // The workload (this test process) has one entry; "existing" makes the
    // already-exists file case meaningful.
    let my_uid = format!("unix:uid:{}", uid());
    s.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/bad-input-workload",
        "--parent-id",
        &a.agent_id,
        "--selector",
        &my_uid,
    ]);
    let mut report = Report::default();
    svid_within(&a.socket, Duration::from_secs(20))
        .await
        .expect("the workload gets its SVID");

    run_workload_cases(&a, &mut report).await;
    run_agent_api_cases(&s, &mut report).await;

    s.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/existing",
        "--parent-id",
        PARENT,
        "--selector",
        "unix:uid:2",
    ]);
    let (s, report) = tokio::task::spawn_blocking(move || {
        let mut report = report;
        run_cli_cases(&s, &mut report);
        run_config_cases(&s, &mut report);
        let ca = s.bundle()[0].clone();
        for (c, f) in jwks_cases(&ca) {
            let r = f();
            report.record(&c, r);
        }
        (s, report)
    })
    .await
    .expect("blocking cases");

    // The daemons survived every case.
    assert!(
        s.cli(&["healthcheck"]).status.success(),
        "server unhealthy:\n{}",
        s.log_text()
    );
    let log = s.log_text() + &a.log_text();
    assert!(!log.contains("panicked"), "a daemon panicked:\n{log}");
    let mut groups = std::collections::BTreeMap::<&str, usize>::new();
    for name in &report.ran {
        *groups
            .entry(name.split('/').next().unwrap_or(""))
            .or_default() += 1;
    }
    eprintln!("cases per group: {groups:?}");
    eprintln!(
        "{} bad-input cases in {:?}",
        report.ran.len(),
        started.elapsed()
    );
    assert!(
        report.ran.len() >= 60,
        "only {} cases ran",
        report.ran.len()
    );
    assert!(
        report.failures.is_empty(),
        "{} of {} cases failed:\n{}",
        report.failures.len(),
        report.ran.len(),
        report.failures.join("\n")
    );
}
