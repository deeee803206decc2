//! The gate every `/v2/` request passes: credentials to a principal, the endpoint's action to
//! the permission it needs, and a verdict. Refusals speak the protocol clients understand: 401
//! `UNAUTHORIZED` with a `Basic` or `Bearer` challenge when other credentials could help, 403
//! `DENIED` naming the missing permission when they could not, 429 while logins are throttled.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use serde_json::json;

use crate::auth::jwt::{AccessToken, ClaimAccess, Signer};
use crate::auth::{
    AuthError, Authenticator, Authorizer, Identity, Perms, Principal, Scope, Visibility,
};
use crate::config::AuthMode;
use crate::metadata::MetadataError;
use crate::oci::RepoName;

use super::endpoint::{Action, Endpoint};
use super::error::{ApiError, Code};

/// What an admitted request may do, for checks beyond the one it was admitted by (the source
/// of a cross-repository mount, the repositories listed in the catalog).
#[derive(Clone, Debug)]
pub enum Access {
    /// Access control is off.
    Open,
    /// A principal whose permissions are looked up as needed (basic mode, admin API).
    Principal(Principal),
    /// A bearer token's grants (token mode), within what its principal may do now.
    Bearer {
        principal: Principal,
        token: Arc<AccessToken>,
    },
}

impl Access {
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Access::Open => None,
            Access::Principal(p) | Access::Bearer { principal: p, .. } => Some(p),
        }
    }
}

/// Why a bearer token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum BearerRejection {
    #[error("bearer tokens are only issued in token mode")]
    NotTokenMode,
    #[error("{0}")]
    Invalid(String),
    #[error("the credential store failed")]
    Store(ApiError),
}

pub struct Gate {
    pub mode: AuthMode,
    pub authn: Arc<Authenticator>,
    pub authz: Authorizer,
    pub signer: Option<Arc<Signer>>,
    /// Configured token realm; otherwise derived from each request's host.
    pub realm: Option<String>,
    pub tls: bool,
}

pub fn perms_for(action: Action) -> Perms {
    match action {
        Action::Pull => Perms::PULL,
        Action::Push => Perms::PUSH,
        Action::Delete => Perms::DELETE,
        Action::None => Perms::NONE,
    }
}

/// The address the request came from (unspecified when served without connection info).
pub fn client_addr(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<super::Peer>>()
        .map(|c| c.0 .0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Credentials a request carries.
pub enum Credentials {
    None,
    Basic { user: String, password: String },
    Bearer(String),
    Malformed,
}

pub fn credentials(parts: &Parts) -> Credentials {
    let Some(v) = parts.headers.get(header::AUTHORIZATION) else {
        return Credentials::None;
    };
    let Ok(v) = v.to_str() else {
        return Credentials::Malformed;
    };
    let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        match decoded.as_deref().and_then(|s| s.split_once(':')) {
            // skopeo and podman send an empty pair when they have no credentials.
            Some(("", "")) => Credentials::None,
            Some((u, p)) if !u.is_empty() => Credentials::Basic {
                user: u.to_string(),
                password: p.to_string(),
            },
            _ => Credentials::Malformed,
        }
    } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        Credentials::Bearer(rest.to_string())
    } else {
        Credentials::Malformed
    }
}

fn store_error(e: MetadataError) -> ApiError {
    ApiError::internal(&e)
}

/// The 429 for a throttled login.
pub fn throttled(wait: std::time::Duration) -> ApiError {
    // Rounded up: a client that waits the advertised time must find the block over.
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    super::error::with_retry_after(
        ApiError::new(
            Code::TooManyRequests,
            format!("too many failed logins; retry in {secs} s"),
        )
        .auth_failure("throttled"),
        Some(wait),
    )
}

fn denied(principal: &Principal, repo: &RepoName, missing: Perms) -> ApiError {
    ApiError::new(
        Code::Denied,
        format!(
            "{} may not {missing} repository {repo}: requires the {missing} permission",
            principal.describe()
        ),
    )
    .detail(json!({ "repository": repo.as_str(), "missing": missing.actions() }))
    .auth_failure("denied")
}

