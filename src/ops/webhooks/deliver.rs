//! The delivery worker: per endpoint, claims due deliveries from the outbox and `POST`s
//! each, [`PER_ENDPOINT`] at a time. Endpoints are served by tasks of their own, so a dead
//! receiver never delays a live one. Any 2xx is delivered; anything else (an error status,
//! a timeout, a refused connection) is tried again after [`backoff`] with jitter, until
//! `give_up_after` has passed since the delivery was queued, when it is marked failed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::envelope::{signature, MEDIA_TYPE};
use super::{Endpoint, Retry, Webhooks};
use crate::metadata::webhooks::{Claimed, Outcome};
use crate::ops::events::now_ms;

/// Deliveries in flight to one endpoint at most.
const PER_ENDPOINT: usize = 4;
/// The worker looks at the outbox at least this often (deliveries queued by commands such as
/// `berth gc` reach it this way).
const POLL: Duration = Duration::from_secs(2);
/// How long a claim holds a delivery beyond its timeout: a worker that died mid-delivery
/// leaves it to be sent again after this.
const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// At a stop, deliveries under way get this long to finish and be recorded.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Delivered rows are kept this long, failed ones longer (they can be redelivered).
const KEEP_DELIVERED: Duration = Duration::from_secs(7 * 86400);
const KEEP_FAILED: Duration = Duration::from_secs(30 * 86400);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The delay before attempt `attempt + 1` after `attempt` failed: `initial`, doubling with
/// each attempt, at most `max`.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let doublings = attempt.saturating_sub(1).min(32);
    initial
        .checked_mul(1u32 << doublings.min(31))
        .unwrap_or(max)
        .min(max)
}

/// `d` less up to a fifth, at random, so that deliveries failed together do not all come
/// back together.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    getrandom::fill(&mut b).expect("the OS provides randomness");
    let r = u16::from_le_bytes(b) as f64 / u16::MAX as f64;
    d.mul_f64(1.0 - 0.2 * r)
}

/// What a failed attempt leads to: another one (when), or giving up.
fn after_failure(
    retry: &Retry,
    c: &Claimed,
    now: i64,
    status: Option<u16>,
    error: String,
) -> Outcome {
    let delay = jitter(backoff(c.attempt, retry.initial, retry.max));
    let next = now + delay.as_millis() as i64;
    if next > c.retry_since + retry.give_up_after.as_millis() as i64 {
        Outcome::Failed { status, error }
    } else {
        Outcome::Retry {
            next_attempt_at: next,
            status,
            error,
        }
    }
}

pub(super) async fn run(hooks: Arc<Webhooks>, cancel: CancellationToken) {
    if hooks.endpoints.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client; no deliveries");
            return;
        }
    };
    let mut tasks = JoinSet::new();
    for ep in hooks.endpoints.clone() {
        tracing::info!(webhook = %ep.name, url = %super::redact(&ep.url), "sending webhooks");
        tasks.spawn(endpoint(hooks.clone(), ep, client.clone(), cancel.clone()));
    }
    tasks.spawn(prune(hooks.clone(), cancel.clone()));
    while tasks.join_next().await.is_some() {}
}

