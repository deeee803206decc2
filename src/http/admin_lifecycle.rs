//! The storage lifecycle in the admin API (server administrators only):
//!
//! - `GET /api/v1/lifecycle`: the policies in force (GC schedule and grace, retention rules,
//!   immutable-tag rules, quotas with each namespace's usage) and the last GC's report;
//! - `POST /api/v1/gc` `{"dry_run": bool, "grace": "30m"}`: runs GC (waiting for a run in
//!   progress elsewhere) and answers its report;
//! - `POST /api/v1/retention` `{"dry_run": bool}`: applies the retention rules;
//! - `GET /api/v1/usage?namespace=NS`: storage per repository, as `berth du`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::Span;
use crate::lifecycle::GcOptions;

use super::admin::{invalid, ok, read_json, Caller};
use super::error::{ApiError, ApiResult};
use super::AppState;

type AppRef = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/lifecycle", get(policies))
        .route("/api/v1/gc", post(gc))
        .route("/api/v1/retention", post(retention))
        .route("/api/v1/usage", get(usage))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(&e.to_string())
}

async fn policies(State(app): AppRef, caller: Caller) -> ApiResult<Response> {
    caller.require_admin()?;
    let db = app.lifecycle.db();
    let texts = app.policies.texts();
    let mut v = json!({
        "gc": app.gc_settings,
        "retention": texts.retention,
        "immutable_tags": texts.immutable_tags,
    });
    let mut quotas = Vec::new();
    for (ns, limit) in &texts.quotas {
        let used = db.namespace_usage(ns).await?;
        quotas.push(json!({"namespace": ns, "limit": limit.0, "used": used}));
    }
    v["quotas"] = Value::Array(quotas);
    v["sources"] = app.policies.view().as_object().map_or(Value::Null, |m| {
        m.iter()
            .map(|(k, view)| (k.clone(), view["source"].clone()))
            .collect()
    });
    let last = db.state("gc.last").await?;
    v["gc"]["last"] = last
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    Ok(ok(StatusCode::OK, v))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunBody {
    #[serde(default)]
    dry_run: bool,
    grace: Option<String>,
}

async fn body_or_default(body: Body) -> ApiResult<RunBody> {
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| invalid("the body is too large or ended early".into()))?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(RunBody::default());
    }
    read_json(Body::from(bytes)).await
}

async fn gc(State(app): AppRef, caller: Caller, body: Body) -> ApiResult<Response> {
    caller.require_admin()?;
    let b = body_or_default(body).await?;
    let grace = b
        .grace
        .map(|g| g.parse::<Span>().map_err(invalid))
        .transpose()?;
    let report = app
        .lifecycle
        .gc(GcOptions {
            dry_run: b.dry_run,
            grace: grace.map(|g| g.0),
        })
        .await
        .map_err(|e| internal(format!("{e:#}")))?;
    Ok(ok(
        StatusCode::OK,
        serde_json::to_value(report).map_err(internal)?,
    ))
}

async fn retention(State(app): AppRef, caller: Caller, body: Body) -> ApiResult<Response> {
    caller.require_admin()?;
    let b = body_or_default(body).await?;
    if b.grace.is_some() {
        return Err(invalid("retention takes no grace".into()));
    }
    let report = app
        .lifecycle
        .retention(b.dry_run)
        .await
        .map_err(|e| internal(format!("{e:#}")))?;
    Ok(ok(
        StatusCode::OK,
        serde_json::to_value(report).map_err(internal)?,
    ))
}

#[derive(Deserialize)]
struct UsageQuery {
    namespace: Option<String>,
}

async fn usage(State(app): AppRef, caller: Caller, q: Query<UsageQuery>) -> ApiResult<Response> {
    caller.require_admin()?;
    let u = app.lifecycle.db().usage(q.namespace.as_deref()).await?;
    Ok(ok(
        StatusCode::OK,
        serde_json::to_value(u).map_err(internal)?,
    ))
}
