//! The operations endpoint both daemons serve on `[health] address`:
//! `/metrics` in the Prometheus text format, `/live` and `/ready`. Plain
//! HTTP, meant for a loopback or pod-local address; it exposes no secret.
//!
//! Metrics are recorded with the `metrics` macros anywhere in the daemon and
//! reach the process-wide Prometheus recorder installed by [`recorder`]
//! (without `[health]` no recorder is installed and the macros cost nothing).
//!
//! The port holds under idle and slow clients: connections are capped in
//! all and per source IP, and headers must arrive within a few seconds
//! ([`crate::net::http1`]).

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::net::HttpLimits;

/// Whether the daemon can do its job now; `Err` carries the reason.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;
/// Sets the gauges that are computed at scrape time (seconds until expiry).
pub type Refresh = Arc<dyn Fn() + Send + Sync>;
/// What the daemon cannot do now while still doing its job (`Some`
/// reason): `/ready` stays 200 and says "ready (degraded): <reason>".
pub type Degraded = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// The process's [`Degraded`] check, if the daemon set one.
static DEGRADED: std::sync::OnceLock<Degraded> = std::sync::OnceLock::new();

/// Sets the process's [`Degraded`] check (once; later calls are ignored).
pub fn set_degraded(check: Degraded) {
    let _ = DEGRADED.set(check);
}

/// Buckets (seconds) for every `*_seconds` histogram: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// How often histogram samples are folded into their buckets when nobody
/// scrapes (keeps memory bounded).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The Prometheus text content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Installs the process-wide Prometheus recorder on first use and returns
/// its handle (the same one on every call).
pub fn recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            // Only fails for an empty bucket list; LATENCY_BUCKETS is not.
            let builder = match builder
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            {
                Ok(b) => b,
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// What the endpoint asks the daemon.
#[derive(Clone)]
pub struct Endpoint {
    pub ready: Readiness,
    pub refresh: Refresh,
}

#[derive(Clone)]
struct Shared {
    endpoint: Endpoint,
    handle: PrometheusHandle,
}

/// Serves `/metrics`, `/live` and `/ready` on `listener` until `shutdown`
/// completes, with the connection caps and timeouts of
/// [`HttpLimits::health`] for this process's open-file limit.
pub async fn serve(
    listener: tokio::net::TcpListener,
    endpoint: Endpoint,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = HttpLimits::health(crate::net::nofile_soft());
    serve_with_limits(listener, endpoint, limits, shutdown).await
}

/// [`serve`] with explicit caps and timeouts.
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    endpoint: Endpoint,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = recorder();
    let upkeep = {
        let handle = handle.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(UPKEEP_INTERVAL).await;
                handle.run_upkeep();
            }
        })
    };
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready_page))
        .with_state(Shared { endpoint, handle });
    crate::net::http1::serve(listener, "health", app, limits, shutdown).await;
    upkeep.abort();
    Ok(())
}

async fn metrics_page(State(s): State<Shared>) -> Response {
    (s.endpoint.refresh)();
    s.handle.run_upkeep();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], s.handle.render()).into_response()
}

async fn ready_page(State(s): State<Shared>) -> Response {
    match (s.endpoint.ready)() {
        Ok(()) => match DEGRADED.get().and_then(|d| d()) {
            Some(why) => (StatusCode::OK, format!("ready (degraded): {why}\n")).into_response(),
            None => (StatusCode::OK, "ready\n".to_string()).into_response(),
        },
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// A gRPC code as a metric label.
pub fn code_label(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "ok",
        tonic::Code::Cancelled => "cancelled",
        tonic::Code::Unknown => "unknown",
        tonic::Code::InvalidArgument => "invalid_argument",
        tonic::Code::DeadlineExceeded => "deadline_exceeded",
        tonic::Code::NotFound => "not_found",
        tonic::Code::AlreadyExists => "already_exists",
        tonic::Code::PermissionDenied => "permission_denied",
        tonic::Code::ResourceExhausted => "resource_exhausted",
        tonic::Code::FailedPrecondition => "failed_precondition",
        tonic::Code::Aborted => "aborted",
        tonic::Code::OutOfRange => "out_of_range",
        tonic::Code::Unimplemented => "unimplemented",
        tonic::Code::Internal => "internal",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DataLoss => "data_loss",
        tonic::Code::Unauthenticated => "unauthenticated",
    }
}

/// `[health]` in both daemons' configs.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// `host:port` to serve `/metrics`, `/live` and `/ready` on (plain HTTP).
    pub address: std::net::SocketAddr,
}
