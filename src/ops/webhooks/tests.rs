//! The sink, the outbox and the worker together, against receivers on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use axum::http::{HeaderMap, StatusCode};

use super::*;
use crate::metadata::sqlite::SqliteMetadata;

/// A receiver that answers 503 to its first `down_for` requests, then 200, and keeps what
/// it was sent.
struct Receiver {
    url: String,
    down_for: usize,
    seen: AtomicUsize,
    got: Mutex<Vec<(HeaderMap, String, bool)>>,
}

impl Receiver {
    async fn start(down_for: usize) -> Arc<Receiver> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Arc::new(Receiver {
            url: format!("http://{}/hook", l.local_addr().unwrap()),
            down_for,
            seen: AtomicUsize::new(0),
            got: Mutex::new(Vec::new()),
        });
        let me = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let me = me.clone();
                async move {
                    let up = me.seen.fetch_add(1, Ordering::SeqCst) >= me.down_for;
                    me.got.lock().unwrap().push((headers, body, up));
                    if up {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                }
            }),
        );
        tokio::spawn(async move { axum::serve(l, app).await });
        r
    }

    /// The event ids it accepted (answered 200), in order.
    fn accepted(&self) -> Vec<String> {
        let got = self.got.lock().unwrap();
        got.iter()
            .filter(|(_, _, up)| *up)
            .map(|(h, _, _)| h["x-berth-event-id"].to_str().unwrap().to_string())
            .collect()
    }
}

async fn store() -> (tempfile::TempDir, Arc<SqliteMetadata>) {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteMetadata::open(&dir.path().join("berth.db"))
        .await
        .unwrap();
    (dir, Arc::new(db))
}

