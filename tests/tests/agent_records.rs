//! Agent records against a real `sigil-server` (issue 14): a ban always
//! wins over renewals in flight (item 1), an agent that lost renewal answers
//! can renew again with the SVID it still holds (item 5), and an open sync
//! stream ends with the refusal a new call would get as soon as its agent is
//! evicted or banned or its CA is revoked, delivering nothing more (item 14).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use sigil_proto::agent_api as pb;
use sigil_proto::attestation;
use sigil_tests::agent_client::{AgentIdentity, attest, connect, identity, key_and_csr};
use sigil_tests::{ServerOptions, TestServer};
use tokio::sync::{Mutex, Notify};
use tonic::Code;

/// Bound on each call of these tests.
const CALL: Duration = Duration::from_secs(20);

/// A server whose `[rate_limit]` section is `rates`.
fn server_with_rates(rates: &str) -> TestServer {
    let extra = format!("[rate_limit]\n{rates}");
    TestServer::start(ServerOptions {
        extra,
        ..Default::default()
    })
    .expect("server starts")
}

async fn join(s: &TestServer, bundle: &[Vec<u8>]) -> AgentIdentity {
    let t = s.cli_json(&["token", "generate"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut c = connect(s.agent_addr, bundle.to_vec(), &s.trust_domain, None)
        .await
        .unwrap();
    let (key, csr) = key_and_csr();
    let svid = attest(&mut c, attestation::JOIN_TOKEN, t.into_bytes(), csr)
        .await
        .unwrap();
    identity(&key, &svid)
}

/// One RenewAgent call made with `who`; the new identity.
async fn renew(
    s: &TestServer,
    bundle: &[Vec<u8>],
    who: &AgentIdentity,
) -> Result<AgentIdentity, tonic::Status> {
    let call = async {
        let mut c = connect(s.agent_addr, bundle.to_vec(), &s.trust_domain, Some(who))
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let (key, csr) = key_and_csr();
        let r = c.renew_agent(pb::RenewAgentRequest { csr }).await?;
        Ok(identity(&key, &r.into_inner().svid.unwrap()))
    };
    tokio::time::timeout(CALL, call)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("renewal timed out")))
}

async fn fetch_bundle(
    s: &TestServer,
    bundle: &[Vec<u8>],
    who: &AgentIdentity,
) -> Result<(), tonic::Status> {
    let mut c = connect(s.agent_addr, bundle.to_vec(), &s.trust_domain, Some(who))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    tokio::time::timeout(CALL, c.fetch_bundle(pb::FetchBundleRequest {}))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("fetch timed out"))??;
    Ok(())
}

/// Item 1: four renewers renew continuously (each with the newest SVID any
/// of them got) while the admin bans the agent; after the ban returned,
/// the agent stays banned: the newest SVID is refused as banned and so is
/// every renewal. 50 rounds, each with a fresh agent.
#[tokio::test(flavor = "multi_thread")]
async fn item1_ban_holds_against_renewals_in_flight() {
    let s = server_with_rates("attestations_per_second = 1000\nrenewals_per_second = 100000\n");
    let bundle = s.bundle();
    for round in 0..50 {
        let first = join(&s, &bundle).await;
        let id = first.id.clone();
        let latest = Arc::new(Mutex::new(first));
        let stop = Arc::new(AtomicBool::new(false));
        let renewed = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(Notify::new());
        let mut renewers = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (s_addr, bundle, td) = (s.agent_addr, bundle.clone(), s.trust_domain.clone());
            let (latest, stop, renewed, started) = (
                latest.clone(),
                stop.clone(),
                renewed.clone(),
                started.clone(),
            );
            renewers.spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let who = latest.lock().await.clone();
                    let call = async {
                        let mut c = connect(s_addr, bundle.clone(), &td, Some(&who))
                            .await
                            .ok()?;
                        let (key, csr) = key_and_csr();
                        let r = c.renew_agent(pb::RenewAgentRequest { csr }).await;
                        Some(r.map(|r| identity(&key, &r.into_inner().svid.unwrap())))
                    };
                    match tokio::time::timeout(CALL, call).await {
                        Ok(Some(Ok(new))) => {
                            *latest.lock().await = new;
                            if renewed.fetch_add(1, Ordering::SeqCst) == 2 {
                                started.notify_one();
                            }
                        }
                        Ok(Some(Err(e))) if e.message().contains("banned") => return,
                        _ => {}
                    }
                }
            });
        }
        // Ban once renewals are flowing.
        tokio::time::timeout(CALL, started.notified())
            .await
            .unwrap_or_else(|_| panic!("round {round}: renewals never got going"));
        s.cli_ok(&["agent", "ban", "--spiffe-id", &id]);
        stop.store(true, Ordering::SeqCst);
        while let Some(r) = renewers.join_next().await {
            r.unwrap();
        }
        let newest = latest.lock().await.clone();
        let e = fetch_bundle(&s, &bundle, &newest)
            .await
            .expect_err(&format!("round {round}: the ban was undone by a renewal"));
        assert_eq!(e.code(), Code::PermissionDenied, "round {round}: {e}");
        assert!(e.message().contains("banned"), "round {round}: {e}");
        let e = renew(&s, &bundle, &newest).await.unwrap_err();
        assert!(e.message().contains("banned"), "round {round}: {e}");
    }
    let agents = s.cli_json(&["agent", "list"]);
    let agents = agents["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 50);
    assert!(agents.iter().all(|a| a["banned"] == true), "{agents:?}");
}