/// Serves one endpoint until cancelled.
async fn endpoint(
    hooks: Arc<Webhooks>,
    ep: Arc<Endpoint>,
    client: reqwest::Client,
    cancel: CancellationToken,
) {
    let store = hooks.store.clone();
    let lease = (ep.timeout + LEASE_MARGIN).as_millis() as i64;
    let mut inflight: JoinSet<i64> = JoinSet::new();
    let mut claimed: HashSet<i64> = HashSet::new();
    while !cancel.is_cancelled() {
        let free = PER_ENDPOINT - inflight.len();
        let mut wait = POLL;
        if free > 0 {
            let now = now_ms();
            let ok = match store.claim(&ep.name, now, now + lease, free as u32).await {
                Ok(rows) => {
                    for c in rows {
                        claimed.insert(c.id);
                        let (hooks, ep, client) = (hooks.clone(), ep.clone(), client.clone());
                        inflight.spawn(async move { attempt(&hooks, &ep, &client, c).await });
                    }
                    true
                }
                Err(e) => {
                    tracing::warn!(webhook = %ep.name, error = %e, "cannot claim deliveries");
                    false
                }
            };
            if ok && inflight.len() < PER_ENDPOINT {
                if let Ok(Some(due)) = store.next_due(&ep.name).await {
                    let ms = (due - now_ms()).clamp(10, POLL.as_millis() as i64);
                    wait = Duration::from_millis(ms as u64);
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                if let Ok(id) = done {
                    claimed.remove(&id);
                }
            }
            _ = ep.wake.notified(), if free > 0 => {}
            _ = tokio::time::sleep(wait), if free > 0 => {}
        }
    }
    // Stopping: what is under way may finish and be recorded; the rest is due again at once
    // for the next start (rather than after its lease).
    let _ = tokio::time::timeout(STOP_GRACE, async {
        while let Some(done) = inflight.join_next().await {
            if let Ok(id) = done {
                claimed.remove(&id);
            }
        }
    })
    .await;
    inflight.abort_all();
    if !claimed.is_empty() {
        let ids: Vec<i64> = claimed.into_iter().collect();
        if let Err(e) = store.release(&ids, now_ms()).await {
            tracing::warn!(webhook = %ep.name, error = %e, "cannot release deliveries at stop");
        }
    }
}

/// Sends one delivery and records the outcome; returns its id.
async fn attempt(hooks: &Webhooks, ep: &Endpoint, client: &reqwest::Client, c: Claimed) -> i64 {
    let mut req = client
        .post(ep.url.clone())
        .timeout(ep.timeout)
        .headers(ep.headers.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE))
        .header("x-berth-event-id", &c.event_id)
        .header("x-berth-delivery", c.attempt.to_string());
    let key = ep.key();
    if let Ok(Some(key)) = &key {
        req = req.header("x-berth-signature", signature(key, c.body.as_bytes()));
    }
    let result = match key {
        // Never sent unsigned when a key is configured.
        Err(e) => Err(e),
        Ok(_) => req
            .body(c.body.clone())
            .send()
            .await
            .map_err(|e| e.without_url().to_string()),
    };
    let now = now_ms();
    let outcome = match result {
        Ok(resp) if resp.status().is_success() => Outcome::Delivered {
            status: resp.status().as_u16(),
        },
        Ok(resp) => {
            let status = resp.status();
            after_failure(
                &ep.retry,
                &c,
                now,
                Some(status.as_u16()),
                status.to_string(),
            )
        }
        Err(e) => after_failure(&ep.retry, &c, now, None, e),
    };
    match &outcome {
        Outcome::Delivered { .. } => {}
        Outcome::Retry { error, .. } => tracing::debug!(
            webhook = %ep.name, event = %c.event_id, attempt = c.attempt, error = %error,
            "webhook delivery failed; will retry"
        ),
        Outcome::Failed { error, .. } => tracing::warn!(
            webhook = %ep.name, event = %c.event_id, attempts = c.attempt, error = %error,
            "webhook delivery failed; giving up"
        ),
    }
    // The outcome must be recorded: a delivery left claimed is sent again after its lease.
    for wait in [0, 100, 1000] {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        match hooks.store.finish(c.id, &ep.name, now, &outcome).await {
            Ok(()) => break,
            Err(e) => tracing::warn!(webhook = %ep.name, error = %e, "cannot record a delivery"),
        }
    }
    c.id
}

/// Removes old delivered and failed deliveries, hourly.
async fn prune(hooks: Arc<Webhooks>, cancel: CancellationToken) {
    loop {
        let now = now_ms();
        let before = |keep: Duration| now - keep.as_millis() as i64;
        match hooks
            .store
            .prune(before(KEEP_DELIVERED), before(KEEP_FAILED))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "pruned old webhook deliveries"),
            Err(e) => tracing::warn!(error = %e, "cannot prune webhook deliveries"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_initial_delay_up_to_the_cap() {
        let s = Duration::from_secs;
        let schedule: Vec<_> = (1..=11).map(|a| backoff(a, s(1), s(300))).collect();
        assert_eq!(
            schedule,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300].map(s)
        );
        assert_eq!(backoff(1000, s(1), s(300)), s(300));
        assert_eq!(
            backoff(3, Duration::from_millis(100), s(1)),
            Duration::from_millis(400)
        );
        for _ in 0..100 {
            let j = jitter(s(10));
            assert!(j <= s(10) && j >= s(8), "{j:?}");
        }
    }

    #[test]
    fn a_delivery_is_given_up_once_its_next_try_would_pass_the_limit() {
        let retry = Retry {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            give_up_after: Duration::from_secs(3600),
        };
        let c = |attempt| Claimed {
            id: 1,
            event_id: "e".into(),
            body: "{}".into(),
            attempt,
            retry_since: 0,
        };
        match after_failure(&retry, &c(1), 1000, Some(503), "503".into()) {
            Outcome::Retry {
                next_attempt_at, ..
            } => assert!(
                (1800..=2000).contains(&next_attempt_at),
                "{next_attempt_at}"
            ),
            o => panic!("{o:?}"),
        }
        let late = 3_600_000 - 100;
        assert!(matches!(
            after_failure(&retry, &c(20), late, None, "refused".into()),
            Outcome::Failed { status: None, .. }
        ));
    }
}