/// The scopes a challenge asks for so that a request on `endpoint` can succeed.
fn endpoint_scopes(parts: &Parts, endpoint: &Endpoint, action: Action) -> Vec<Scope> {
    match (endpoint, endpoint.repo()) {
        (Endpoint::Catalog, _) => vec![Scope::Catalog],
        (_, Some(repo)) if action == Action::Push => {
            push_scopes(repo, mount_source(parts, endpoint).as_ref())
        }
        (_, Some(repo)) => vec![Scope::repository(repo, perms_for(action))],
        _ => Vec::new(),
    }
}

/// What a push to `repo` asks for: pull and push together (as Docker asks when pushing), and
/// pull on a mount's source when that is another repository.
fn push_scopes(repo: &RepoName, mount_from: Option<&RepoName>) -> Vec<Scope> {
    let mut scopes = vec![Scope::repository(repo, Perms::PULL.union(Perms::PUSH))];
    if let Some(from) = mount_from.filter(|f| *f != repo) {
        scopes.push(Scope::repository(from, Perms::PULL));
    }
    scopes
}

/// The repository a cross-repository mount (`POST .../blobs/uploads/?mount=D&from=R`) reads.
fn mount_source(parts: &Parts, endpoint: &Endpoint) -> Option<RepoName> {
    if !matches!(endpoint, Endpoint::Uploads(_)) || parts.method != axum::http::Method::POST {
        return None;
    }
    let q = super::Query::of(parts);
    q.get("mount")?;
    q.get("from")?.parse().ok()
}

impl Gate {
    /// Checks a `/v2/` request for `endpoint`.
    pub async fn admit(&self, parts: &Parts, endpoint: &Endpoint) -> Result<Access, ApiError> {
        let action = endpoint.action(&parts.method);
        match self.mode {
            AuthMode::None => Ok(Access::Open),
            AuthMode::Basic => self.admit_basic(parts, endpoint, action).await,
            AuthMode::Token => self.admit_bearer(parts, endpoint, action).await,
        }
    }

    /// Authenticates Basic credentials, or none, to an identity.
    pub async fn basic_identity(&self, parts: &Parts) -> Result<Identity, ApiError> {
        match credentials(parts) {
            Credentials::None => Ok(Identity::anonymous()),
            Credentials::Basic { user, password } => self
                .authn
                .login(&user, &password, client_addr(parts))
                .await
                .map_err(|e| match e {
                    AuthError::BadCredentials => self
                        .basic_challenge()
                        .message("invalid user name or password")
                        .auth_failure("bad_credentials"),
                    AuthError::Throttled(w) => throttled(w),
                    AuthError::Store(e) => store_error(e),
                }),
            Credentials::Bearer(_) | Credentials::Malformed => Err(self
                .basic_challenge()
                .message("expected Basic credentials")
                .auth_failure("malformed_credentials")),
        }
    }

    fn basic_challenge(&self) -> ApiError {
        ApiError::new(Code::Unauthorized, "authentication required")
            .header(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"berth\", charset=\"UTF-8\"",
            )
            .auth_failure("missing_credentials")
    }

    async fn admit_basic(
        &self,
        parts: &Parts,
        endpoint: &Endpoint,
        action: Action,
    ) -> Result<Access, ApiError> {
        let principal = self.basic_identity(parts).await?.principal;
        match endpoint.repo() {
            None if principal.is_anonymous() && matches!(endpoint, Endpoint::Base) => {
                Err(self.basic_challenge())
            }
            None => Ok(Access::Principal(principal)),
            Some(repo) => {
                let need = perms_for(action);
                let have = self
                    .authz
                    .perms(&principal, repo)
                    .await
                    .map_err(store_error)?;
                if have.contains(need) {
                    Ok(Access::Principal(principal))
                } else if principal.is_anonymous() {
                    Err(self.basic_challenge())
                } else {
                    Err(denied(&principal, repo, have.missing(need)))
                }
            }
        }
    }

