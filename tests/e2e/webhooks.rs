//! Webhooks end to end: real pushes, pulls and deletes reach a receiver on loopback in
//! Distribution's envelope, signed, through the outbox. The receiver is down for its first
//! deliveries and again across a restart of berth; every event still arrives, and no event
//! id is accepted twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use berth::config::units::Span;
use berth::config::webhooks::Secret;
use berth::config::WebhookConfig;
use serde_json::Value;

use crate::common::*;

const SECRET: &str = "hook-s3cret";

/// One request the receiver got.
struct Got {
    headers: HeaderMap,
    body: String,
    accepted: bool,
}

/// A receiver on `127.0.0.1:0`: answers 503 to its first `down_for` requests and while
/// `down` is set, 200 otherwise, and keeps every request.
struct Receiver {
    url: String,
    down_for: usize,
    down: AtomicBool,
    seen: AtomicUsize,
    got: Mutex<Vec<Got>>,
}

impl Receiver {
    async fn start(down_for: usize) -> Arc<Receiver> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Arc::new(Receiver {
            url: format!("http://{}/events", l.local_addr().unwrap()),
            down_for,
            down: AtomicBool::new(false),
            seen: AtomicUsize::new(0),
            got: Mutex::new(Vec::new()),
        });
        let me = r.clone();
        let app = axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let me = me.clone();
                async move {
                    let n = me.seen.fetch_add(1, Ordering::SeqCst);
                    let accepted = n >= me.down_for && !me.down.load(Ordering::SeqCst);
                    me.got.lock().unwrap().push(Got {
                        headers,
                        body,
                        accepted,
                    });
                    if accepted {
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

    /// The events accepted (answered 200), by id, with how many times each was.
    fn accepted(&self) -> BTreeMap<String, (usize, Value)> {
        let mut out = BTreeMap::new();
        for g in self.got.lock().unwrap().iter().filter(|g| g.accepted) {
            let v: Value = serde_json::from_str(&g.body).unwrap();
            let e = v["events"][0].clone();
            let id = e["id"].as_str().unwrap().to_string();
            out.entry(id).or_insert((0, e)).0 += 1;
        }
        out
    }

    fn refused(&self) -> usize {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| !g.accepted)
            .count()
    }

    /// Checks what every request carried: the media type, the event id header matching the
    /// body, an attempt number, the user agent and a signature that verifies.
    fn check_requests(&self) {
        for g in self.got.lock().unwrap().iter() {
            let h = |name: &str| g.headers[name].to_str().unwrap().to_string();
            assert_eq!(
                h("content-type"),
                "application/vnd.docker.distribution.events.v1+json"
            );
            let v: Value = serde_json::from_str(&g.body).unwrap();
            let events = v["events"].as_array().expect("an events array");
            assert_eq!(events.len(), 1);
            assert_eq!(events[0]["id"], h("x-berth-event-id"));
            assert!(h("x-berth-delivery").parse::<u32>().unwrap() >= 1);
            assert!(h("user-agent").starts_with("berth/"));
            assert_eq!(h("x-test"), "yes", "configured headers are sent");
            let mac = hmac_sha256(SECRET.as_bytes(), g.body.as_bytes());
            assert_eq!(h("x-berth-signature"), format!("sha256={mac}"));
        }
    }
}

/// HMAC-SHA256 (RFC 2104) over SHA-256, written out here rather than taken from berth.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    hex::encode(
        Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize(),
    )
}

