//! Rate limits: token buckets (GCRA, the `governor` crate) per client, one set of buckets for
//! pulls (manifest `GET`s) and one for every other request, with other rates for repositories
//! or clients that a rule names. Buckets live in this process's memory: with several
//! replicas each keeps its own (see ARCHITECTURE.md).

use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::config::{ConfigError, Rate, RateLimitConfig};
use crate::registry::immutable::Glob;

/// Which bucket a request draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A manifest `GET`.
    Pull,
    Other,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Pull => "pull",
            Class::Other => "other",
        }
    }
}

/// Who is asking, as buckets tell clients apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Client<'a> {
    User { name: &'a str, admin: bool },
    Token { namespace: &'a str, name: &'a str },
    Address(std::net::IpAddr),
}

impl Client<'_> {
    fn key(&self) -> String {
        match self {
            Client::User { name, .. } => format!("user:{name}"),
            Client::Token { namespace, name } => format!("token:{namespace}/{name}"),
            Client::Address(a) => format!("addr:{a}"),
        }
    }
}

/// The answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No limit applies.
    Unlimited,
    /// Within `limit`, with `remaining` requests left in the bucket.
    Allowed { limit: Rate, remaining: u32 },
    /// Over `limit`: the next request fits after `retry_after`.
    Refused { limit: Rate, retry_after: Duration },
}

type Buckets =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// One rate's buckets, keyed by client.
struct Limit {
    rate: Rate,
    buckets: Buckets,
}

impl Limit {
    fn new(rate: Rate) -> Option<Arc<Limit>> {
        let Rate::Per { count, period } = rate else {
            return None;
        };
        let every = (period / count.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(every)?.allow_burst(count);
        Some(Arc::new(Limit {
            rate,
            buckets: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
        }))
    }
}

/// A rule's rates: `None` takes the global one, `Some(None)` is unlimited.
struct Rule {
    repositories: Option<Glob>,
    users: Option<Glob>,
    tokens: Option<Glob>,
    pull: Option<Option<Arc<Limit>>>,
    other: Option<Option<Arc<Limit>>>,
}

impl Rule {
    fn matches(&self, client: &Client, repo: Option<&str>) -> bool {
        if let Some(g) = &self.repositories {
            if !repo.is_some_and(|r| g.matches(r)) {
                return false;
            }
        }
        match client {
            Client::User { name, .. } => {
                self.tokens.is_none() && self.users.as_ref().is_none_or(|g| g.matches(name))
            }
            Client::Token { namespace, name } => {
                self.users.is_none()
                    && self
                        .tokens
                        .as_ref()
                        .is_none_or(|g| g.matches(&format!("{namespace}/{name}")))
            }
            Client::Address(_) => self.users.is_none() && self.tokens.is_none(),
        }
    }
}

pub struct RateLimits {
    pull: Option<Arc<Limit>>,
    other: Option<Arc<Limit>>,
    rules: Vec<Rule>,
    exempt_admins: bool,
    clock: DefaultClock,
}

impl RateLimits {
    pub fn from_config(cfg: &RateLimitConfig) -> Result<RateLimits, ConfigError> {
        let glob = |i: usize, key: &str, text: &Option<String>| {
            text.as_deref()
                .map(Glob::parse)
                .transpose()
                .map_err(|e| ConfigError::Invalid(format!("rate_limit.rules[{i}].{key}: {e}")))
        };
        let mut rules = Vec::new();
        for (i, r) in cfg.rules.iter().enumerate() {
            rules.push(Rule {
                repositories: glob(i, "repositories", &r.repositories)?,
                users: glob(i, "users", &r.users)?,
                tokens: glob(i, "tokens", &r.tokens)?,
                pull: r.pull.map(Limit::new),
                other: r.other.map(Limit::new),
            });
        }
        Ok(RateLimits {
            pull: Limit::new(cfg.pull),
            other: Limit::new(cfg.other),
            rules,
            exempt_admins: cfg.exempt_admins,
            clock: DefaultClock::default(),
        })
    }

    /// Whether any request could be limited.
    pub fn enabled(&self) -> bool {
        self.pull.is_some()
            || self.other.is_some()
            || self
                .rules
                .iter()
                .any(|r| matches!(r.pull, Some(Some(_))) || matches!(r.other, Some(Some(_))))
    }

