//! The core path with real processes: entry registered with the CLI → agent
//! attested with a join token → a workload calls the agent's socket → it is
//! attested by its peer credentials → it receives its X.509-SVID over the
//! standard Workload API, through the unmodified `spiffe` crate → the SVID
//! rotates before expiry with overlap. Plus restart, outage and mTLS.

use std::time::Duration;

use sigil_proto::SpiffeId;
use sigil_tests::{
    ServerOptions, TestAgent, TestServer, bin, mtls, run_bounded, sigil_agent, text,
};
use spiffe::WorkloadApiClient;

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

fn register(s: &TestServer, a: &TestAgent, id: &str, selectors: &[&str], extra: &[&str]) -> String {
    let mut args = vec![
        "entry",
        "create",
        "--spiffe-id",
        id,
        "--parent-id",
        &a.agent_id,
    ];
    for sel in selectors {
        args.extend(["--selector", sel]);
    }
    args.extend_from_slice(extra);
    s.cli_json(&args)["entries"][0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Fetches with the `spiffe` crate until `pred` holds (bounded).
async fn fetch_until(
    a: &TestAgent,
    limit: Duration,
    pred: impl Fn(&[std::sync::Arc<spiffe::X509Svid>]) -> bool,
) -> Vec<std::sync::Arc<spiffe::X509Svid>> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last: String;
    loop {
        match WorkloadApiClient::connect_to(a.endpoint()).await {
            Ok(c) => match c.fetch_all_x509_svids().await {
                Ok(v) => {
                    let v: Vec<_> = v.into_iter().map(std::sync::Arc::new).collect();
                    if pred(&v) {
                        return v;
                    }
                    last = format!("{} SVIDs", v.len());
                }
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "condition not met in {limit:?}; last: {last}\nagent log:\n{}",
                a.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ids(v: &[std::sync::Arc<spiffe::X509Svid>]) -> Vec<String> {
    v.iter().map(|s| s.spiffe_id().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn registered_uid_gets_exactly_its_svids_and_others_do_not() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    let me = format!("unix:uid:{}", uid());
    register(
        &s,
        &a,
        "spiffe://example.org/me",
        &[&me],
        &["--hint", "main"],
    );
    // All selectors must match: this one needs another binary.
    register(
        &s,
        &a,
        "spiffe://example.org/other-binary",
        &[&me, "unix:path:/nonexistent/bin"],
        &[],
    );
    let svids = fetch_until(&a, Duration::from_secs(20), |v| !v.is_empty()).await;
    assert_eq!(
        ids(&svids),
        vec!["spiffe://example.org/me"],
        "only the fully matching entry"
    );
    let svid = &svids[0];
    assert_eq!(svid.hint(), Some("main"));
    // Key matches cert; the chain verifies to the bundle (profile + signature).
    let leaf = svid.leaf().as_bytes();
    let info = sigil_proto::svid_profile::check_leaf(leaf).unwrap();
    let key = rcgen::KeyPair::try_from(svid.private_key().as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).unwrap();
    assert_eq!(
        key.public_key_raw(),
        cert.public_key().subject_public_key.data.as_ref()
    );
    let bundle = s.bundle();
    let (_, ca) = x509_parser::parse_x509_certificate(&bundle[0]).unwrap();
    cert.verify_signature(Some(ca.public_key()))
        .expect("leaf signed by the bundle CA");
    assert!(info.not_after <= ca.validity().not_after.timestamp());

    // The bundle over the Workload API equals the server's.
    let c = WorkloadApiClient::connect_to(a.endpoint()).await.unwrap();
    let set = c.fetch_x509_bundles().await.unwrap();
    let td = spiffe::TrustDomain::new("example.org").unwrap();
    let got: Vec<Vec<u8>> = set
        .get(&td)
        .unwrap()
        .authorities()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    assert_eq!(got, bundle);

    // Another uid gets PermissionDenied "no identity issued".
    if nix::unistd::geteuid().is_root() {
        let out = run_bounded(
            std::process::Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(bin("sigil-agent"))
                .args(["api", "fetch", "x509", "--timeout", "1s", "--socket"])
                .arg(&a.socket),
        );
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        assert!(
            text(&out.stderr).contains("no identity issued"),
            "{}",
            text(&out.stderr)
        );
    } else {
        eprintln!("SKIPPED: the other-uid check needs root (setpriv)");
    }

    // The agent CLI writes the files, key 0600.
    let dir = a.dir.path().join("out");
    let sock = a.socket.display().to_string();
    let out = sigil_agent(
        &[
            "api",
            "fetch",
            "x509",
            "--socket",
            &sock,
            "--write",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("spiffe://example.org/me"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("svid_key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // SPIFFE_ENDPOINT_SOCKET works too.
    let out = sigil_agent(
        &["api", "fetch", "x509"],
        &[("SPIFFE_ENDPOINT_SOCKET", &a.endpoint())],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_without_the_security_header_is_invalid_argument() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    let channel = sigil_tests::workload_channel(&a.socket).await.unwrap();
    let mut c =
        sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(channel);
    let e = c
        .fetch_x509svid(sigil_proto::workload::X509svidRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(e.message(), "security header missing from request");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_overlaps_and_reaches_the_x509_source() {
    let s = TestServer::start(ServerOptions {
        extra: "ca_ttl = \"3m\"\ndefault_x509_svid_ttl = \"20s\"\nagent_svid_ttl = \"30s\"\n"
            .into(),
        ..Default::default()
    })
    .unwrap();
    let a = TestAgent::start(&s).unwrap();
    register(
        &s,
        &a,
        "spiffe://example.org/rotating",
        &[&format!("unix:uid:{}", uid())],
        &[],
    );
    fetch_until(&a, Duration::from_secs(20), |v| !v.is_empty()).await;
    let source = mtls::source(&a.endpoint(), "spiffe://example.org/rotating")
        .await
        .unwrap();
    let first = source.svid().unwrap();
    let (_, c1) = x509_parser::parse_x509_certificate(first.leaf().as_bytes()).unwrap();
    let (old_nb, old_na) = (
        c1.validity().not_before.timestamp(),
        c1.validity().not_after.timestamp(),
    );
    let old_serial = c1.raw_serial().to_vec();
    let mut updates = source.updated();
    // Within one lifetime a new SVID must arrive, before the old one expires.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let new = loop {
        let _ = tokio::time::timeout_at(deadline, updates.changed()).await;
        let cur = source.svid().unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(cur.leaf().as_bytes()).unwrap();
        if c.raw_serial() != old_serial.as_slice() {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            assert!(
                now < old_na,
                "new SVID arrived only after the old one expired"
            );
            break (
                c.validity().not_before.timestamp(),
                c.validity().not_after.timestamp(),
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rotation within 30s\n{}",
            a.log_text()
        );
    };
    assert!(
        new.0 < old_na,
        "new notBefore must precede old notAfter (overlap)"
    );
    assert!(new.1 > old_na, "the new SVID must outlive the old one");
    let life = old_na - old_nb;
    assert!(life <= 20 + 10, "TTL honoured (backdate included): {life}");
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_restart_keeps_its_identity_and_serves_again() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let mut a = TestAgent::start(&s).unwrap();
    register(
        &s,
        &a,
        "spiffe://example.org/r",
        &[&format!("unix:uid:{}", uid())],
        &[],
    );
    fetch_until(&a, Duration::from_secs(20), |v| !v.is_empty()).await;
    a.kill();
    // No join token this time: the stored identity must be used.
    a.spawn(None).unwrap();
    fetch_until(&a, Duration::from_secs(20), |v| !v.is_empty()).await;
    let agents = s.cli_json(&["agent", "list"]);
    let list = agents["agents"].as_array().unwrap();
    assert_eq!(list.len(), 1, "no second agent");
    assert_eq!(list[0]["spiffe_id"], a.agent_id.as_str());
    assert!(a.log_text().contains("restored agent identity"));
}

#[tokio::test(flavor = "multi_thread")]
async fn server_outage_keeps_cached_svids_then_new_entries_arrive() {
    let mut s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    let me = format!("unix:uid:{}", uid());
    register(&s, &a, "spiffe://example.org/cached", &[&me], &[]);
    fetch_until(&a, Duration::from_secs(20), |v| v.len() == 1).await;
    s.stop();
    // For a while, workloads keep getting the cached SVID.
    for _ in 0..5 {
        let v = fetch_until(&a, Duration::from_secs(5), |v| v.len() == 1).await;
        assert_eq!(ids(&v), vec!["spiffe://example.org/cached"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    s.spawn().unwrap();
    register(&s, &a, "spiffe://example.org/after-outage", &[&me], &[]);
    let v = fetch_until(&a, Duration::from_secs(60), |v| v.len() == 2).await;
    assert!(ids(&v).contains(&"spiffe://example.org/after-outage".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_example_allows_listed_peers_only() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    let me = format!("unix:uid:{}", uid());
    for id in ["backend", "frontend", "intruder"] {
        register(&s, &a, &format!("spiffe://example.org/{id}"), &[&me], &[]);
    }
    fetch_until(&a, Duration::from_secs(20), |v| v.len() == 3).await;
    let backend = mtls::source(&a.endpoint(), "spiffe://example.org/backend")
        .await
        .unwrap();
    let roots = mtls::roots(&backend, "example.org").unwrap();
    let scfg = mtls::server_config(
        backend.clone(),
        roots.clone(),
        vec![SpiffeId::parse("spiffe://example.org/frontend").unwrap()],
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(scfg));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut b = [0u8; 4];
                    if tls.read_exact(&mut b).await.is_ok() {
                        let _ = tls.write_all(b"pong").await;
                    }
                }
            });
        }
    });
    let backend_id = SpiffeId::parse("spiffe://example.org/backend").unwrap();
    let call = |source: Option<std::sync::Arc<spiffe::X509Source>>| {
        let roots = roots.clone();
        let backend_id = backend_id.clone();
        async move {
            let cfg = mtls::client_config(source, roots, backend_id).map_err(|e| e.to_string())?;
            let conn = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let mut tls = conn
                .connect(
                    rustls_pki_types::ServerName::try_from("backend.invalid").unwrap(),
                    tcp,
                )
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
            let mut b = [0u8; 4];
            tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(b)
        }
    };
    let frontend = mtls::source(&a.endpoint(), "spiffe://example.org/frontend")
        .await
        .unwrap();
    assert_eq!(
        call(Some(frontend)).await,
        Ok(*b"pong"),
        "allowed peer refused"
    );
    let intruder = mtls::source(&a.endpoint(), "spiffe://example.org/intruder")
        .await
        .unwrap();
    assert!(
        call(Some(intruder)).await.is_err(),
        "valid SVID not on the allow-list accepted"
    );
    assert!(
        call(None).await.is_err(),
        "client without a certificate accepted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entry_change_reissues_at_once() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    let id = register(
        &s,
        &a,
        "spiffe://example.org/changing",
        &[&format!("unix:uid:{}", uid())],
        &[],
    );
    let before = fetch_until(&a, Duration::from_secs(20), |v| v.len() == 1).await;
    let serial = |v: &[std::sync::Arc<spiffe::X509Svid>]| {
        let (_, c) = x509_parser::parse_x509_certificate(v[0].leaf().as_bytes()).unwrap();
        (
            c.raw_serial().to_vec(),
            c.subject_alternative_name()
                .ok()
                .flatten()
                .map(|s| s.value.general_names.len()),
        )
    };
    let (old_serial, _) = serial(&before);
    s.cli_ok(&[
        "entry",
        "update",
        "--entry-id",
        &id,
        "--dns-name",
        "changing.example.org",
    ]);
    // Well under the default 1h TTL's half life: the change itself triggers it.
    let after = fetch_until(&a, Duration::from_secs(10), |v| {
        v.len() == 1 && serial(v).0 != old_serial
    })
    .await;
    let (_, sans) = serial(&after);
    assert_eq!(sans, Some(2), "the new SVID carries the entry's DNS name");
}

/// Issue 14 item 6: an entry past its `expires_at` stops being served at
/// that moment, although its certificate (default TTL 1 h) is still valid and
/// nothing tells the agent (the server sends no change when an entry expires).
#[tokio::test(flavor = "multi_thread")]
async fn item6_an_entry_past_expires_at_is_no_longer_served() {
    // Long enough for the agent to serve the entry first on a loaded machine.
    let life = Duration::from_secs(20);
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let a = TestAgent::start(&s).unwrap();
    let me = format!("unix:uid:{}", uid());
    let expires = time::OffsetDateTime::now_utc() + life;
    let at = expires
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let expiring = "spiffe://example.org/expiring";
    register(&s, &a, expiring, &[&me], &["--expires-at", &at]);
    register(&s, &a, "spiffe://example.org/lasting", &[&me], &[]);
    fetch_until(&a, life, |v| v.len() == 2).await;
    assert!(
        time::OffsetDateTime::now_utc() < expires - Duration::from_secs(1),
        "the agent served the entry only at its expiry: inconclusive"
    );
    let v = fetch_until(&a, life + Duration::from_secs(10), |v| {
        !ids(v).iter().any(|id| id == expiring)
    })
    .await;
    let now = time::OffsetDateTime::now_utc();
    assert_eq!(ids(&v), ["spiffe://example.org/lasting"]);
    assert!(
        now >= expires - Duration::from_secs(1),
        "dropped at {now}, before the entry's expires_at {expires}"
    );
}
