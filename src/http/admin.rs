//! The JSON admin API under `/api/v1/`: users (server admins), namespaces, members and access
//! tokens (server admins, and namespace admins for their own namespace). Callers authenticate
//! with Basic credentials, or in token mode with a bearer token too. Errors use the registry's
//! error envelope.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::namespaces::NamespaceError;
use crate::auth::tokens::TokenError;
use crate::auth::{Principal, UserError, UserName, Visibility};
use crate::config::AuthMode;
use crate::metadata::access::{MemberRecord, NamespaceRecord, TokenRecord};
use crate::metadata::{now, rfc3339};

use crate::ops::events::{Action, Event};

use super::admin_audit::Origin;
use super::auth::{credentials, BearerRejection, Credentials};
use super::error::{ApiError, ApiResult, Code};
use super::{json_response, AppState};

const MAX_BODY: usize = 64 * 1024;

type AppRef = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .merge(super::admin_cache::routes())
        .merge(super::admin_lifecycle::routes())
        .merge(super::admin_policies::routes())
        .merge(super::admin_audit::routes())
        .merge(super::admin_webhooks::routes())
        .route("/api/v1/me", get(me))
        .route("/api/v1/users", get(list_users).post(add_user))
        .route("/api/v1/users/{name}", delete(delete_user))
        .route(
            "/api/v1/namespaces",
            get(list_namespaces).post(create_namespace),
        )
        .route(
            "/api/v1/namespaces/{ns}",
            get(get_namespace)
                .patch(update_namespace)
                .delete(delete_namespace),
        )
        .route("/api/v1/namespaces/{ns}/members", get(list_members))
        .route(
            "/api/v1/namespaces/{ns}/members/{user}",
            put(set_member).delete(remove_member),
        )
        .route(
            "/api/v1/namespaces/{ns}/tokens",
            get(list_tokens).post(create_token),
        )
        .route(
            "/api/v1/namespaces/{ns}/tokens/{name}",
            delete(revoke_token),
        )
}

/// Who is calling; `None` when access control is off (everyone administers).
pub(super) struct Caller(Option<Principal>);

impl Caller {
    fn is_admin(&self) -> bool {
        self.0.as_ref().is_none_or(Principal::is_admin)
    }

    /// The namespaces the caller may see.
    async fn visibility(&self, app: &AppState) -> ApiResult<Visibility> {
        match &self.0 {
            None => Ok(Visibility::All),
            Some(p) => Ok(app.gate.authz.visibility(p).await?),
        }
    }

    /// Who made a change, for the record: the user or token, or `admin-api` when access
    /// control is off.
    pub(super) fn actor(&self) -> String {
        match &self.0 {
            None => "admin-api".into(),
            Some(Principal::Anonymous) => "anonymous".into(),
            Some(Principal::User { name, .. }) => name.clone(),
            Some(Principal::Token {
                namespace, name, ..
            }) => format!("token {namespace}/{name}"),
        }
    }

    pub(super) fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(forbidden("server administrators only"))
        }
    }

    async fn require_manager(&self, app: &AppState, ns: &str) -> ApiResult<()> {
        match &self.0 {
            None => Ok(()),
            Some(p) => {
                let ok = app.gate.authz.manages(p, ns).await?;
                if ok {
                    Ok(())
                } else {
                    Err(forbidden(&format!(
                        "server administrators and admins of namespace {ns} only"
                    )))
                }
            }
        }
    }
}

fn forbidden(msg: &str) -> ApiError {
    ApiError::new(Code::Denied, msg).auth_failure("denied")
}

pub(super) fn not_found(msg: String) -> ApiError {
    ApiError::new(Code::NameUnknown, msg)
}

pub(super) fn invalid(msg: String) -> ApiError {
    ApiError::new(Code::Unsupported, msg).status(StatusCode::BAD_REQUEST)
}

fn conflict(msg: String) -> ApiError {
    ApiError::new(Code::Unsupported, msg).status(StatusCode::CONFLICT)
}

fn challenge() -> ApiError {
    ApiError::new(Code::Unauthorized, "authentication required").header(
        header::WWW_AUTHENTICATE,
        "Basic realm=\"berth\", charset=\"UTF-8\"",
    )
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> ApiResult<Caller> {
        caller(app, parts).await
    }
}

