//! JWT key rotation with a short CA TTL against the real server and agent
//! (issue 15, "What must be shown"): the JWT key rotates by itself (prepare
//! at ½, activate at 5/6 of `ca_ttl`); every kid that signs a token was
//! already in the agent's JWT bundle (FetchJWTBundles), in `bundle show`
//! and in OIDC `/keys` before it signed; a token signed by the old key
//! keeps validating through the agent after the switch, until its `exp`,
//! and is refused as expired after it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use sigil_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use sigil_proto::workload::{JwtBundlesRequest, ValidateJwtsvidRequest};
use sigil_tests::jwt_check::decode;
use sigil_tests::oidc::request;
use sigil_tests::{ServerOptions, TestAgent, TestServer, free_addr, workload_channel};
use tonic::transport::Channel;

const ID: &str = "spiffe://example.org/jwt-rotation";
const TD_ID: &str = "spiffe://example.org";

fn req<T>(m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    r
}

fn kids(jwks: &Value) -> BTreeSet<String> {
    jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k.get("use").is_none_or(|u| u == "jwt-svid" || u == "sig"))
        .filter_map(|k| k["kid"].as_str().map(str::to_string))
        .collect()
}

/// The kids of the agent's JWT bundle for the own trust domain.
async fn agent_kids(c: &mut SpiffeWorkloadApiClient<Channel>) -> BTreeSet<String> {
    let mut stream = tokio::time::timeout(
        Duration::from_secs(10),
        c.fetch_jwt_bundles(req(JwtBundlesRequest {})),
    )
    .await
    .unwrap()
    .unwrap()
    .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let jwks: Value = serde_json::from_slice(&first.bundles[TD_ID]).unwrap();
    kids(&jwks)
}

async fn validate(
    c: &mut SpiffeWorkloadApiClient<Channel>,
    token: &str,
) -> Result<(), tonic::Status> {
    tokio::time::timeout(
        Duration::from_secs(10),
        c.validate_jwtsvid(req(ValidateJwtsvidRequest {
            audience: "rot".into(),
            svid: token.into(),
        })),
    )
    .await
    .unwrap()
    .map(|_| ())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn item3_jwt_key_rotation_publishes_before_signing_and_old_tokens_live_until_exp() {
    // ca_ttl 90s: the next JWT key is prepared (and published) at 45s and
    // signs from 75s; tokens live 15s (= ca_ttl / 6).
    let oidc = free_addr();
    let s = TestServer::start(ServerOptions {
        extra: format!(
            "ca_ttl = \"90s\"\ndefault_x509_svid_ttl = \"15s\"\nagent_svid_ttl = \"15s\"\n\
             jwt_issuer = \"https://oidc.example.org\"\n[oidc_discovery]\naddress = \"{oidc}\"\n"
        ),
        ..Default::default()
    })
    .unwrap();
    let a = TestAgent::start(&s).unwrap();
    s.register_uid(&a, ID);
    let mut c = SpiffeWorkloadApiClient::new(workload_channel(&a.socket).await.unwrap());

    // Every kid seen in each place, with the first time it was seen there.
    let mut seen_agent: BTreeSet<String> = BTreeSet::new();
    let mut seen_server: BTreeSet<String> = BTreeSet::new();
    let mut seen_oidc: BTreeSet<String> = BTreeSet::new();
    let mut signing: Vec<String> = Vec::new();
    let mut last_old: Option<(String, i64)> = None;
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        assert!(
            Instant::now() < deadline,
            "no rotation in 150s; signing kids {signing:?}"
        );
        // Publication first, then a token: its kid must already be known.
        seen_agent.extend(agent_kids(&mut c).await);
        seen_server.extend(kids(
            &serde_json::from_str(&s.cli_ok(&["bundle", "show", "--format", "jwks"])).unwrap(),
        ));
        seen_oidc.extend(kids(&request(oidc, None, "GET", "/keys").unwrap().json()));
        let minted = s.cli_json(&["jwt", "mint", "--spiffe-id", ID, "--audience", "rot"]);
        let token = minted["token"].as_str().unwrap().to_string();
        let kid = decode(&token).unwrap().header["kid"]
            .as_str()
            .unwrap()
            .to_string();
        for (place, seen) in [
            ("agent", &seen_agent),
            ("bundle show", &seen_server),
            ("OIDC /keys", &seen_oidc),
        ] {
            assert!(
                seen.contains(&kid),
                "kid {kid} signed before it was in the {place} bundle {seen:?}"
            );
        }
        if signing.last() != Some(&kid) {
            signing.push(kid.clone());
        }
        if signing.len() == 1 {
            let exp = decode(&token).unwrap().claims["exp"].as_i64().unwrap();
            last_old = Some((token, exp));
        } else {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(signing.len(), 2, "{signing:?}");
    // Right after the switch both keys are published: the old one stays
    // until every token it signed has expired.
    let k = agent_kids(&mut c).await;
    assert!(
        k.contains(&signing[0]) && k.contains(&signing[1]),
        "{k:?} {signing:?}"
    );
    let (old_token, old_exp) = last_old.unwrap();
    // The old key's last token validates through the agent after the switch.
    if now() < old_exp - 1 {
        validate(&mut c, &old_token)
            .await
            .unwrap_or_else(|e| panic!("a token of the old key refused before its exp: {e:?}"));
    }
    // ... and is refused once its exp has passed (bounded wait on the clock).
    while now() <= old_exp + 1 {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let e = validate(&mut c, &old_token).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("expired"), "{e:?}");
}
