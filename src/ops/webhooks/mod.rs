//! Webhooks: the [`Sink`] that turns events into deliveries in the metadata store's outbox
//! (`metadata/webhooks/`), and the worker that sends them (`deliver.rs`) in the
//! Distribution registry's envelope, signed (`envelope.rs`).
//!
//! `record` only queues in memory; a writer task moves the queue into the outbox every
//! [`BATCH_INTERVAL`], one transaction per batch, and [`Webhooks::flush`] does the same at
//! once (commands call it before they exit; the server at shutdown). From the outbox on,
//! nothing is lost: the worker retries until the receiver answers 2xx or `give_up_after`
//! passes, across restarts.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::WebhookConfig;
use crate::metadata::webhooks::{
    DeliveryRecord, DeliveryState, EndpointSummary, NewDelivery, WebhookStore,
};
use crate::metadata::MetadataError;
use crate::ops::events::{Action, Event, Queue, Sink};
use crate::registry::immutable::Glob;

mod deliver;
pub mod envelope;

pub use deliver::backoff;
pub use envelope::Source;

/// How long recorded events gather in memory before they are written to the outbox.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(200);
/// Events held in memory while the outbox cannot be written; more are dropped (and logged).
const MAX_QUEUED: usize = 100_000;

/// One configured endpoint, resolved: its filter, key, headers and retry schedule.
pub struct Endpoint {
    pub name: String,
    pub url: reqwest::Url,
    pub actions: Vec<Action>,
    repositories: Vec<Glob>,
    /// Where the signing key comes from; read at each attempt (only the server sends, and
    /// commands that merely queue need not be able to read it).
    config: WebhookConfig,
    headers: HeaderMap,
    timeout: Duration,
    retry: Retry,
    /// Woken when deliveries for this endpoint reach the outbox.
    wake: Notify,
}

/// When to try again, and when to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    pub initial: Duration,
    pub max: Duration,
    pub give_up_after: Duration,
}

impl Endpoint {
    /// Resolves a checked config entry.
    pub fn from_config(c: &WebhookConfig) -> anyhow::Result<Endpoint> {
        let named = || format!("webhook {}", c.name);
        let mut headers = HeaderMap::new();
        for (k, v) in &c.headers {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes()).with_context(named)?,
                HeaderValue::from_str(v).with_context(named)?,
            );
        }
        Ok(Endpoint {
            name: c.name.clone(),
            url: reqwest::Url::parse(&c.url).with_context(named)?,
            actions: c.events.iter().filter_map(|e| Action::parse(e)).collect(),
            repositories: c
                .repositories
                .iter()
                .map(|g| Glob::parse(g).map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<_>>()
                .with_context(named)?,
            config: c.clone(),
            headers,
            timeout: c.timeout.0,
            retry: Retry {
                initial: c.retry_initial.0,
                max: c.retry_max.0,
                give_up_after: c.give_up_after.0,
            },
            wake: Notify::new(),
        })
    }

    /// The signing key, if one is configured (read from `secret_file` now).
    pub fn key(&self) -> Result<Option<Vec<u8>>, String> {
        self.config.key()
    }

    pub fn signed(&self) -> bool {
        self.config.secret.is_some() || self.config.secret_file.is_some()
    }

    /// Whether this endpoint is sent `e`: its action is in the filter (pushes, pulls and
    /// deletes only when they succeeded; quota refusals and GC runs always), and its
    /// repository, if it has one, matches a glob of the filter (when there are any).
    pub fn wants(&self, e: &Event) -> bool {
        if !self.actions.contains(&e.action) {
            return false;
        }
        let outcome_ok = match e.action {
            Action::Push | Action::Pull | Action::Delete => e.success,
            _ => true,
        };
        let repo_ok = match (&e.repo, self.repositories.is_empty()) {
            (_, true) | (None, _) => true,
            (Some(r), false) => self.repositories.iter().any(|g| g.matches(r)),
        };
        outcome_ok && repo_ok
    }
}

/// An endpoint as the admin API shows it: never its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStatus {
    pub name: String,
    pub url: String,
    pub events: Vec<&'static str>,
    pub repositories: Vec<String>,
    pub signed: bool,
    pub summary: EndpointSummary,
}

/// The webhook sink of one process, and what its worker and the admin API need.
pub struct Webhooks {
    endpoints: Vec<Arc<Endpoint>>,
    store: Arc<dyn WebhookStore>,
    source: Source,
    /// Events not yet in the outbox; drained by one writer at a time, in order.
    queue: Queue,
}

