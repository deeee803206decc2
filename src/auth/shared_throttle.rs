//! The login throttle across replicas that share a database.
//!
//! Each replica keeps the throttle's state machine in memory, as a single process does, so a
//! login's check costs no database round trip. What it counts is shared through the database's
//! `login_events` log: a failed login (and a success that clears a pair's count) is appended
//! there by the replica that saw it, and every replica reads the rows after the last one it
//! applied, every [`PULL_EVERY`], and applies the others' at the time they happened. A guesser
//! spreading attempts over replicas is therefore counted as one: at most the attempts made in
//! one pull interval get past the limit on a second replica. A replica that starts applies the
//! log's rows still young enough to count, so a restart does not forget a running block.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::throttle::{client_key, Limits, Throttle, FORGET_AFTER};
use crate::metadata::logins::{LoginEvent, LoginEventStore};
use crate::metadata::Result;

/// How often a replica applies the others' events.
pub const PULL_EVERY: Duration = Duration::from_millis(200);

/// Rows read per query while catching up.
const BATCH: u32 = 1000;

/// The shared log and this replica's place in it.
pub struct SharedThrottle {
    store: Arc<dyn LoginEventStore>,
    /// Random per process, so a replica skips the rows it appended itself.
    replica: String,
    /// The id of the last row applied.
    seen: Mutex<i64>,
    /// Rows older than this can no longer change any count or block.
    keep: Duration,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl SharedThrottle {
    pub fn new(store: Arc<dyn LoginEventStore>, limits: &Limits) -> Self {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).expect("the OS provides randomness");
        SharedThrottle {
            store,
            replica: hex::encode(id),
            seen: Mutex::new(0),
            keep: limits.address_window.max(limits.max_block) + FORGET_AFTER,
        }
    }

    /// Appends what this replica saw for the others. A failure to write is logged and does
    /// not fail the login: this replica has counted it already.
    pub async fn record(&self, user: Option<&str>, addr: IpAddr, failed: bool) {
        let e = LoginEvent {
            replica: self.replica.clone(),
            client: client_key(addr).to_string(),
            user: user.map(str::to_string),
            failed,
            at_ms: now_ms(),
        };
        if let Err(err) = self.store.add_login_event(&e).await {
            tracing::warn!(error = %err, "cannot share a login attempt with the other replicas");
        }
    }

    /// Applies the other replicas' rows appended since the last pull; returns how many.
    pub async fn pull(&self, throttle: &Throttle) -> Result<usize> {
        let mut applied = 0;
        loop {
            let after = *self.seen.lock();
            let rows = self.store.login_events_after(after, BATCH).await?;
            let Some((last, _)) = rows.last() else {
                return Ok(applied);
            };
            let last = *last;
            let (now, now_ms) = (Instant::now(), now_ms());
            for (_, e) in &rows {
                if e.replica == self.replica {
                    continue;
                }
                let Ok(addr) = e.client.parse::<IpAddr>() else {
                    tracing::warn!(client = %e.client, "skipping a login event with a bad address");
                    continue;
                };
                let age = Duration::from_millis(now_ms.saturating_sub(e.at_ms).max(0) as u64);
                let at = now.checked_sub(age).unwrap_or(now);
                throttle.apply(e.user.as_deref(), addr, e.failed, at);
                applied += 1;
            }
            *self.seen.lock() = last;
            if rows.len() < BATCH as usize {
                return Ok(applied);
            }
        }
    }

    /// Removes rows too old to count toward any limit.
    pub async fn prune(&self) -> Result<u64> {
        let before = now_ms() - self.keep.as_millis() as i64;
        self.store.prune_login_events(before).await
    }
}

