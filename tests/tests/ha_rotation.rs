//! Issue 17 item 3 with real processes: two servers on one PostgreSQL, each
//! rotating its own CA (`ca_ttl = 1m`: prepared at 30 s, active at 50 s),
//! while a workload on an agent of A (the backend, an mTLS server) and a
//! workload on an agent of B (the frontend, its client) do a new rustls
//! mTLS handshake every 50 ms: zero failed handshakes through two
//! activations of each server's CA. Each side trusts the bundle its own
//! agent serves, which must hold the other server's CAs (the union
//! bundle) before they sign.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sigil_tests::ha::Ha;
use sigil_tests::{ServerOptions, TestAgent, mtls, ping};
use spiffe::WorkloadApiClient;

const TD: &str = "example.org";
const BACKEND: &str = "spiffe://example.org/backend";
const FRONTEND: &str = "spiffe://example.org/frontend";

/// Waits (bounded) until the agent serves an SVID for `id`.
async fn wait_svid(a: &TestAgent, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(c) = WorkloadApiClient::connect_to(a.endpoint()).await
            && let Ok(v) = c.fetch_all_x509_svids().await
            && v.iter().any(|s| s.spiffe_id().to_string() == id)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no SVID for {id}: {}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The active CA serial of the server on `socket` (`ca show`).
async fn active_serial(socket: PathBuf) -> String {
    tokio::task::spawn_blocking(move || {
        let sock = socket.display().to_string();
        let out = sigil_tests::sigil_server(
            &["ca", "show", "--output", "json"],
            &[("SIGIL_ADMIN_SOCKET", &sock)],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["slots"]
            .as_array()
            .and_then(|s| s.iter().find(|x| x["state"] == "active"))
            .and_then(|x| x["serial"].as_str())
            .unwrap_or_default()
            .to_string()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn i17_3_each_server_rotates_its_own_ca_with_zero_failed_handshakes() {
    const CAP: Duration = Duration::from_secs(240);
    const ACTIVATIONS: usize = 2;
    let opts = ServerOptions {
        extra: "ca_ttl = \"1m\"\ndefault_x509_svid_ttl = \"10s\"\nagent_svid_ttl = \"10s\"\n"
            .into(),
        ..Default::default()
    };
    let Some(ha) = Ha::start_with(2, &opts) else {
        return;
    };
    let (a, b) = (ha.server(0), ha.server(1));
    let agent_a = TestAgent::start(a).unwrap();
    let agent_b = TestAgent::start(b).unwrap();
    // Each entry through the server its agent uses.
    a.register_uid(&agent_a, BACKEND);
    b.register_uid(&agent_b, FRONTEND);
    wait_svid(&agent_a, BACKEND).await;
    wait_svid(&agent_b, FRONTEND).await;
    let backend = mtls::source(&agent_a.endpoint(), BACKEND).await.unwrap();
    let frontend = mtls::source(&agent_b.endpoint(), FRONTEND).await.unwrap();
    // Start from a converged state: each workload's bundle holds both
    // servers' CAs (B's CA reaches A's agents through A's next union tick,
    // within about a second of B's start). What is measured below is the
    // rotations, not that first convergence.
    let td = spiffe::TrustDomain::new(TD).unwrap();
    let converge = Instant::now() + Duration::from_secs(15);
    while mtls::bundle_cas(&backend, &td).len() < 2 || mtls::bundle_cas(&frontend, &td).len() < 2 {
        assert!(
            Instant::now() < converge,
            "the workloads' bundles do not hold both servers' CAs within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each side trusts the bundle its own source receives.
    let (acceptor, connector) =
        sigil_tests::ping::soak_ends(&backend, BACKEND, &frontend, FRONTEND, TD).unwrap();

    let t0 = Instant::now();
    let failures: Arc<Mutex<Vec<(f64, String)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sf = failures.clone();
    let server_task = ping::serve_pong(listener, acceptor, move |e| {
        sf.lock().unwrap().push((t0.elapsed().as_secs_f64(), e));
    });
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let client_task = {
        let (ok, stop, cf) = (ok.clone(), stop.clone(), failures.clone());
        let connector = connector.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match ping::ping(&connector, addr).await {
                    Ok(()) => drop(ok.fetch_add(1, Ordering::Relaxed)),
                    Err(e) => {
                        let at = t0.elapsed().as_secs_f64();
                        eprintln!("[{at:8.3}s] FAILED: {e}");
                        cf.lock().unwrap().push((at, e));
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Watch both journals until each server has activated ACTIVATIONS new
    // CAs, then a few more seconds of traffic on the last ones.
    let sockets = [a.socket.clone(), b.socket.clone()];
    let mut seen: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for (i, s) in sockets.iter().enumerate() {
        seen[i].push(active_serial(s.clone()).await);
    }
    let deadline = Instant::now() + CAP;
    while seen.iter().any(|v| v.len() < ACTIVATIONS + 1) {
        assert!(
            Instant::now() < deadline,
            "not {ACTIVATIONS} activations on each server within {CAP:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (i, s) in sockets.iter().enumerate() {
            let now = active_serial(s.clone()).await;
            if !now.is_empty() && seen[i].last() != Some(&now) {
                eprintln!(
                    "[{:8.3}s] server {i}: CA {now} active",
                    t0.elapsed().as_secs_f64()
                );
                seen[i].push(now);
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    client_task.await.unwrap();
    server_task.abort();
    let failures = failures.lock().unwrap().clone();
    let n = ok.load(Ordering::Relaxed);
    eprintln!(
        "ha rotation: {:.1} s, {n} handshakes ok, {} failed; CAs of A {:?}, of B {:?}",
        t0.elapsed().as_secs_f64(),
        failures.len(),
        seen[0],
        seen[1]
    );
    assert!(failures.is_empty(), "failed handshakes: {failures:?}");
    assert!(n >= 200, "only {n} handshakes");
    assert!(
        seen[0].iter().all(|s| !seen[1].contains(s)),
        "each server signs with its own CAs"
    );
}
