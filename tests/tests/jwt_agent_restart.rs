//! The agent keeps its JWT keys across a restart (issue 15): a real server
//! and agent, a JWT-SVID fetched, then the server stopped and the agent
//! restarted. With the server still down, the restarted agent serves the
//! key in `FetchJWTBundles` and `ValidateJWTSVID` accepts the token (before
//! this, both waited for the first sync).

use std::time::{Duration, Instant};

use sigil_proto::workload as wpb;
use sigil_tests::{ServerOptions, TestAgent, TestServer};

const WEB: &str = "spiffe://example.org/jwt-restart";

/// The first `FetchJWTBundles` message of the agent at `a`, retried
/// (bounded) until its socket answers.
async fn first_jwt_bundles(a: &TestAgent) -> wpb::JwtBundlesResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = async {
            let mut c = sigil_agent::workload_client::connect(&a.socket).await?;
            let mut s = c
                .fetch_jwt_bundles(wpb::JwtBundlesRequest {})
                .await?
                .into_inner();
            anyhow::Ok(s.message().await?)
        };
        match tokio::time::timeout(Duration::from_secs(5), got).await {
            Ok(Ok(Some(m))) => return m,
            other => assert!(
                Instant::now() < deadline,
                "the restarted agent's FetchJWTBundles never answered: {other:?}\n{}",
                a.log_text()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn i15_agent_restarted_with_server_down_validates_with_stored_jwt_keys() {
    let mut s = TestServer::start(ServerOptions::default()).unwrap();
    let mut a = TestAgent::start(&s).unwrap();
    s.register_uid(&a, WEB);

    // A token, fetched while all is up (retried until the entry arrives).
    let deadline = Instant::now() + Duration::from_secs(30);
    let token = loop {
        let mut c = sigil_agent::workload_client::connect(&a.socket)
            .await
            .unwrap();
        match c
            .fetch_jwtsvid(wpb::JwtsvidRequest {
                audience: vec!["restart".into()],
                spiffe_id: String::new(),
            })
            .await
        {
            Ok(r) => break r.into_inner().svids[0].svid.clone(),
            Err(e) => assert!(Instant::now() < deadline, "no JWT-SVID: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kid = sigil_proto::jwt::Token::parse(&token)
        .unwrap()
        .header
        .kid
        .unwrap();

    // Server down, agent restarted.
    s.stop();
    a.stop();
    a.start_process(None).unwrap();

    let bundles = first_jwt_bundles(&a).await;
    let jwks = bundles
        .bundles
        .get("spiffe://example.org")
        .expect("a JWT bundle for the own trust domain");
    let jwks: serde_json::Value = serde_json::from_slice(jwks).unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(
        kids.contains(&kid.as_str()),
        "the restarted agent (server down) serves JWT keys {kids:?}, not the token's kid {kid}"
    );

    let mut c = sigil_agent::workload_client::connect(&a.socket)
        .await
        .unwrap();
    let r = c
        .validate_jwtsvid(wpb::ValidateJwtsvidRequest {
            audience: "restart".into(),
            svid: token.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("the restarted agent refused the token: {e}"))
        .into_inner();
    assert_eq!(r.spiffe_id, WEB);
    assert!(
        s.pid().is_none(),
        "the server stayed down throughout the check"
    );
}
