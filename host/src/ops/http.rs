//! The operator's HTTP listener (`--http ADDR`, off by default: it is one more open port, and
//! `/resume` acts on the running kp; bind it to loopback or a private interface).
//!
//! - `GET /metrics`: Prometheus metrics (OpenMetrics text).
//! - `GET /healthz`: 200 while every worker thread is between turns or within its turn's bound
//!   (a turn is at most 10 ms plus one guest call and one instance start, each cut at the
//!   plugin's deadline); 503 names a worker stuck past it. A liveness probe: restarting helps.
//! - `GET /readyz`: 200 once every module in the plugins folder runs and each plugin's consumer
//!   has joined its group. A refused plugin makes kp not ready (a rollout with a broken plugin
//!   should stop); a halted partition does not (the rest of the plugin still serves, a restart
//!   would not fix the message, and the metrics and `/status` show it).
//! - `GET /status`: JSON: each plugin's state, version and last error, the halted partitions,
//!   and each plugin's assigned partitions (state, offset, committed offset, lag).
//! - `POST /resume` (or `/resume?plugin=NAME`), with a header `X-Kp-Request` (any value, so a
//!   web page cannot make an operator's browser send it): resume the partitions halted until now,
//!   from their halted message, with the version running now.
//!
//! The listener answers from the start: while the plugins load, `/healthz` says ok, `/readyz`
//! and `/status` say "starting".

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rdkafka::producer::Producer;
use serde::Deserialize;

use super::metrics::metrics;
use crate::kafka::Health;
use crate::kafka::executor::Executor;
use crate::kafka::output::OutputProducer;
use crate::registry::PluginViews;
use crate::status::{PluginState, StatusBoard};

/// What the endpoints read.
pub struct Ops {
    pub plugins_dir: PathBuf,
    /// Set once the host has started (its plugins loaded).
    pub host: std::sync::OnceLock<HostParts>,
}

/// The running host's parts the endpoints read.
pub struct HostParts {
    pub status: StatusBoard,
    pub health: Arc<Health>,
    pub views: PluginViews,
    pub producer: Arc<OutputProducer>,
    pub executor: Arc<Executor>,
}

fn starting() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "starting: loading the plugins\n",
    )
        .into_response()
}

/// Serves the endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ops: Arc<Ops>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/resume", post(resume))
        .with_state(ops);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_text(State(ops): State<Arc<Ops>>) -> Response {
    if let Some(host) = ops.host.get() {
        metrics()
            .producer_queue
            .set(i64::from(host.producer.in_flight_count()));
        let mut halted: BTreeMap<String, i64> = host
            .status
            .all()
            .into_iter()
            .filter(|(_, p)| p.state == PluginState::Running)
            .map(|(name, _)| (name, 0))
            .collect();
        for h in host.health.halts() {
            *halted.entry(h.plugin).or_default() += 1;
        }
        metrics().set_halted(&halted);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics().encode(),
    )
        .into_response()
}

async fn healthz(State(ops): State<Arc<Ops>>) -> Response {
    let Some(host) = ops.host.get() else {
        return (StatusCode::OK, "ok (starting)\n").into_response();
    };
    match host.executor.stuck_worker() {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some((worker, over)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "worker {worker} has been in one turn {}s past its bound\n",
                over.as_secs()
            ),
        )
            .into_response(),
    }
}

/// Why kp is not ready, if it is not.
pub fn not_ready(ops: &Ops) -> Vec<String> {
    let Some(host) = ops.host.get() else {
        return vec!["starting: loading the plugins".into()];
    };
    let mut why = Vec::new();
    let plugins = host.status.all();
    let names: Vec<String> = crate::registry::module_files(&ops.plugins_dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_string_lossy().into_owned()))
        .collect();
    if names.is_empty() {
        why.push(format!(
            "no module in the plugins folder {}",
            ops.plugins_dir.display()
        ));
    }
    let views = host.views.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for name in names {
        match plugins.get(&name) {
            Some(p) if p.state == PluginState::Running => {
                let joined = views
                    .get(&name)
                    .is_some_and(|v| v.joined.load(std::sync::atomic::Ordering::Acquire));
                if !joined {
                    why.push(format!("plugin {name}: not yet in its consumer group"));
                }
            }
            Some(p) if p.state == PluginState::Refused => why.push(format!(
                "plugin {name}: refused: {}",
                p.error.as_deref().unwrap_or("?")
            )),
            _ => why.push(format!("plugin {name}: not loaded yet")),
        }
    }
    why
}

async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    let why = not_ready(&ops);
    if why.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", why.join("\n")),
        )
            .into_response()
    }
}

async fn status(State(ops): State<Arc<Ops>>) -> Response {
    let Some(host) = ops.host.get() else {
        return starting();
    };
    let halts = host.health.halts();
    let views = host.views.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let partitions: BTreeMap<String, _> = views
        .iter()
        .map(|(name, view)| {
            let own: Vec<_> = halts
                .iter()
                .filter(|h| &h.plugin == name)
                .cloned()
                .collect();
            (name.clone(), view.partitions(&own))
        })
        .collect();
    axum::Json(serde_json::json!({
        "plugins": host.status.all(),
        "halted": halts,
        "partitions": partitions,
        "ready": not_ready(&ops).is_empty(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct ResumeQuery {
    plugin: Option<String>,
}

async fn resume(
    State(ops): State<Arc<Ops>>,
    headers: axum::http::HeaderMap,
    Query(query): Query<ResumeQuery>,
) -> Response {
    if !headers.contains_key("x-kp-request") {
        return (
            StatusCode::FORBIDDEN,
            "send the header X-Kp-Request (any value) with POST /resume\n",
        )
            .into_response();
    }
    let Some(host) = ops.host.get() else {
        return starting();
    };
    let views = host.views.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let asked: Vec<String> = views
        .iter()
        .filter(|(name, _)| query.plugin.as_deref().is_none_or(|p| p == name.as_str()))
        .map(|(name, view)| {
            view.request_resume();
            name.clone()
        })
        .collect();
    if asked.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            format!("no running plugin {:?}\n", query.plugin.unwrap_or_default()),
        )
            .into_response();
    }
    tracing::warn!(plugins = ?asked, "an operator asked to resume halted partitions");
    (
        StatusCode::ACCEPTED,
        format!("resuming halted partitions of {}\n", asked.join(", ")),
    )
        .into_response()
}
