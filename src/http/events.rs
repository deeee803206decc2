//! Which `/v2/` requests are events (for the audit log and webhooks), and the [`Event`] each
//! becomes once answered: manifest pulls (`GET`), pushes (manifest puts, completed uploads,
//! mounts), deletes, logins (`/v2/` with credentials, or credentials refused anywhere), and
//! pushes refused by a quota. A bare `401` challenge, which every client meets before it
//! logs in, is not an event.

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::response::Response;

use crate::auth::Principal;
use crate::ops::events::{Action, Event, RequestInfo};

use super::endpoint::Endpoint;
use super::error::{AuthFailure, Failure};
use super::observe::RequestId;
use super::Query;

/// What is known of an event-worthy request before it is handled.
pub(super) struct Pending {
    action: Action,
    target: &'static str,
    repo: Option<String>,
    reference: Option<String>,
    digest: Option<String>,
    media_type: Option<String>,
    size: Option<u64>,
    detail: String,
    /// Not an event unless its credentials are refused.
    only_if_refused: bool,
    /// The user name of Basic credentials, the actor of a refused login.
    claimed: Option<String>,
    addr: String,
    request: RequestInfo,
}

fn header_str(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The pending event of a request, or `None` when this kind of request is never one.
pub(super) fn classify(endpoint: &Endpoint, parts: &Parts) -> Option<Pending> {
    let m = &parts.method;
    let (action, target, only_if_refused) = match endpoint {
        Endpoint::Manifest(..) if m == Method::GET => (Action::Pull, "manifest", false),
        Endpoint::Manifest(..) if m == Method::PUT => (Action::Push, "manifest", false),
        Endpoint::Manifest(_, r) if m == Method::DELETE => (
            Action::Delete,
            if r.tag().is_some() { "tag" } else { "manifest" },
            false,
        ),
        Endpoint::Blob(..) if m == Method::DELETE => (Action::Delete, "blob", false),
        Endpoint::Uploads(_) if m == Method::POST => (Action::Push, "blob", false),
        Endpoint::Upload(..) if m == Method::PUT => (Action::Push, "blob", false),
        Endpoint::Base if parts.headers.contains_key(header::AUTHORIZATION) => {
            (Action::Login, "registry", false)
        }
        // Any other request is an event only when its credentials are refused (see `finish`).
        _ => (Action::Login, "registry", true),
    };
    let q = Query::of(parts);
    let mut digest = match endpoint {
        Endpoint::Manifest(_, crate::oci::Reference::Digest(d)) | Endpoint::Blob(_, d) => {
            Some(d.to_string())
        }
        _ => q.get("digest").or(q.get("mount")).map(str::to_string),
    };
    let mut detail = String::new();
    if let (Endpoint::Uploads(_), Some(from)) = (endpoint, q.get("from")) {
        if q.get("mount").is_some() {
            detail = format!("mounted from {from}");
        }
    }
    let (media_type, size) = if action == Action::Push && target == "manifest" {
        let size = header_str(&parts.headers, header::CONTENT_LENGTH).and_then(|s| s.parse().ok());
        (header_str(&parts.headers, header::CONTENT_TYPE), size)
    } else {
        (None, None)
    };
    if action == Action::Login {
        digest = None;
    }
    Some(Pending {
        action,
        target,
        repo: endpoint.repo().map(|r| r.to_string()),
        reference: match endpoint {
            Endpoint::Manifest(_, r) => r.tag().map(|t| t.to_string()),
            _ => None,
        },
        digest,
        media_type,
        size,
        detail,
        only_if_refused,
        claimed: match super::auth::credentials(parts) {
            super::auth::Credentials::Basic { user, .. } => Some(user),
            _ => None,
        },
        addr: client_addr(parts),
        request: request_info(parts),
    })
}

/// The client's address, for an event.
pub(super) fn client_addr(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<super::Peer>>()
        .map(|c| c.0 .0.ip().to_string())
        .unwrap_or_default()
}

/// The request an event came from: its id, method, host and user agent.
pub(super) fn request_info(parts: &Parts) -> RequestInfo {
    RequestInfo {
        id: parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        method: parts.method.to_string(),
        host: header_str(&parts.headers, header::HOST).unwrap_or_default(),
        user_agent: header_str(&parts.headers, header::USER_AGENT).unwrap_or_default(),
    }
}

/// The event a request became, given its answer and who it acted as.
pub(super) fn finish(p: Pending, resp: &Response, who: Option<&Principal>) -> Option<Event> {
    let status = resp.status();
    let refused = resp.extensions().get::<AuthFailure>().map(|a| a.0);
    let failure = resp.extensions().get::<Failure>();
    // A challenge to a client that sent no credentials yet, or an ordinary request that was
    // not refused for its credentials: no event.
    if matches!(refused, Some("missing_credentials" | "unauthorized")) && who.is_none() {
        return None;
    }
    let credentials_refused = matches!(
        refused,
        Some("bad_credentials" | "malformed_credentials" | "invalid_token" | "throttled")
    );
    let (action, target) = if credentials_refused {
        (Action::Login, "registry")
    } else if p.only_if_refused {
        return None;
    } else {
        (p.action, p.target)
    };
    // A POST that only opened an upload session pushed nothing yet.
    if p.target == "blob" && p.request.method == "POST" && status.as_u16() == 202 {
        return None;
    }
    let action = match failure {
        Some(f) if f.quota => Action::Quota,
        _ => action,
    };
    let actor = match (who, p.claimed) {
        (Some(w), _) => w.describe(),
        (None, Some(name)) => name,
        (None, None) => "anonymous".into(),
    };
    let mut e = Event::new(action, target, actor);
    e.addr = p.addr;
    e.repo = p.repo;
    e.reference = p.reference;
    e.digest = header_str(resp.headers(), "docker-content-digest").or(p.digest);
    e.media_type = p.media_type;
    e.size = p.size;
    if action == Action::Pull {
        e.media_type = header_str(resp.headers(), header::CONTENT_TYPE);
        e.size = header_str(resp.headers(), header::CONTENT_LENGTH).and_then(|s| s.parse().ok());
    }
    e.status = status.as_u16();
    e.success = status.is_success() || status.is_redirection();
    e.detail = match (failure, refused) {
        (Some(f), _) => format!("{}: {}", f.code, f.message),
        (None, Some(r)) => r.to_string(),
        (None, None) if action == Action::Login => String::new(),
        (None, None) => p.detail,
    };
    e.request = Some(p.request);
    if action == Action::Login {
        e.digest = None;
    }
    Some(e)
}

/// The login event of a `/token` request that presented credentials (Basic on `GET`, a
/// password or refresh grant on `POST`); anonymous token requests are not events.
pub(super) fn token_login(
    parts: &Parts,
    resp: &Response,
    claimed: Option<String>,
) -> Option<Event> {
    let presented = parts.headers.contains_key(header::AUTHORIZATION) || claimed.is_some();
    if !presented {
        return None;
    }
    let who = resp
        .extensions()
        .get::<super::Subject>()
        .map(|s| s.0.clone());
    let claimed = claimed.or_else(|| match super::auth::credentials(parts) {
        super::auth::Credentials::Basic { user, .. } => Some(user),
        _ => None,
    });
    let actor = who.or(claimed).unwrap_or_else(|| "anonymous".into());
    let mut e = Event::new(Action::Login, "token", actor);
    let pending = classify(&Endpoint::Base, parts)?;
    e.addr = pending.addr;
    e.request = Some(pending.request);
    e.status = resp.status().as_u16();
    e.success = resp.status().is_success();
    if let Some(f) = resp.extensions().get::<Failure>() {
        e.detail = format!("{}: {}", f.code, f.message);
    }
    Some(e)
}
