//! The HTTP API: `/v2/` parsed into an [`Endpoint`], dispatched by method to one handler file
//! per endpoint family. Handlers speak in registry services and never see a path on disk or a
//! line of SQL.

use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use futures::TryStreamExt;

use crate::auth::namespaces::Namespaces;
use crate::auth::tokens::AccessTokens;
use crate::auth::Users;
use crate::oci;
use crate::registry::Service;
use crate::storage::ByteStream;

mod admin;
mod admin_audit;
mod admin_cache;
mod admin_lifecycle;
mod admin_policies;
mod admin_webhooks;
pub mod auth;
mod blobs;
pub mod conn;
mod discovery;
mod early;
pub mod endpoint;
pub mod error;
mod events;
mod health;
mod manifests;
pub mod observe;
mod ratelimit;
mod token;
mod uploads;

pub use conn::{Lingering, Peer, PlainListener};
pub use endpoint::{Action, Endpoint};
use error::{ApiError, ApiResult, Code};

/// Settings the HTTP layer needs beyond the registry's own policy.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Advertised as `OCI-Chunk-Min-Length`.
    pub chunk_min_length: u64,
}

/// Names where a proxied answer came from: `hit`, `miss` or `stale`.
pub const CACHE_HEADER: &str = "x-berth-cache";

pub struct AppState {
    /// The registry's API: the hosted registry, or the pull-through cache around it.
    pub registry: Arc<dyn Service>,
    /// The pull-through cache, when upstreams are configured (for routing and its admin API).
    pub proxy: Option<crate::proxy::Proxy>,
    pub settings: HttpSettings,
    pub gate: auth::Gate,
    pub users: Users,
    pub namespaces: Namespaces,
    pub tokens: AccessTokens,
    /// Garbage collection, retention and scrub, for the admin API.
    pub lifecycle: crate::lifecycle::Lifecycle,
    /// GC's settings as configured, for the admin API.
    pub gc_settings: serde_json::Value,
    /// Immutable tags, retention and quotas in force, which the admin API may change.
    pub policies: crate::lifecycle::policies::Policies,
    /// Metrics and health.
    pub ops: Ops,
    /// Where pushes, pulls, deletes, logins and admin changes are reported (the audit log,
    /// webhooks).
    pub events: crate::ops::events::Events,
    /// The audit log, for its admin API.
    pub audit: Arc<dyn crate::metadata::audit::AuditStore>,
    /// Request rates per client, when any limit is configured.
    pub rate_limits: Option<Arc<crate::ops::ratelimit::RateLimits>>,
    /// The webhook endpoints and their delivery status, for the admin API.
    pub webhooks: Arc<crate::ops::webhooks::Webhooks>,
}

/// What `/metrics`, `/healthz` and `/readyz` need.
pub struct Ops {
    pub metrics: Arc<crate::ops::metrics::Metrics>,
    /// Requests are counted and timed (`metrics.enabled`).
    pub recording: bool,
    /// `/metrics` is served on the main port (else only on `metrics.addr`).
    pub metrics_on_main_port: bool,
    /// The data dir, whose filesystem `/metrics` reports and `/readyz` checks.
    pub data_dir: std::path::PathBuf,
    /// A readiness write probe is waiting for the database's write lock.
    pub probing: Arc<std::sync::atomic::AtomicBool>,
}

type AppRef = State<Arc<AppState>>;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*rest}", any(dispatch))
        .route("/token", get(token_get).post(token_post))
        .merge(admin::routes())
        .merge(health::routes(state.ops.metrics_on_main_port))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(early::finish_request_body))
        .layer(axum::middleware::from_fn_with_state(
            state.ops.recording.then(|| state.ops.metrics.clone()),
            observe::observe,
        ))
        .with_state(state)
}

/// `/metrics` alone, for a separate `metrics.addr` listener.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    health::metrics_only(state)
}

async fn not_found() -> ApiError {
    ApiError::new(Code::Unsupported, "no such endpoint").status(StatusCode::NOT_FOUND)
}

