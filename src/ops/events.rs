//! What happened in the registry, as one [`Event`] per push, manifest pull, delete, login,
//! token change, policy change, quota refusal, GC run or retention deletion. The HTTP layer,
//! the admin API, the CLI and the lifecycle emit events into [`Events`], which hands each to
//! every sink (the audit log, the webhook outbox). A sink only queues: emitting never waits for
//! a database or a network.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What was done. The string forms are stable: they are stored in the audit log, shown by
/// `berth audit`, matched by webhook filters and sent to webhook receivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// A manifest put, a blob upload completed, or a blob mounted.
    #[serde(rename = "push")]
    Push,
    /// A manifest `GET`.
    #[serde(rename = "pull")]
    Pull,
    /// A manifest, tag or blob deleted (by a client, or by retention).
    #[serde(rename = "delete")]
    Delete,
    /// Credentials presented: at `/token`, at `/v2/`, or refused anywhere.
    #[serde(rename = "login")]
    Login,
    #[serde(rename = "token.create")]
    TokenCreate,
    #[serde(rename = "token.revoke")]
    TokenRevoke,
    /// A lifecycle policy set or reset.
    #[serde(rename = "policy")]
    Policy,
    /// A push refused by a namespace's quota.
    #[serde(rename = "quota")]
    Quota,
    /// A garbage-collection run that removed content.
    #[serde(rename = "gc")]
    Gc,
}

impl Action {
    pub const ALL: [Action; 9] = [
        Action::Push,
        Action::Pull,
        Action::Delete,
        Action::Login,
        Action::TokenCreate,
        Action::TokenRevoke,
        Action::Policy,
        Action::Quota,
        Action::Gc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Delete => "delete",
            Action::Login => "login",
            Action::TokenCreate => "token.create",
            Action::TokenRevoke => "token.revoke",
            Action::Policy => "policy",
            Action::Quota => "quota",
            Action::Gc => "gc",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The HTTP request an event came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestInfo {
    /// The `X-Request-Id` answered, also in the access log.
    pub id: String,
    pub method: String,
    /// The `Host` the client asked for.
    pub host: String,
    pub user_agent: String,
}

/// One thing that happened. Never holds a credential: actors are names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique (a UUID), so receivers can deduplicate.
    pub id: String,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub action: Action,
    /// What the action was on: `manifest`, `blob`, `tag`, `token`, `policy`, `registry`.
    pub target: String,
    /// `anonymous`, a user's name, `token NS/NAME`, or who ran a command (`cli`, `retention`).
    pub actor: String,
    /// The client's address, or `local` for a command.
    pub addr: String,
    pub repo: Option<String>,
    /// A tag, when the request named one.
    pub reference: Option<String>,
    pub digest: Option<String>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
    pub success: bool,
    /// The HTTP status answered, or 0 for what no request caused.
    pub status: u16,
    /// Why it failed, which rule applied, what a run removed: free text, never a secret.
    pub detail: String,
    pub request: Option<RequestInfo>,
}

impl Event {
    /// A new event with a fresh id and the current time; the rest is filled in by the caller.
    pub fn new(action: Action, target: &str, actor: impl Into<String>) -> Event {
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            time_ms: now_ms(),
            action,
            target: target.to_string(),
            actor: actor.into(),
            addr: "local".into(),
            repo: None,
            reference: None,
            digest: None,
            media_type: None,
            size: None,
            success: true,
            status: 0,
            detail: String::new(),
            request: None,
        }
    }

    pub fn repo(mut self, repo: impl Into<String>) -> Event {
        self.repo = Some(repo.into());
        self
    }

    pub fn reference(mut self, r: Option<String>) -> Event {
        self.reference = r;
        self
    }

    pub fn digest(mut self, d: Option<String>) -> Event {
        self.digest = d;
        self
    }

    pub fn detail(mut self, d: impl Into<String>) -> Event {
        self.detail = d.into();
        self
    }

    pub fn failed(mut self, detail: impl Into<String>) -> Event {
        self.success = false;
        self.detail = detail.into();
        self
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where events go. `record` must not wait: it queues, and the sink writes in the background.
pub trait Sink: Send + Sync + 'static {
    fn record(&self, event: &Arc<Event>);
}

/// The sinks of one process. Cheap to clone; with no sink, emitting costs nothing.
#[derive(Clone, Default)]
pub struct Events {
    sinks: Arc<Vec<Arc<dyn Sink>>>,
}

impl Events {
    pub fn new(sinks: Vec<Arc<dyn Sink>>) -> Events {
        Events {
            sinks: Arc::new(sinks),
        }
    }

    /// Whether any sink listens (callers skip building events nobody reads).
    pub fn enabled(&self) -> bool {
        !self.sinks.is_empty()
    }

