//! The outermost middleware: every request gets an id (`X-Request-Id`: the client's when it
//! is sane, else a new one), is counted and timed for `/metrics`, and gets one structured
//! access-log line (method, path, query, status, bytes in and out, duration, client, the
//! user or token it acted as, the cache outcome of a proxied request, and the id). Every
//! response carries `Docker-Distribution-API-Version`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;

use crate::ops::metrics::{
    method_label, Metrics, ReasonLabels, RequestLabels, RouteLabels, StatusLabels,
};

use super::error::AuthFailure;

pub const REQUEST_ID: &str = "x-request-id";

/// The request's id, in the request's and the response's extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The endpoint kind that answered, set by the handler (the `route` label).
#[derive(Clone, Copy, Debug)]
pub struct Route(pub &'static str);

/// An id a client sent is kept when it is 1 to 128 characters of letters, digits and
/// `-._:/+=` (a UUID, a trace id); anything else is replaced, so the log stays parseable.
fn sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:/+=".contains(&b))
}

/// The route of a request no `/v2/` handler claimed.
fn route_of(path: &str) -> &'static str {
    match path {
        "/token" => "token",
        "/metrics" => "metrics",
        "/healthz" | "/readyz" => "health",
        p if p.starts_with("/api/") => "admin",
        p if p.starts_with("/v2") => "invalid",
        _ => "unknown",
    }
}

/// `metrics` is `None` when metrics are off (`metrics.enabled: false`): nothing is counted.
pub async fn observe(
    State(metrics): State<Option<Arc<Metrics>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let logging = tracing::enabled!(target: "berth::access", tracing::Level::INFO);
    let query = if logging {
        req.uri().query().unwrap_or("").to_string()
    } else {
        String::new()
    };
    let client = req
        .extensions()
        .get::<ConnectInfo<super::Peer>>()
        .map(|c| c.0 .0.to_string())
        .unwrap_or_default();
    let bytes_in = Arc::new(AtomicU64::new(0));
    let req = if metrics.is_some() || logging {
        let total = metrics.as_ref().map(|m| m.received_bytes.clone());
        let count = bytes_in.clone();
        req.map(|b| {
            Body::new(Counted {
                inner: b,
                count,
                total,
            })
        })
    } else {
        req
    };
    let resp = next.run(req).await;
    let (mut parts, body) = resp.into_parts();
    parts.headers.insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        parts.headers.insert(REQUEST_ID, v);
    }
    let status = parts.status;
    let elapsed = start.elapsed();
    let route = parts
        .extensions
        .get::<Route>()
        .map_or_else(|| route_of(&path), |r| r.0);
    if let Some(metrics) = &metrics {
        record(
            metrics,
            &method,
            route,
            status,
            parts.extensions.get::<AuthFailure>(),
        );
        metrics
            .durations
            .get_or_create(&RouteLabels {
                method: method_label(method.as_str()),
                route,
            })
            .observe(elapsed.as_secs_f64());
    }
    if logging {
        let bytes_out = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| {
                use http_body::Body as _;
                body.size_hint().lower()
            });
        tracing::info!(
            target: "berth::access",
            %method,
            path,
            query,
            status = status.as_u16(),
            bytes_in = bytes_in.load(Ordering::Relaxed),
            bytes_out,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            client,
            user = parts.extensions.get::<super::Subject>().map(|s| s.0.as_str()).unwrap_or(""),
            cache = parts.headers.get(super::CACHE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or(""),
            request_id = id,
            "request"
        );
    }
    let body = match &metrics {
        Some(m) => Body::new(Counted {
            inner: body,
            count: Arc::new(AtomicU64::new(0)),
            total: Some(m.sent_bytes.clone()),
        }),
        None => body,
    };
    Response::from_parts(parts, body)
}

fn record(
    metrics: &Metrics,
    method: &Method,
    route: &'static str,
    status: StatusCode,
    auth: Option<&AuthFailure>,
) {
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method_label(method.as_str()),
            route,
            status: status.as_u16(),
        })
        .inc();
    let outcome = StatusLabels {
        status: if status.is_success() || status.is_redirection() {
            "success"
        } else {
            "failure"
        },
    };
    if route == "manifest" && method == Method::GET {
        metrics.pulls.get_or_create(&outcome).inc();
    } else if route == "manifest" && method == Method::PUT {
        metrics.pushes.get_or_create(&outcome).inc();
    }
    if let Some(AuthFailure(reason)) = auth {
        metrics
            .auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

/// A body that counts the bytes passing through it, keeping the inner size hint (handlers
/// rely on it to tell an empty body from a chunked one).
struct Counted {
    inner: Body,
    count: Arc<AtomicU64>,
    total: Option<Counter>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let n = data.len() as u64;
                self.count.fetch_add(n, Ordering::Relaxed);
                if let Some(t) = &self.total {
                    t.inc_by(n);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_ids_are_kept() {
        assert!(sane("0af7651916cd43dd8448eb211c80319c"));
        assert!(sane("req-1.2:3/4+5=6_7"));
        assert!(!sane(""));
        assert!(!sane(&"a".repeat(129)));
        assert!(!sane("has space"));
        assert!(!sane("new\nline"));
        assert!(!sane("quote\"d"));
    }
}
