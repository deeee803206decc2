//! The token endpoint of the Docker token-auth flow, at `/token`: `GET` with optional Basic
//! credentials (the form docker, podman and skopeo use) and `POST` with the OAuth2 `password`
//! and `refresh_token` grants. Requested scopes are reduced to what the caller may do; a caller
//! without credentials gets an anonymous token (public namespaces only).

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use crate::auth::jwt::{ClaimAccess, Signer, TokenUse};
use crate::auth::scope::parse_scopes;
use crate::auth::{AuthError, Identity};
use crate::metadata::rfc3339;

use super::auth::{client_addr, throttled};
use super::error::{ApiError, ApiResult, Code};
use super::{json_response, AppState, Query};

/// Largest form body accepted by `POST /token`.
const MAX_FORM: usize = 64 * 1024;

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError::new(Code::Unsupported, msg).status(StatusCode::BAD_REQUEST)
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::new(Code::Unauthorized, msg)
}

fn signer(app: &AppState) -> ApiResult<&Signer> {
    app.gate.signer.as_deref().ok_or_else(|| {
        ApiError::new(
            Code::Unsupported,
            "the token service is off: auth.mode is not token",
        )
        .status(StatusCode::NOT_FOUND)
    })
}

fn check_service(signer: &Signer, q: &Query) -> ApiResult<()> {
    match q.get("service") {
        Some(s) if s != signer.service() => Err(bad_request(format!(
            "unknown service {s:?}: this token service issues tokens for {:?}",
            signer.service()
        ))),
        _ => Ok(()),
    }
}

fn scope_string(access: &[ClaimAccess]) -> String {
    access
        .iter()
        .map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(",")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Issues an access token (and, when asked, a refresh token) for `id`.
async fn issue(
    app: &AppState,
    signer: &Signer,
    id: &Identity,
    scopes: &Query,
    scope_key: &str,
    refresh: Option<String>,
    oauth: bool,
) -> ApiResult {
    let requested = parse_scopes(scopes.all(scope_key));
    let access = app.gate.grant(&id.principal, &requested).await?;
    let granted = scope_string(&access);
    let sub = id.principal.subject();
    let issued = signer
        .access_token(&sub, &id.binding, access)
        .map_err(|e| ApiError::internal(&e))?;
    let mut body = Map::new();
    if !oauth {
        body.insert("token".into(), json!(issued.token));
    }
    body.insert("access_token".into(), json!(issued.token));
    body.insert("expires_in".into(), json!(issued.expires_in));
    body.insert("issued_at".into(), json!(rfc3339(issued.issued_at)));
    if oauth {
        body.insert("token_type".into(), json!("Bearer"));
        body.insert("scope".into(), json!(granted));
    }
    if let Some(r) = refresh {
        body.insert("refresh_token".into(), json!(r));
    }
    tracing::debug!(subject = %id.principal.describe(), scope = %granted, "issued a token");
    let mut resp = json_response(StatusCode::OK, Value::Object(body).to_string());
    if !id.principal.is_anonymous() {
        resp.extensions_mut()
            .insert(super::Subject(id.principal.describe()));
    }
    Ok(resp)
}

fn refresh_for(signer: &Signer, id: &Identity) -> ApiResult<Option<String>> {
    if id.principal.is_anonymous() {
        return Ok(None);
    }
    signer
        .refresh_token(&id.principal.subject(), &id.binding)
        .map(|t| Some(t.token))
        .map_err(|e| ApiError::internal(&e))
}

pub async fn get(app: &AppState, parts: &Parts) -> ApiResult {
    let signer = signer(app)?;
    let q = Query::of(parts);
    check_service(signer, &q)?;
    let id = app.gate.basic_identity(parts).await?;
    let refresh = if q.get("offline_token") == Some("true") {
        refresh_for(signer, &id)?
    } else {
        None
    };
    issue(app, signer, &id, &q, "scope", refresh, false).await
}

/// `claimed` is set to the user name a password grant names (for the audit log).
pub async fn post(
    app: &AppState,
    parts: &Parts,
    body: Body,
    claimed: &mut Option<String>,
) -> ApiResult {
    let signer = signer(app)?;
    let bytes = axum::body::to_bytes(body, MAX_FORM)
        .await
        .map_err(|_| bad_request("the form is too large or ended early"))?;
    let form = Query(url::form_urlencoded::parse(&bytes).into_owned().collect());
    check_service(signer, &form)?;
    let (id, refresh) = match form.get("grant_type") {
        Some("password") => {
            let (Some(user), Some(password)) = (form.get("username"), form.get("password")) else {
                return Err(bad_request(
                    "the password grant needs username and password",
                ));
            };
            *claimed = Some(user.to_string());
            let id = app
                .gate
                .authn
                .login(user, password, client_addr(parts))
                .await
                .map_err(|e| match e {
                    AuthError::BadCredentials => unauthorized("invalid user name or password")
                        .auth_failure("bad_credentials"),
                    AuthError::Throttled(w) => throttled(w),
                    AuthError::Store(e) => ApiError::internal(&e),
                })?;
            let refresh = if form.get("access_type") == Some("offline") {
                refresh_for(signer, &id)?
            } else {
                None
            };
            (id, refresh)
        }
        Some("refresh_token") => {
            *claimed = Some("anonymous".into());
            let Some(token) = form.get("refresh_token") else {
                return Err(bad_request("the refresh_token grant needs refresh_token"));
            };
            let claims = signer
                .verify(token, TokenUse::Refresh)
                .map_err(|e| unauthorized(&format!("refresh token rejected: {e}")))?;
            let id = app
                .gate
                .authn
                .bound_identity(&claims.sub, &claims.bnd)
                .await
                .map_err(|e| ApiError::internal(&e))?
                .filter(|id| !id.principal.is_anonymous())
                .ok_or_else(|| unauthorized("refresh token rejected: it is revoked"))?;
            (id, Some(token.to_string()))
        }
        Some(other) => {
            return Err(bad_request(format!(
                "unsupported grant_type {other:?}: use password or refresh_token"
            )))
        }
        None => return Err(bad_request("grant_type is required")),
    };
    issue(app, signer, &id, &form, "scope", refresh, true).await
}
