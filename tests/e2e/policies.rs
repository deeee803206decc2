//! Lifecycle policies changed while the server runs: through the admin API
//! (`/api/v1/policies/{kind}`) and through `berth policy` from another process. A kind set
//! in the database replaces the config's until reset, applies at once in the process that
//! set it and within a poll in the others, survives a restart, and is checked as the
//! config is (a bad glob, regex or size is a `400` naming its place).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

async fn policy(s: &TestServer, kind: &str) -> Value {
    let (status, v) = send_json(s.get(&format!("/api/v1/policies/{kind}"))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

/// Pushes a new one-layer image to `repo:tag`; returns the status of its manifest PUT.
async fn push_to(s: &TestServer, repo: &str, tag: &str) -> (StatusCode, Value) {
    let img = s.image(repo, 1).await;
    let resp = s.put_manifest(repo, tag, OCI_MANIFEST, &img.manifest).await;
    let status = resp.status();
    let body = resp.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn immutable_tags_set_through_the_api_apply_at_once_until_reset() {
    let s = TestServer::start().await;
    s.push_image("prod/app", "v1", 1).await;
    let v = policy(&s, "immutable_tags").await;
    assert_eq!(v["value"], json!([]));
    assert_eq!(v["source"]["from"], "config");

    let rule = json!([{"repositories": "prod/**", "tags": "v*"}]);
    let (status, v) = send_json(s.put("/api/v1/policies/immutable_tags").json(&rule)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["value"], rule);
    assert_eq!(v["source"]["from"], "database");
    assert_eq!(v["source"]["updated_by"], "admin-api");

    // In force for the very next push: v1 cannot move, latest can.
    let (status, err) = push_to(&s, "prod/app", "v1").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(err["errors"][0]["code"], "DENIED");
    let msg = err["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains(r#"repositories "prod/**" tags "v*""#), "{msg}");
    assert_eq!(
        push_to(&s, "prod/app", "latest").await.0,
        StatusCode::CREATED
    );

    // The lifecycle view shows it, and where it came from.
    let (_, l) = send_json(s.get("/api/v1/lifecycle")).await;
    assert_eq!(l["immutable_tags"], rule, "{l}");
    assert_eq!(l["sources"]["immutable_tags"]["from"], "database", "{l}");

    // It survives a restart, and a reset brings back the config's (none).
    let s = s.restart().await;
    assert_eq!(push_to(&s, "prod/app", "v1").await.0, StatusCode::FORBIDDEN);
    let (status, v) = send_json(s.delete("/api/v1/policies/immutable_tags")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["source"]["from"], "config");
    assert_eq!(push_to(&s, "prod/app", "v1").await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn quotas_set_through_the_api_refuse_pushes_and_replace_the_configs() {
    let s = TestServer::start_with(|c| {
        c.quotas = [("team".to_string(), berth::config::Bytes(1 << 30))].into();
    })
    .await;
    s.push_blob("team/app", &random_bytes(6000)).await;
    let (status, v) = send_json(
        s.put("/api/v1/policies/quotas")
            .json(&json!({"team": "10KiB"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["value"], json!({"team": "10KiB"}));
    let big = random_bytes(6000);
    let resp = s
        .post(&format!(
            "/v2/team/app/blobs/uploads/?digest={}",
            sha256(&big)
        ))
        .header("content-length", big.len().to_string())
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let e = assert_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
    assert_eq!(
        e["message"],
        "namespace team is over its storage quota: quota 10 KiB, used 5.9 KiB, this blob 5.9 KiB"
    );
    let (_, l) = send_json(s.get("/api/v1/lifecycle")).await;
    assert_eq!(l["quotas"][0]["limit"], 10 * 1024, "{l}");
    // Reset: the config's 1 GiB applies again and the push goes through.
    send_json(s.delete("/api/v1/policies/quotas")).await;
    s.push_blob("team/app", &big).await;
}

#[tokio::test]
async fn bad_policies_are_refused_with_their_place_named() {
    let s = TestServer::start().await;
    let cases = [
        (
            "retention",
            json!([{"repositories": "ci/**", "keep_tags": "(", "keep_last": 1}]),
            "retention[0].keep_tags",
        ),
        (
            "retention",
            json!([{"repositories": "ci/**"}]),
            "retention[0]: give keep_last",
        ),
        (
            "retention",
            json!([{"repositories": "ci/**", "keep_last": 1, "keep_forever": true}]),
            "unknown field `keep_forever`",
        ),
        (
            "immutable_tags",
            json!([{"repositories": "prod/***", "tags": "v*"}]),
            "immutable_tags[0].repositories",
        ),
        ("quotas", json!({"team": "lots"}), "invalid size \"lots\""),
        ("quotas", json!({"a/b": "1GiB"}), "quotas.a/b"),
    ];
    for (kind, body, says) in cases {
        let (status, v) = send_json(s.put(&format!("/api/v1/policies/{kind}")).json(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind} {body}: {v}");
        let msg = v["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{kind} {body}: {msg}");
    }
    // Nothing was stored.
    for kind in ["retention", "immutable_tags", "quotas"] {
        assert_eq!(policy(&s, kind).await["source"]["from"], "config");
    }
    let (status, v) = send_json(s.put("/api/v1/policies/everything").json(&json!([]))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("unknown policy \"everything\""));
    let resp = s
        .put("/api/v1/policies/retention")
        .body("keep everything")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

// `berth policy set` from another process: the running server applies it within its poll,
// and retention (run by the server) follows the new rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_a_policy_that_the_running_server_applies() {
    let s = TestServer::start().await;
    for i in 1..=3 {
        s.push_image("ci/app", &format!("b{i}"), 1).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("retention.yaml");
    std::fs::write(
        &file,
        "retention:\n  - repositories: \"ci/**\"\n    keep_last: 1\n",
    )
    .unwrap();
    let config = s.config_file();
    let (ok, out, err) = berth_cli(
        &[
            "policy",
            "set",
            "retention",
            file.to_str().unwrap(),
            "--config",
            &config,
        ],
        None,
    );
    assert!(ok, "{out}{err}");
    within(
        Duration::from_secs(1),
        "a policy set by the CLI",
        || async { policy(&s, "retention").await["source"]["from"] == "database" },
    )
    .await;
    let applied = policy(&s, "retention").await;
    assert_eq!(
        applied["value"],
        json!([{"repositories": "ci/**", "keep_last": 1}])
    );
    assert!(applied["source"]["updated_by"]
        .as_str()
        .unwrap()
        .starts_with("cli:"));
    let (status, plan) =
        send_json(s.post("/api/v1/retention").json(&json!({"dry_run": true}))).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["tags"].as_array().unwrap().len(), 2, "{plan}");

    // `policy show` reads the same from the database; `reset` takes it back.
    let (ok, out, err) = berth_cli(&["policy", "show", "--json", "--config", &config], None);
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["retention"]["value"], applied["value"]);
    let (ok, _, err) = berth_cli(&["policy", "reset", "retention", "--config", &config], None);
    assert!(ok, "{err}");
    within(
        Duration::from_secs(1),
        "a policy reset by the CLI",
        || async { policy(&s, "retention").await["source"]["from"] == "config" },
    )
    .await;
    let (ok, _, err) = berth_cli(
        &["policy", "set", "quotas", "-", "--config", &config],
        Some("team: lots\n"),
    );
    assert!(!ok);
    assert!(err.contains("invalid size \"lots\""), "{err}");
}