/// The answer for a manifest or blob path whose reference is outside the grammar (spec:
/// "Endpoints" end-2, end-3, end-9, end-10: a read or delete of content that is not there is
/// 404; "Pushing Manifests": a push names a tag or a digest, so a bad one is 400).
fn unreachable_content(content: endpoint::Content, e: oci::NameError, method: &Method) -> ApiError {
    use endpoint::Content;
    match (content, method.clone()) {
        (Content::Manifest, Method::PUT) => ApiError::from(e),
        (Content::Manifest, Method::GET | Method::HEAD | Method::DELETE) => {
            ApiError::new(Code::ManifestUnknown, format!("manifest unknown: {e}"))
        }
        (Content::Blob, Method::GET | Method::HEAD | Method::DELETE) => {
            ApiError::new(Code::BlobUnknown, format!("blob unknown: {e}"))
        }
        _ => method_not_allowed(),
    }
}

fn method_not_allowed() -> ApiError {
    ApiError::new(Code::Unsupported, "method not allowed on this endpoint")
}

async fn token_get(State(app): AppRef, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let resp = token::get(&app, &parts)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    if let Some(e) = events::token_login(&parts, &resp, None) {
        app.events.emit(e);
    }
    resp
}

async fn token_post(State(app): AppRef, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut claimed = None;
    let resp = token::post(&app, &parts, body, &mut claimed)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    if let Some(e) = events::token_login(&parts, &resp, claimed) {
        app.events.emit(e);
    }
    resp
}

async fn dispatch(state: AppRef, req: Request) -> Response {
    let path = req.uri().path();
    let rest = path
        .strip_prefix("/v2/")
        .or_else(|| path.strip_prefix("/v2"))
        .unwrap_or("");
    let parsed = Endpoint::parse(rest);
    let endpoint = match parsed {
        Ok(e) => e,
        Err(endpoint::ParseError::NotFound) => return not_found().await.into_response(),
        Err(endpoint::ParseError::Invalid(e)) => return ApiError::from(e).into_response(),
        Err(endpoint::ParseError::Unreachable(content, e)) => {
            return unreachable_content(content, e, req.method()).into_response()
        }
    };
    let kind = endpoint.kind();
    let mut resp = serve(state, endpoint, req).await;
    resp.extensions_mut().insert(observe::Route(kind));
    resp
}

async fn serve(state: AppRef, endpoint: Endpoint, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (endpoint, ns) = match route(&state, endpoint, &parts).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let pending = if state.events.enabled() {
        events::classify(&endpoint, &parts)
    } else {
        None
    };
    let sink = state.events.clone();
    let (mut resp, principal) = match state.gate.admit(&parts, &endpoint).await {
        Err(e) => (e.into_response(), None),
        Ok(access) => {
            let principal = access.principal().cloned();
            let limited = match &state.rate_limits {
                Some(l) => ratelimit::check(l, &endpoint, &parts, principal.as_ref()),
                None => Ok(Vec::new()),
            };
            let resp = match limited {
                Err(e) => e.into_response(),
                Ok(headers) => {
                    let mut resp = handle(state, endpoint, parts, body, access)
                        .await
                        .unwrap_or_else(IntoResponse::into_response);
                    resp.headers_mut().extend(headers);
                    resp
                }
            };
            (resp, principal)
        }
    };
    if let Some(e) = pending.and_then(|p| events::finish(p, &resp, principal.as_ref())) {
        sink.emit(e);
    }
    if let Some(p) = principal {
        resp.extensions_mut().insert(Subject(p.describe()));
    }
    if let Some(ns) = ns.and_then(|n| HeaderValue::from_str(&n).ok()) {
        // spec: "Registry Proxying": a registry that uses `ns` SHOULD echo it.
        resp.headers_mut().insert("oci-namespace", ns);
    }
    resp
}