async fn caller(app: &AppState, parts: &Parts) -> ApiResult<Caller> {
    if app.gate.mode == AuthMode::None {
        return Ok(Caller(None));
    }
    let principal = match credentials(parts) {
        Credentials::Bearer(t) if app.gate.signer.is_some() => {
            match app.gate.bearer_identity(&t).await {
                Ok((id, _)) => id.principal,
                Err(BearerRejection::Store(e)) => return Err(e),
                Err(e) => return Err(challenge().message(e.to_string())),
            }
        }
        _ => app.gate.basic_identity(parts).await?.principal,
    };
    match principal {
        Principal::Anonymous => Err(challenge()),
        Principal::Token { .. } => Err(forbidden(
            "access tokens cannot use the admin API; log in as a user",
        )),
        p => Ok(Caller(Some(p))),
    }
}

pub(super) async fn read_json<T: DeserializeOwned>(body: Body) -> ApiResult<T> {
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| invalid("the body is too large or ended early".into()))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(format!("invalid JSON body: {e}")))
}

pub(super) fn ok(status: StatusCode, v: Value) -> Response {
    json_response(status, v.to_string())
}

fn namespace_json(n: &NamespaceRecord) -> Value {
    json!({ "name": n.name, "public": n.public, "created_at": rfc3339(n.created_at) })
}

fn member_json(m: &MemberRecord) -> Value {
    json!({ "user": m.user, "role": m.role, "created_at": rfc3339(m.created_at) })
}

fn token_json(t: &TokenRecord) -> Value {
    json!({
        "namespace": t.namespace,
        "name": t.name,
        "access": t.access,
        "state": t.state_at(now()),
        "created_at": rfc3339(t.created_at),
        "expires_at": t.expires_at.map(rfc3339),
        "last_used_at": t.last_used_at.map(rfc3339),
        "revoked_at": t.revoked_at.map(rfc3339),
    })
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::InvalidName(_) | UserError::Password(_) | UserError::Htpasswd { .. } => {
                invalid(e.to_string())
            }
            UserError::Exists(_) => conflict(e.to_string()),
            UserError::Unknown(_) => not_found(e.to_string()),
            UserError::Store(e) => ApiError::internal(&e),
        }
    }
}

impl From<NamespaceError> for ApiError {
    fn from(e: NamespaceError) -> Self {
        match e {
            NamespaceError::Invalid(_) => invalid(e.to_string()),
            NamespaceError::Exists(_) => conflict(e.to_string()),
            NamespaceError::Unknown(_)
            | NamespaceError::UnknownUser(_)
            | NamespaceError::NotMember { .. } => not_found(e.to_string()),
            NamespaceError::Store(e) => ApiError::internal(&e),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::InvalidName(_)
            | TokenError::InvalidNamespace(_)
            | TokenError::InvalidAccess(_) => invalid(e.to_string()),
            TokenError::Exists { .. } => conflict(e.to_string()),
            TokenError::NoNamespace(_) | TokenError::Unknown { .. } => not_found(e.to_string()),
            TokenError::Store(e) => ApiError::internal(&e),
        }
    }
}

async fn me(c: Caller) -> ApiResult {
    let v = match &c.0 {
        None => json!({ "name": null, "admin": true, "auth": "none" }),
        Some(Principal::User { name, admin }) => json!({ "name": name, "admin": admin }),
        Some(p) => json!({ "name": p.describe(), "admin": false }),
    };
    Ok(ok(StatusCode::OK, v))
}

