//! Operations: `/metrics` present and moving after real pushes and pulls, `/healthz`,
//! `/readyz` flipping when the storage or the database stops answering, and `X-Request-Id`
//! on every response. (The exposition text is also parsed by the Python Prometheus client's
//! OpenMetrics parser in tests/clients/ops.sh.)

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection;

use crate::common::*;

/// Every sample of the exposition text: `name{labels}` (labels as written) -> value.
/// Checked line by line against the OpenMetrics grammar's sample shape.
fn samples(text: &str) -> BTreeMap<String, f64> {
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample {line:?}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in {line:?}"));
        assert!(
            out.insert(key.to_string(), v).is_none(),
            "duplicate sample {key}"
        );
    }
    out
}

async fn scrape(s: &TestServer) -> BTreeMap<String, f64> {
    let resp = s.get("/metrics").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(header(&resp, "content-type").starts_with("application/openmetrics-text"));
    samples(&resp.text().await.unwrap())
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_after_pushes_and_pulls() {
    let s = TestServer::start().await;
    let before = scrape(&s).await;
    assert_eq!(get(&before, "registry_blobs"), 0.0);
    assert!(
        before.contains_key("process_resident_memory_bytes"),
        "{before:?}"
    );
    assert!(get(&before, "process_start_time_seconds") > 1.6e9);
    assert!(get(&before, "registry_filesystem_size_bytes") > 0.0);

    let (img, digest) = s.push_image("team/app", "v1", 2).await;
    for _ in 0..3 {
        let resp = s
            .get("/v2/team/app/manifests/v1")
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.bytes().await.unwrap();
    }
    let missing = s.get("/v2/team/app/manifests/nope").send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let blob = s.get_blob("team/app", &img.layers[0].digest).await;
    let layer_len = blob.bytes().await.unwrap().len();

    let after = scrape(&s).await;
    let pulls_ok = r#"container_registry_pulls_total{status="success"}"#;
    let pulls_failed = r#"container_registry_pulls_total{status="failure"}"#;
    assert_eq!(get(&after, pulls_ok) - get(&before, pulls_ok), 3.0);
    assert_eq!(get(&after, pulls_failed) - get(&before, pulls_failed), 1.0);
    assert_eq!(
        get(
            &after,
            r#"container_registry_pushes_total{status="success"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            &after,
            r#"registry_http_requests_total{method="GET",route="manifest",status="200"}"#
        ),
        3.0
    );
    assert_eq!(
        get(
            &after,
            r#"registry_http_requests_total{method="PUT",route="manifest",status="201"}"#
        ),
        1.0
    );
    let uploads: f64 = after
        .iter()
        .filter(|(k, _)| {
            k.starts_with("registry_http_requests_total{")
                && k.contains(r#"route="blob_upload"#)
                && k.contains(r#"status="201""#)
        })
        .map(|(_, v)| v)
        .sum();
    assert!(uploads >= 3.0, "{after:?}");
    assert_eq!(
        get(
            &after,
            r#"registry_request_duration_seconds_count{method="GET",route="manifest"}"#
        ),
        4.0
    );
    assert!(
        after.contains_key(
            r#"registry_request_duration_seconds_bucket{le="0.001",method="GET",route="manifest"}"#
        ) || after.keys().any(
            |k| k.starts_with("registry_request_duration_seconds_bucket{")
                && k.contains(r#"route="manifest""#)
        )
    );
    // Three blobs and the manifest stored; bytes in and out counted.
    assert_eq!(get(&after, "registry_blobs"), 4.0);
    let stored: u64 = img.layers.iter().map(|l| l.size).sum::<u64>()
        + img.config.size
        + img.manifest.len() as u64;
    assert_eq!(get(&after, "registry_storage_bytes"), stored as f64);
    assert!(get(&after, "registry_http_received_bytes_total") >= stored as f64);
    assert!(
        get(&after, "registry_http_sent_bytes_total")
            - get(&before, "registry_http_sent_bytes_total")
            >= (layer_len + 3 * img.manifest.len()) as f64
    );
    assert_eq!(get(&after, "registry_uploads_in_progress"), 0.0);
    // No path ever becomes a label.
    assert!(after
        .keys()
        .all(|k| !k.contains("team/app") && !k.contains(&digest)));

    // GC runs are counted, with what they freed.
    s.push_blob("team/app", &random_bytes(1000)).await;
    s.gc(0).await;
    let gc = scrape(&s).await;
    assert_eq!(get(&gc, r#"registry_gc_runs_total{status="success"}"#), 1.0);
    assert_eq!(get(&gc, "registry_gc_freed_bytes_total"), 1000.0);
    assert!(get(&gc, "registry_gc_last_success_timestamp_seconds") > 1.6e9);
}

#[tokio::test]
async fn auth_failures_are_counted_by_reason() {
    let s = TestServer::start_with(|c| c.auth.mode = berth::config::AuthMode::Basic).await;
    let (ok, _, err) = berth_cli(
        &[
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--data-dir",
            s.config.data_dir.to_str().unwrap(),
        ],
        Some("secret-password\n"),
    );
    assert!(ok, "{err}");
    let anonymous = s.get("/v2/team/app/tags/list").send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong = s
        .get("/v2/team/app/tags/list")
        .header("authorization", basic_auth("alice", "wrong-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let m = scrape(&s).await;
    assert_eq!(
        get(
            &m,
            r#"container_registry_auth_failures_total{reason="missing_credentials"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            r#"container_registry_auth_failures_total{reason="bad_credentials"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let s = TestServer::start().await;
    let a = s.get("/v2/").send().await.unwrap();
    let b = s.get("/v2/nope/manifests/x").send().await.unwrap();
    let (ida, idb) = (header(&a, "x-request-id"), header(&b, "x-request-id"));
    assert_eq!(ida.len(), 32, "{ida}");
    assert_ne!(ida, idb);
    // A sane incoming id is kept; anything else is replaced.
    let kept = s
        .get("/v2/")
        .header("x-request-id", "trace-4bf92f3577b34da6")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&kept, "x-request-id"), "trace-4bf92f3577b34da6");
    let replaced = s
        .get("/v2/")
        .header("x-request-id", "bad id\"")
        .send()
        .await
        .unwrap();
    assert_ne!(header(&replaced, "x-request-id"), "bad id\"");
    assert!(
        s.log().contains("trace-4bf92f3577b34da6"),
        "the access log line has the id"
    );
}

async fn readiness(s: &TestServer) -> (StatusCode, Value) {
    let resp = s.get("/readyz").send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_flips_when_storage_or_database_stop_answering() {
    let s = TestServer::start().await;
    let live = s.get("/healthz").send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let (status, v) = readiness(&s).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["checks"]["database"]["ok"], true);
    assert_eq!(v["checks"]["storage"]["ok"], true);

    // Storage: its scratch directory replaced by a file, so nothing can be written.
    let tmp = s.config.data_dir.join("tmp");
    std::fs::remove_dir_all(&tmp).unwrap();
    std::fs::write(&tmp, b"not a directory").unwrap();
    let (status, v) = readiness(&s).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["status"], "unready");
    assert_eq!(v["checks"]["storage"]["ok"], false);
    assert!(
        v["checks"]["storage"]["error"].as_str().unwrap().len() > 3,
        "{v}"
    );
    assert_eq!(v["checks"]["database"]["ok"], true);
    std::fs::remove_file(&tmp).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    assert_eq!(readiness(&s).await.0, StatusCode::OK);

    // Database: another process holds its write lock past the check's timeout.
    let url = format!("sqlite://{}", s.config.data_dir.join("berth.db").display());
    let mut locker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut locker)
        .await
        .unwrap();
    let (status, v) = readiness(&s).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["checks"]["database"]["ok"], false, "{v}");
    assert_eq!(v["checks"]["storage"]["ok"], true, "{v}");
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    locker.close().await.unwrap();
    within(
        Duration::from_secs(5),
        "readiness after the lock",
        || async { readiness(&s).await.0 == StatusCode::OK },
    )
    .await;

    // `berth health` asks the same, for scripts.
    let url = s.url("/readyz");
    let (ok, out, err) = berth_cli(&["health", "--url", &url], None);
    assert!(ok, "{out}{err}");
    assert!(out.contains("\"ready\""), "{out}");
    let (ok, _, err) = berth_cli(
        &[
            "health",
            "--url",
            "http://127.0.0.1:9/readyz",
            "--timeout",
            "1s",
        ],
        None,
    );
    assert!(!ok);
    assert!(err.contains("does not answer"), "{err}");
}
