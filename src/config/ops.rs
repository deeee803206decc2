//! `metrics:`: where Prometheus scrapes berth; `audit:`: what the audit log keeps.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::units::Span;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all.
    pub enabled: bool,
    /// Serve `/metrics` on this address only (plain HTTP), instead of on the main port;
    /// `null`: on the main port.
    pub addr: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            addr: None,
        }
    }
}

/// `audit:`: the audit log of pushes, pulls, deletes, logins and admin changes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Record events at all.
    pub enabled: bool,
    /// How long entries are kept; older ones are removed hourly.
    pub keep: Span,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            keep: Span(std::time::Duration::from_secs(90 * 86400)),
        }
    }
}

/// A request rate: `N/PERIOD` (`100/6h`: a bucket of 100 requests, refilled at 100 per six
/// hours), or `unlimited`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rate {
    #[default]
    Unlimited,
    Per {
        count: std::num::NonZeroU32,
        period: std::time::Duration,
    },
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "unlimited" {
            return Ok(Rate::Unlimited);
        }
        let bad =
            || format!("invalid rate {s:?}: write N/PERIOD (e.g. 100/6h, 20/1s) or unlimited");
        let (n, p) = t.split_once('/').ok_or_else(bad)?;
        let count = n.trim().parse().map_err(|_| bad())?;
        let period = p.trim().parse::<Span>().map_err(|_| bad())?.0;
        if period.is_zero() {
            return Err(bad());
        }
        Ok(Rate::Per { count, period })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Unlimited => f.write_str("unlimited"),
            Rate::Per { count, period } => write!(f, "{count}/{}", Span(*period)),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `rate_limit:`: token buckets per client (its user or token, else its address).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Manifest `GET`s (pulls) per client.
    pub pull: Rate,
    /// Every other `/v2/` request per client.
    pub other: Rate,
    /// Server administrators are never limited.
    pub exempt_admins: bool,
    /// Other limits for some repositories or clients: the first rule that matches applies,
    /// and a rate it leaves out is the global one.
    pub rules: Vec<RateLimitRule>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            pull: Rate::Unlimited,
            other: Rate::Unlimited,
            exempt_admins: true,
            rules: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitRule {
    /// Glob over repository names (`ci/**`); requests naming no repository never match.
    pub repositories: Option<String>,
    /// Glob over user names.
    pub users: Option<String>,
    /// Glob over access tokens as `NAMESPACE/NAME`.
    pub tokens: Option<String>,
    pub pull: Option<Rate>,
    pub other: Option<Rate>,
}
