//! Single flight: concurrent callers asking for the same key share one run of the work.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;

pub struct Flights<K, V: Clone> {
    running: Mutex<HashMap<K, Shared<BoxFuture<'static, V>>>>,
}

impl<K: Eq + Hash + Clone + Send + 'static, V: Clone + Send + Sync + 'static> Flights<K, V> {
    pub fn new() -> Self {
        Flights {
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `work` for `key`, or joins the run already under way; returns its result and
    /// whether this call joined another's run. The work runs in its own task, so it finishes
    /// even when every caller goes away.
    pub async fn run<F>(&self, key: K, work: impl FnOnce() -> F) -> (V, bool)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let (shared, joined) = {
            let mut running = self.running.lock();
            match running.get(&key) {
                Some(s) => (s.clone(), true),
                None => {
                    let task = tokio::spawn(work());
                    let fut = async move { task.await.expect("single-flight work does not panic") }
                        .boxed()
                        .shared();
                    running.insert(key.clone(), fut.clone());
                    (fut, false)
                }
            }
        };
        let v = shared.clone().await;
        // The first to see the result clears the entry (only if it is still this run's).
        let mut running = self.running.lock();
        if running.get(&key).is_some_and(|s| s.ptr_eq(&shared)) {
            running.remove(&key);
        }
        (v, joined)
    }
}

impl<K: Eq + Hash + Clone + Send + 'static, V: Clone + Send + Sync + 'static> Default
    for Flights<K, V>
{
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights = Arc::new(Flights::<&'static str, usize>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let calls = (0..20).map(|_| {
            let (f, r) = (flights.clone(), runs.clone());
            tokio::spawn(async move {
                f.run("k", || async move {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    r.fetch_add(1, Ordering::SeqCst) + 41
                })
                .await
            })
        });
        let results = futures::future::join_all(calls).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(results.iter().all(|r| r.as_ref().unwrap().0 == 41));
        assert_eq!(results.iter().filter(|r| r.as_ref().unwrap().1).count(), 19);
        // Later callers start a new run.
        let (v, joined) = flights.run("k", || async { 7 }).await;
        assert_eq!((v, joined), (7, false));
    }
}
