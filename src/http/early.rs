//! Answers that come before the request body was read (a 401 challenge, a 403, a 404 for an
//! unknown upload, a 413, a 416, a 429) must reach the client whole. A client that is still
//! sending when the server stops reading sees a reset connection instead of the answer: a
//! closed socket with unread bytes makes the kernel send RST, and curl (before 8.x) treats an
//! HTTP/2 RST_STREAM as an error even with NO_ERROR. So, like nginx, berth reads and discards
//! what is left of the body before it answers, up to [`DRAIN_BYTES`] and [`DRAIN_TIME`]:
//! the connection then stays usable. Past those bounds it answers anyway (with `Connection:
//! close` on HTTP/1.1, where the lingering close in [`super::conn`] keeps the answer from
//! being overtaken by a reset). A client that asked `Expect: 100-continue` and was sent no
//! `100` has not sent its body at all: it gets the answer at once.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

/// The most of an unread body read and discarded before answering.
pub const DRAIN_BYTES: u64 = 64 * 1024 * 1024;
/// The longest spent reading an unread body before answering.
pub const DRAIN_TIME: Duration = Duration::from_secs(3);

/// What a handler left of its request body.
struct Unread {
    body: Body,
    /// True when the handler read none of it.
    untouched: bool,
}

/// A request body that hands itself back, when dropped unfinished, to the middleware that
/// wrapped it.
struct Guarded {
    inner: Body,
    finished: bool,
    touched: bool,
    back: Option<oneshot::Sender<Unread>>,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.touched = true;
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // A body that failed (the client went away) has nothing left worth reading.
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.finished = true;
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

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.finished || self.inner.is_end_stream() {
            return;
        }
        if let Some(back) = self.back.take() {
            let _ = back.send(Unread {
                body: std::mem::take(&mut self.inner),
                untouched: !self.touched,
            });
        }
    }
}

/// Reads and discards `body` within the bounds; true when it reached its end.
async fn drain(mut body: Body) -> bool {
    let mut left = DRAIN_BYTES;
    let reading = async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    let n = f.data_ref().map_or(0, |d| d.len() as u64);
                    if n > left {
                        return false;
                    }
                    left -= n;
                }
                Err(_) => return false,
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, reading)
        .await
        .unwrap_or(false)
}

/// The middleware: finishes reading whatever body the handler left before answering.
pub async fn finish_request_body(req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let http1 = req.version() < Version::HTTP_2;
    let expects_continue = req
        .headers()
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let (back, unread) = oneshot::channel();
    let req = req.map(|inner| {
        Body::new(Guarded {
            inner,
            finished: false,
            touched: false,
            back: Some(back),
        })
    });
    let mut resp = next.run(req).await;
    let Ok(left) = { unread }.try_recv() else {
        return resp;
    };
    let waiting_for_continue = http1 && expects_continue && left.untouched;
    if waiting_for_continue || !drain(left.body).await {
        if http1 {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        tracing::debug!(
            waiting_for_continue,
            "answered before the request body ended; closing after the answer"
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    async fn refuse(_: Request) -> &'static str {
        "refused"
    }

    async fn read_some(req: Request) -> &'static str {
        let mut body = req.into_body();
        let _ = body.frame().await;
        "partly read"
    }

    fn app() -> Router {
        Router::new()
            .route("/refuse", post(refuse))
            .route("/some", post(read_some))
            .layer(axum::middleware::from_fn(finish_request_body))
    }

    /// A body of `chunks` chunks of 1 MiB that records how many were read.
    fn counted_body(chunks: usize) -> (Body, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let read = std::sync::Arc::new(AtomicUsize::new(0));
        let r = read.clone();
        let stream = futures::stream::iter(0..chunks).map(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 1 << 20]))
        });
        (Body::from_stream(stream), read)
    }

    use futures::StreamExt;

    #[tokio::test]
    async fn an_unread_body_is_drained_before_the_answer() {
        let (body, read) = counted_body(8);
        let resp = app()
            .oneshot(Request::post("/refuse").body(body).unwrap())
            .await
            .unwrap();
        assert_eq!(read.load(std::sync::atomic::Ordering::SeqCst), 8);
        assert!(
            resp.headers().get(header::CONNECTION).is_none(),
            "still reusable"
        );
        let (body, read) = counted_body(3);
        app()
            .oneshot(Request::post("/some").body(body).unwrap())
            .await
            .unwrap();
        assert_eq!(read.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_huge_body_is_not_read_whole() {
        let (body, read) = counted_body(1024);
        let resp = app()
            .oneshot(Request::post("/refuse").body(body).unwrap())
            .await
            .unwrap();
        let n = read.load(std::sync::atomic::Ordering::SeqCst);
        assert!(n <= 65, "read {n} MiB of 1 GiB");
        assert_eq!(resp.headers()[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn a_client_waiting_for_continue_is_answered_at_once() {
        let (body, read) = counted_body(8);
        let req = Request::post("/refuse")
            .header(header::EXPECT, "100-continue")
            .body(body)
            .unwrap();
        let resp = app().oneshot(req).await.unwrap();
        assert_eq!(read.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(resp.headers()[header::CONNECTION], "close");
    }
}
