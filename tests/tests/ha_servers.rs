//! Issue 17 item 3 with real processes: several `sigil-server`s on one
//! PostgreSQL database ([`sigil_tests::ha`]), each with its own CA (its own
//! key slots and journal, keyed by its instance id), and one trust bundle,
//! the union of their CAs.

use std::time::{Duration, Instant};

use sigil_tests::ha::Ha;
use sigil_tests::{TestAgent, TestServer};

/// Polls `f` until it returns `Some` (bounded by `limit`).
fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The serials of the CA slots `ca show` lists on `s`.
fn ca_serials(s: &TestServer) -> Vec<String> {
    let v = s.cli_json(&["ca", "show"]);
    v["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["serial"].as_str().unwrap().to_string())
        .collect()
}

/// The harness smoke test: two servers on one PostgreSQL both start and
/// are healthy, each attests an agent, each has its own instance id and CA,
/// and the bundle each serves holds both CAs.
#[test]
fn i17_3_two_servers_on_one_postgres_each_attest_an_agent() {
    let Some(ha) = Ha::start(2) else { return };
    let (a, b) = (ha.server(0), ha.server(1));
    a.cli_ok(&["healthcheck"]);
    b.cli_ok(&["healthcheck"]);
    let (id_a, id_b) = (ha.instance_id(0), ha.instance_id(1));
    assert_ne!(id_a, id_b, "each server has its own instance id");
    let rows = ha.psql("SELECT instance_id FROM sigil_servers ORDER BY instance_id");
    let mut want = vec![id_a.clone(), id_b.clone()];
    want.sort();
    assert_eq!(
        rows.lines().collect::<Vec<_>>(),
        want,
        "one record per server"
    );
    let (ca_a, ca_b) = (a.ca_slot("active"), b.ca_slot("active"));
    let (sa, sb) = (ca_serials(a), ca_serials(b));
    assert_ne!(sa, sb, "each server has its own CA ({ca_a}, {ca_b})");
    for s in [a, b] {
        wait_for(Duration::from_secs(10), "the bundle holds both CAs", || {
            (s.bundle().len() == 2).then_some(())
        });
    }
    let agent_a = TestAgent::start(a).expect("agent of A");
    let agent_b = TestAgent::start(b).expect("agent of B");
    assert_ne!(agent_a.agent_id, agent_b.agent_id);
    let agents = a.cli_json(&["agent", "list"]);
    let n = agents["agents"].as_array().map_or(0, Vec::len);
    assert_eq!(n, 2, "both agents are in the shared store: {agents:#}");
}

fn ext_key_id(der: &[u8], want_ski: bool) -> Vec<u8> {
    use x509_parser::extensions::ParsedExtension;
    let (_, c) = x509_parser::parse_x509_certificate(der).expect("a certificate");
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) if want_ski => Some(k.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(a) if !want_ski => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .expect("a key identifier")
}

/// The CA certificates of the bundle that `s`'s own journal names (by serial).
fn own_cas(s: &TestServer) -> Vec<Vec<u8>> {
    let serials = ca_serials(s);
    s.bundle()
        .into_iter()
        .filter(|c| {
            let (_, p) = x509_parser::parse_x509_certificate(c).unwrap();
            let serial: String = p.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
            serials
                .iter()
                .any(|s| s.trim_start_matches('0') == serial.trim_start_matches('0'))
        })
        .collect()
}

/// The agent's own SVID leaf (what it persists in its data_dir).
fn agent_leaf(a: &TestAgent) -> Option<Vec<u8>> {
    let text = std::fs::read_to_string(a.data_dir.join("agent_svid.pem")).ok()?;
    pem::parse_many(text.as_bytes())
        .ok()?
        .into_iter()
        .find(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.contents().to_vec())
}

/// An agent attested at A, pointed at B: B accepts its SVID (which chains
/// to A's CA: B trusts the union bundle) and renews it with B's CA.
#[test]
fn i17_3_agent_attested_at_a_renews_at_b() {
    let opts = sigil_tests::ServerOptions {
        extra: "agent_svid_ttl = \"20s\"\n".into(),
        ..Default::default()
    };
    let Some(ha) = Ha::start_with(2, &opts) else {
        return;
    };
    let (a, b) = (ha.server(0), ha.server(1));
    wait_for(Duration::from_secs(10), "A's bundle holds B's CA", || {
        (a.bundle().len() == 2).then_some(())
    });
    let mut agent = TestAgent::start(a).expect("agent attested at A");
    let (cas_a, cas_b) = (own_cas(a), own_cas(b));
    assert_eq!((cas_a.len(), cas_b.len()), (1, 1), "one CA each");
    let ski_a = ext_key_id(&cas_a[0], true);
    let ski_b = ext_key_id(&cas_b[0], true);
    let leaf = agent_leaf(&agent).expect("the agent's SVID");
    assert_eq!(ext_key_id(&leaf, false), ski_a, "signed by A's CA");
    agent.stop();
    let cfg = std::fs::read_to_string(&agent.config).unwrap();
    let moved = cfg.replace(&a.agent_addr.to_string(), &b.agent_addr.to_string());
    assert_ne!(cfg, moved, "the config names A's address");
    std::fs::write(&agent.config, moved).unwrap();
    // No join token: it keeps the identity it got from A.
    agent
        .spawn(None)
        .expect("the agent syncs from B with A's SVID");
    wait_for(
        Duration::from_secs(60),
        "the agent's SVID renewed by B",
        || {
            let leaf = agent_leaf(&agent)?;
            (ext_key_id(&leaf, false) == ski_b).then_some(())
        },
    );
    let shown = b.cli_json(&["agent", "show", "--spiffe-id", &agent.agent_id]);
    assert_eq!(shown["agents"][0]["spiffe_id"], agent.agent_id.as_str());
}

/// A join token used at A and at B at the same instant attests exactly one
/// agent (the token row is consumed once across servers), 10 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn i17_3_join_token_used_at_both_servers_at_once_attests_one_agent() {
    use sigil_proto::attestation;
    use sigil_tests::agent_client::{attest, key_and_csr};
    let Some(ha) = Ha::start(2) else { return };
    let (a, b) = (ha.server(0), ha.server(1));
    const ROUNDS: usize = 10;
    for round in 0..ROUNDS {
        let t = a.cli_json(&["token", "generate"])["token"]
            .as_str()
            .unwrap()
            .to_string();
        let mut ca = a.agent_client(None).await.unwrap();
        let mut cb = b.agent_client(None).await.unwrap();
        let (ra, rb) = tokio::join!(
            attest(
                &mut ca,
                attestation::JOIN_TOKEN,
                t.clone().into_bytes(),
                key_and_csr().1
            ),
            attest(
                &mut cb,
                attestation::JOIN_TOKEN,
                t.clone().into_bytes(),
                key_and_csr().1
            ),
        );
        let wins = [ra.is_ok(), rb.is_ok()].iter().filter(|w| **w).count();
        assert_eq!(
            wins, 1,
            "round {round}: exactly one attestation wins: A {ra:?}, B {rb:?}"
        );
        let loser = ra.err().or(rb.err()).unwrap();
        assert!(
            matches!(
                loser.code(),
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
            ),
            "round {round}: the loser is refused: {loser:?}"
        );
    }
    let agents = b.cli_json(&["agent", "list"]);
    assert_eq!(
        agents["agents"].as_array().map_or(0, Vec::len),
        ROUNDS,
        "one agent per token: {agents:#}"
    );
}