    /// Takes one request from the client's bucket for `class` (in `repo`, when it names one).
    pub fn check(&self, client: &Client, repo: Option<&str>, class: Class) -> Verdict {
        if self.exempt_admins && matches!(client, Client::User { admin: true, .. }) {
            return Verdict::Unlimited;
        }
        let rule = self.rules.iter().find(|r| r.matches(client, repo));
        let chosen = match class {
            Class::Pull => rule.and_then(|r| r.pull.clone()),
            Class::Other => rule.and_then(|r| r.other.clone()),
        };
        let limit = match chosen {
            Some(l) => l,
            None => match class {
                Class::Pull => self.pull.clone(),
                Class::Other => self.other.clone(),
            },
        };
        let Some(limit) = limit else {
            return Verdict::Unlimited;
        };
        match limit.buckets.check_key(&client.key()) {
            Ok(state) => Verdict::Allowed {
                limit: limit.rate,
                remaining: state.remaining_burst_capacity(),
            },
            Err(not_until) => Verdict::Refused {
                limit: limit.rate,
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }

    /// Forgets buckets that are full again (their clients have been quiet long enough).
    pub fn sweep(&self) {
        let limits = [&self.pull, &self.other].into_iter().flatten().chain(
            self.rules
                .iter()
                .flat_map(|r| [&r.pull, &r.other])
                .flatten()
                .flatten(),
        );
        for l in limits {
            l.buckets.retain_recent();
            l.buckets.shrink_to_fit();
        }
    }
}

/// `RateLimit-Limit` / `RateLimit-Remaining` values as Docker Hub writes them: the count and
/// the window in seconds (`100;w=21600`).
pub fn header_value(n: u32, rate: Rate) -> String {
    match rate {
        Rate::Per { period, .. } => format!("{n};w={}", period.as_secs().max(1)),
        Rate::Unlimited => n.to_string(),
    }
}

/// The bucket size of a limited rate.
pub fn capacity(rate: Rate) -> u32 {
    match rate {
        Rate::Per { count, .. } => count.get(),
        Rate::Unlimited => u32::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimitRule;

    fn rate(s: &str) -> Rate {
        s.parse().unwrap()
    }

    fn limits(cfg: RateLimitConfig) -> RateLimits {
        RateLimits::from_config(&cfg).unwrap()
    }

    const ANON: Client = Client::Address(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn rates_parse_and_print() {
        assert_eq!(rate("unlimited"), Rate::Unlimited);
        assert_eq!(rate("100/6h").to_string(), "100/6h");
        assert_eq!(rate(" 20 / 1s ").to_string(), "20/1s");
        for bad in ["0/1s", "10", "10/0s", "x/1m", "10/soon", "-1/1s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bucket_empties_then_refuses_with_the_wait() {
        let l = limits(RateLimitConfig {
            pull: rate("3/30s"),
            ..Default::default()
        });
        assert!(l.enabled());
        for left in [2, 1, 0] {
            assert_eq!(
                l.check(&ANON, None, Class::Pull),
                Verdict::Allowed {
                    limit: rate("3/30s"),
                    remaining: left
                }
            );
        }
        match l.check(&ANON, None, Class::Pull) {
            Verdict::Refused { retry_after, .. } => {
                assert!(
                    retry_after > Duration::from_secs(8) && retry_after <= Duration::from_secs(10)
                )
            }
            v => panic!("{v:?}"),
        }
        // Other requests, and other clients, have their own buckets.
        assert_eq!(l.check(&ANON, None, Class::Other), Verdict::Unlimited);
        let bob = Client::User {
            name: "bob",
            admin: false,
        };
        assert!(matches!(
            l.check(&bob, None, Class::Pull),
            Verdict::Allowed { remaining: 2, .. }
        ));
    }

    #[test]
    fn rules_pick_rates_by_repository_and_client_and_admins_are_exempt() {
        let l = limits(RateLimitConfig {
            pull: rate("1/1h"),
            other: rate("1/1h"),
            exempt_admins: true,
            rules: vec![
                RateLimitRule {
                    tokens: Some("ci/*".into()),
                    pull: Some(Rate::Unlimited),
                    ..Default::default()
                },
                RateLimitRule {
                    repositories: Some("big/**".into()),
                    pull: Some(rate("5/1h")),
                    ..Default::default()
                },
            ],
        });
        let ci = Client::Token {
            namespace: "ci",
            name: "build",
        };
        for _ in 0..10 {
            assert_eq!(l.check(&ci, Some("x/y"), Class::Pull), Verdict::Unlimited);
        }
        // The token rule leaves `other` to the global rate.
        assert!(matches!(
            l.check(&ci, None, Class::Other),
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            l.check(&ci, None, Class::Other),
            Verdict::Refused { .. }
        ));
        for _ in 0..5 {
            assert!(matches!(
                l.check(&ANON, Some("big/a"), Class::Pull),
                Verdict::Allowed { .. }
            ));
        }
        assert!(matches!(
            l.check(&ANON, Some("big/a"), Class::Pull),
            Verdict::Refused { .. }
        ));
        let admin = Client::User {
            name: "root",
            admin: true,
        };
        for _ in 0..10 {
            assert_eq!(l.check(&admin, None, Class::Pull), Verdict::Unlimited);
        }
        l.sweep();
    }

    #[test]
    fn headers_carry_the_window() {
        assert_eq!(header_value(76, rate("100/6h")), "76;w=21600");
        assert_eq!(capacity(rate("100/6h")), 100);
    }

    #[test]
    fn a_bad_glob_names_its_place() {
        let e = RateLimits::from_config(&RateLimitConfig {
            rules: vec![RateLimitRule {
                users: Some("***".into()),
                ..Default::default()
            }],
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("rate_limit.rules[0].users"), "{e}");
    }
}