/// Points a repository request at the pull-through cache when it names an upstream (path
/// prefix, `?ns=`, or the default upstream for pulls of what does not exist here).
async fn route(
    state: &AppState,
    endpoint: Endpoint,
    parts: &Parts,
) -> Result<(Endpoint, Option<String>), ApiError> {
    let (Some(proxy), Some(repo)) = (&state.proxy, endpoint.repo()) else {
        return Ok((endpoint, None));
    };
    let ns = Query::of(parts).get("ns").map(str::to_string);
    let pull = endpoint.action(&parts.method) == Action::Pull;
    match proxy.route(repo, ns.as_deref(), pull).await {
        Ok(r) if &r.repo == repo => Ok((endpoint, r.ns)),
        Ok(r) => Ok((endpoint.with_repo(r.repo), r.ns)),
        Err(crate::proxy::RouteError::NameTooLong) => Err(ApiError::new(
            Code::NameInvalid,
            "the repository name is too long once its upstream prefix is added",
        )),
        Err(crate::proxy::RouteError::Store(e)) => Err(ApiError::internal(&e)),
    }
}

/// Who a request acted as, for the access log (a name, never a credential).
#[derive(Clone, Debug)]
pub struct Subject(pub String);

async fn handle(
    State(app): AppRef,
    endpoint: Endpoint,
    parts: Parts,
    body: Body,
    access: auth::Access,
) -> ApiResult {
    let req = &parts;
    match (endpoint, parts.method.clone()) {
        (Endpoint::Base, Method::GET | Method::HEAD) => {
            Ok(json_response(StatusCode::OK, "{}".into()))
        }
        (Endpoint::Catalog, Method::GET) => discovery::catalog(&app, req, &access).await,
        (Endpoint::Tags(repo), Method::GET) => discovery::tags(&app, &repo, req).await,
        (Endpoint::Referrers(repo, d), Method::GET) => {
            discovery::referrers(&app, &repo, &d, req).await
        }
        (Endpoint::Manifest(repo, r), Method::GET) => {
            manifests::get(&app, &repo, &r, req, true).await
        }
        (Endpoint::Manifest(repo, r), Method::HEAD) => {
            manifests::get(&app, &repo, &r, req, false).await
        }
        (Endpoint::Manifest(repo, r), Method::PUT) => {
            manifests::put(&app, &repo, &r, req, body).await
        }
        (Endpoint::Manifest(repo, r), Method::DELETE) => manifests::delete(&app, &repo, &r).await,
        (Endpoint::Blob(repo, d), Method::GET) => blobs::get(&app, &repo, &d, req, true).await,
        (Endpoint::Blob(repo, d), Method::HEAD) => blobs::get(&app, &repo, &d, req, false).await,
        (Endpoint::Blob(repo, d), Method::DELETE) => blobs::delete(&app, &repo, &d).await,
        (Endpoint::Uploads(repo), Method::POST) => {
            uploads::start(&app, &repo, req, body, &access).await
        }
        (Endpoint::Upload(repo, id), Method::GET) => uploads::status(&app, &repo, &id).await,
        (Endpoint::Upload(repo, id), Method::PATCH) => {
            uploads::patch(&app, &repo, &id, req, body).await
        }
        (Endpoint::Upload(repo, id), Method::PUT) => {
            uploads::complete(&app, &repo, &id, req, body).await
        }
        (Endpoint::Upload(repo, id), Method::DELETE) => uploads::cancel(&app, &repo, &id).await,
        _ => Err(method_not_allowed()),
    }
}

/// Decoded query parameters, in order, repeats kept.
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn of(req: &Parts) -> Self {
        let q = req.uri.query().unwrap_or("");
        Query(
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The request's `Content-Length`, if it sent a valid one.
fn content_length(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::new(Code::SizeInvalid, "invalid Content-Length")),
    }
}

/// True when a request carries body bytes (a positive length, or chunked encoding).
fn has_body(body: &Body) -> bool {
    use http_body::Body as _;
    body.size_hint().exact() != Some(0)
}

fn body_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(io::Error::other))
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// An empty response with the given status and headers.
fn empty(status: StatusCode, headers: &[(&str, &str)]) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    let h = r.headers_mut();
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).expect("static header names"),
                v,
            );
        }
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}
