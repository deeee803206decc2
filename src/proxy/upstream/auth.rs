//! Authenticating to an upstream: the challenge it answers a 401 with, Basic or the Bearer
//! token flow, tokens cached per scope, and the check that a token realm is one the
//! upstream's credentials may go to (its host, its registrable domain, or `token_realms`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::{self, HeaderMap, HeaderValue};
use url::Url;

use reqwest::StatusCode;

use super::{retry_after, Result, Token, Upstream, UpstreamError};

/// The parameters of a `WWW-Authenticate` challenge: scheme and `key="value"` pairs.
fn parse_challenge(v: &str) -> Option<(String, HashMap<String, String>)> {
    let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v.trim(), ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key.trim().to_ascii_lowercase(), value.to_string());
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some((scheme.to_ascii_lowercase(), params))
}

/// The last two labels of a host name (an IP address or single label stays whole): the
/// registrable domain, near enough for `registry-1.docker.io` and `auth.docker.io`.
fn registrable(host: &str) -> String {
    if host.parse::<std::net::IpAddr>().is_ok() || !host.contains('.') {
        return host.to_string();
    }
    let labels: Vec<&str> = host.rsplitn(3, '.').collect();
    format!("{}.{}", labels[1], labels[0])
}

impl Upstream {
    fn realm_allowed(&self, realm: &Url) -> bool {
        let (Some(host), Some(ours)) = (realm.host_str(), self.root.host_str()) else {
            return false;
        };
        // Never send credentials in the clear when the registry itself speaks TLS.
        if realm.scheme() == "http" && self.root.scheme() == "https" {
            return false;
        }
        host == ours
            || registrable(host) == registrable(ours)
            || self
                .config
                .token_realms
                .iter()
                .any(|r| r == host || realm.as_str().starts_with(r.as_str()))
    }

    pub(super) fn cached_token(&self, scope: &str) -> Option<HeaderValue> {
        let mut tokens = self.tokens.lock();
        match tokens.get(scope) {
            Some(t) if t.until > Instant::now() => {
                HeaderValue::from_str(&format!("Bearer {}", t.value)).ok()
            }
            Some(_) => {
                tokens.remove(scope);
                None
            }
            None => None,
        }
    }

    fn basic(&self) -> Option<HeaderValue> {
        let (u, p) = self.credentials.as_ref()?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        HeaderValue::from_str(&format!("Basic {b64}")).ok()
    }

    /// Answers a 401's challenge with the credentials it asks for.
    pub(super) async fn authorize(
        &self,
        h: &HeaderMap,
        default_scope: &str,
    ) -> Result<HeaderValue> {
        let challenge = h
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(parse_challenge)
            .next()
            .ok_or(UpstreamError::Refused { status: 401 })?;
        match challenge.0.as_str() {
            "basic" => self.basic().ok_or(UpstreamError::Refused { status: 401 }),
            "bearer" => {
                let p = &challenge.1;
                let scope = p.get("scope").map(String::as_str).unwrap_or(default_scope);
                let token = self
                    .fetch_token(p.get("realm"), p.get("service"), scope)
                    .await?;
                let v = HeaderValue::from_str(&format!("Bearer {}", token.value))
                    .map_err(|_| UpstreamError::Protocol("token is not a header value".into()))?;
                self.tokens.lock().insert(default_scope.to_string(), token);
                Ok(v)
            }
            other => Err(UpstreamError::Protocol(format!(
                "unsupported auth scheme {other:?}"
            ))),
        }
    }

    async fn fetch_token(
        &self,
        realm: Option<&String>,
        service: Option<&String>,
        scope: &str,
    ) -> Result<Token> {
        let realm = realm
            .ok_or_else(|| UpstreamError::Protocol("Bearer challenge without realm".into()))?;
        let mut url = Url::parse(realm)
            .map_err(|e| UpstreamError::Protocol(format!("bad token realm {realm:?}: {e}")))?;
        if !self.realm_allowed(&url) {
            tracing::warn!(upstream = %self.name, realm = %url, "refusing a token realm outside the upstream's domain (allow it with token_realms)");
            return Err(UpstreamError::Refused { status: 401 });
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let mut rb = self.client.get(url);
        if let Some(b) = self.basic() {
            rb = rb.header(header::AUTHORIZATION, b);
        }
        let resp = match tokio::time::timeout(self.config.timeout.0, rb.send()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.trip(None, false);
                return Err(UpstreamError::Unavailable {
                    reason: format!("token service: {e}"),
                    retry_after: None,
                });
            }
            Err(_) => {
                self.trip(None, false);
                return Err(UpstreamError::Unavailable {
                    reason: "token service did not answer".into(),
                    retry_after: None,
                });
            }
        };
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::TOO_MANY_REQUESTS => {
                let wait = self.trip(retry_after(resp.headers()), true);
                return Err(UpstreamError::RateLimited {
                    retry_after: Some(wait),
                });
            }
            s if s.is_server_error() => {
                self.trip(None, false);
                return Err(UpstreamError::Unavailable {
                    reason: format!("token service: {s}"),
                    retry_after: None,
                });
            }
            s => return Err(UpstreamError::Refused { status: s.as_u16() }),
        }
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| UpstreamError::Protocol(format!("token answer: {e}")))?;
        let value = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| UpstreamError::Protocol("token answer without a token".into()))?;
        let lifetime = body
            .get("expires_in")
            .and_then(|v| v.as_u64())
            .unwrap_or(60)
            .max(30);
        Ok(Token {
            value: value.to_string(),
            // Renewed a little early, so a request never carries one about to expire.
            until: Instant::now() + Duration::from_secs(lifetime - lifetime / 10),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamConfig;

    #[test]
    fn challenges_parse() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        )
        .unwrap();
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["scope"], "repository:library/alpine:pull");
        let (s, p) = parse_challenge(r#"Basic realm="berth", charset="UTF-8""#).unwrap();
        assert_eq!((s.as_str(), p["charset"].as_str()), ("basic", "UTF-8"));
    }

    #[test]
    fn realms_stay_in_the_upstream_domain() {
        let mut cfg = UpstreamConfig::new("hub", "https://registry-1.docker.io");
        let up = Upstream::new(&cfg, 4 << 20).unwrap();
        let ok = |u: &Upstream, r: &str| u.realm_allowed(&Url::parse(r).unwrap());
        assert!(ok(&up, "https://auth.docker.io/token"));
        assert!(ok(&up, "https://registry-1.docker.io/token"));
        assert!(!ok(&up, "https://evil.example/token"));
        assert!(
            !ok(&up, "http://auth.docker.io/token"),
            "no downgrade to http"
        );
        cfg.token_realms = vec!["login.example.com".into()];
        let up = Upstream::new(&cfg, 4 << 20).unwrap();
        assert!(ok(&up, "https://login.example.com/oauth2/token"));
        assert_eq!(up.root().as_str(), "https://registry-1.docker.io/v2/");
        let chained = Upstream::new(
            &UpstreamConfig::new("eu", "http://127.0.0.1:5000/v2/hub"),
            4 << 20,
        )
        .unwrap();
        assert_eq!(chained.root().as_str(), "http://127.0.0.1:5000/v2/hub/");
        assert_eq!(
            chained.url("library/alpine/manifests/3").unwrap().as_str(),
            "http://127.0.0.1:5000/v2/hub/library/alpine/manifests/3"
        );
    }
}