impl Webhooks {
    /// The endpoints of `hooks` over `store`; `listen_port` and `tls` describe this instance
    /// in each event's `source` and target URL.
    pub fn new(
        hooks: &[WebhookConfig],
        store: Arc<dyn WebhookStore>,
        listen_port: u16,
        tls: bool,
    ) -> anyhow::Result<Arc<Webhooks>> {
        let endpoints = hooks
            .iter()
            .map(|h| Endpoint::from_config(h).map(Arc::new))
            .collect::<anyhow::Result<_>>()?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "berth".into());
        Ok(Arc::new(Webhooks {
            endpoints,
            store,
            source: Source {
                addr: format!("{host}:{listen_port}"),
                instance_id: uuid::Uuid::new_v4().to_string(),
                scheme: if tls { "https" } else { "http" },
            },
            queue: Queue::new(MAX_QUEUED),
        }))
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Fails when an endpoint's signing key cannot be read: the server checks this before
    /// it starts, rather than retrying deliveries it cannot sign.
    pub fn check_keys(&self) -> anyhow::Result<()> {
        for ep in &self.endpoints {
            ep.key()
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("webhook {}", ep.name))?;
        }
        Ok(())
    }

    /// Writes every event recorded so far to the outbox (one transaction), then wakes the
    /// worker. On failure the events stay queued for the next try.
    pub async fn flush(&self) -> Result<(), MetadataError> {
        let woken = std::sync::Mutex::new(std::collections::HashSet::new());
        let r = self
            .queue
            .drain(usize::MAX, |events| {
                let woken = &woken;
                async move {
                    let mut batch = Vec::new();
                    for e in &events {
                        let mut body = None;
                        for ep in self.endpoints.iter().filter(|ep| ep.wants(e)) {
                            let body = body.get_or_insert_with(|| envelope::body(e, &self.source));
                            batch.push(NewDelivery {
                                event_id: e.id.clone(),
                                endpoint: ep.name.clone(),
                                action: e.action.as_str().to_string(),
                                repository: e.repo.clone(),
                                body: body.clone(),
                                created_at: e.time_ms,
                            });
                        }
                    }
                    match self.store.enqueue(&batch).await {
                        Ok(()) => {
                            let mut w = woken.lock().expect("woken set");
                            w.extend(batch.into_iter().map(|d| d.endpoint));
                            Ok(())
                        }
                        Err(err) => Err((events, err)),
                    }
                }
            })
            .await;
        let woken = woken.into_inner().expect("woken set");
        for ep in self.endpoints.iter().filter(|ep| woken.contains(&ep.name)) {
            ep.wake.notify_one();
        }
        r
    }

    /// Moves recorded events to the outbox every [`BATCH_INTERVAL`] while any arrive, and
    /// once more when cancelled.
    pub async fn run_writer(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let stop = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = self.queue.wake.notified() => {
                    tokio::select! {
                        _ = cancel.cancelled() => true,
                        _ = tokio::time::sleep(BATCH_INTERVAL) => false,
                    }
                }
            };
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "cannot queue webhook deliveries; will try again");
                if !stop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    self.queue.wake.notify_one();
                }
            }
            if stop {
                return;
            }
        }
    }

    /// Sends due deliveries until cancelled (the server runs this; commands only queue).
    pub async fn run_delivery(self: Arc<Self>, cancel: CancellationToken) {
        deliver::run(self, cancel).await
    }

    /// Every endpoint with its delivery counts and last outcomes.
    pub async fn status(&self) -> Result<Vec<EndpointStatus>, MetadataError> {
        let mut out = Vec::new();
        for ep in &self.endpoints {
            out.push(EndpointStatus {
                name: ep.name.clone(),
                url: redact(&ep.url),
                events: ep.actions.iter().map(|a| a.as_str()).collect(),
                repositories: ep.repositories.iter().map(|g| g.to_string()).collect(),
                signed: ep.signed(),
                summary: self.store.summary(&ep.name).await?,
            });
        }
        Ok(out)
    }

    /// An endpoint's recent deliveries, newest first; `None` for an unknown endpoint.
    pub async fn deliveries(
        &self,
        name: &str,
        state: Option<DeliveryState>,
        limit: u32,
    ) -> Result<Option<Vec<DeliveryRecord>>, MetadataError> {
        if !self.endpoints.iter().any(|e| e.name == name) {
            return Ok(None);
        }
        Ok(Some(self.store.deliveries(name, state, limit).await?))
    }

    /// Queues an endpoint's failed deliveries again (one by id, or all); `None` for an
    /// unknown endpoint, else how many.
    pub async fn redeliver(
        &self,
        name: &str,
        id: Option<i64>,
    ) -> Result<Option<u64>, MetadataError> {
        let Some(ep) = self.endpoints.iter().find(|e| e.name == name) else {
            return Ok(None);
        };
        let n = self
            .store
            .redeliver(name, id, crate::ops::events::now_ms())
            .await?;
        ep.wake.notify_one();
        Ok(Some(n))
    }
}

/// A URL without its user info and query, which may hold credentials.
fn redact(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        u.set_query(Some("..."));
    }
    u.to_string()
}

impl Sink for Webhooks {
    fn record(&self, event: &Arc<Event>) {
        if !self.endpoints.iter().any(|ep| ep.wants(event)) {
            return;
        }
        if self.queue.push(event).is_none() {
            tracing::warn!(
                event = %event.id,
                "webhook queue full (the outbox cannot be written); event dropped"
            );
            return;
        }
        self.queue.wake.notify_one();
    }
}

#[cfg(test)]
mod tests;
