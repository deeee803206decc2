//! The pull-through cache in the admin API, under `/api/v1/cache/` (server administrators
//! only): `stats`, `images`, `refresh`, `purge`, and `pins`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use serde::Deserialize;
use serde_json::json;

use crate::metadata::rfc3339;
use crate::proxy::Proxy;

use super::admin::{invalid, not_found, ok, read_json, Caller};
use super::error::{ApiError, ApiResult};
use super::AppState;

type AppRef = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/cache/stats", get(stats))
        .route("/api/v1/cache/images", get(images))
        .route("/api/v1/cache/refresh", post(refresh))
        .route("/api/v1/cache/purge", post(purge))
        .route("/api/v1/cache/pins", get(pins))
        .route("/api/v1/cache/pins/{*repo}", put(pin).delete(unpin))
}

fn proxy(app: &AppState) -> ApiResult<&Proxy> {
    app.proxy
        .as_ref()
        .ok_or_else(|| not_found("no upstreams are configured: there is no cache".into()))
}

fn internal(e: anyhow::Error) -> ApiError {
    ApiError::internal(&format!("{e:#}"))
}

async fn stats(State(app): AppRef, caller: Caller) -> ApiResult<Response> {
    caller.require_admin()?;
    let s = proxy(&app)?.stats().await.map_err(internal)?;
    Ok(ok(
        StatusCode::OK,
        serde_json::to_value(s).map_err(|e| internal(e.into()))?,
    ))
}

async fn images(State(app): AppRef, caller: Caller) -> ApiResult<Response> {
    caller.require_admin()?;
    let p = proxy(&app)?;
    let all = p.hosted().store().cached_images(&p.prefixes()).await?;
    let v: Vec<_> = all
        .iter()
        .map(|i| {
            json!({
                "repository": i.repo, "digest": i.digest.to_string(), "media_type": i.media_type,
                "tags": i.tags, "bytes": i.bytes, "cached_at": rfc3339(i.created_at),
                "pulled_at": i.pulled_at.map(rfc3339), "pinned": i.pinned,
            })
        })
        .collect();
    Ok(ok(StatusCode::OK, json!({ "images": v })))
}

#[derive(Deserialize)]
struct ImageBody {
    image: Option<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    dry_run: bool,
}

async fn refresh(State(app): AppRef, caller: Caller, body: Body) -> ApiResult<Response> {
    caller.require_admin()?;
    let p = proxy(&app)?;
    let b: ImageBody = read_json(body).await?;
    let name = b.image.ok_or_else(|| invalid("image is required".into()))?;
    let (repo, reference) = p.image(&name).map_err(invalid)?;
    let (before, after) = p.refresh(&repo, &reference).await?;
    Ok(ok(
        StatusCode::OK,
        json!({
            "repository": repo.as_str(), "before": before.map(|d| d.to_string()),
            "after": after.to_string(),
        }),
    ))
}

async fn purge(State(app): AppRef, caller: Caller, body: Body) -> ApiResult<Response> {
    caller.require_admin()?;
    let p = proxy(&app)?;
    let b: ImageBody = read_json(body).await?;
    let selector = match (b.image, b.all) {
        (Some(i), false) => Some(i),
        (None, true) => None,
        _ => return Err(invalid("give an image, or all: true".into())),
    };
    let plan = p.purge_plan(selector.as_deref()).await.map_err(invalid)?;
    let mut blobs = 0;
    if !b.dry_run {
        for i in &plan {
            let repo = i.repo.parse().map_err(|e| invalid(format!("{e}")))?;
            blobs += p.evict(&repo, &i.digest).await.map_err(internal)?;
        }
    }
    let listed: Vec<_> = plan
        .iter()
        .map(|i| json!({ "repository": i.repo, "digest": i.digest.to_string(), "bytes": i.bytes }))
        .collect();
    Ok(ok(
        StatusCode::OK,
        json!({ "dry_run": b.dry_run, "manifests": listed, "blobs_deleted": blobs }),
    ))
}

async fn pins(State(app): AppRef, caller: Caller) -> ApiResult<Response> {
    caller.require_admin()?;
    let p = proxy(&app)?;
    let pins = p.hosted().store().pins().await?;
    Ok(ok(StatusCode::OK, json!({ "pins": pins })))
}

async fn set_pin(app: &AppState, caller: Caller, repo: &str, pinned: bool) -> ApiResult<Response> {
    caller.require_admin()?;
    let p = proxy(app)?;
    let (local, _) = p.image(repo).map_err(invalid)?;
    p.hosted().store().set_pin(local.as_str(), pinned).await?;
    Ok(ok(
        StatusCode::OK,
        json!({ "repository": local.as_str(), "pinned": pinned }),
    ))
}

async fn pin(State(app): AppRef, Path(repo): Path<String>, caller: Caller) -> ApiResult<Response> {
    set_pin(&app, caller, &repo, true).await
}

async fn unpin(
    State(app): AppRef,
    Path(repo): Path<String>,
    caller: Caller,
) -> ApiResult<Response> {
    set_pin(&app, caller, &repo, false).await
}