/// Item 5: two renewal answers are lost (the agent keeps its SVID); the
/// third renewal with that same SVID is accepted. Once the agent moved on
/// twice, the SVID two generations back is refused.
#[tokio::test(flavor = "multi_thread")]
async fn item5_agent_that_lost_renewal_answers_renews_again() {
    let s = server_with_rates("renewals_per_second = 100\n");
    let bundle = s.bundle();
    let held = join(&s, &bundle).await;
    renew(&s, &bundle, &held).await.expect("first renewal");
    renew(&s, &bundle, &held)
        .await
        .expect("second renewal with the SVID still held");
    let next = renew(&s, &bundle, &held)
        .await
        .expect("third renewal with the SVID still held (two answers were lost)");
    // The agent now uses `next` and renews again: `held` is older than the
    // previous serial and is refused.
    let newest = renew(&s, &bundle, &next).await.expect("renewal with next");
    let e = renew(&s, &bundle, &held).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.message().contains("not the current SVID"), "{e}");
    fetch_bundle(&s, &bundle, &newest)
        .await
        .expect("newest works");
    fetch_bundle(&s, &bundle, &next)
        .await
        .expect("previous works");
}

/// Reads one stream until it ends (or `limit` passes): the messages and the
/// final status, if any.
async fn drain(
    st: &mut tonic::Streaming<pb::SyncEntriesResponse>,
    limit: Duration,
) -> (Vec<pb::sync_entries_response::Kind>, Option<tonic::Status>) {
    let mut out = vec![];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, st.message()).await {
            Ok(Ok(Some(m))) => out.push(m.kind.unwrap()),
            Ok(Ok(None)) => return (out, None),
            Ok(Err(e)) => return (out, Some(e)),
            Err(_) => panic!("stream neither ended nor refused in {limit:?}; got {out:?}"),
        }
    }
}

async fn open_sync(
    s: &TestServer,
    bundle: &[Vec<u8>],
    who: &AgentIdentity,
) -> tonic::Streaming<pb::SyncEntriesResponse> {
    let mut c = connect(s.agent_addr, bundle.to_vec(), &s.trust_domain, Some(who))
        .await
        .unwrap();
    let mut st = c
        .sync_entries(pb::SyncEntriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    // Bundle, then the (empty) full set.
    loop {
        let m = tokio::time::timeout(CALL, st.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if matches!(m.kind, Some(pb::sync_entries_response::Kind::Page(ref p)) if p.last) {
            return st;
        }
    }
}

fn create_entry(s: &TestServer, spiffe: &str, parent: &str) {
    let args = ["--selector", "unix:uid:1", "--parent-id", parent];
    s.cli_ok(&[&["entry", "create", "--spiffe-id", spiffe][..], &args[..]].concat());
}

/// Item 14: a sync stream is open; its agent is evicted (or banned); an
/// entry is then created for it. The stream ends with PermissionDenied, the
/// refusal a new call gets, and delivers no entry.
#[tokio::test(flavor = "multi_thread")]
async fn item14_open_sync_stream_ends_when_its_agent_is_evicted_or_banned() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let bundle = s.bundle();
    for action in ["evict", "ban"] {
        let a = join(&s, &bundle).await;
        let mut st = open_sync(&s, &bundle, &a).await;
        s.cli_ok(&["agent", action, "--spiffe-id", &a.id]);
        create_entry(&s, &format!("spiffe://example.org/after-{action}"), &a.id);
        let (msgs, end) = drain(&mut st, Duration::from_secs(10)).await;
        assert!(
            msgs.is_empty(),
            "{action}: the stream delivered after the agent was refused: {msgs:?}"
        );
        let end = end.unwrap_or_else(|| panic!("{action}: stream ended without the refusal"));
        assert_eq!(end.code(), Code::PermissionDenied, "{action}: {end}");
        let new_call = fetch_bundle(&s, &bundle, &a).await.unwrap_err();
        assert_eq!(end.message(), new_call.message(), "{action}: same refusal");
    }
}

/// Item 14, the other half: a sync stream opened with an SVID of the CA
/// that is then revoked (self-signed, so the server drops it from the
/// bundle) ends with a refusal and delivers neither the entry created
/// after the revoke nor the bundle without that CA.
#[tokio::test(flavor = "multi_thread")]
async fn item14_open_sync_stream_ends_when_its_ca_is_revoked() {
    let s = TestServer::start(ServerOptions::default()).unwrap();
    let bundle = s.bundle();
    let old_ca = bundle[0].clone();
    let a = join(&s, &bundle).await;
    let mut st = open_sync(&s, &bundle, &a).await;
    let old = s.ca_slot("active");
    s.cli_ok(&["ca", "prepare"]);
    s.cli_ok(&["ca", "activate", "--force"]);
    s.cli_ok(&["ca", "taint", "--slot", &old]);
    // Forced: the agent's own SVID still chains to it (issue 20 item 1).
    s.cli_ok(&["ca", "revoke", "--slot", &old, "--force"]);
    create_entry(&s, "spiffe://example.org/after-revoke", &a.id);
    let (msgs, end) = drain(&mut st, Duration::from_secs(10)).await;
    for m in &msgs {
        match m {
            pb::sync_entries_response::Kind::Bundle(b) => assert!(
                b.x509_authorities.contains(&old_ca),
                "the stream delivered the bundle without the revoked CA: {m:?}"
            ),
            other => panic!("the stream delivered after its CA was revoked: {other:?}"),
        }
    }
    let end = end.expect("the stream ended without a refusal");
    assert!(
        matches!(end.code(), Code::PermissionDenied | Code::Unauthenticated),
        "{end}"
    );
    assert!(
        end.message().contains("certificate"),
        "the refusal names the certificate: {end}"
    );
}