/// `server list` shows both servers (live, their CAs, which one answers);
/// `server forget` refuses the caller itself and a server seen recently
/// (unless --force), forgets a stale one whose CA stays in the bundle, and
/// a forgotten server that comes back is restored.
#[test]
fn i17_3_server_list_and_forget() {
    let Some(mut ha) = Ha::start(2) else { return };
    let (id_a, id_b) = (ha.instance_id(0), ha.instance_id(1));
    let a = ha.server(0);
    let list = a.cli_json(&["server", "list"]);
    let servers = list["servers"].as_array().unwrap().clone();
    assert_eq!(servers.len(), 2, "{list:#}");
    for s in &servers {
        assert_eq!(s["status"], "live", "{s:#}");
        assert_eq!(s["cas"].as_array().unwrap().len(), 1, "{s:#}");
        assert_eq!(s["cas"][0]["state"], "active");
        let me = s["instance_id"] == id_a.as_str();
        assert_eq!(s["this_server"], me, "{s:#}");
    }
    let text = a.cli_ok(&["server", "list"]);
    assert!(text.contains(&id_a) && text.contains(&id_b) && text.contains("(this server)"));

    let out = a.cli(&["server", "forget", &id_a, "--force"]);
    let err = sigil_tests::text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("this server"),
        "{err}"
    );
    let out = a.cli(&["server", "forget", &id_b]);
    let err = sigil_tests::text(&out.stderr);
    assert!(!out.status.success() && err.contains("--force"), "{err}");
    let out = a.cli(&["server", "forget", "not-an-id"]);
    let err = sigil_tests::text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("32 lowercase hex"),
        "{err}"
    );

    // B goes away for good; make it stale (last seen long ago).
    ha.servers[1].stop();
    ha.psql(&format!(
        "UPDATE sigil_servers SET body = jsonb_set(body::jsonb, '{{last_seen}}', '1')::text \
         WHERE instance_id = '{id_b}'"
    ));
    let a = ha.server(0);
    let stale = a.cli_json(&["server", "list"]);
    let b_row = |v: &serde_json::Value| {
        v["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["instance_id"] == id_b.as_str())
            .cloned()
    };
    assert_eq!(b_row(&stale).unwrap()["status"], "stale", "{stale:#}");
    let forgotten = a.cli_json(&["server", "forget", &id_b]);
    assert_eq!(
        forgotten["servers"][0]["status"], "forgotten",
        "{forgotten:#}"
    );
    // Its CA stays in the bundle until it expires (24 h here).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(a.bundle().len(), 2, "B's CA is still in the bundle");
    let list = a.cli_json(&["server", "list"]);
    assert_eq!(b_row(&list).unwrap()["status"], "forgotten");

    // Forgotten by mistake: B starts again and is restored.
    ha.servers[1].spawn().expect("B restarts");
    let list = ha.server(0).cli_json(&["server", "list"]);
    assert_eq!(b_row(&list).unwrap()["status"], "live", "{list:#}");
}

