//! The audit log in the admin API (`GET /api/v1/audit`, server admins only), and [`Origin`],
//! which admin handlers use to report the changes they make (token creation and revocation,
//! policy changes) as events.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::json;

use crate::config::Span;
use crate::metadata::audit::AuditQuery;
use crate::ops::audit::entry_json;
use crate::ops::events::{now_ms, Action, Event, RequestInfo};

use super::admin::{invalid, ok, Caller};
use super::error::{ApiError, ApiResult};
use super::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/audit", get(list))
}

/// Where an admin request came from, for the events it raises.
pub(super) struct Origin {
    addr: String,
    request: RequestInfo,
}

impl FromRequestParts<Arc<AppState>> for Origin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<AppState>) -> ApiResult<Origin> {
        Ok(Origin {
            addr: super::events::client_addr(parts),
            request: super::events::request_info(parts),
        })
    }
}

impl Origin {
    /// Reports a change `caller` made.
    pub(super) fn report(&self, app: &AppState, caller: &Caller, e: Event) {
        app.events.emit(Event {
            actor: caller.actor(),
            addr: self.addr.clone(),
            request: Some(self.request.clone()),
            status: 200,
            ..e
        });
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    repo: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    /// How far back, e.g. `24h`.
    since: Option<String>,
    limit: Option<u32>,
}

/// The most entries one request returns.
const MAX_LIMIT: u32 = 10_000;

async fn list(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    q: Query<AuditParams>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let query = AuditQuery {
        repo: q.repo.clone(),
        actor: q.actor.clone(),
        action: q
            .action
            .as_deref()
            .map(|a| {
                Action::parse(a).ok_or_else(|| {
                    invalid(format!(
                        "unknown action {a:?}: use one of {}",
                        Action::ALL.map(Action::as_str).join(", ")
                    ))
                })
            })
            .transpose()?,
        since_ms: q
            .since
            .as_deref()
            .map(|s| {
                s.parse::<Span>()
                    .map(|d| now_ms() - d.0.as_millis() as i64)
                    .map_err(invalid)
            })
            .transpose()?,
        limit: q.limit.unwrap_or(100).min(MAX_LIMIT),
    };
    let rows = app.audit.query_audit(&query).await?;
    let entries: Vec<_> = rows.iter().map(entry_json).collect();
    Ok(ok(StatusCode::OK, json!({ "entries": entries })))
}
