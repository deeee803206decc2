//! One structured log line per request (method, path, query, status, bytes in and out,
//! duration, client, the user or token it acted as, and the cache outcome of a proxied
//! request), and the `Docker-Distribution-API-Version` header on every response.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

pub async fn log_request(req: Request, next: Next) -> Response {
    if !tracing::enabled!(target: "berth::access", tracing::Level::INFO) {
        let mut resp = next.run(req).await;
        add_version(&mut resp);
        return resp;
    }
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let client = req
        .extensions()
        .get::<ConnectInfo<super::Peer>>()
        .map(|c| c.0 .0.to_string())
        .unwrap_or_default();
    let bytes_in = Arc::new(AtomicU64::new(0));
    let req = req.map(|b| {
        Body::new(Counted {
            inner: b,
            count: bytes_in.clone(),
        })
    });
    let mut resp = next.run(req).await;
    add_version(&mut resp);
    let bytes_out = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| {
            use http_body::Body as _;
            resp.body().size_hint().lower()
        });
    tracing::info!(
        target: "berth::access",
        %method,
        path,
        query,
        status = resp.status().as_u16(),
        bytes_in = bytes_in.load(Ordering::Relaxed),
        bytes_out,
        duration_ms = start.elapsed().as_secs_f64() * 1000.0,
        client,
        user = resp.extensions().get::<super::Subject>().map(|s| s.0.as_str()).unwrap_or(""),
        cache = resp.headers().get("x-berth-cache").and_then(|v| v.to_str().ok()).unwrap_or(""),
        "request"
    );
    resp
}

fn add_version(resp: &mut Response) {
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
}

/// A request body that counts the bytes read from it, keeping the inner size hint (handlers
/// rely on it to tell an empty body from a chunked one).
struct Counted {
    inner: Body,
    count: Arc<AtomicU64>,
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
                self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
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
