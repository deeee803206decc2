//! The storage lifecycle: garbage collection, retention and scrub, over the registry's
//! storage and metadata. Each works while the server runs, from the server's schedule or from
//! the CLI beside it, through the database: removals happen in transactions under the write
//! lock every link takes, and a lease in the database lets only one GC (or retention run, or
//! scrub) go at a time across processes. See ARCHITECTURE.md, "Garbage collection".

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::oci::Digest;
use crate::registry::rules::Live;
use crate::registry::Registry;
use crate::storage::Storage;

pub mod gc;
pub mod policies;
pub mod retention;
pub mod scrub;
#[cfg(test)]
mod tests;

pub use gc::{GcOptions, GcReport};
pub use retention::{Retention, RetentionReport};
pub use scrub::{ScrubOptions, ScrubReport};

/// Everything the lifecycle asks of the metadata store.
pub use crate::metadata::LifecycleDb;

/// How the lifecycle runs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub grace: Duration,
    pub batch: u32,
    pub parallel: usize,
    pub max_deletes_per_sec: u64,
    /// The retention rules, which may change while the lifecycle runs.
    pub retention: Live<Vec<Retention>>,
    /// Upload sessions idle this long are abandoned.
    pub upload_max_age: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            grace: Duration::from_secs(3600),
            batch: 128,
            parallel: 32,
            max_deletes_per_sec: 0,
            retention: Live::default(),
            upload_max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// Called after removals, so an in-process read cache forgets at once (other processes
/// follow the database's content generation).
pub type Invalidate = Arc<dyn Fn() + Send + Sync>;

#[derive(Clone)]
pub struct Lifecycle {
    db: Arc<dyn LifecycleDb>,
    storage: Arc<dyn Storage>,
    registry: Arc<Registry>,
    settings: Settings,
    invalidate: Invalidate,
    holder: String,
    /// Where GC runs and retention deletions are reported (the audit log, webhooks).
    events: crate::ops::events::Events,
}

/// A lease's lifetime; its holder renews it at a third of that while it works, so a killed
/// holder's lease is free again within this.
const LEASE_TTL_SECS: i64 = 15;

impl Lifecycle {
    pub fn new(
        db: Arc<dyn LifecycleDb>,
        registry: Arc<Registry>,
        settings: Settings,
        invalidate: Invalidate,
    ) -> Self {
        let holder = format!(
            "{}:{}:{}",
            hostname(),
            std::process::id(),
            crate::oci::UploadId::new_random().as_str()
        );
        Lifecycle {
            storage: registry.storage().clone(),
            db,
            registry,
            settings,
            invalidate,
            holder,
            events: Default::default(),
        }
    }

    /// Reports GC runs and retention deletions to `events`.
    pub fn with_events(mut self, events: crate::ops::events::Events) -> Self {
        self.events = events;
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn db(&self) -> &Arc<dyn LifecycleDb> {
        &self.db
    }

    /// Takes lease `name`, waiting while another process holds it when `wait` (else `None`
    /// when held). The lease is renewed until the returned guard is dropped.
    pub async fn lease(&self, name: &'static str, wait: bool) -> anyhow::Result<Option<Lease>> {
        let mut told = false;
        loop {
            match self
                .db
                .take_lease(name, &self.holder, LEASE_TTL_SECS)
                .await?
            {
                Ok(()) => break,
                Err(other) if wait => {
                    if !told {
                        tracing::info!(lease = name, holder = %other, "waiting for the run in progress to finish");
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(_) => return Ok(None),
            }
        }
        let (db, holder) = (self.db.clone(), self.holder.clone());
        let renew = tokio::spawn(async move {
            let every = Duration::from_secs(LEASE_TTL_SECS as u64 / 3);
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = db.take_lease(name, &holder, LEASE_TTL_SECS).await {
                    tracing::warn!(lease = name, error = %e, "cannot renew the lease");
                }
            }
        });
        Ok(Some(Lease {
            name,
            db: self.db.clone(),
            holder: self.holder.clone(),
            renew,
        }))
    }

    /// Deletes blobs' bytes in batches: for the metadata store to call under its write lock.
    fn deleter(
        &self,
    ) -> impl Fn(Vec<Digest>, usize) -> BoxFuture<'static, Vec<std::io::Result<()>>> + Send + Sync
    {
        crate::storage::batch_deleter(self.storage.clone())
    }
}

/// A held lease; released (and no longer renewed) on [`Lease::release`] or drop.
pub struct Lease {
    name: &'static str,
    db: Arc<dyn LifecycleDb>,
    holder: String,
    renew: tokio::task::JoinHandle<()>,
}

impl Lease {
    pub async fn release(self) {
        self.renew.abort();
        if let Err(e) = self.db.release_lease(self.name, &self.holder).await {
            tracing::warn!(lease = self.name, error = %e, "cannot release the lease; it expires by itself");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Paces work to at most `per_sec` items a second (0: unpaced).
/// Leaves SQLite's write lock free for a moment between two of GC's write transactions, so
/// a push waiting for it gets in first: within the process the writer pool hands the lock on
/// in order; another process (the server, while `berth gc` runs) tries every quarter
/// millisecond (`metadata/busy.rs`). A thread's sleep, not the timer wheel's, which rounds
/// a sub-millisecond pause up to a millisecond or more.
pub(crate) async fn breathe() {
    let _ = tokio::task::spawn_blocking(|| std::thread::sleep(BREATH)).await;
}

/// How long GC leaves the write lock free between its transactions.
const BREATH: Duration = Duration::from_micros(600);

pub(crate) struct Pace {
    per_sec: u64,
    start: std::time::Instant,
    done: u64,
}

impl Pace {
    pub(crate) fn new(per_sec: u64) -> Self {
        Pace {
            per_sec,
            start: std::time::Instant::now(),
            done: 0,
        }
    }

    /// Counts `n` items done and sleeps as long as that put the work ahead of its pace.
    pub(crate) async fn done(&mut self, n: u64) {
        self.done += n;
        if self.per_sec == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.done as f64 / self.per_sec as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}
