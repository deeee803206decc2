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
