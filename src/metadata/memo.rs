//! The pieces of the read-through caches in front of the metadata stores: a bounded map, and
//! a generation counter that every write bumps. A reader notes the generation before it asks
//! the backend and stores the answer only if no write happened meanwhile, so a reader that
//! raced a write can never put a stale answer back after the write cleared it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

/// Entries per map before it is emptied and refilled from the backend.
const MAX_ENTRIES: usize = 200_000;

pub struct Map<K, V> {
    inner: RwLock<HashMap<K, V>>,
}

impl<K: Eq + Hash, V: Clone> Map<K, V> {
    pub fn new() -> Self {
        Map {
            inner: RwLock::new(HashMap::new()),
        }
    }

    pub fn get<Q>(&self, k: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.read().get(k).cloned()
    }

    pub fn insert(&self, k: K, v: V) {
        let mut m = self.inner.write();
        if m.len() >= MAX_ENTRIES {
            m.clear();
        }
        m.insert(k, v);
    }

    pub fn remove(&self, k: &K) {
        self.inner.write().remove(k);
    }

    pub fn retain(&self, f: impl FnMut(&K, &mut V) -> bool) {
        self.inner.write().retain(f);
    }

    pub fn clear(&self) {
        self.inner.write().clear();
    }
}

impl<K: Eq + Hash, V: Clone> Default for Map<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Default)]
pub struct Generation(AtomicU64);

impl Generation {
    /// The generation a read starts at.
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Called by every write (before and after it reaches the backend) and on every outside
    /// change noticed.
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }

    /// Stores `v` under `k` unless a write happened since `seen`.
    pub fn fill<K: Eq + Hash + Clone, V: Clone>(&self, map: &Map<K, V>, seen: u64, k: K, v: V) {
        if self.current() != seen {
            return;
        }
        map.insert(k.clone(), v);
        // A write that bumped between the check and the insert may have cleared the map
        // before this insert: take the entry back out so it is read afresh.
        if self.current() != seen {
            map.remove(&k);
        }
    }
}
