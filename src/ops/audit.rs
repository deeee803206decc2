//! The audit log's writer: a [`Sink`] that queues events in memory and writes them to the
//! metadata store in batches (every 250 ms, or sooner once [`BATCH`] are waiting), so no
//! request waits for a database write. Entries older than the configured age are removed hourly.
//!
//! What a crash can lose: the events of the last batch interval (at most 250 ms) that were
//! not yet written. A store that refuses a batch is retried; the queue holds at most
//! [`QUEUE_MAX`] events, beyond which new ones are dropped and counted, never blocking a
//! request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::events::{now_ms, Event, Queue, Sink};
use crate::metadata::audit::AuditStore;

/// Events waiting beyond this many are dropped (and counted) rather than held.
pub const QUEUE_MAX: usize = 100_000;
/// Events per write transaction, and how many waiting wake the writer before its interval.
/// Larger batches share a commit (its WAL frames, its fsync) among more rows; the bound
/// keeps each transaction's hold on the write lock to about 10 ms, which a push may wait.
const BATCH: usize = 2048;
const INTERVAL: Duration = Duration::from_millis(250);

pub struct AuditLog {
    store: Arc<dyn AuditStore>,
    queue: Queue,
    written: AtomicU64,
}

impl AuditLog {
    pub fn new(store: Arc<dyn AuditStore>) -> Arc<AuditLog> {
        Arc::new(AuditLog {
            store,
            queue: Queue::new(QUEUE_MAX),
            written: AtomicU64::new(0),
        })
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped()
    }

    /// Events written so far by this process.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Writes everything queued now. On a store error the events go back to the queue's
    /// front, to be written by the next flush.
    pub async fn flush(&self) -> crate::metadata::Result<()> {
        self.queue
            .drain(BATCH, |batch| async move {
                match self.store.append_audit(&batch).await {
                    Ok(()) => {
                        self.written
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(e) => Err((batch, e)),
                }
            })
            .await
    }

    /// Writes queued events until `cancel`, then once more.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut failing = false;
        loop {
            let stop = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = self.queue.wake.notified() => false,
                _ = tokio::time::sleep(INTERVAL) => false,
            };
            match self.flush().await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot write the audit log; retrying");
                }
                Err(_) => {}
            }
            if stop {
                return;
            }
            if failing {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Removes entries older than `keep`, hourly, until `cancel`.
    pub async fn prune(self: Arc<Self>, keep: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let before = now_ms() - keep.as_millis() as i64;
            let mut removed = 0;
            loop {
                match self.store.prune_audit(before, 5000).await {
                    Ok(n) => {
                        removed += n;
                        if n < 5000 {
                            break;
                        }
                        // Let requests waiting for the write lock in between.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot prune the audit log");
                        break;
                    }
                }
            }
            if removed > 0 {
                tracing::info!(removed, "pruned old audit log entries");
            }
        }
    }
}

impl Sink for AuditLog {
    fn record(&self, event: &Arc<Event>) {
        match self.queue.push(event) {
            // The writer wakes on its own every interval; a full batch wakes it sooner.
            Some(n) if n >= BATCH => self.queue.wake.notify_one(),
            Some(_) => {}
            None if self.queue.dropped() % 10_000 == 1 => {
                tracing::error!("the audit log queue is full; dropping entries")
            }
            None => {}
        }
    }
}

/// An entry as the admin API and `berth audit --json` show it.
pub fn entry_json(e: &Event) -> serde_json::Value {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(e.time_ms.max(0) as u64);
    serde_json::json!({
        "id": e.id,
        "time": humantime::format_rfc3339_millis(at).to_string(),
        "action": e.action,
        "target": e.target,
        "actor": e.actor,
        "addr": e.addr,
        "repository": e.repo,
        "reference": e.reference,
        "digest": e.digest,
        "success": e.success,
        "status": e.status,
        "detail": e.detail,
        "request_id": e.request.as_ref().map(|r| r.id.as_str()),
    })
}