fn hook(name: &str, url: &str, events: &[&str]) -> WebhookConfig {
    let mut h = WebhookConfig::new(name, url, events);
    h.retry_initial = crate::config::Span(Duration::from_millis(50));
    h.retry_max = crate::config::Span(Duration::from_millis(200));
    h
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls an endpoint's summary until `check` holds.
async fn until_summary(db: &SqliteMetadata, name: &str, check: impl Fn(&EndpointSummary) -> bool) {
    let start = std::time::Instant::now();
    while !check(&db.summary(name).await.unwrap()) {
        assert!(start.elapsed() < Duration::from_secs(10), "{name}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn filters_match_actions_outcomes_and_repositories() {
    let (_d, db) = store().await;
    let mut h = hook("a", "http://127.0.0.1:9/", &["push", "gc", "quota"]);
    h.repositories = vec!["prod/**".into()];
    let w = Webhooks::new(&[h], db, 5000, false).unwrap();
    let ep = &w.endpoints()[0];
    let push = |repo: &str| Event::new(Action::Push, "manifest", "alice").repo(repo);
    assert!(ep.wants(&push("prod/app")));
    assert!(!ep.wants(&push("dev/app")), "repository filter");
    assert!(
        !ep.wants(&push("prod/app").failed("refused")),
        "only pushes that happened"
    );
    assert!(!ep.wants(&Event::new(Action::Pull, "manifest", "a").repo("prod/app")));
    assert!(!ep.wants(&Event::new(Action::Login, "registry", "a")));
    assert!(
        ep.wants(&Event::new(Action::Gc, "registry", "gc")),
        "no repository"
    );
    let refused = Event::new(Action::Quota, "blob", "a")
        .repo("prod/x")
        .failed("over");
    assert!(ep.wants(&refused), "quota refusals are failures by nature");
}

#[tokio::test]
async fn events_no_endpoint_wants_are_not_stored() {
    let (_d, db) = store().await;
    let w = Webhooks::new(
        &[hook("a", "http://127.0.0.1:9/", &["push"])],
        db.clone(),
        5000,
        false,
    )
    .unwrap();
    w.record(&Arc::new(
        Event::new(Action::Pull, "manifest", "x").repo("r"),
    ));
    w.record(&Arc::new(Event::new(Action::TokenCreate, "token", "x")));
    w.flush().await.unwrap();
    assert_eq!(db.summary("a").await.unwrap(), EndpointSummary::default());
    w.record(&Arc::new(
        Event::new(Action::Push, "manifest", "x").repo("r"),
    ));
    w.flush().await.unwrap();
    assert_eq!(db.summary("a").await.unwrap().pending, 1);
}

#[tokio::test]
async fn deliveries_are_retried_until_accepted_and_signed() {
    let (_d, db) = store().await;
    let r = Receiver::start(3).await;
    let mut h = hook("ci", &r.url, &["push", "delete"]);
    h.secret = Some(crate::config::webhooks::Secret("s3cret".into()));
    h.headers.insert("authorization".into(), "Bearer t".into());
    let w = Webhooks::new(&[h], db.clone(), 5000, false).unwrap();
    let events: Vec<_> = (0..3)
        .map(|i| Arc::new(Event::new(Action::Push, "manifest", "alice").repo(format!("r{i}"))))
        .collect();
    for e in &events {
        w.record(e);
    }
    let cancel = CancellationToken::new();
    let writer = tokio::spawn(w.clone().run_writer(cancel.clone()));
    let worker = tokio::spawn(w.clone().run_delivery(cancel.clone()));
    until("three events accepted", || r.accepted().len() >= 3).await;
    let mut accepted = r.accepted();
    accepted.sort();
    let mut ids: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
    ids.sort();
    assert_eq!(accepted, ids, "each event accepted once");
    until_summary(&db, "ci", |s| s.delivered == 3).await;
    for (headers, body, _) in r.got.lock().unwrap().iter() {
        assert_eq!(headers["content-type"], envelope::MEDIA_TYPE);
        assert_eq!(headers["authorization"], "Bearer t");
        assert!(headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("berth/"));
        let sig = headers["x-berth-signature"].to_str().unwrap();
        assert_eq!(sig, envelope::signature(b"s3cret", body.as_bytes()));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v["events"][0]["id"],
            headers["x-berth-event-id"].to_str().unwrap()
        );
    }
    // Attempts are numbered: some event was tried more than once while the receiver was down.
    let retried = r
        .got
        .lock()
        .unwrap()
        .iter()
        .any(|(h, _, up)| *up && h["x-berth-delivery"] != "1");
    assert!(retried);
    let s = &w.status().await.unwrap()[0];
    assert_eq!(
        (s.summary.pending, s.summary.delivered, s.summary.failed),
        (0, 3, 0)
    );
    assert!(s.signed && s.summary.last_success_at.is_some());
    assert_eq!(s.summary.last_status, Some(503));
    cancel.cancel();
    writer.await.unwrap();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_dead_endpoint_does_not_delay_a_live_one_and_is_given_up_on() {
    let (_d, db) = store().await;
    // A receiver that accepts connections and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_url = format!("http://{}/", hang.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });
    let live = Receiver::start(0).await;
    let mut dead = hook("dead", &hang_url, &["push"]);
    dead.timeout = crate::config::Span(Duration::from_millis(1500));
    dead.give_up_after = crate::config::Span(Duration::from_millis(100));
    let w = Webhooks::new(
        &[dead, hook("live", &live.url, &["push"])],
        db.clone(),
        5000,
        false,
    )
    .unwrap();
    let cancel = CancellationToken::new();
    let worker = tokio::spawn(w.clone().run_delivery(cancel.clone()));
    for i in 0..6 {
        w.record(&Arc::new(
            Event::new(Action::Push, "manifest", "a").repo(format!("r{i}")),
        ));
    }
    let start = std::time::Instant::now();
    w.flush().await.unwrap();
    until("the live endpoint got everything", || {
        live.accepted().len() == 6
    })
    .await;
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "{:?}",
        start.elapsed()
    );
    until_summary(&db, "dead", |s| s.failed == 6).await;
    let d = w.deliveries("dead", None, 10).await.unwrap().unwrap();
    assert!(d
        .iter()
        .all(|d| d.last_status.is_none() && d.last_error.is_some()));
    // Redelivery queues them again.
    assert_eq!(w.redeliver("dead", None).await.unwrap(), Some(6));
    assert_eq!(w.redeliver("nope", None).await.unwrap(), None);
    cancel.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn an_unreadable_key_stops_the_server_and_nothing_is_sent_unsigned() {
    let (dir, db) = store().await;
    let r = Receiver::start(0).await;
    let mut h = hook("a", &r.url, &["push"]);
    h.secret_file = Some(dir.path().join("missing"));
    // Commands that only queue open without reading the key.
    let w = Webhooks::new(&[h], db.clone(), 5000, false).unwrap();
    let e = w.check_keys().unwrap_err();
    assert!(format!("{e:#}").contains("secret_file"), "{e:#}");
    w.record(&Arc::new(
        Event::new(Action::Push, "manifest", "x").repo("r"),
    ));
    w.flush().await.unwrap();
    let cancel = CancellationToken::new();
    let worker = tokio::spawn(w.clone().run_delivery(cancel.clone()));
    until_summary(&db, "a", |s| s.last_error.is_some()).await;
    let s = db.summary("a").await.unwrap();
    assert!(s.last_error.unwrap().contains("secret_file"));
    assert_eq!((s.pending, s.delivered), (1, 0));
    assert!(r.got.lock().unwrap().is_empty());
    cancel.cancel();
    worker.await.unwrap();
}
