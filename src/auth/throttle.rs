//! Failed-login throttling that stops guessing without locking anyone else out.
//!
//! Two limits, each with its own counter:
//! - **Per (user name, client address) pair.** After `pair_max_failures` failed passwords for
//!   one user from one address, that pair is refused for `first_block`, doubling with each
//!   further failure up to `max_block`. The same user from another address, and other users
//!   from the same address, are not affected: one CI job with a stale password behind a NAT
//!   does not take down the others, and nobody can lock a known user out from afar.
//! - **Per client address**, across all user names. More than `address_max_failures` failures
//!   within `address_window` block password logins from the address until the oldest of them
//!   leaves the window: this stops password spraying. A wrong access-token secret counts here
//!   only, never toward a user (token secrets are 256 random bits; guessing them is hopeless).
//!   A valid access token is never refused by this block.
//!
//! IPv6 clients are counted per /64, the smallest block a host usually controls. Blocks and
//! their ends are logged with user and address, never with a password.
//!
//! Replicas over one database share their counts: each appends what it saw to the database
//! and applies what the others appended ([`Throttle::apply`], through `auth::shared_throttle`),
//! at the time it happened there. A block is logged by the replica that saw its last failure.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Failures older than this, with none since and no block running, are forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// The limits, from configuration.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub pair_max_failures: u32,
    pub first_block: Duration,
    pub max_block: Duration,
    pub address_max_failures: u32,
    pub address_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pair_max_failures: 10,
            first_block: Duration::from_secs(30),
            max_block: Duration::from_secs(900),
            address_max_failures: 100,
            address_window: Duration::from_secs(900),
        }
    }
}

#[derive(Debug)]
struct Pair {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
    /// True while a block this replica logged is running and its end has not been logged.
    announced: bool,
}

#[derive(Debug, Default)]
struct Address {
    /// Times of the failures inside the window, oldest first, at most the limit.
    failures: VecDeque<Instant>,
    /// True while a block is running and its end has not been logged yet.
    blocked: bool,
    pairs: HashMap<String, Pair>,
}

/// The key an address is counted under: IPv4 (and IPv4-mapped IPv6) as is, IPv6 by /64.
pub fn client_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

pub struct Throttle {
    limits: Limits,
    addresses: Mutex<HashMap<IpAddr, Address>>,
}

impl Address {
    /// Drops failures that left the window; the wait when the address is still blocked.
    fn wait(&mut self, limits: &Limits, now: Instant) -> Option<Duration> {
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= limits.address_window)
        {
            self.failures.pop_front();
        }
        if self.failures.len() >= limits.address_max_failures as usize {
            let until = self.failures[0] + limits.address_window;
            Some(until.saturating_duration_since(now))
        } else {
            None
        }
    }

    fn idle(&self, now: Instant) -> bool {
        self.failures.is_empty() && !self.blocked && self.pairs.values().all(|p| p.idle(now))
    }
}