fn hook(url: &str) -> WebhookConfig {
    let mut h = WebhookConfig::new("ci", url, &["push", "pull", "delete"]);
    h.secret = Some(Secret(SECRET.into()));
    h.headers.insert("x-test".into(), "yes".into());
    h.retry_initial = Span(Duration::from_millis(100));
    h.retry_max = Span(Duration::from_millis(400));
    h
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn status(s: &TestServer) -> Value {
    let resp = s.get("/api/v1/webhooks").send().await.unwrap();
    let resp = expect_status(resp, reqwest::StatusCode::OK).await;
    let v: Value = resp.json().await.unwrap();
    v["webhooks"][0].clone()
}

/// The events a test expects, as (action, repository, tag or digest) triples.
fn kinds(accepted: &BTreeMap<String, (usize, Value)>) -> BTreeSet<(String, String, String)> {
    accepted
        .values()
        .map(|(_, e)| {
            let t = &e["target"];
            let what = t["tag"].as_str().or(t["digest"].as_str()).unwrap_or("");
            (
                e["action"].as_str().unwrap().to_string(),
                t["repository"].as_str().unwrap_or("").to_string(),
                what.to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_event_arrives_once_per_id_across_a_receiver_outage_and_a_restart() {
    let r = Receiver::start(3).await;
    let s = TestServer::start_with(|c| c.webhooks = vec![hook(&r.url)]).await;

    // A push (two blobs and a tagged manifest), a pull and a delete, while the receiver
    // refuses its first three requests.
    let (img, digest) = s.push_image("team/app", "v1", 1).await;
    let resp = s
        .get("/v2/team/app/manifests/v1")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    expect_status(resp, reqwest::StatusCode::OK).await;
    let resp = s
        .delete(&format!("/v2/team/app/manifests/{digest}"))
        .send()
        .await
        .unwrap();
    expect_status(resp, reqwest::StatusCode::ACCEPTED).await;
    let expected: BTreeSet<_> = [
        ("push", "team/app", img.config.digest.as_str()),
        ("push", "team/app", img.layers[0].digest.as_str()),
        ("push", "team/app", "v1"),
        ("pull", "team/app", "v1"),
        ("delete", "team/app", digest.as_str()),
    ]
    .into_iter()
    .map(|(a, r, w)| (a.to_string(), r.to_string(), w.to_string()))
    .collect();
    until("the first events accepted", || {
        kinds(&r.accepted()).is_superset(&expected)
    })
    .await;
    assert!(r.refused() >= 3, "the receiver was down at first");

    // The manifest push in Distribution's shape.
    let accepted = r.accepted();
    let (_, push) = accepted
        .values()
        .find(|(_, e)| e["action"] == "push" && e["target"]["tag"] == "v1")
        .unwrap();
    let t = &push["target"];
    assert_eq!(t["mediaType"], OCI_MANIFEST);
    assert_eq!(t["digest"], digest.as_str());
    assert_eq!(t["size"], img.manifest.len());
    assert_eq!(t["length"], img.manifest.len());
    assert_eq!(
        t["url"],
        format!("{}/v2/team/app/manifests/{digest}", s.base)
    );
    assert_eq!(push["request"]["method"], "PUT");
    assert_eq!(push["request"]["host"], s.addr.to_string());
    assert!(push["actor"]["name"].is_string());
    assert!(push["source"]["instanceID"].is_string());
    assert!(push["timestamp"].as_str().unwrap().ends_with('Z'));

    // The receiver goes down; the next push stays pending in the outbox.
    r.down.store(true, Ordering::SeqCst);
    let before = r.accepted().len();
    let (img2, digest2) = s.push_image("team/app", "v2", 1).await;
    within(
        Duration::from_secs(10),
        "the new deliveries pending",
        || async { status(&s).await["pending"].as_u64().unwrap() >= 3 },
    )
    .await;
    let refused = r.refused();
    until("a retry refused", || r.refused() > refused).await;

    // berth stops with them pending and starts again on the same data dir; then the
    // receiver comes back.
    let s = s.restart().await;
    r.down.store(false, Ordering::SeqCst);
    let later: BTreeSet<_> = [
        ("push", "team/app", img2.config.digest.as_str()),
        ("push", "team/app", img2.layers[0].digest.as_str()),
        ("push", "team/app", "v2"),
    ]
    .into_iter()
    .map(|(a, r, w)| (a.to_string(), r.to_string(), w.to_string()))
    .collect();
    until("the pending events accepted after the restart", || {
        kinds(&r.accepted()).is_superset(&later)
    })
    .await;
    within(Duration::from_secs(10), "nothing pending", || async {
        status(&s).await["pending"] == 0
    })
    .await;

    // Each event was accepted exactly once, and all are accounted for.
    let accepted = r.accepted();
    for (id, (n, e)) in &accepted {
        assert_eq!(*n, 1, "event {id} accepted {n} times: {e}");
    }
    assert!(accepted.len() >= before + 3);
    assert!(kinds(&accepted).is_superset(&expected.union(&later).cloned().collect()));
    assert!(accepted
        .values()
        .any(|(_, e)| e["target"]["digest"] == digest2.as_str()));
    r.check_requests();

    // The admin API shows the endpoint and its deliveries, never the secret.
    let st = status(&s).await;
    assert_eq!(st["name"], "ci");
    assert_eq!(st["url"], r.url.as_str());
    assert_eq!(st["events"], serde_json::json!(["push", "pull", "delete"]));
    assert_eq!(st["signed"], true);
    assert_eq!(st["delivered"].as_u64().unwrap() as usize, accepted.len());
    assert_eq!(st["failed"], 0);
    assert!(st["last_success_at"].is_string());
    assert_eq!(st["last_status"], 503);
    let text = s
        .get("/api/v1/webhooks")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains(SECRET), "{text}");
    let resp = s
        .get("/api/v1/webhooks/ci/deliveries?state=delivered&limit=2")
        .send()
        .await
        .unwrap();
    let list: Value = expect_status(resp, reqwest::StatusCode::OK)
        .await
        .json()
        .await
        .unwrap();
    let list = list["deliveries"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(
        |d| d["state"] == "delivered" && accepted.contains_key(d["event_id"].as_str().unwrap())
    ));
    let retried = s
        .get("/api/v1/webhooks/ci/deliveries?limit=1000")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(retried["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["attempts"].as_u64().unwrap() > 1));
    let bad = s
        .get("/api/v1/webhooks/ci/deliveries?state=lost")
        .send()
        .await
        .unwrap();
    assert_error(bad, reqwest::StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
    let none = s
        .get("/api/v1/webhooks/nope/deliveries")
        .send()
        .await
        .unwrap();
    assert_error(none, reqwest::StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn the_filter_leaves_out_events_the_endpoint_did_not_ask_for() {
    let r = Receiver::start(0).await;
    let mut h = hook(&r.url);
    h.events = vec!["delete".into()];
    h.repositories = vec!["prod/**".into()];
    let s = TestServer::start_with(|c| c.webhooks = vec![h]).await;
    let (_, d1) = s.push_image("dev/app", "v1", 1).await;
    let (_, d2) = s.push_image("prod/app", "v1", 1).await;
    for (repo, d) in [("dev/app", &d1), ("prod/app", &d2)] {
        let resp = s
            .delete(&format!("/v2/{repo}/manifests/{d}"))
            .send()
            .await
            .unwrap();
        expect_status(resp, reqwest::StatusCode::ACCEPTED).await;
    }
    until("the prod delete accepted", || !r.accepted().is_empty()).await;
    // Give anything else that was (wrongly) queued its chance to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted = r.accepted();
    assert_eq!(
        kinds(&accepted),
        [("delete".into(), "prod/app".into(), d2.clone())].into()
    );
    let st = status(&s).await;
    assert_eq!(
        (st["delivered"].as_u64(), st["pending"].as_u64()),
        (Some(1), Some(0))
    );
}

/// Pushes a one-layer image to `base` with a plain client; returns its blob digests and
/// its manifest digest.
async fn push_plain(client: &reqwest::Client, base: &str, repo: &str, tag: &str) -> Vec<String> {
    let config = format!(r#"{{"nonce":"{}"}}"#, hex::encode(random_bytes(8))).into_bytes();
    let layer = random_bytes(100);
    let mut descs = Vec::new();
    for (media_type, data) in [(OCI_CONFIG, &config), (OCI_LAYER, &layer)] {
        let d = sha256(data);
        let resp = client
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        expect_status(resp, reqwest::StatusCode::CREATED).await;
        descs.push(Desc::new(media_type, data, d));
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descs[0].json(),
        "layers": [descs[1].json()],
    }))
    .unwrap();
    let resp = client
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    expect_status(resp, reqwest::StatusCode::CREATED).await;
    vec![
        descs[0].digest.clone(),
        descs[1].digest.clone(),
        sha256(&manifest),
    ]
}

#[tokio::test]
async fn deliveries_in_the_outbox_survive_a_kill() {
    let r = Receiver::start(0).await;
    r.down.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.yaml");
    std::fs::write(
        &config,
        format!(
            "webhooks:\n- name: ci\n  url: {}\n  events: [push]\n  secret: {SECRET}\n  \
             headers: {{x-test: 'yes'}}\n  timeout: 1s\n  retry_initial: 100ms\n  retry_max: 400ms\n",
            r.url
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let args = [
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    let client = client_with_auth(None);
    let (mut server, base) = spawn_serve(&args);
    let pushed = push_plain(&client, &base, "team/app", "v1").await;
    let pending = || async {
        let v: Value = client
            .get(format!("{base}/api/v1/webhooks"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["webhooks"][0]["pending"].as_u64().unwrap()
    };
    within(
        Duration::from_secs(10),
        "the deliveries in the outbox",
        || async { pending().await == 3 },
    )
    .await;
    until("a delivery refused", || r.refused() > 0).await;
    // Killed: no shutdown, no flush, claims left as they were.
    server.kill().unwrap();
    server.wait().unwrap();
    let (_server, _base) = spawn_serve(&args);
    r.down.store(false, Ordering::SeqCst);
    until("the three pushes accepted", || r.accepted().len() == 3).await;
    let accepted = r.accepted();
    let digests: BTreeSet<String> = accepted
        .values()
        .map(|(n, e)| {
            assert_eq!(*n, 1, "{e}");
            e["target"]["digest"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(digests, pushed.into_iter().collect());
    r.check_requests();
}

#[tokio::test]
async fn a_gc_run_by_the_cli_is_delivered_by_the_server() {
    let r = Receiver::start(0).await;
    let mut h = hook(&r.url);
    h.events = vec!["gc".into()];
    let s = TestServer::start_with(|c| c.webhooks = vec![h]).await;
    // The command queues its event in the outbox as it exits; only the server delivers.
    let config = s.config.data_dir.with_file_name("cli.yaml");
    std::fs::write(
        &config,
        format!(
            "webhooks:\n- name: ci\n  url: {}\n  events: [gc]\n  secret: {SECRET}\n",
            r.url
        ),
    )
    .unwrap();
    let data = s.config.data_dir.to_str().unwrap().to_string();
    let (ok, _, err) = berth_cli(
        &[
            "gc",
            "--data-dir",
            &data,
            "--config",
            config.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{err}");
    until("the GC run delivered", || r.accepted().len() == 1).await;
    let (_, e) = r.accepted().into_values().next().unwrap();
    assert_eq!(e["action"], "gc");
    assert_eq!(e["actor"]["name"], "gc");
    assert_eq!(e["request"]["addr"], "local");
    assert!(
        e["detail"].as_str().unwrap().starts_with("removed 0 blobs"),
        "{e}"
    );
}
