//! Per-upstream counters: kept in memory on the request path, added to the metadata store
//! every few seconds (so `berth cache stats`, another process, sees them).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metadata::proxy::UpstreamCounters;

#[derive(Default)]
pub struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stale: AtomicU64,
    pub errors: AtomicU64,
    pub mismatches: AtomicU64,
    pub coalesced: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub bytes_served: AtomicU64,
}

fn take(a: &AtomicU64) -> u64 {
    a.swap(0, Ordering::AcqRel)
}

impl Counters {
    pub fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// What accumulated since the last call, leaving zero.
    pub fn take(&self) -> UpstreamCounters {
        UpstreamCounters {
            hits: take(&self.hits),
            misses: take(&self.misses),
            stale: take(&self.stale),
            errors: take(&self.errors),
            mismatches: take(&self.mismatches),
            coalesced: take(&self.coalesced),
            bytes_fetched: take(&self.bytes_fetched),
            bytes_served: take(&self.bytes_served),
        }
    }

    /// Puts back what could not be written.
    pub fn restore(&self, c: &UpstreamCounters) {
        Self::bump(&self.hits, c.hits);
        Self::bump(&self.misses, c.misses);
        Self::bump(&self.stale, c.stale);
        Self::bump(&self.errors, c.errors);
        Self::bump(&self.mismatches, c.mismatches);
        Self::bump(&self.coalesced, c.coalesced);
        Self::bump(&self.bytes_fetched, c.bytes_fetched);
        Self::bump(&self.bytes_served, c.bytes_served);
    }
}
