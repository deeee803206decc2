//! One upstream registry: its HTTP client, the auth it asks for (anonymous, Basic, or the
//! Bearer token flow from its challenge, with tokens cached per scope), the rate-limit budget
//! it reports, and a circuit breaker that stops asking it while it fails.
//!
//! Credentials go only where they belong: to the upstream itself, or to a token realm on its
//! host, its registrable domain, or a realm the configuration allows; never across a redirect
//! to another host (blob GETs redirect to CDNs), and clients' own credentials never at all.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use crate::config::UpstreamConfig;
use crate::metadata::now;
use crate::metadata::proxy::RateBudget;
use crate::oci::media;

mod auth;

/// The longest the breaker stays open, and the cap of its backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_REDIRECTS: usize = 5;

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("not found upstream")]
    NotFound,
    #[error("the upstream is rate limiting")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the upstream is unavailable: {reason}")]
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 401 or 403 after every credential berth has: wrong or missing upstream credentials.
    #[error("the upstream refused berth's credentials ({status})")]
    Refused { status: u16 },
    #[error("the upstream answered nonsense: {0}")]
    Protocol(String),
}

pub type Result<T, E = UpstreamError> = std::result::Result<T, E>;

/// How upstream requests fail, for `registry_proxy_upstream_errors_total{kind}`.
pub const ERROR_KINDS: [&str; 5] = [
    "rate_limited",
    "unavailable",
    "refused",
    "protocol",
    "circuit_open",
];

impl UpstreamError {
    /// The error's kind in [`ERROR_KINDS`]; `not_found` is an answer, not a failure.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::NotFound => "not_found",
            UpstreamError::RateLimited { .. } => "rate_limited",
            UpstreamError::Unavailable { .. } => "unavailable",
            UpstreamError::Refused { .. } => "refused",
            UpstreamError::Protocol(_) => "protocol",
        }
    }
}

/// What a manifest `HEAD` told.
#[derive(Clone, Debug)]
pub struct ManifestHead {
    pub digest: Option<String>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
}

#[derive(Clone, Debug)]
struct Token {
    value: String,
    until: Instant,
}

#[derive(Debug)]
struct Breaker {
    open_until: Option<Instant>,
    rate_limited: bool,
    backoff: Duration,
}

pub struct Upstream {
    pub name: String,
    pub config: UpstreamConfig,
    /// The API root: `<url>/v2/`, or the URL's own path when it has one.
    root: Url,
    client: reqwest::Client,
    credentials: Option<(String, String)>,
    manifest_limit: u64,
    tokens: Mutex<HashMap<String, Token>>,
    breaker: Mutex<Breaker>,
    budget: Mutex<Option<RateBudget>>,
    /// Failed requests by [`ERROR_KINDS`], since the process started.
    errors: [std::sync::atomic::AtomicU64; ERROR_KINDS.len()],
}

