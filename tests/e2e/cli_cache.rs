//! `berth cache ...` on the data dir of a running server mirroring an origin, and the same
//! operations through the admin API (`/api/v1/cache/`).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

const ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

fn cli(args: &[&str], config: &str, data: &str) -> (bool, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", config, "--data-dir", data]);
    berth_cli(&all, None)
}

fn ok(args: &[&str], config: &str, data: &str) -> String {
    let (ok, out, err) = cli(args, config, data);
    assert!(ok, "berth {args:?} failed: {err}\n{out}");
    out
}

// warm pulls every listed image (all its blobs) through the cache, idempotently; ls, stats,
// pin, refresh and purge work on the data dir while the server runs; the admin API answers
// the same. The origin runs in this process, so the runtime needs threads to answer while
// the CLI is waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_commands_beside_a_running_server() {
    let origin = TestServer::start().await;
    let (img, digest) = origin.push_image("library/alpine", "3.20", 2).await;
    origin.push_image("library/redis", "7", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let config = dir.path().join("berth.yaml");
    std::fs::write(
        &config,
        format!(
            "proxy:\n  upstreams:\n    - name: hub\n      url: {}\n      hosts: [docker.io]\n  default_upstream: hub\n",
            origin.base
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (mut server, base) = spawn_serve(&["--config", config, "--data-dir", data]);
    let list = dir.path().join("images.txt");
    std::fs::write(
        &list,
        "# base images\nalpine:3.20\ndocker.io/library/redis:7\n\nhub/library/alpine@".to_string()
            + &digest
            + "\n",
    )
    .unwrap();
    let out = ok(&["cache", "warm", list.to_str().unwrap()], config, data);
    assert!(out.contains("warmed 3 of 3 images"), "{out}");
    let (succeeded, _, err) = cli(&["cache", "warm", "/nonexistent"], config, data);
    assert!(!succeeded && err.contains("cannot read"), "{err}");

    // The warmed blobs are hits for the running server.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client
        .get(format!("{base}/v2/alpine/blobs/{}", img.layers[1].digest))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-berth-cache"), "hit");

    let listed = ok(&["cache", "ls"], config, data);
    assert!(
        listed.contains("hub/library/alpine") && listed.contains("hub/library/redis"),
        "{listed}"
    );
    let stats: Value =
        serde_json::from_str(&ok(&["cache", "stats", "--json"], config, data)).unwrap();
    assert_eq!(stats["upstreams"][0]["name"], "hub");
    assert!(
        stats["upstreams"][0]["misses"].as_u64().unwrap() >= 3,
        "{stats}"
    );
    assert!(stats["bytes"].as_u64().unwrap() > 0);
    let text = ok(&["cache", "stats"], config, data);
    assert!(text.contains("UPSTREAM") && text.contains("hub"), "{text}");

    assert!(
        ok(&["cache", "pin", "redis"], config, data).contains("hub/library/redis is now pinned")
    );
    let refreshed = ok(&["cache", "refresh", "alpine:3.20"], config, data);
    assert!(refreshed.contains("unchanged"), "{refreshed}");
    let dry = ok(&["cache", "purge", "--all", "--dry-run"], config, data);
    assert!(
        dry.contains("would purge hub/library/alpine") && !dry.contains("redis"),
        "{dry}"
    );
    let purged = ok(&["cache", "purge", "alpine:3.20"], config, data);
    assert!(purged.contains("purged 1 manifests"), "{purged}");
    let (ok_, _, err) = cli(&["cache", "purge", "nothing:here"], config, data);
    assert!(!ok_ && err.contains("not cached"), "{err}");

    // The admin API (auth is off here: everyone administers).
    let stats: Value = client
        .get(format!("{base}/api/v1/cache/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["upstreams"][0]["name"], "hub");
    let pins: Value = client
        .get(format!("{base}/api/v1/cache/pins"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pins["pins"], json!(["hub/library/redis"]));
    let resp = client
        .delete(format!("{base}/api/v1/cache/pins/hub/library/redis"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = client
        .post(format!("{base}/api/v1/cache/refresh"))
        .json(&json!({"image": "redis:7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = client
        .post(format!("{base}/api/v1/cache/purge"))
        .json(&json!({"all": true}))
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1, "{v}");
    let resp = client
        .get(format!("{base}/v2/alpine/manifests/3.20"))
        .header("accept", ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&resp, "x-berth-cache"),
        "miss",
        "purged, then fetched again"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}
