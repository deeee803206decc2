//! Failed-login throttling, per user name and per client address. After `max_failures`
//! failures in a row, attempts are refused without checking the password for a block that
//! starts at one second and doubles with each further failure, up to `max_block`. Counts are
//! forgotten after a quiet period, and a success clears the user's count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Failures older than this, with none since, are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Above this many tracked keys, forgotten ones are swept on the next failure.
const SWEEP_AT: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Addr(IpAddr),
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

pub struct Throttle {
    max_failures: u32,
    max_block: Duration,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Throttle {
    pub fn new(max_failures: u32, max_block: Duration) -> Self {
        Throttle {
            max_failures: max_failures.max(1),
            max_block,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn keys(user: &str, addr: IpAddr) -> [Key; 2] {
        [Key::User(user.to_string()), Key::Addr(addr)]
    }

    /// `Err(wait)` when `user` or `addr` is blocked for another `wait`.
    pub fn check(&self, user: &str, addr: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let entries = self.entries.lock();
        let wait = Self::keys(user, addr)
            .iter()
            .filter_map(|k| entries.get(k)?.blocked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        match wait {
            Some(w) => Err(w),
            None => Ok(()),
        }
    }

    /// Counts a failed login against both the user name and the address.
    pub fn failed(&self, user: &str, addr: IpAddr) {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        if entries.len() >= SWEEP_AT {
            entries.retain(|_, e| {
                now.duration_since(e.last) < FORGET_AFTER
                    || e.blocked_until.is_some_and(|u| u > now)
            });
        }
        for key in Self::keys(user, addr) {
            let e = entries.entry(key).or_insert(Entry {
                failures: 0,
                last: now,
                blocked_until: None,
            });
            if now.duration_since(e.last) >= FORGET_AFTER
                && e.blocked_until.is_none_or(|u| u <= now)
            {
                e.failures = 0;
            }
            e.failures += 1;
            e.last = now;
            if e.failures >= self.max_failures {
                let doublings = (e.failures - self.max_failures).min(20);
                let block = Duration::from_secs(1u64 << doublings).min(self.max_block);
                e.blocked_until = Some(now + block);
            }
        }
    }

    /// A successful login clears the user's count (not the address's: one good account must
    /// not reset the count of an address guessing others).
    pub fn succeeded(&self, user: &str) {
        self.entries.lock().remove(&Key::User(user.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_after_max_failures_per_user_and_per_address() {
        let t = Throttle::new(3, Duration::from_secs(60));
        for _ in 0..2 {
            t.failed("alice", ip("10.0.0.1"));
            assert!(t.check("alice", ip("10.0.0.1")).is_ok());
        }
        t.failed("alice", ip("10.0.0.1"));
        assert!(
            t.check("alice", ip("10.0.0.2")).is_err(),
            "user blocked from anywhere"
        );
        assert!(
            t.check("bob", ip("10.0.0.1")).is_err(),
            "address blocked for anyone"
        );
        assert!(t.check("bob", ip("10.0.0.2")).is_ok());
        t.succeeded("alice");
        assert!(t.check("alice", ip("10.0.0.2")).is_ok());
        assert!(t.check("alice", ip("10.0.0.1")).is_err());
    }

    #[test]
    fn block_doubles_up_to_the_cap() {
        let t = Throttle::new(1, Duration::from_secs(5));
        t.failed("u", ip("::1"));
        let first = t.check("u", ip("::1")).unwrap_err();
        assert!(first <= Duration::from_secs(1));
        for _ in 0..10 {
            t.failed("u", ip("::1"));
        }
        let capped = t.check("u", ip("::1")).unwrap_err();
        assert!(capped > Duration::from_secs(4) && capped <= Duration::from_secs(5));
    }
}
