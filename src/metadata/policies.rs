//! Lifecycle policies stored in the database (set through the admin API or `berth policy`),
//! and the counter that tells every process to apply a change.

use async_trait::async_trait;

use super::Result;

/// One stored policy: a kind's whole body, as JSON in the config key's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPolicy {
    pub kind: String,
    pub body: String,
    pub updated_at: i64,
    pub updated_by: String,
}

#[async_trait]
pub trait PolicyStore: Send + Sync + 'static {
    /// Moves with every change to a stored policy.
    async fn policy_generation(&self) -> Result<i64>;
    async fn stored_policies(&self) -> Result<Vec<StoredPolicy>>;
    /// Replaces a kind's body, or with `None` removes it (the config's applies again).
    /// Returns whether anything changed.
    async fn set_policy(&self, kind: &str, body: Option<&str>, by: &str) -> Result<bool>;
}
