//! Applies the rate limits to a `/v2/` request once its client is known: a pull (manifest
//! `GET`) draws from the client's pull bucket, anything else from its other bucket. Within the
//! limit the answer carries `RateLimit-Limit` and `RateLimit-Remaining` as Docker Hub sends
//! them; over it the request is refused with `429 TOOMANYREQUESTS` and `Retry-After`.

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method};

use crate::auth::Principal;
use crate::ops::ratelimit::{capacity, header_value, Class, Client, RateLimits, Verdict};

use super::endpoint::Endpoint;
use super::error::{with_retry_after, ApiError, Code};

const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");

/// The headers to add to the answer, or the refusal.
pub(super) fn check(
    limits: &RateLimits,
    endpoint: &Endpoint,
    parts: &Parts,
    principal: Option<&Principal>,
) -> Result<Vec<(HeaderName, HeaderValue)>, ApiError> {
    let class = match endpoint {
        Endpoint::Manifest(..) if parts.method == Method::GET => Class::Pull,
        _ => Class::Other,
    };
    let client = match principal {
        Some(Principal::User { name, admin }) => Client::User {
            name,
            admin: *admin,
        },
        Some(Principal::Token {
            namespace, name, ..
        }) => Client::Token { namespace, name },
        Some(Principal::Anonymous) | None => Client::Address(
            parts
                .extensions
                .get::<ConnectInfo<super::Peer>>()
                .map(|c| c.0 .0.ip())
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        ),
    };
    let repo = endpoint.repo().map(|r| r.as_str());
    let value = |s: String| HeaderValue::from_str(&s).expect("digits and ;w=");
    match limits.check(&client, repo, class) {
        Verdict::Unlimited => Ok(Vec::new()),
        Verdict::Allowed { limit, remaining } => Ok(vec![
            (LIMIT, value(header_value(capacity(limit), limit))),
            (REMAINING, value(header_value(remaining, limit))),
        ]),
        Verdict::Refused { limit, retry_after } => {
            let what = match class {
                Class::Pull => "pulls",
                Class::Other => "requests",
            };
            let e = ApiError::new(
                Code::TooManyRequests,
                format!(
                    "too many {what}: the limit is {limit} per client; retry in {} s",
                    retry_after.as_secs_f64().ceil().max(1.0)
                ),
            );
            Err(with_retry_after(e, Some(retry_after))
                .header(LIMIT, &header_value(capacity(limit), limit))
                .header(REMAINING, &header_value(0, limit)))
        }
    }
}
