//! The agent API against a real `sigil-server`: join-token and x509pop
//! attestation, renewal, deny-by-default refusals (each with its gRPC code
//! and a log line), entry sync with pushed changes, node aliases, large
//! sets, and batched signing.

use std::time::Duration;

use sigil_proto::agent_api as pb;
use sigil_proto::attestation;
use sigil_tests::agent_client::{
    AgentIdentity, attest, attest_with_challenges, identity, key_and_csr,
};
use sigil_tests::{ServerOptions, TestServer, text};
use tonic::Code;

fn token(s: &TestServer, extra: &[&str]) -> String {
    let mut a = vec!["token", "generate"];
    a.extend_from_slice(extra);
    s.cli_json(&a)["token"].as_str().unwrap().to_string()
}

async fn join(s: &TestServer) -> (AgentIdentity, pb::AgentSvid) {
    let t = token(s, &[]);
    let mut c = s.agent_client(None).await.unwrap();
    let (key, csr) = key_and_csr();
    let svid = attest(&mut c, attestation::JOIN_TOKEN, t.into_bytes(), csr)
        .await
        .unwrap();
    (identity(&key, &svid), svid)
}

fn entry(s: &TestServer, spiffe: &str, parent: &str, sel: &str) -> String {
    let v = s.cli_json(&[
        "entry",
        "create",
        "--spiffe-id",
        spiffe,
        "--parent-id",
        parent,
        "--selector",
        sel,
    ]);
    v["entries"][0]["id"].as_str().unwrap().to_string()
}

fn csr_item(entry_id: &str) -> pb::SvidRequest {
    pb::SvidRequest {
        entry_id: entry_id.to_string(),
        csr: key_and_csr().1,
    }
}

async fn sign(
    s: &TestServer,
    who: &AgentIdentity,
    items: Vec<pb::SvidRequest>,
) -> Result<Vec<pb::SvidResult>, tonic::Status> {
    let mut c = s
        .agent_client(Some(who))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    Ok(c.sign_svids(pb::SignSvidsRequest { requests: items })
        .await?
        .into_inner()
        .results)
}

