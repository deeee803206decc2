//! Per-upstream counters: kept in memory on the request path since the process started
//! (read by `/metrics`), and added to the metadata store every few seconds as the growth
//! since the last write (so `berth cache stats`, another process, sees them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

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
    /// The totals already written to the store.
    written: Mutex<UpstreamCounters>,
}

fn minus(a: &UpstreamCounters, b: &UpstreamCounters) -> UpstreamCounters {
    UpstreamCounters {
        hits: a.hits.saturating_sub(b.hits),
        misses: a.misses.saturating_sub(b.misses),
        stale: a.stale.saturating_sub(b.stale),
        errors: a.errors.saturating_sub(b.errors),
        mismatches: a.mismatches.saturating_sub(b.mismatches),
        coalesced: a.coalesced.saturating_sub(b.coalesced),
        bytes_fetched: a.bytes_fetched.saturating_sub(b.bytes_fetched),
        bytes_served: a.bytes_served.saturating_sub(b.bytes_served),
    }
}

impl Counters {
    pub fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Everything counted since the process started.
    pub fn totals(&self) -> UpstreamCounters {
        let get = |a: &AtomicU64| a.load(Ordering::Acquire);
        UpstreamCounters {
            hits: get(&self.hits),
            misses: get(&self.misses),
            stale: get(&self.stale),
            errors: get(&self.errors),
            mismatches: get(&self.mismatches),
            coalesced: get(&self.coalesced),
            bytes_fetched: get(&self.bytes_fetched),
            bytes_served: get(&self.bytes_served),
        }
    }

    /// What accumulated since the last call, to be written to the store.
    pub fn take(&self) -> UpstreamCounters {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.totals();
        let delta = minus(&now, &written);
        *written = now;
        delta
    }

    /// Takes back a `take` that could not be written, so the next one includes it.
    pub fn restore(&self, c: &UpstreamCounters) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        *written = minus(&written, c);
    }
}