async fn list_users(State(app): AppRef, c: Caller) -> ApiResult {
    c.require_admin()?;
    let v: Vec<Value> = app
        .users
        .list()
        .await?
        .iter()
        .map(|u| json!({ "name": u.name, "admin": u.admin, "created_at": rfc3339(u.created_at) }))
        .collect();
    Ok(ok(StatusCode::OK, json!({ "users": v })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    password: String,
    #[serde(default)]
    admin: bool,
}

async fn add_user(State(app): AppRef, c: Caller, body: Body) -> ApiResult {
    c.require_admin()?;
    let u: NewUser = read_json(body).await?;
    let name: UserName = u.name.parse()?;
    if u.password.is_empty() {
        return Err(invalid("password must not be empty".into()));
    }
    app.users.add(&name, &u.password, u.admin).await?;
    Ok(ok(
        StatusCode::CREATED,
        json!({ "name": name.as_str(), "admin": u.admin }),
    ))
}

async fn delete_user(State(app): AppRef, c: Caller, Path(name): Path<String>) -> ApiResult {
    c.require_admin()?;
    app.users.delete(&name.parse()?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_namespaces(State(app): AppRef, c: Caller) -> ApiResult {
    let visible = c.visibility(&app).await?;
    let v: Vec<Value> = app
        .namespaces
        .list()
        .await?
        .iter()
        .filter(|n| visible.shows(&n.name))
        .map(namespace_json)
        .collect();
    Ok(ok(StatusCode::OK, json!({ "namespaces": v })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNamespace {
    name: String,
    #[serde(default)]
    public: bool,
}

async fn create_namespace(State(app): AppRef, c: Caller, body: Body) -> ApiResult {
    c.require_admin()?;
    let n: NewNamespace = read_json(body).await?;
    let rec = app.namespaces.create(&n.name, n.public).await?;
    Ok(ok(StatusCode::CREATED, namespace_json(&rec)))
}

async fn get_namespace(State(app): AppRef, c: Caller, Path(ns): Path<String>) -> ApiResult {
    if !c.visibility(&app).await?.shows(&ns) {
        return Err(not_found(format!("no namespace named {ns}")));
    }
    Ok(ok(
        StatusCode::OK,
        namespace_json(&app.namespaces.get(&ns).await?),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceUpdate {
    public: bool,
}

async fn update_namespace(
    State(app): AppRef,
    c: Caller,
    Path(ns): Path<String>,
    body: Body,
) -> ApiResult {
    c.require_manager(&app, &ns).await?;
    let u: NamespaceUpdate = read_json(body).await?;
    app.namespaces.set_public(&ns, u.public).await?;
    Ok(ok(
        StatusCode::OK,
        namespace_json(&app.namespaces.get(&ns).await?),
    ))
}

async fn delete_namespace(State(app): AppRef, c: Caller, Path(ns): Path<String>) -> ApiResult {
    c.require_admin()?;
    app.namespaces.delete(&ns).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_members(State(app): AppRef, c: Caller, Path(ns): Path<String>) -> ApiResult {
    c.require_manager(&app, &ns).await?;
    let v: Vec<Value> = app
        .namespaces
        .members(&ns)
        .await?
        .iter()
        .map(member_json)
        .collect();
    Ok(ok(StatusCode::OK, json!({ "members": v })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberUpdate {
    role: String,
}

async fn set_member(
    State(app): AppRef,
    c: Caller,
    Path((ns, user)): Path<(String, String)>,
    body: Body,
) -> ApiResult {
    c.require_manager(&app, &ns).await?;
    let m: MemberUpdate = read_json(body).await?;
    let role = app.namespaces.set_member(&ns, &user, &m.role).await?;
    Ok(ok(
        StatusCode::OK,
        json!({ "namespace": ns, "user": user, "role": role.as_str() }),
    ))
}

async fn remove_member(
    State(app): AppRef,
    c: Caller,
    Path((ns, user)): Path<(String, String)>,
) -> ApiResult {
    c.require_manager(&app, &ns).await?;
    app.namespaces.remove_member(&ns, &user).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_tokens(State(app): AppRef, c: Caller, Path(ns): Path<String>) -> ApiResult {
    c.require_manager(&app, &ns).await?;
    app.namespaces.get(&ns).await?;
    let v: Vec<Value> = app
        .tokens
        .list(Some(&ns))
        .await?
        .iter()
        .map(token_json)
        .collect();
    Ok(ok(StatusCode::OK, json!({ "tokens": v })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    access: String,
    /// A duration such as `90d`; absent for no expiry.
    #[serde(default)]
    expires: Option<String>,
}

async fn create_token(
    State(app): AppRef,
    c: Caller,
    origin: Origin,
    Path(ns): Path<String>,
    body: Body,
) -> ApiResult {
    c.require_manager(&app, &ns).await?;
    let t: NewToken = read_json(body).await?;
    let lifetime = t
        .expires
        .as_deref()
        .map(|s| {
            humantime::parse_duration(s).map_err(|e| invalid(format!("invalid expires {s:?}: {e}")))
        })
        .transpose()?;
    let (rec, secret) = app.tokens.create(&ns, &t.name, &t.access, lifetime).await?;
    origin.report(
        &app,
        &c,
        Event::new(Action::TokenCreate, "token", "")
            .detail(format!("token {ns}/{} with {} access", t.name, t.access)),
    );
    let mut v = token_json(&rec);
    v["secret"] = json!(secret);
    Ok(ok(StatusCode::CREATED, v))
}

async fn revoke_token(
    State(app): AppRef,
    c: Caller,
    origin: Origin,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult {
    c.require_manager(&app, &ns).await?;
    app.tokens.revoke(&ns, &name).await?;
    origin.report(
        &app,
        &c,
        Event::new(Action::TokenRevoke, "token", "").detail(format!("token {ns}/{name}")),
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}
