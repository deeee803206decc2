//! Webhooks in the admin API (server administrators only):
//!
//! - `GET /api/v1/webhooks`: each configured endpoint (its URL without credentials, event
//!   filter, repository filter, whether deliveries are signed; never the secret) with its
//!   deliveries pending, delivered and failed, its last success and its last failure;
//! - `GET /api/v1/webhooks/{name}/deliveries?state=pending|delivered|failed&limit=N`: the
//!   endpoint's most recent deliveries (default 50, at most 1000);
//! - `POST /api/v1/webhooks/{name}/redeliver`: queues the endpoint's failed deliveries again,
//!   or with `{"id": N}` one of them.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::metadata::webhooks::{DeliveryRecord, DeliveryState};
use crate::ops::webhooks::EndpointStatus;

use super::admin::{invalid, not_found, ok, read_json, Caller};
use super::error::ApiResult;
use super::AppState;

type AppRef = State<Arc<AppState>>;

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/webhooks", get(list))
        .route("/api/v1/webhooks/{name}/deliveries", get(deliveries))
        .route("/api/v1/webhooks/{name}/redeliver", post(redeliver))
}

/// Milliseconds since the Unix epoch as RFC 3339.
fn time(ms: Option<i64>) -> Value {
    ms.map(|ms| {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
        humantime::format_rfc3339_millis(at).to_string().into()
    })
    .unwrap_or(Value::Null)
}

fn endpoint_json(e: &EndpointStatus) -> Value {
    let s = &e.summary;
    json!({
        "name": e.name,
        "url": e.url,
        "events": e.events,
        "repositories": e.repositories,
        "signed": e.signed,
        "pending": s.pending,
        "delivered": s.delivered,
        "failed": s.failed,
        "last_success_at": time(s.last_success_at),
        "last_failure_at": time(s.last_failure_at),
        "last_status": s.last_status,
        "last_error": s.last_error,
    })
}

fn delivery_json(d: &DeliveryRecord) -> Value {
    json!({
        "id": d.id,
        "event_id": d.event_id,
        "action": d.action,
        "repository": d.repository,
        "state": d.state.as_str(),
        "attempts": d.attempts,
        "created_at": time(Some(d.created_at)),
        "next_attempt_at": (d.state == DeliveryState::Pending)
            .then(|| time(Some(d.next_attempt_at))),
        "last_attempt_at": time(d.last_attempt_at),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "delivered_at": time(d.delivered_at),
    })
}

async fn list(State(app): AppRef, caller: Caller) -> ApiResult<Response> {
    caller.require_admin()?;
    let all = app.webhooks.status().await?;
    let hooks: Vec<Value> = all.iter().map(endpoint_json).collect();
    Ok(ok(StatusCode::OK, json!({ "webhooks": hooks })))
}

async fn deliveries(
    State(app): AppRef,
    caller: Caller,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let (mut state, mut limit) = (None, DEFAULT_LIMIT);
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "state" => {
                state = Some(DeliveryState::parse(&v).ok_or_else(|| {
                    invalid(format!(
                        "state {v:?} is not one of pending, delivered, failed"
                    ))
                })?)
            }
            "limit" => {
                limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| invalid(format!("limit must be 1 to {MAX_LIMIT}")))?
            }
            _ => {}
        }
    }
    let list = app
        .webhooks
        .deliveries(&name, state, limit)
        .await?
        .ok_or_else(|| not_found(format!("no webhook named {name}")))?;
    let list: Vec<Value> = list.iter().map(delivery_json).collect();
    Ok(ok(StatusCode::OK, json!({ "deliveries": list })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Redeliver {
    id: Option<i64>,
}

async fn redeliver(
    State(app): AppRef,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let bytes = axum::body::to_bytes(body, 4096)
        .await
        .map_err(|_| invalid("the body is too large or ended early".into()))?;
    let req: Redeliver = if bytes.iter().all(u8::is_ascii_whitespace) {
        Redeliver::default()
    } else {
        read_json(Body::from(bytes)).await?
    };
    let queued = app
        .webhooks
        .redeliver(&name, req.id)
        .await?
        .ok_or_else(|| not_found(format!("no webhook named {name}")))?;
    tracing::info!(webhook = %name, queued, by = caller.actor(), "failed webhook deliveries queued again");
    Ok(ok(StatusCode::OK, json!({ "queued": queued })))
}
