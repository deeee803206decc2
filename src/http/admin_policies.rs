//! Lifecycle policies in the admin API (server administrators only). Each kind is named as
//! its config key and takes the same shape, as JSON:
//!
//! - `GET /api/v1/policies`: every kind in force, with where it came from (`config`, or
//!   `database` with who set it and when);
//! - `GET /api/v1/policies/{kind}`: one kind;
//! - `PUT /api/v1/policies/{kind}`: replaces the kind (checked as the config is: a bad glob,
//!   regex or size is a `400` naming its place); it applies at once here and within a
//!   quarter second in every other process;
//! - `DELETE /api/v1/policies/{kind}`: the config's applies again.
//!
//! `kind` is `immutable_tags` (a list of `{repositories, tags}`), `retention` (a list of
//! rules) or `quotas` (an object of namespace to size). Nothing is deleted by setting a
//! policy: retention runs apply it, and `POST /api/v1/retention {"dry_run": true}` shows
//! what they would remove.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::Value;

use crate::lifecycle::policies::{Kind, PolicyError};

use crate::ops::events::{Action, Event};

use super::admin::{invalid, not_found, ok, read_json, Caller};
use super::admin_audit::Origin;
use super::error::{ApiError, ApiResult};
use super::AppState;

type AppRef = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/policies", get(list))
        .route("/api/v1/policies/{kind}", get(show).put(set).delete(reset))
}

fn kind(name: &str) -> ApiResult<Kind> {
    name.parse().map_err(not_found)
}

fn failed(e: PolicyError) -> ApiError {
    match e {
        PolicyError::Invalid(m) => invalid(m),
        PolicyError::Store(e) => e.into(),
        PolicyError::Other(e) => ApiError::internal(&format!("{e:#}")),
    }
}

async fn list(State(app): AppRef, caller: Caller) -> ApiResult<Response> {
    caller.require_admin()?;
    Ok(ok(StatusCode::OK, app.policies.view()))
}

async fn show(State(app): AppRef, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require_admin()?;
    Ok(ok(StatusCode::OK, app.policies.view_kind(kind(&name)?)))
}

async fn set(
    State(app): AppRef,
    caller: Caller,
    origin: Origin,
    Path(name): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let k = kind(&name)?;
    let value: Value = read_json(body).await?;
    let view = app
        .policies
        .set(k, &value, &caller.actor())
        .await
        .map_err(failed)?;
    tracing::info!(
        policy = k.name(),
        by = caller.actor(),
        "lifecycle policy set"
    );
    origin.report(
        &app,
        &caller,
        Event::new(Action::Policy, "policy", "").detail(format!("{} set", k.name())),
    );
    Ok(ok(StatusCode::OK, view))
}

async fn reset(
    State(app): AppRef,
    caller: Caller,
    origin: Origin,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let k = kind(&name)?;
    let view = app
        .policies
        .reset(k, &caller.actor())
        .await
        .map_err(failed)?;
    tracing::info!(
        policy = k.name(),
        by = caller.actor(),
        "lifecycle policy reset to the config's"
    );
    origin.report(
        &app,
        &caller,
        Event::new(Action::Policy, "policy", "")
            .detail(format!("{} reset to the config's", k.name())),
    );
    Ok(ok(StatusCode::OK, view))
}
