//! A relay in front of an upstream registry, standing between berth's cache and it: it
//! counts every request, and on command answers 429 or 500, adds Docker Hub's rate-limit
//! headers, goes down (refuses connections), slows or tampers with one blob's bytes. The
//! upstream behind it is a real registry (a berth `TestServer`, or any URL).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the relay does to the next requests.
#[derive(Clone, Debug, Default)]
pub struct Knobs {
    /// Answer 429 with this Retry-After (seconds) to everything.
    pub too_many: Option<u64>,
    /// Answer 500 to everything.
    pub broken: bool,
    /// `ratelimit-limit` / `ratelimit-remaining` added to every answer: (limit, remaining).
    pub budget: Option<(u64, u64)>,
    /// Flip a byte in the body of blobs whose path ends with this digest.
    pub tamper: Option<String>,
    /// Pause this long after each 1 MiB of blob bodies (slow links).
    pub pace: Option<Duration>,
}

#[derive(Default)]
struct Shared {
    knobs: Knobs,
    /// "METHOD kind" -> count, where kind is `manifest`, `blob`, `tags`, `token`, `other`.
    counts: HashMap<String, usize>,
    log: Vec<String>,
    /// When each blob body finished going out.
    blob_done: Vec<std::time::Instant>,
}

#[derive(Clone)]
struct RelayState {
    shared: Arc<Mutex<Shared>>,
    upstream: String,
    client: reqwest::Client,
}

pub struct Relay {
    pub addr: SocketAddr,
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    upstream: String,
    task: Option<JoinHandle<()>>,
    /// Every connection's task, so going down closes the open ones too.
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

fn kind(path: &str) -> &'static str {
    if path.contains("/manifests/") {
        "manifest"
    } else if path.contains("/blobs/") {
        "blob"
    } else if path.ends_with("/tags/list") {
        "tags"
    } else if path.starts_with("/token") {
        "token"
    } else {
        "other"
    }
}

async fn forward(State(st): State<RelayState>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let knobs = {
        let mut s = st.shared.lock().unwrap();
        *s.counts
            .entry(format!("{method} {}", kind(&path)))
            .or_default() += 1;
        s.log.push(format!("{method} {path}{query}"));
        s.knobs.clone()
    };
    let budget = |mut r: Response| {
        if let Some((limit, left)) = knobs.budget {
            let h = r.headers_mut();
            h.insert(
                "ratelimit-limit",
                HeaderValue::from_str(&format!("{limit};w=21600")).unwrap(),
            );
            h.insert(
                "ratelimit-remaining",
                HeaderValue::from_str(&format!("{left};w=21600")).unwrap(),
            );
        }
        r
    };
    if let Some(secs) = knobs.too_many {
        let mut r = Response::new(Body::from(
            r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
        ));
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        r.headers_mut().insert(
            "retry-after",
            HeaderValue::from_str(&secs.to_string()).unwrap(),
        );
        return budget(r);
    }
    if knobs.broken {
        let mut r = Response::new(Body::from("upstream broken"));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return budget(r);
    }
    let mut out = st
        .client
        .request(method.clone(), format!("{}{path}{query}", st.upstream));
    for (k, v) in req.headers() {
        if k != "host" {
            out = out.header(k, v);
        }
    }
    let body = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let resp = match out.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            let mut r = Response::new(Body::from(format!("relay: {e}")));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            return r;
        }
    };
    let mut builder = Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        builder = builder.header(k, v);
    }
    let tamper = knobs
        .tamper
        .as_ref()
        .is_some_and(|d| kind(&path) == "blob" && path.ends_with(d.as_str()));
    let pace = knobs.pace.filter(|_| kind(&path) == "blob");
    let mut flipped = false;
    let (length, shared, is_blob) = (
        resp.content_length(),
        st.shared.clone(),
        kind(&path) == "blob",
    );
    let mut sent = 0u64;
    let stream = resp.bytes_stream().then(move |chunk| {
        if let Ok(b) = &chunk {
            sent += b.len() as u64;
            if is_blob && Some(sent) == length {
                shared
                    .lock()
                    .unwrap()
                    .blob_done
                    .push(std::time::Instant::now());
            }
        }
        let mut chunk = chunk.map(|b| b.to_vec());
        if let (Ok(b), true, false) = (&mut chunk, tamper, flipped) {
            if let Some(x) = b.first_mut() {
                *x ^= 0xff;
                flipped = true;
            }
        }
        async move {
            if let Some(p) = pace {
                tokio::time::sleep(p).await;
            }
            chunk.map(bytes::Bytes::from)
        }
    });
    let shared = st.shared.clone();
    let is_blob = kind(&path) == "blob";
    let stream = stream.chain(futures::stream::once(async move {
        if is_blob {
            shared
                .lock()
                .unwrap()
                .blob_done
                .push(std::time::Instant::now());
        }
        Ok(bytes::Bytes::new())
    }));
    budget(builder.body(Body::from_stream(stream)).unwrap())
}

impl Relay {
    /// A relay to `upstream` (`http://host:port`, no trailing slash).
    pub async fn start(upstream: &str) -> Relay {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut relay = Relay {
            addr,
            url: format!("http://{addr}"),
            shared,
            upstream: upstream.to_string(),
            task: None,
            conns: Arc::default(),
        };
        relay.serve(listener);
        relay
    }

    fn serve(&mut self, listener: TcpListener) {
        let st = RelayState {
            shared: self.shared.clone(),
            upstream: self.upstream.clone(),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        };
        let app = axum::Router::new().fallback(forward).with_state(st);
        let conns = self.conns.clone();
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                let conn = tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
                });
                conns.lock().unwrap().push(conn);
            }
        }));
    }

    pub fn set(&self, f: impl FnOnce(&mut Knobs)) {
        f(&mut self.shared.lock().unwrap().knobs);
    }

    /// Requests seen of "METHOD kind" (e.g. "GET blob", "HEAD manifest").
    pub fn count(&self, what: &str) -> usize {
        self.shared
            .lock()
            .unwrap()
            .counts
            .get(what)
            .copied()
            .unwrap_or(0)
    }

    pub fn reset_counts(&self) {
        let mut s = self.shared.lock().unwrap();
        s.counts.clear();
        s.log.clear();
    }

    /// When the blob bodies sent so far finished going out.
    pub fn blobs_done(&self) -> Vec<std::time::Instant> {
        self.shared.lock().unwrap().blob_done.clone()
    }

    pub fn log(&self) -> Vec<String> {
        self.shared.lock().unwrap().log.clone()
    }

    /// Stops answering: connections to its port are refused.
    pub fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Answers again on the same port.
    pub async fn up(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.down();
    }
}
