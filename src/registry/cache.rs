//! A bounded in-memory cache of manifest bytes by digest. Content-addressed bytes never
//! change, so the cache needs no invalidation, only eviction.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::oci::Digest;

pub struct ManifestCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Digest, Bytes>,
    order: VecDeque<Digest>,
    bytes: usize,
}

impl ManifestCache {
    pub fn new(max_bytes: usize) -> Self {
        ManifestCache {
            inner: Mutex::new(Inner::default()),
            max_bytes,
        }
    }

    pub fn get(&self, d: &Digest) -> Option<Bytes> {
        self.inner.lock().map.get(d).cloned()
    }

    /// Inserts, evicting the oldest entries beyond the byte budget.
    pub fn insert(&self, d: Digest, b: Bytes) {
        if b.len() > self.max_bytes / 4 {
            return;
        }
        let mut g = self.inner.lock();
        if g.map.contains_key(&d) {
            return;
        }
        g.bytes += b.len();
        g.order.push_back(d.clone());
        g.map.insert(d, b);
        while g.bytes > self.max_bytes {
            let Some(old) = g.order.pop_front() else {
                break;
            };
            if let Some(v) = g.map.remove(&old) {
                g.bytes -= v.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;

    #[test]
    fn evicts_oldest_beyond_budget() {
        let c = ManifestCache::new(40);
        let a = Algorithm::Sha256.digest(b"a");
        let b = Algorithm::Sha256.digest(b"b");
        c.insert(a.clone(), Bytes::from(vec![0; 10]));
        c.insert(b.clone(), Bytes::from(vec![0; 10]));
        assert!(c.get(&a).is_some());
        for i in 0..3u8 {
            c.insert(Algorithm::Sha256.digest(&[i]), Bytes::from(vec![0; 10]));
        }
        assert!(c.get(&a).is_none());
        assert!(c.inner.lock().bytes <= 40);
    }
}