    pub fn emit(&self, event: Event) {
        if self.sinks.is_empty() {
            return;
        }
        let event = Arc::new(event);
        for s in self.sinks.iter() {
            s.record(&event);
        }
    }
}

/// The in-memory queue of a sink that writes in batches: bounded (beyond `max` events new
/// ones are dropped and counted, never blocking a request), drained in recording order by
/// one writer at a time, and refilled at its front when a write fails.
pub struct Queue {
    items: std::sync::Mutex<Vec<Arc<Event>>>,
    max: usize,
    /// Notified by the sink when its writer should run (a full batch, or any event).
    pub wake: tokio::sync::Notify,
    /// Held by the writer draining the queue, so batches are written in order.
    writing: tokio::sync::Mutex<()>,
    dropped: std::sync::atomic::AtomicU64,
}

impl Queue {
    pub fn new(max: usize) -> Queue {
        Queue {
            items: std::sync::Mutex::new(Vec::new()),
            max,
            wake: tokio::sync::Notify::new(),
            writing: tokio::sync::Mutex::new(()),
            dropped: Default::default(),
        }
    }

    /// Queues an event; returns how many are waiting, or `None` when it was dropped.
    pub fn push(&self, event: &Arc<Event>) -> Option<usize> {
        let mut q = self.items.lock().expect("event queue");
        if q.len() >= self.max {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        q.push(event.clone());
        Some(q.len())
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes what is queued with `write`, `batch` events at a time, until the queue is
    /// empty or a write fails (its events then go back to the queue's front).
    pub async fn drain<E, F, Fut>(&self, batch: usize, mut write: F) -> Result<(), E>
    where
        F: FnMut(Vec<Arc<Event>>) -> Fut,
        Fut: std::future::Future<Output = Result<(), (Vec<Arc<Event>>, E)>>,
    {
        let _one = self.writing.lock().await;
        loop {
            let taken: Vec<Arc<Event>> = {
                let mut q = self.items.lock().expect("event queue");
                let n = q.len().min(batch);
                q.drain(..n).collect()
            };
            if taken.is_empty() {
                return Ok(());
            }
            if let Err((back, e)) = write(taken).await {
                let mut q = self.items.lock().expect("event queue");
                let later = std::mem::replace(&mut *q, back);
                q.extend(later);
                return Err(e);
            }
        }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Collect(Mutex<Vec<Arc<Event>>>);
    impl Sink for Collect {
        fn record(&self, e: &Arc<Event>) {
            self.0.lock().unwrap().push(e.clone());
        }
    }

    #[test]
    fn actions_round_trip_through_their_names() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.as_str()));
        }
        assert_eq!(Action::parse("pulls"), None);
    }

    #[test]
    fn every_sink_gets_each_event_once() {
        let a = Arc::new(Collect(Mutex::new(vec![])));
        let b = Arc::new(Collect(Mutex::new(vec![])));
        let events = Events::new(vec![a.clone(), b.clone()]);
        events.emit(Event::new(Action::Push, "manifest", "alice").repo("team/app"));
        let (a, b) = (a.0.lock().unwrap(), b.0.lock().unwrap());
        assert_eq!(a.len(), 1);
        assert_eq!(b.len(), 1);
        assert_eq!(a[0].id, b[0].id);
        assert_eq!(a[0].repo.as_deref(), Some("team/app"));
        assert!(Events::default().enabled().then_some(()).is_none());
    }

    #[tokio::test]
    async fn a_queue_drains_in_order_keeps_a_failed_batch_and_drops_past_its_bound() {
        let q = Queue::new(3);
        let ev: Vec<Arc<Event>> = (0..4)
            .map(|i| Arc::new(Event::new(Action::Pull, "manifest", format!("c{i}"))))
            .collect();
        assert_eq!(q.push(&ev[0]), Some(1));
        assert_eq!(q.push(&ev[1]), Some(2));
        assert_eq!(q.push(&ev[2]), Some(3));
        assert_eq!(q.push(&ev[3]), None);
        assert_eq!(q.dropped(), 1);
        // The first batch fails: it goes back to the front, before anything queued since.
        let r: Result<(), &str> = q.drain(2, |b| async move { Err((b, "store down")) }).await;
        assert_eq!(r, Err("store down"));
        let seen = std::sync::Mutex::new(Vec::new());
        let r: Result<(), &str> = q
            .drain(2, |b| {
                seen.lock()
                    .unwrap()
                    .push(b.iter().map(|e| e.actor.clone()).collect::<Vec<_>>());
                async { Ok(()) }
            })
            .await;
        assert_eq!(r, Ok(()));
        assert_eq!(
            seen.into_inner().unwrap(),
            vec![vec!["c0".to_string(), "c1".into()], vec!["c2".to_string()]]
        );
    }
}
