//! The webhook outbox: deliveries queued per (event, endpoint), claimed by the delivery
//! worker with a lease, and marked delivered, retried or failed. Times are milliseconds since
//! the Unix epoch.

use async_trait::async_trait;

use super::Result;

/// A delivery to queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    pub event_id: String,
    pub endpoint: String,
    pub action: String,
    pub repository: Option<String>,
    pub body: String,
    pub created_at: i64,
}

/// A delivery claimed for an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    pub event_id: String,
    pub body: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// When retrying began: the delivery is given up on a set time after it.
    pub retry_since: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// One delivery as the admin API lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: i64,
    pub event_id: String,
    pub action: String,
    pub repository: Option<String>,
    pub state: DeliveryState,
    pub attempts: u32,
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub last_attempt_at: Option<i64>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

/// An endpoint's deliveries in each state, and its last success and failure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSummary {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    pub last_success_at: Option<i64>,
    pub last_failure_at: Option<i64>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// What an attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        status: u16,
    },
    /// Try again at `next_attempt_at`.
    Retry {
        next_attempt_at: i64,
        status: Option<u16>,
        error: String,
    },
    /// Given up: no more attempts.
    Failed {
        status: Option<u16>,
        error: String,
    },
}

#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Queues deliveries in one transaction, due at once; one already queued for the same
    /// (event, endpoint) is left as it is.
    async fn enqueue(&self, batch: &[NewDelivery]) -> Result<()>;
    /// Claims up to `limit` due pending deliveries of `endpoint`: counts the attempt and
    /// moves their next attempt to `lease_until`, so a worker that dies mid-delivery leaves
    /// them due again then.
    async fn claim(
        &self,
        endpoint: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<Claimed>>;
    /// Makes claimed deliveries due at `now` again (a worker stopping before it tried them).
    async fn release(&self, ids: &[i64], now: i64) -> Result<()>;
    /// Records an attempt's outcome, on the delivery and on its endpoint.
    async fn finish(&self, id: i64, endpoint: &str, now: i64, outcome: &Outcome) -> Result<()>;
    /// When the endpoint's next pending delivery is due, if it has any.
    async fn next_due(&self, endpoint: &str) -> Result<Option<i64>>;
    async fn summary(&self, endpoint: &str) -> Result<EndpointSummary>;
    /// The endpoint's most recent deliveries first, optionally in one state.
    async fn deliveries(
        &self,
        endpoint: &str,
        state: Option<DeliveryState>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>>;
    /// Queues failed deliveries of `endpoint` again (one by id, or all): due at `now`, with
    /// a new retry period. Returns how many.
    async fn redeliver(&self, endpoint: &str, id: Option<i64>, now: i64) -> Result<u64>;
    /// Removes delivered rows delivered before `delivered_before` and failed rows last tried
    /// before `failed_before`. Returns how many.
    async fn prune(&self, delivered_before: i64, failed_before: i64) -> Result<u64>;
}

#[cfg(test)]
mod tests;