/// Keeps a replica's throttle in step with the others until `cancel`: pulls every
/// [`PULL_EVERY`], and prunes the log once a minute.
pub async fn keep_in_step(
    authn: Arc<super::Authenticator>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let Some(shared) = authn.shared_throttle() else {
        return;
    };
    let mut tick = tokio::time::interval(PULL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = Instant::now();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match authn.pull_throttle().await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("reading the other replicas' failed logins again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot read the other replicas' failed logins");
            }
            Err(_) => {}
        }
        if last_prune.elapsed() >= Duration::from_secs(60) {
            last_prune = Instant::now();
            if let Err(e) = shared.prune().await {
                tracing::warn!(error = %e, "cannot prune the shared login log");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::sqlite::SqliteMetadata;

    fn limits() -> Limits {
        Limits {
            pair_max_failures: 3,
            first_block: Duration::from_secs(30),
            max_block: Duration::from_secs(60),
            address_max_failures: 5,
            address_window: Duration::from_secs(900),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Two replicas' throttles over one database.
    struct Replica {
        throttle: Throttle,
        shared: SharedThrottle,
    }

    impl Replica {
        fn new(db: &Arc<SqliteMetadata>) -> Self {
            Replica {
                throttle: Throttle::new(limits()),
                shared: SharedThrottle::new(db.clone(), &limits()),
            }
        }

        async fn fail(&self, user: Option<&str>, addr: &str) {
            match user {
                Some(u) => self.throttle.failed(u, ip(addr)),
                None => self.throttle.failed_address(ip(addr)),
            }
            self.shared.record(user, ip(addr), true).await;
        }

        async fn pull(&self) -> usize {
            self.shared.pull(&self.throttle).await.unwrap()
        }
    }

    async fn two_replicas() -> (tempfile::TempDir, Arc<SqliteMetadata>, Replica, Replica) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.db");
        let db = Arc::new(SqliteMetadata::open(&path).await.unwrap());
        let (a, b) = (Replica::new(&db), Replica::new(&db));
        (dir, db, a, b)
    }

    #[tokio::test]
    async fn failures_on_two_replicas_count_as_one() {
        let (_dir, db, a, b) = two_replicas().await;
        a.fail(Some("dev"), "10.0.0.1").await;
        a.fail(Some("dev"), "10.0.0.1").await;
        b.fail(Some("dev"), "10.0.0.1").await;
        assert!(b.throttle.check("dev", ip("10.0.0.1")).is_ok(), "one seen");
        assert_eq!(b.pull().await, 2, "a's two rows, not its own");
        assert!(b.throttle.check("dev", ip("10.0.0.1")).is_err(), "three");
        assert_eq!(a.pull().await, 1);
        let wait = a.throttle.check("dev", ip("10.0.0.1")).unwrap_err();
        assert!(wait > Duration::from_secs(28), "{wait:?}");
        assert_eq!(a.pull().await, 0, "nothing new");
        assert!(a.throttle.check("dev", ip("10.0.0.2")).is_ok());

        // Token-secret failures count toward the address on every replica.
        a.fail(None, "10.0.0.9").await;
        a.fail(None, "10.0.0.9").await;
        b.fail(None, "10.0.0.9").await;
        b.fail(None, "10.0.0.9").await;
        b.fail(None, "10.0.0.9").await;
        a.pull().await;
        assert!(a.throttle.check_address(ip("10.0.0.9")).is_err());

        // A replica started later catches up from the log.
        let c = Replica::new(&db);
        assert_eq!(c.pull().await, 8);
        assert!(c.throttle.check("dev", ip("10.0.0.1")).is_err());
        assert!(c.throttle.check_address(ip("10.0.0.9")).is_err());
    }

    #[tokio::test]
    async fn a_success_clears_the_pair_everywhere_and_old_rows_are_pruned() {
        let (_dir, db, a, b) = two_replicas().await;
        a.fail(Some("dev"), "10.0.0.1").await;
        a.fail(Some("dev"), "10.0.0.1").await;
        b.pull().await;
        assert!(b.throttle.succeeded("dev", ip("10.0.0.1")));
        b.shared.record(Some("dev"), ip("10.0.0.1"), false).await;
        a.pull().await;
        a.fail(Some("dev"), "10.0.0.1").await;
        assert!(
            a.throttle.check("dev", ip("10.0.0.1")).is_ok(),
            "the count restarted after b's success"
        );

        // Rows are kept while a limit can count them, then pruned.
        assert_eq!(a.shared.prune().await.unwrap(), 0);
        let old = LoginEvent {
            replica: "gone".into(),
            client: "10.0.0.5".into(),
            user: Some("x".into()),
            failed: true,
            at_ms: now_ms() - 3 * 3600 * 1000,
        };
        db.add_login_event(&old).await.unwrap();
        assert_eq!(a.shared.prune().await.unwrap(), 1);
    }
}