/// Item 2, migration on PostgreSQL: a database whose single CA journal row
/// was written before per-server journals (schema 2) is taken over by the
/// server whose keys it names, never by another one: a new server on it
/// mints its own CA, the old server keeps its CA after the upgrade.
#[test]
fn i17_3_postgres_journal_written_before_instances_is_taken_over_by_its_server() {
    let Some(mut ha) = Ha::start(1) else { return };
    let id_a = ha.instance_id(0);
    let serial_a = ca_serials(ha.server(0));
    ha.servers[0].stop();
    // What schema 2 left: one journal row, no server records.
    ha.psql(&format!(
        "INSERT INTO sigil_ca_journal (name, version, body) \
         SELECT 'journal', 1, (body::jsonb -> 'journal')::text FROM sigil_servers \
         WHERE instance_id = '{id_a}'"
    ));
    ha.psql("DELETE FROM sigil_servers");
    let b = ha.add_server(sigil_tests::ServerOptions::default());
    let serial_b = ca_serials(ha.server(b));
    assert_ne!(
        serial_b, serial_a,
        "a server without those keys mints its own CA"
    );
    ha.servers[0]
        .spawn()
        .expect("A starts on the upgraded database");
    assert_eq!(
        ca_serials(ha.server(0)),
        serial_a,
        "A keeps its CA (not a new one)"
    );
    assert!(
        ha.server(0)
            .log_text()
            .contains("takes over the CA journal"),
        "A says it took the journal over"
    );
    let rows = ha.psql("SELECT count(*) FROM sigil_servers");
    assert_eq!(rows, "2");
}
