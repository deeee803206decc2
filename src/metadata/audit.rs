//! The audit log's rows: appended in batches, queried by repository, actor, action and time,
//! and pruned by age.

use async_trait::async_trait;

use super::Result;
use crate::ops::events::{Action, Event};

/// Which rows a query wants; every given field must match.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub repo: Option<String>,
    pub actor: Option<String>,
    pub action: Option<Action>,
    /// Milliseconds since the epoch; rows at or after it.
    pub since_ms: Option<i64>,
    /// Newest first, at most this many.
    pub limit: u32,
}

#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    async fn append_audit(&self, events: &[std::sync::Arc<Event>]) -> Result<()>;
    async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<Event>>;
    /// Removes up to `max` rows older than `before_ms`; returns how many went.
    async fn prune_audit(&self, before_ms: i64, max: u32) -> Result<u64>;
}
