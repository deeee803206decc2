//! The login throttle's shared log: the failed (and clearing) logins each replica saw, for
//! the others to count too.

use async_trait::async_trait;

use super::Result;

/// One login attempt as the throttle counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginEvent {
    /// The process that saw it.
    pub replica: String,
    /// The client address as counted (IPv4, or an IPv6 /64), as text.
    pub client: String,
    /// The user name tried; `None` for a wrong access-token secret.
    pub user: Option<String>,
    /// A failure, or a success that clears the (user, client) pair's count.
    pub failed: bool,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
}

#[async_trait]
pub trait LoginEventStore: Send + Sync + 'static {
    /// Appends an event; ids become visible to readers in the order they were given.
    async fn add_login_event(&self, e: &LoginEvent) -> Result<()>;
    /// Up to `limit` events with an id above `after`, in id order, with their ids.
    async fn login_events_after(&self, after: i64, limit: u32) -> Result<Vec<(i64, LoginEvent)>>;
    /// Removes the events older than `before_ms`; returns how many went.
    async fn prune_login_events(&self, before_ms: i64) -> Result<u64>;
}