    /// The token endpoint's URL for this request.
    pub fn realm(&self, parts: &Parts) -> String {
        if let Some(r) = &self.realm {
            return r.clone();
        }
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b".-:[]_".contains(&c))
            })
            .unwrap_or("localhost");
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}/token")
    }

    fn bearer_challenge(&self, parts: &Parts, scopes: &[Scope], error: Option<&str>) -> ApiError {
        let service = self.signer.as_ref().map(|s| s.service()).unwrap_or("berth");
        let mut v = format!(
            "Bearer realm=\"{}\",service=\"{service}\"",
            self.realm(parts)
        );
        if !scopes.is_empty() {
            // Several scopes go in one parameter, separated by spaces (as Distribution
            // answers and OAuth 2 writes them); token requests may carry them either way.
            let list: Vec<String> = scopes.iter().map(Scope::to_string).collect();
            v.push_str(&format!(",scope=\"{}\"", list.join(" ")));
        }
        if let Some(e) = error {
            v.push_str(&format!(",error=\"{e}\""));
        }
        let reason = match error {
            Some("invalid_token") => "invalid_token",
            Some(_) => "insufficient_scope",
            None => "missing_credentials",
        };
        ApiError::new(Code::Unauthorized, "authentication required")
            .header(header::WWW_AUTHENTICATE, &v)
            .auth_failure(reason)
    }

    /// Verifies a bearer token and the identity it was issued to, which must still exist with
    /// the same credential: deleting a user, changing a password or revoking an access token
    /// ends its tokens at once. The error says why, for the challenge.
    pub async fn bearer_identity(
        &self,
        token: &str,
    ) -> Result<(Identity, Arc<AccessToken>), BearerRejection> {
        let signer = self.signer.as_ref().ok_or(BearerRejection::NotTokenMode)?;
        let token = signer
            .verify_access(token)
            .map_err(|e| BearerRejection::Invalid(e.to_string()))?;
        let identity = self
            .authn
            .bound_identity(&token.claims.sub, &token.claims.bnd)
            .await
            .map_err(|e| BearerRejection::Store(store_error(e)))?
            .ok_or_else(|| BearerRejection::Invalid("token is revoked".into()))?;
        Ok((identity, token))
    }

    async fn admit_bearer(
        &self,
        parts: &Parts,
        endpoint: &Endpoint,
        action: Action,
    ) -> Result<Access, ApiError> {
        // Only a refusal needs them.
        let scopes = || endpoint_scopes(parts, endpoint, action);
        let token = match credentials(parts) {
            Credentials::Bearer(t) => t,
            _ => return Err(self.bearer_challenge(parts, &scopes(), None)),
        };
        let (identity, token) = match self.bearer_identity(&token).await {
            Ok(v) => v,
            Err(BearerRejection::Store(e)) => return Err(e),
            Err(e) => {
                return Err(self
                    .bearer_challenge(parts, &scopes(), Some("invalid_token"))
                    .message(e.to_string()))
            }
        };
        let principal = identity.principal;
        let Some(repo) = endpoint.repo() else {
            // `/v2/` needs any valid token; the catalog needs its grant.
            if matches!(endpoint, Endpoint::Catalog) && !token.grants.catalog {
                return Err(self.bearer_challenge(parts, &scopes(), Some("insufficient_scope")));
            }
            return Ok(Access::Bearer { principal, token });
        };
        let need = perms_for(action);
        // What the principal may do now bounds what the token says: a role taken away or a
        // namespace made private applies to tokens already issued.
        let could = self
            .authz
            .perms(&principal, repo)
            .await
            .map_err(store_error)?;
        if token.grants.on(repo).intersect(could).contains(need) {
            return Ok(Access::Bearer { principal, token });
        }
        // If the principal could have it, the client should fetch a token with the
        // challenge's scope; if not, a new token would not help.
        if could.contains(need) || principal.is_anonymous() {
            Err(self.bearer_challenge(parts, &scopes(), Some("insufficient_scope")))
        } else {
            Err(denied(&principal, repo, could.missing(need)))
        }
    }

    /// True when the request may do `need` on `repo` (beyond the check that admitted it).
    pub async fn allows(
        &self,
        access: &Access,
        repo: &RepoName,
        need: Perms,
    ) -> Result<bool, ApiError> {
        match access {
            Access::Open => Ok(true),
            Access::Principal(p) => Ok(self
                .authz
                .perms(p, repo)
                .await
                .map_err(store_error)?
                .contains(need)),
            Access::Bearer { principal, token } => Ok(token.grants.on(repo).contains(need)
                && self
                    .authz
                    .perms(principal, repo)
                    .await
                    .map_err(store_error)?
                    .contains(need)),
        }
    }

    /// Whether a cross-repository mount into `repo` may read `from`. A bearer token without
    /// pull on `from`, held by someone who may pull from it, is challenged for a token that
    /// has both (as Distribution does, so clients that follow challenges can mount); anyone
    /// else gets `false`, and with it an ordinary upload session.
    pub async fn may_mount_from(
        &self,
        access: &Access,
        parts: &Parts,
        repo: &RepoName,
        from: &RepoName,
    ) -> Result<bool, ApiError> {
        if self.allows(access, from, Perms::PULL).await? {
            return Ok(true);
        }
        if let Access::Bearer { principal, .. } = access {
            let could = self
                .authz
                .perms(principal, from)
                .await
                .map_err(store_error)?;
            if could.contains(Perms::PULL) {
                let scopes = push_scopes(repo, Some(from));
                return Err(self.bearer_challenge(parts, &scopes, Some("insufficient_scope")));
            }
        }
        Ok(false)
    }

    /// The repositories the request may see in the catalog.
    pub async fn visibility(&self, access: &Access) -> Result<Visibility, ApiError> {
        match access.principal() {
            None => Ok(Visibility::All),
            Some(p) => self.authz.visibility(p).await.map_err(store_error),
        }
    }

    /// Grants for a token request: each requested scope reduced to what `principal` may do;
    /// scopes that end up empty are left out.
    pub async fn grant(
        &self,
        principal: &Principal,
        scopes: &[Scope],
    ) -> Result<Vec<ClaimAccess>, ApiError> {
        let mut out: Vec<ClaimAccess> = Vec::new();
        for s in scopes {
            match s {
                Scope::Catalog => {
                    if !out.iter().any(|a| a.kind == "registry") {
                        out.push(ClaimAccess {
                            kind: "registry".into(),
                            name: "catalog".into(),
                            actions: vec!["*".into()],
                        });
                    }
                }
                Scope::Repository { name, actions } => {
                    let allowed = self
                        .authz
                        .perms(principal, name)
                        .await
                        .map_err(store_error)?
                        .intersect(*actions);
                    if allowed.is_empty() {
                        continue;
                    }
                    match out
                        .iter_mut()
                        .find(|a| a.kind == "repository" && a.name == name.as_str())
                    {
                        Some(existing) => {
                            let merged = existing
                                .actions
                                .iter()
                                .map(|x| Perms::from_action(x))
                                .fold(allowed, Perms::union);
                            existing.actions =
                                merged.actions().into_iter().map(String::from).collect();
                        }
                        None => out.push(ClaimAccess {
                            kind: "repository".into(),
                            name: name.to_string(),
                            actions: allowed.actions().into_iter().map(String::from).collect(),
                        }),
                    }
                }
            }
        }
        Ok(out)
    }
}

impl ApiError {
    /// Replaces the message, keeping code, status and headers.
    pub fn message(mut self, m: impl Into<String>) -> Self {
        self.message = m.into();
        self
    }
}