fn item_code(r: &pb::SvidResult) -> Option<i32> {
    match &r.result {
        Some(pb::svid_result::Result::Error(e)) => Some(e.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn join_token_agent_attests_renews_twice_and_keeps_its_id() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let t = token(&s, &[]);
    let mut c = s.agent_client(None).await.unwrap();
    let (key, csr) = key_and_csr();
    let svid = attest(&mut c, attestation::JOIN_TOKEN, t.clone().into_bytes(), csr)
        .await
        .unwrap();
    let agent_id = sigil_tests::join_token_agent_id("example.org", &t);
    assert_eq!(svid.spiffe_id, agent_id);
    sigil_proto::svid_profile::check_leaf(&svid.cert_chain[0]).unwrap();
    assert!(!svid.bundle.as_ref().unwrap().x509_authorities.is_empty());

    // A reused token is refused.
    let (_, csr2) = key_and_csr();
    let e = attest(
        &mut c,
        attestation::JOIN_TOKEN,
        t.clone().into_bytes(),
        csr2,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.message().contains("unknown or already used"), "{e}");

    // Renew twice, each time with the newest SVID: same agent ID.
    let mut ident = identity(&key, &svid);
    let mut serials = vec![svid.cert_chain[0].clone()];
    for _ in 0..2 {
        let mut ac = s.agent_client(Some(&ident)).await.unwrap();
        let (k, csr) = key_and_csr();
        let r = ac
            .renew_agent(pb::RenewAgentRequest { csr })
            .await
            .unwrap()
            .into_inner();
        let new = r.svid.unwrap();
        assert_eq!(new.spiffe_id, agent_id);
        serials.push(new.cert_chain[0].clone());
        ident = identity(&k, &new);
    }
    serials.dedup();
    assert_eq!(serials.len(), 3, "each renewal issues a new SVID");
    // The newest SVID works; the agent is listed once.
    let mut ac = s.agent_client(Some(&ident)).await.unwrap();
    ac.fetch_bundle(pb::FetchBundleRequest {}).await.unwrap();
    let agents = s.cli_json(&["agent", "list"]);
    assert_eq!(agents["agents"].as_array().unwrap().len(), 1);
    assert_eq!(agents["agents"][0]["spiffe_id"], agent_id.as_str());
    // The first SVID is now two generations old: refused.
    let first = AgentIdentity {
        chain: vec![rustls_pki_types::CertificateDer::from(serials[0].clone())],
        ..identity(&key, &svid)
    };
    let mut old = s.agent_client(Some(&first)).await.unwrap();
    let e = old
        .fetch_bundle(pb::FetchBundleRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("not the current SVID"), "{e}");
    // The token never appears in the log as a token... but the agent ID
    // contains it by design (DESIGN §2); the join_token selector is a hash.
    assert!(s.log_text().contains("node attested"));
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_have_the_right_codes_and_are_logged() {
    let s = TestServer::start(ServerOptions {
        extra: "ca_ttl = \"1m\"\ndefault_x509_svid_ttl = \"10s\"\nagent_svid_ttl = \"4s\"\n".into(),
        ..Default::default()
    })
    .unwrap();

    // No client certificate on every method but attestation.
    let mut anon = s.agent_client(None).await.unwrap();
    let e = anon
        .fetch_bundle(pb::FetchBundleRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    let e = anon
        .sign_svids(pb::SignSvidsRequest { requests: vec![] })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = anon
        .renew_agent(pb::RenewAgentRequest {
            csr: key_and_csr().1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = anon
        .sync_entries(pb::SyncEntriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // An unknown attestor and a garbage CSR: InvalidArgument, token kept.
    let t = token(&s, &[]);
    let e = attest(&mut anon, "magic", t.clone().into_bytes(), key_and_csr().1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("unknown node attestor"), "{e}");
    let e = attest(
        &mut anon,
        attestation::JOIN_TOKEN,
        t.clone().into_bytes(),
        b"junk".to_vec(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    attest(
        &mut anon,
        attestation::JOIN_TOKEN,
        t.into_bytes(),
        key_and_csr().1,
    )
    .await
    .expect("token still usable after refused attempts");

    // An expired join token.
    let t = token(&s, &["--ttl", "1s"]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let e = attest(
        &mut anon,
        attestation::JOIN_TOKEN,
        t.into_bytes(),
        key_and_csr().1,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("expired"), "{e}");

    // Agent A may not have agent B's entry signed.
    let (a, _) = join(&s).await;
    let (b, _) = join(&s).await;
    let b_entry = entry(&s, "spiffe://example.org/b-workload", &b.id, "unix:uid:1");
    let r = sign(&s, &a, vec![csr_item(&b_entry)]).await.unwrap();
    assert_eq!(item_code(&r[0]), Some(Code::PermissionDenied as i32));
    let log = s.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("signing refused") && l.contains(&a.id) && l.contains(&b_entry)),
        "refusal not logged with both IDs"
    );
    // B may.
    let r = sign(&s, &b, vec![csr_item(&b_entry)]).await.unwrap();
    assert_eq!(item_code(&r[0]), None);

    // A certificate from another CA / a self-signed one: TLS refuses it.
    let other = TestServer::start(ServerOptions::default()).unwrap();
    let (foreign, _) = join(&other).await;
    let mut fc = s.agent_client(Some(&foreign)).await;
    let refused = match fc.as_mut() {
        Err(_) => true,
        Ok(c) => c.fetch_bundle(pb::FetchBundleRequest {}).await.is_err(),
    };
    assert!(refused, "certificate from another CA accepted");
    let selfsigned = {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names
            .push(rcgen::SanType::URI(a.id.clone().try_into().unwrap()));
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.self_signed(&key).unwrap();
        AgentIdentity {
            id: a.id.clone(),
            chain: vec![cert.der().clone()],
            key: rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    };
    let refused = match s.agent_client(Some(&selfsigned)).await {
        Err(_) => true,
        Ok(mut c) => c.fetch_bundle(pb::FetchBundleRequest {}).await.is_err(),
    };
    assert!(
        refused,
        "self-signed certificate with a valid-looking ID accepted"
    );
    assert!(
        s.log_text().contains("TLS handshake refused"),
        "TLS refusal not logged"
    );

    // Evicted: refused on the next call; banned likewise; unban restores.
    s.cli_ok(&["agent", "ban", "--spiffe-id", &b.id]);
    let mut bc = s.agent_client(Some(&b)).await.unwrap();
    let e = bc
        .fetch_bundle(pb::FetchBundleRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("banned"), "{e}");
    s.cli_ok(&["agent", "unban", "--spiffe-id", &b.id]);
    bc.fetch_bundle(pb::FetchBundleRequest {})
        .await
        .expect("unbanned");
    s.cli_ok(&["agent", "evict", "--spiffe-id", &b.id]);
    let e = bc
        .fetch_bundle(pb::FetchBundleRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("evicted"), "{e}");

    // An expired agent certificate (agent_svid_ttl 4s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let refused = match s.agent_client(Some(&a)).await {
        Err(_) => true,
        Ok(mut c) => c.fetch_bundle(pb::FetchBundleRequest {}).await.is_err(),
    };
    assert!(refused, "expired agent certificate accepted");
}

/// Reads sync messages until `pred` is satisfied or the time runs out.
async fn read_until(
    stream: &mut tonic::Streaming<pb::SyncEntriesResponse>,
    out: &mut Vec<pb::sync_entries_response::Kind>,
    limit: Duration,
    pred: impl Fn(&[pb::sync_entries_response::Kind]) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !pred(out) {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(m))) => out.push(m.kind.unwrap()),
            _ => return false,
        }
    }
    true
}

fn is_last_page(k: &pb::sync_entries_response::Kind) -> bool {
    matches!(k, pb::sync_entries_response::Kind::Page(p) if p.last)
}

fn page_entries(msgs: &[pb::sync_entries_response::Kind]) -> usize {
    msgs.iter()
        .map(|k| match k {
            pb::sync_entries_response::Kind::Page(p) => p.entries.len(),
            _ => 0,
        })
        .sum()
}

fn changes(msgs: &[pb::sync_entries_response::Kind]) -> Vec<&pb::EntryChange> {
    msgs.iter()
        .filter_map(|k| match k {
            pb::sync_entries_response::Kind::Change(c) => Some(c),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_pushes_changes_and_resumes() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let (a, _) = join(&s).await;
    let (b, _) = join(&s).await;
    let e1 = entry(&s, "spiffe://example.org/one", &a.id, "unix:uid:1");
    let mut c = s.agent_client(Some(&a)).await.unwrap();
    let mut st = c
        .sync_entries(pb::SyncEntriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut msgs = vec![];
    assert!(
        read_until(&mut st, &mut msgs, Duration::from_secs(10), |m| m
            .iter()
            .any(is_last_page))
        .await
    );
    assert!(
        matches!(msgs[0], pb::sync_entries_response::Kind::Bundle(_)),
        "bundle first"
    );
    assert_eq!(page_entries(&msgs), 1);
    let full_rev = msgs
        .iter()
        .find_map(|k| match k {
            pb::sync_entries_response::Kind::Page(p) if p.last => Some(p.revision),
            _ => None,
        })
        .unwrap();

    // Created through the CLI → pushed.
    msgs.clear();
    let e2 = entry(&s, "spiffe://example.org/two", &a.id, "unix:uid:2");
    assert!(
        read_until(&mut st, &mut msgs, Duration::from_secs(5), |m| !changes(m)
            .is_empty())
        .await,
        "change not pushed"
    );
    let ch = changes(&msgs)[0].clone();
    assert_eq!(ch.kind, pb::entry_change::Kind::Upserted as i32);
    assert_eq!(ch.entry_id, e2);
    // Another agent's entry is not sent; a delete of ours is.
    msgs.clear();
    entry(&s, "spiffe://example.org/not-mine", &b.id, "unix:uid:3");
    s.cli_ok(&["entry", "delete", "--entry-id", &e1]);
    assert!(
        read_until(&mut st, &mut msgs, Duration::from_secs(5), |m| !changes(m)
            .is_empty())
        .await
    );
    let ch = changes(&msgs);
    assert_eq!(ch.len(), 1, "only the agent's own change: {ch:?}");
    assert_eq!(ch[0].kind, pb::entry_change::Kind::Deleted as i32);
    assert_eq!(ch[0].entry_id, e1);

    // Resume from the revision of the first full set: only the changes.
    drop(st);
    let mut st = c
        .sync_entries(pb::SyncEntriesRequest {
            since_revision: full_rev,
            page_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut msgs = vec![];
    assert!(
        read_until(&mut st, &mut msgs, Duration::from_secs(5), |m| changes(m)
            .len()
            >= 2)
        .await
    );
    assert_eq!(
        page_entries(&msgs),
        0,
        "resume must not resend the full set"
    );
    let ids: Vec<&str> = changes(&msgs).iter().map(|c| c.entry_id.as_str()).collect();
    assert!(
        ids.contains(&e1.as_str()) && ids.contains(&e2.as_str()),
        "{ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn node_alias_authorizes_exactly_the_matching_agents() {
    // x509pop CA and two node certificates (CN n1 and n2).
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut cap = rcgen::CertificateParams::default();
    cap.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    cap.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    cap.distinguished_name
        .push(rcgen::DnType::CommonName, "node CA");
    let ca_cert = cap.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&cap, &ca_key);
    std::fs::write(dir.path().join("nodes-ca.pem"), ca_cert.pem()).unwrap();
    let node = |cn: &str| {
        let k = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let c = p.signed_by(&k, &issuer).unwrap();
        (k, c.der().to_vec())
    };
    let s = TestServer::start(ServerOptions::x509pop(&dir.path().join("nodes-ca.pem"))).unwrap();
    let x509pop_join = |k: rcgen::KeyPair, der: Vec<u8>| {
        let s = &s;
        async move {
            let (mut c, channel) = s.attestation_client().await.unwrap();
            let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &k.serialize_der(),
                &ring::rand::SystemRandom::new(),
            )
            .unwrap();
            let (ak, csr) = key_and_csr();
            let svid = attest_with_challenges(
                &mut c,
                attestation::X509POP,
                attestation::encode_chain(&[der]),
                csr,
                |ch| {
                    signer
                        .sign(
                            &ring::rand::SystemRandom::new(),
                            &attestation::x509pop_signed_message(ch, &channel),
                        )
                        .unwrap()
                        .as_ref()
                        .to_vec()
                },
            )
            .await?;
            Ok::<_, tonic::Status>(identity(&ak, &svid))
        }
    };
    let (k1, c1) = node("n1");
    let (k2, c2) = node("n2");
    let n1 = x509pop_join(k1, c1.clone()).await.unwrap();
    let n2 = x509pop_join(k2, c2).await.unwrap();
    assert!(
        n1.id
            .starts_with("spiffe://example.org/sigil/agent/x509pop/"),
        "{}",
        n1.id
    );
    // A key that fails the challenge.
    let wrong = rcgen::KeyPair::generate().unwrap();
    let e = x509pop_join(wrong, c1).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.message().contains("challenge failed"), "{e}");

    // Node entry for CN n1, workload entry parented to the alias.
    s.cli_ok(&[
        "entry",
        "create",
        "--node",
        "--spiffe-id",
        "spiffe://example.org/rack/n1",
        "--selector",
        "x509pop:subject:cn:n1",
    ]);
    let w = entry(
        &s,
        "spiffe://example.org/rack-workload",
        "spiffe://example.org/rack/n1",
        "unix:uid:7",
    );
    let r = sign(&s, &n1, vec![csr_item(&w)]).await.unwrap();
    assert_eq!(item_code(&r[0]), None, "matching agent refused");
    let r = sign(&s, &n2, vec![csr_item(&w)]).await.unwrap();
    assert_eq!(
        item_code(&r[0]),
        Some(Code::PermissionDenied as i32),
        "non-matching agent allowed"
    );
    // Sync: n1 sees the workload entry, n2 does not.
    for (who, want) in [(&n1, 1usize), (&n2, 0)] {
        let mut c = s.agent_client(Some(who)).await.unwrap();
        let mut st = c
            .sync_entries(pb::SyncEntriesRequest::default())
            .await
            .unwrap()
            .into_inner();
        let mut msgs = vec![];
        assert!(
            read_until(&mut st, &mut msgs, Duration::from_secs(10), |m| m
                .iter()
                .any(is_last_page))
            .await
        );
        assert_eq!(page_entries(&msgs), want);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_thousand_entries_sync_then_one_change_is_one_message() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let (a, _) = join(&s).await;
    for chunk in 0..4 {
        let entries: Vec<String> = (0..5000)
            .map(|i| {
                let n = chunk * 5000 + i;
                format!(
                    r#"{{"spiffe_id":"spiffe://example.org/w/{n}","parent_id":"{}","selectors":[{{"type":"unix","value":"uid:{n}"}}]}}"#,
                    a.id
                )
            })
            .collect();
        let file = s.dir.path().join(format!("e{chunk}.json"));
        std::fs::write(&file, format!(r#"{{"entries":[{}]}}"#, entries.join(","))).unwrap();
        let out = s.cli(&[
            "entry",
            "create",
            "--data",
            file.to_str().unwrap(),
            "--output",
            "json",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    assert_eq!(s.cli_json(&["entry", "count"])["count"], 20_000);
    let mut c = s.agent_client(Some(&a)).await.unwrap();
    let mut st = c
        .sync_entries(pb::SyncEntriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut msgs = vec![];
    assert!(
        read_until(&mut st, &mut msgs, Duration::from_secs(60), |m| m
            .iter()
            .any(is_last_page))
        .await
    );
    assert_eq!(page_entries(&msgs), 20_000);
    let pages = msgs
        .iter()
        .filter(|k| matches!(k, pb::sync_entries_response::Kind::Page(_)))
        .count();
    assert!(pages > 1, "a large set must come in pages");

    msgs.clear();
    entry(&s, "spiffe://example.org/w/extra", &a.id, "unix:uid:99999");
    assert!(
        read_until(&mut st, &mut msgs, Duration::from_secs(5), |m| !changes(m)
            .is_empty())
        .await
    );
    // Nothing else arrives: one change, not the set.
    let more = tokio::time::timeout(Duration::from_millis(500), st.message()).await;
    assert!(more.is_err(), "unexpected extra message {more:?}");
    assert_eq!(msgs.len(), 1);
    assert_eq!(page_entries(&msgs), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_of_500_csrs_and_one_bad_item() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let (a, _) = join(&s).await;
    let e = entry(&s, "spiffe://example.org/batch", &a.id, "unix:uid:1");
    let items: Vec<pb::SvidRequest> = (0..500).map(|_| csr_item(&e)).collect();
    let r = sign(&s, &a, items).await.unwrap();
    assert_eq!(r.len(), 500);
    for x in &r {
        let Some(pb::svid_result::Result::Svid(svid)) = &x.result else {
            panic!("item failed: {x:?}");
        };
        let leaf = sigil_proto::svid_profile::check_leaf(&svid.cert_chain[0]).unwrap();
        assert_eq!(leaf.spiffe_id.as_str(), "spiffe://example.org/batch");
    }
    let mut items: Vec<pb::SvidRequest> = (0..5).map(|_| csr_item(&e)).collect();
    items[2].csr = b"not a csr".to_vec();
    let r = sign(&s, &a, items).await.unwrap();
    let codes: Vec<Option<i32>> = r.iter().map(item_code).collect();
    assert_eq!(
        codes,
        vec![None, None, Some(Code::InvalidArgument as i32), None, None]
    );
    // Too many in one call.
    let items: Vec<pb::SvidRequest> = (0..1001)
        .map(|_| pb::SvidRequest {
            entry_id: e.clone(),
            csr: vec![],
        })
        .collect();
    let err = sign(&s, &a, items).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn attestation_is_rate_limited_per_address() {
    let s = TestServer::start(ServerOptions {
        extra: "[rate_limit]\nattestations_per_second = 1\n".into(),
        ..Default::default()
    })
    .unwrap();
    let mut c = s.agent_client(None).await.unwrap();
    // Burst of 2, then refused until tokens refill.
    let mut codes = vec![];
    for _ in 0..4 {
        let r = attest(&mut c, "magic", vec![], key_and_csr().1).await;
        codes.push(r.unwrap_err().code());
    }
    assert_eq!(
        codes,
        vec![
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::ResourceExhausted,
            Code::ResourceExhausted
        ]
    );
    assert!(s.log_text().contains("attestation rate limit exceeded"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = attest(&mut c, "magic", vec![], key_and_csr().1).await;
    assert_eq!(
        r.unwrap_err().code(),
        Code::InvalidArgument,
        "tokens refill"
    );
}
