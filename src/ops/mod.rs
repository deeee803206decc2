//! Operating berth: the events pushes, pulls and admin changes raise (`events.rs`), the audit
//! log that records them (`audit.rs`), the webhooks that send them out (`webhooks/`), the
//! metrics registry (`metrics.rs`), rate limits (`ratelimit.rs`) and what the process reports
//! about itself (`process.rs`). Recorded into by the layers above; knows nothing of HTTP
//! routes or SQL.

pub mod audit;
pub mod events;
pub mod metrics;
pub mod process;
pub mod ratelimit;
pub mod webhooks;