impl Pair {
    fn wait(&self, now: Instant) -> Option<Duration> {
        self.blocked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    fn idle(&self, now: Instant) -> bool {
        self.wait(now).is_none() && now.saturating_duration_since(self.last) >= FORGET_AFTER
    }

    /// Ends a block that ran out, logging the end if this replica logged the start.
    fn unblock(&mut self, user: &str, key: IpAddr) {
        if self.blocked_until.take().is_some() && std::mem::take(&mut self.announced) {
            tracing::info!(user, client = %key, "login block for user from address ended");
        }
    }
}

impl Throttle {
    pub fn new(limits: Limits) -> Self {
        Throttle {
            limits: Limits {
                pair_max_failures: limits.pair_max_failures.max(1),
                address_max_failures: limits.address_max_failures.max(1),
                ..limits
            },
            addresses: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` when a password login for `user` from `addr` must be refused for `wait`:
    /// the pair or the whole address is blocked.
    pub fn check(&self, user: &str, addr: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let key = client_key(addr);
        let mut map = self.addresses.lock();
        let Some(a) = map.get_mut(&key) else {
            return Ok(());
        };
        let by_address = self.address_wait(key, a, now);
        let by_pair = match a.pairs.get_mut(user) {
            Some(p) => {
                let w = p.wait(now);
                if w.is_none() {
                    p.unblock(user, key);
                }
                w
            }
            None => None,
        };
        match by_address.max(by_pair) {
            Some(w) => Err(w),
            None => Ok(()),
        }
    }

    /// `Err(wait)` when the address is blocked (for attempts that name no user).
    pub fn check_address(&self, addr: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let key = client_key(addr);
        let mut map = self.addresses.lock();
        match map
            .get_mut(&key)
            .and_then(|a| self.address_wait(key, a, now))
        {
            Some(w) => Err(w),
            None => Ok(()),
        }
    }

    fn address_wait(&self, key: IpAddr, a: &mut Address, now: Instant) -> Option<Duration> {
        let w = a.wait(&self.limits, now);
        if w.is_none() && a.blocked {
            a.blocked = false;
            tracing::info!(client = %key, "login block for address ended");
        }
        w
    }

    /// Counts a failed password for `user` from `addr`, toward the pair and the address.
    pub fn failed(&self, user: &str, addr: IpAddr) {
        self.count(Some(user), addr, Instant::now(), true);
    }

    /// Counts a failure toward the address only (a wrong access-token secret).
    pub fn failed_address(&self, addr: IpAddr) {
        self.count(None, addr, Instant::now(), true);
    }

    /// A successful login clears its pair's count (not the address's: one good account must
    /// not reset the count of an address guessing others). Returns whether there was a count
    /// to clear.
    pub fn succeeded(&self, user: &str, addr: IpAddr) -> bool {
        self.clear(user, addr, Instant::now())
    }

    /// Applies a failure (or a success, with `failed` false) that another replica saw at
    /// `at`, without logging blocks again.
    pub fn apply(&self, user: Option<&str>, addr: IpAddr, failed: bool, at: Instant) {
        match (failed, user) {
            (true, _) => self.count(user, addr, at, false),
            (false, Some(user)) => {
                // Times from other replicas are whole milliseconds, rounded down.
                self.clear(user, addr, at + Duration::from_millis(1));
            }
            (false, None) => {}
        }
    }

    /// Counts a failure at `at` toward the address and, with a user, toward the pair.
    /// Failures from other replicas may arrive late and out of order.
    fn count(&self, user: Option<&str>, addr: IpAddr, at: Instant, here: bool) {
        let now = Instant::now();
        let key = client_key(addr);
        let mut map = self.addresses.lock();
        let a = map.entry(key).or_default();
        self.count_address(key, a, at, now, here);
        let Some(user) = user else { return };
        let limits = &self.limits;
        let p = a.pairs.entry(user.to_string()).or_insert(Pair {
            failures: 0,
            last: at,
            blocked_until: None,
            announced: false,
        });
        if at.saturating_duration_since(p.last) >= FORGET_AFTER && p.wait(at).is_none() {
            p.failures = 0;
        }
        p.failures += 1;
        p.last = p.last.max(at);
        if p.failures >= limits.pair_max_failures {
            let doublings = (p.failures - limits.pair_max_failures).min(20);
            let block = limits
                .first_block
                .saturating_mul(1 << doublings)
                .min(limits.max_block);
            p.blocked_until = p.blocked_until.max(Some(p.last + block));
            if here {
                p.announced = true;
                tracing::warn!(
                    user,
                    client = %key,
                    failures = p.failures,
                    block_secs = block.as_secs_f64(),
                    "login blocked for user from address after repeated failures"
                );
            }
        }
    }

    fn count_address(&self, key: IpAddr, a: &mut Address, at: Instant, now: Instant, here: bool) {
        let was_blocked = a.wait(&self.limits, now).is_some();
        let pos = a.failures.partition_point(|t| *t <= at);
        a.failures.insert(pos, at);
        while a.failures.len() > self.limits.address_max_failures as usize {
            a.failures.pop_front();
        }
        if here && !was_blocked {
            if let Some(w) = a.wait(&self.limits, now) {
                a.blocked = true;
                tracing::warn!(
                    client = %key,
                    failures = a.failures.len(),
                    window_secs = self.limits.address_window.as_secs(),
                    block_secs = w.as_secs_f64(),
                    "logins blocked for address after failures across user names"
                );
            }
        }
    }

    /// Forgets the pair's count, unless it counted a failure after `at`.
    fn clear(&self, user: &str, addr: IpAddr, at: Instant) -> bool {
        let key = client_key(addr);
        let mut map = self.addresses.lock();
        let Some(a) = map.get_mut(&key) else {
            return false;
        };
        match a.pairs.get(user) {
            Some(p) if p.last <= at => a.pairs.remove(user).is_some(),
            _ => false,
        }
    }

    /// Logs blocks that ended and forgets quiet entries; run periodically.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut map = self.addresses.lock();
        for (key, a) in map.iter_mut() {
            self.address_wait(*key, a, now);
            a.pairs.retain(|user, p| {
                if p.blocked_until.is_some_and(|u| u <= now) {
                    p.unblock(user, *key);
                }
                !p.idle(now)
            });
        }
        map.retain(|_, a| !a.idle(now));
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.addresses.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(pair: u32, address: u32) -> Limits {
        Limits {
            pair_max_failures: pair,
            first_block: Duration::from_secs(1),
            max_block: Duration::from_secs(60),
            address_max_failures: address,
            address_window: Duration::from_secs(900),
        }
    }

    #[test]
    fn a_blocked_pair_leaves_other_users_and_addresses_alone() {
        let t = Throttle::new(limits(10, 100));
        for i in 0..10 {
            assert!(
                t.check("alice", ip("10.0.0.1")).is_ok(),
                "attempt {}",
                i + 1
            );
            t.failed("alice", ip("10.0.0.1"));
        }
        assert!(t.check("alice", ip("10.0.0.1")).is_err(), "11th attempt");
        assert!(
            t.check("alice", ip("10.0.0.2")).is_ok(),
            "same user, other address"
        );
        assert!(
            t.check("bob", ip("10.0.0.1")).is_ok(),
            "other user, same address"
        );
        assert!(t.check_address(ip("10.0.0.1")).is_ok());
        t.succeeded("alice", ip("10.0.0.2"));
        assert!(
            t.check("alice", ip("10.0.0.1")).is_err(),
            "a success elsewhere clears nothing here"
        );
    }

    #[test]
    fn spraying_many_names_blocks_the_address() {
        let t = Throttle::new(limits(10, 100));
        for i in 0..100 {
            assert!(t.check(&format!("user{i}"), ip("10.0.0.1")).is_ok());
            t.failed(&format!("user{i}"), ip("10.0.0.1"));
        }
        let wait = t.check("fresh", ip("10.0.0.1")).unwrap_err();
        assert!(wait > Duration::from_secs(890) && wait <= Duration::from_secs(900));
        assert!(t.check_address(ip("10.0.0.1")).is_err());
        assert!(t.check("fresh", ip("10.0.0.2")).is_ok());
    }

    #[test]
    fn token_failures_count_toward_the_address_only() {
        let t = Throttle::new(limits(2, 3));
        t.failed_address(ip("10.0.0.1"));
        t.failed_address(ip("10.0.0.1"));
        assert!(t.check("ci", ip("10.0.0.1")).is_ok());
        t.failed_address(ip("10.0.0.1"));
        assert!(t.check("ci", ip("10.0.0.1")).is_err());
    }

    #[test]
    fn the_pair_block_doubles_up_to_the_cap() {
        let t = Throttle::new(Limits {
            max_block: Duration::from_secs(5),
            ..limits(1, 1000)
        });
        t.failed("u", ip("::1"));
        let first = t.check("u", ip("::1")).unwrap_err();
        assert!(first <= Duration::from_secs(1));
        for _ in 0..10 {
            t.failed("u", ip("::1"));
        }
        let capped = t.check("u", ip("::1")).unwrap_err();
        assert!(capped > Duration::from_secs(4) && capped <= Duration::from_secs(5));
    }

    #[test]
    fn ipv6_counts_per_slash_64_and_mapped_v4_as_v4() {
        let t = Throttle::new(limits(2, 1000));
        t.failed("u", ip("2001:db8:1:2::1"));
        t.failed("u", ip("2001:db8:1:2::ffff"));
        assert!(t.check("u", ip("2001:db8:1:2::42")).is_err());
        assert!(t.check("u", ip("2001:db8:1:3::1")).is_ok());
        t.failed("v", ip("::ffff:10.0.0.9"));
        t.failed("v", ip("10.0.0.9"));
        assert!(t.check("v", ip("10.0.0.9")).is_err());
    }

    #[test]
    fn events_from_other_replicas_count_at_their_time_and_out_of_order() {
        let t = Throttle::new(limits(3, 1000));
        let now = Instant::now();
        let Some(earlier) = now.checked_sub(Duration::from_secs(2)) else {
            return;
        };
        t.failed("u", ip("10.0.0.1"));
        t.apply(
            Some("u"),
            ip("10.0.0.1"),
            true,
            earlier + Duration::from_secs(1),
        );
        // A success elsewhere before the last failure here clears nothing.
        t.apply(Some("u"), ip("10.0.0.1"), false, earlier);
        t.apply(Some("u"), ip("10.0.0.1"), true, earlier);
        let wait = t.check("u", ip("10.0.0.1")).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1),
            "counted from the last: {wait:?}"
        );
        // A failure that long left the window does not block the address.
        let t = Throttle::new(limits(1000, 2));
        if let Some(long_ago) = now.checked_sub(Duration::from_secs(1000)) {
            t.apply(None, ip("10.0.0.2"), true, long_ago);
        }
        t.apply(None, ip("10.0.0.2"), true, now);
        assert!(t.check_address(ip("10.0.0.2")).is_ok());
        t.apply(None, ip("10.0.0.2"), true, earlier);
        let wait = t.check_address(ip("10.0.0.2")).unwrap_err();
        assert!(
            wait > Duration::from_secs(890),
            "from the oldest in the window: {wait:?}"
        );
    }

    #[test]
    fn success_clears_the_pair_and_sweep_forgets_quiet_entries() {
        let t = Throttle::new(limits(3, 1000));
        t.failed("u", ip("10.0.0.1"));
        t.failed("u", ip("10.0.0.1"));
        t.succeeded("u", ip("10.0.0.1"));
        t.failed("u", ip("10.0.0.1"));
        t.failed("u", ip("10.0.0.1"));
        assert!(t.check("u", ip("10.0.0.1")).is_ok(), "count restarted");
        t.sweep();
        assert_eq!(t.tracked(), 1, "recent failures are kept");
    }
}