/// `100;w=21600` -> (100, Some(21600)).
fn parse_limit(v: &str) -> Option<(u64, Option<u64>)> {
    let mut parts = v.split(';');
    let n = parts.next()?.trim().parse().ok()?;
    let w = parts
        .filter_map(|p| p.trim().strip_prefix("w="))
        .find_map(|w| w.parse().ok());
    Some((n, w))
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig, manifest_limit: u64) -> anyhow::Result<Upstream> {
        let mut root = Url::parse(&cfg.url).with_context(|| format!("upstream url {}", cfg.url))?;
        let path = root.path().trim_end_matches('/').to_string();
        root.set_path(&if path.is_empty() {
            "/v2/".to_string()
        } else {
            format!("{path}/")
        });
        root.set_query(None);
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.timeout.0)
            .read_timeout(cfg.timeout.0)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(!cfg.tls_verify);
        if let Some(ca) = &cfg.ca {
            let pem =
                std::fs::read(ca).with_context(|| format!("cannot read CA {}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("no PEM certificate in {}", ca.display()))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        let password = cfg.password().map_err(anyhow::Error::msg)?;
        Ok(Upstream {
            name: cfg.name.clone(),
            config: cfg.clone(),
            root,
            client: b.build().context("cannot build the upstream HTTP client")?,
            credentials: cfg.username.clone().zip(password),
            manifest_limit,
            tokens: Mutex::new(HashMap::new()),
            errors: Default::default(),
            breaker: Mutex::new(Breaker {
                open_until: None,
                rate_limited: false,
                backoff: FIRST_BACKOFF,
            }),
            budget: Mutex::new(None),
        })
    }

    /// The API root requests go to, for logs and listings (no credentials in it).
    pub fn root(&self) -> &Url {
        &self.root
    }

    pub fn budget(&self) -> Option<RateBudget> {
        *self.budget.lock()
    }

    /// Seeds the budget from what an earlier run recorded.
    pub fn restore_budget(&self, b: RateBudget) {
        let mut cur = self.budget.lock();
        if cur.is_none_or(|c| c.seen_at < b.seen_at) {
            *cur = Some(b);
        }
    }

    /// `Err` while manifest pulls must wait: the reported budget is spent and its window has
    /// not passed since (a `HEAD` still goes: it costs nothing and refreshes the budget).
    pub fn check_budget(&self) -> Result<()> {
        let Some(b) = *self.budget.lock() else {
            return Ok(());
        };
        if b.remaining > 0 {
            return Ok(());
        }
        let window = b.window.unwrap_or(3600) as i64;
        let left = b.seen_at + window - now();
        if left > 0 {
            Err(UpstreamError::RateLimited {
                retry_after: Some(Duration::from_secs(left as u64)),
            })
        } else {
            Ok(())
        }
    }

    /// `Err` while the breaker is open.
    pub fn check_breaker(&self) -> Result<()> {
        let b = self.breaker.lock();
        match b.open_until {
            Some(t) if t > Instant::now() => {
                let retry_after = Some(t - Instant::now());
                Err(if b.rate_limited {
                    UpstreamError::RateLimited { retry_after }
                } else {
                    UpstreamError::Unavailable {
                        reason: "circuit breaker open after recent failures".into(),
                        retry_after,
                    }
                })
            }
            _ => Ok(()),
        }
    }

    fn trip(&self, wait: Option<Duration>, rate_limited: bool) -> Duration {
        let mut b = self.breaker.lock();
        let wait = wait.unwrap_or(b.backoff).min(MAX_BACKOFF);
        b.open_until = Some(Instant::now() + wait);
        b.rate_limited = rate_limited;
        b.backoff = (b.backoff * 2).min(MAX_BACKOFF);
        tracing::warn!(upstream = %self.name, wait_secs = wait.as_secs_f64(), rate_limited, "upstream circuit breaker opened");
        wait
    }

    fn healthy(&self) {
        let mut b = self.breaker.lock();
        if b.open_until.is_some() || b.backoff != FIRST_BACKOFF {
            b.open_until = None;
            b.backoff = FIRST_BACKOFF;
            b.rate_limited = false;
        }
    }

    fn note_budget(&self, h: &HeaderMap) {
        let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).and_then(parse_limit);
        if let (Some((limit, w1)), Some((remaining, w2))) =
            (get("ratelimit-limit"), get("ratelimit-remaining"))
        {
            *self.budget.lock() = Some(RateBudget {
                limit,
                remaining,
                window: w2.or(w1),
                seen_at: now(),
            });
        }
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.root
            .join(path)
            .map_err(|e| UpstreamError::Protocol(format!("bad path {path}: {e}")))
    }

    /// True when `url` is on the upstream's own origin (credentials may go there).
    fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.root.scheme()
            && url.host_str() == self.root.host_str()
            && url.port_or_known_default() == self.root.port_or_known_default()
    }

    /// Sends a request, following redirects (without credentials once they leave the
    /// upstream's origin), with the header timeout.
    async fn send_once(
        &self,
        method: &Method,
        mut url: Url,
        accept: Option<&str>,
        auth: Option<&HeaderValue>,
    ) -> Result<Response> {
        for _ in 0..=MAX_REDIRECTS {
            let mut rb = self.client.request(method.clone(), url.clone());
            if let Some(a) = accept {
                rb = rb.header(header::ACCEPT, a);
            }
            if let (Some(a), true) = (auth, self.same_origin(&url)) {
                rb = rb.header(header::AUTHORIZATION, a.clone());
            }
            let sent = tokio::time::timeout(self.config.timeout.0, rb.send()).await;
            let resp = match sent {
                Err(_) => {
                    return Err(UpstreamError::Unavailable {
                        reason: format!("no answer within {:?}", self.config.timeout.0),
                        retry_after: None,
                    })
                }
                Ok(Err(e)) => {
                    return Err(UpstreamError::Unavailable {
                        reason: format!("{e}"),
                        retry_after: None,
                    })
                }
                Ok(Ok(r)) => r,
            };
            if resp.status().is_redirection() {
                if let Some(loc) = resp.headers().get(header::LOCATION) {
                    let loc = loc.to_str().map_err(|_| {
                        UpstreamError::Protocol("redirect to a non-ASCII location".into())
                    })?;
                    url = url.join(loc).map_err(|e| {
                        UpstreamError::Protocol(format!("bad redirect location: {e}"))
                    })?;
                    continue;
                }
            }
            return Ok(resp);
        }
        Err(UpstreamError::Protocol("too many redirects".into()))
    }

    /// A request on the registry API, with auth as the upstream asks for it, the budget
    /// noted and the breaker fed. Answers other than 401/429/5xx are returned as they are.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        repo: &str,
    ) -> Result<Response> {
        let count = |kind: &str| {
            if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
                self.errors[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        };
        if let Err(e) = self.check_breaker() {
            count("circuit_open");
            return Err(e);
        }
        let r = self.request_once(method, path, accept, repo).await;
        if let Err(e) = &r {
            count(e.kind());
        }
        r
    }

    /// Upstream requests that failed since the process started, by [`ERROR_KINDS`].
    pub fn errors(&self) -> [(&'static str, u64); ERROR_KINDS.len()] {
        std::array::from_fn(|i| {
            (
                ERROR_KINDS[i],
                self.errors[i].load(std::sync::atomic::Ordering::Relaxed),
            )
        })
    }

    async fn request_once(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        repo: &str,
    ) -> Result<Response> {
        let url = self.url(path)?;
        let default_scope = format!("repository:{repo}:pull");
        let mut auth = self.cached_token(&default_scope);
        let mut tried_auth = false;
        loop {
            let resp = match self
                .send_once(&method, url.clone(), accept, auth.as_ref())
                .await
            {
                Ok(r) => r,
                Err(e @ UpstreamError::Unavailable { .. }) => {
                    self.trip(None, false);
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            self.note_budget(resp.headers());
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !tried_auth {
                tried_auth = true;
                auth = Some(self.authorize(resp.headers(), &default_scope).await?);
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = self.trip(retry_after(resp.headers()), true);
                return Err(UpstreamError::RateLimited {
                    retry_after: Some(wait),
                });
            }
            if status.is_server_error() {
                let wait = self.trip(retry_after(resp.headers()), false);
                return Err(UpstreamError::Unavailable {
                    reason: format!("{status}"),
                    retry_after: Some(wait),
                });
            }
            self.healthy();
            return match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(UpstreamError::Refused {
                    status: status.as_u16(),
                }),
                StatusCode::NOT_FOUND => Err(UpstreamError::NotFound),
                _ => Ok(resp),
            };
        }
    }

    /// `HEAD` of a manifest: free on Docker Hub, and enough to revalidate a tag.
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Result<ManifestHead> {
        let resp = self
            .request(
                Method::HEAD,
                &format!("{repo}/manifests/{reference}"),
                Some(&media::manifest_accept()),
                repo,
            )
            .await?;
        let h = resp.headers();
        let text =
            |k: header::HeaderName| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        Ok(ManifestHead {
            digest: h
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            media_type: text(header::CONTENT_TYPE).map(|t| media::essence(&t)),
            size: text(header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
        })
    }

    /// `GET` of a manifest (a counted pull on Docker Hub): its bytes and media type.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<(bytes::Bytes, Option<String>)> {
        self.check_budget()?;
        let resp = self
            .request(
                Method::GET,
                &format!("{repo}/manifests/{reference}"),
                Some(&media::manifest_accept()),
                repo,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Protocol(format!(
                "manifest GET answered {}",
                resp.status()
            )));
        }
        let media_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(media::essence);
        if resp
            .content_length()
            .is_some_and(|l| l > self.manifest_limit)
        {
            return Err(UpstreamError::Protocol(
                "manifest over the size limit".into(),
            ));
        }
        let bytes = read_limited(resp, self.manifest_limit).await?;
        Ok((bytes, media_type))
    }

    /// `GET` of a blob: the answer, whose body the caller streams.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<Response> {
        let resp = self
            .request(Method::GET, &format!("{repo}/blobs/{digest}"), None, repo)
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(UpstreamError::Protocol(format!(
                "blob GET answered {}",
                resp.status()
            )));
        }
        Ok(resp)
    }

    /// `HEAD` of a blob: its size.
    pub async fn head_blob(&self, repo: &str, digest: &str) -> Result<Option<u64>> {
        let resp = self
            .request(Method::HEAD, &format!("{repo}/blobs/{digest}"), None, repo)
            .await?;
        Ok(resp.content_length().or_else(|| {
            resp.headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        }))
    }

    /// A small JSON answer (tag lists, referrers) with its headers.
    pub async fn get_small(
        &self,
        repo: &str,
        path_and_query: &str,
    ) -> Result<(HeaderMap, bytes::Bytes)> {
        let resp = self
            .request(Method::GET, path_and_query, None, repo)
            .await?;
        let headers = resp.headers().clone();
        Ok((headers, read_limited(resp, 4 << 20).await?))
    }
}

async fn read_limited(resp: Response, limit: u64) -> Result<bytes::Bytes> {
    use futures::StreamExt;
    let mut out = bytes::BytesMut::new();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| UpstreamError::Unavailable {
            reason: format!("answer broke off: {e}"),
            retry_after: None,
        })?;
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(UpstreamError::Protocol(format!(
                "answer over {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_headers_parse() {
        assert_eq!(parse_limit("100;w=21600"), Some((100, Some(21600))));
        assert_eq!(parse_limit("76"), Some((76, None)));
        assert_eq!(parse_limit("x"), None);
    }
}
