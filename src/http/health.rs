//! `/healthz`, `/readyz` and `/metrics`, unauthenticated (they name no repository).
//!
//! - `/healthz` answers `200` while the process serves requests.
//! - `/readyz` answers `200` only while the database answers a read and grants its write
//!   lock, and the storage takes a write, each within [`CHECK_TIMEOUT`], else `503`; the
//!   JSON body says which check failed and why. (A server that cannot take the write lock,
//!   because the disk is read-only or another process holds it, cannot take a push.)
//! - `/metrics` is the OpenMetrics text of [`crate::ops::metrics`], with the figures read at
//!   scrape time (storage, uploads, GC totals, the cache's upstreams, the process).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::ops::metrics::{Snapshot, UpstreamSnapshot, CONTENT_TYPE};
use crate::ops::process;

use super::error::ApiError;
use super::{json_response, AppState};

/// How long a readiness check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type AppRef = State<Arc<AppState>>;

pub fn routes(with_metrics: bool) -> Router<Arc<AppState>> {
    let r = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if with_metrics {
        r.route("/metrics", get(metrics))
    } else {
        r
    }
}

/// A router with `/metrics` only, for its own listener.
pub fn metrics_only(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, json!({"status": "ok"}).to_string())
}

/// Runs one check with the timeout: `null` when it passed, else why it failed.
async fn check<F, E>(f: F) -> (Option<String>, f64)
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let start = Instant::now();
    let failed = match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {CHECK_TIMEOUT:?}")),
    };
    (failed, start.elapsed().as_secs_f64() * 1000.0)
}

/// The database and storage checks, run at once: for each, why it failed (or `None`) and
/// how many milliseconds it took.
async fn backend_checks(app: &AppState) -> ((Option<String>, f64), (Option<String>, f64)) {
    tokio::join!(check(database(app)), check(app.lifecycle.storage().probe()),)
}

async fn readyz(State(app): AppRef) -> Response {
    let ((db_err, db_ms), (st_err, st_ms)) = backend_checks(&app).await;
    let ready = db_err.is_none() && st_err.is_none();
    let entry = |err: &Option<String>, ms: f64| match err {
        None => json!({"ok": true, "ms": ms}),
        Some(e) => json!({"ok": false, "ms": ms, "error": e}),
    };
    let body = json!({
        "status": if ready { "ready" } else { "unready" },
        "checks": {
            "database": entry(&db_err, db_ms),
            "storage": entry(&st_err, st_ms),
        },
    });
    if !ready {
        tracing::warn!(%body, "not ready");
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, body.to_string())
}

/// A read, then the write lock taken and let go. The write probe runs as a task of its own,
/// so one given up on at the timeout still finishes (and frees the writer connection) when
/// the lock comes; while it waits, later checks fail at once instead of queueing more.
async fn database(app: &AppState) -> Result<(), String> {
    use std::sync::atomic::Ordering;
    let db = app.lifecycle.db().clone();
    db.content_generation().await.map_err(|e| e.to_string())?;
    if app.ops.probing.swap(true, Ordering::AcqRel) {
        return Err("an earlier check is still waiting for the database's write lock".into());
    }
    let probing = app.ops.probing.clone();
    let probe = tokio::spawn(async move {
        let r = db.check_writable().await;
        probing.store(false, Ordering::Release);
        r
    });
    match probe.await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

async fn metrics(State(app): AppRef) -> Response {
    match snapshot(&app).await {
        Ok(s) => {
            let mut resp = app.ops.metrics.render(s).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            resp
        }
        Err(e) => ApiError::internal(&format!("{e:#}")).into_response(),
    }
}

/// The figures read at scrape time.
async fn snapshot(app: &AppState) -> anyhow::Result<Snapshot> {
    let ((db_err, db_ms), (st_err, st_ms)) = backend_checks(app).await;
    let backends = vec![
        ("database", db_err.is_none(), db_ms / 1000.0),
        ("storage", st_err.is_none(), st_ms / 1000.0),
    ];
    let db = app.lifecycle.db();
    let (blobs, storage_bytes) = db.blob_totals(None).await?;
    let uploads_in_progress = db.upload_count().await?;
    let gc = app.lifecycle.gc_totals().await?;
    let upstreams = app.proxy.as_ref().map_or_else(Vec::new, |p| {
        p.upstreams()
            .iter()
            .map(|u| {
                let c = u.counters.totals();
                UpstreamSnapshot {
                    name: u.name.clone(),
                    hits: c.hits,
                    misses: c.misses,
                    stale: c.stale,
                    coalesced: c.coalesced,
                    mismatches: c.mismatches,
                    bytes_fetched: c.bytes_fetched,
                    errors: u.errors().to_vec(),
                    budget: u.budget().map(|b| (b.limit, b.remaining)),
                }
            })
            .collect()
    });
    let dir = app.ops.data_dir.clone();
    let (process, filesystem) =
        tokio::task::spawn_blocking(move || (process::process(), process::filesystem(&dir)))
            .await?;
    Ok(Snapshot {
        blobs,
        storage_bytes,
        uploads_in_progress,
        filesystem,
        gc,
        upstreams,
        process,
        backends,
    })
}
