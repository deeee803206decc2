//! Scrub finds a blob altered on disk, quarantines it (answered `404 BLOB_UNKNOWN`, never
//! served) and exits 1; the next push of the blob heals the registry. And GC killed with
//! SIGKILL mid-run loses nothing reachable, and the next run finishes its work.

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;
use crate::lifecycle_util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_quarantines_altered_blobs_and_a_push_heals_them() {
    let s = TestServer::start().await;
    let (img, _) = s.push_image("team/app", "v1", 3).await;
    let bad = img.layers[1].clone();
    let path = s.blob_path(&bad.digest);
    let good = std::fs::read(&path).unwrap();
    let mut altered = good.clone();
    altered[10] ^= 0xff;
    std::fs::write(&path, &altered).unwrap();

    let data = s.config.data_dir.to_str().unwrap().to_string();
    let (ok, out, err) = berth_cli(&["scrub", "--json", "--data-dir", &data], None);
    assert!(!ok, "scrub exits 1 on corruption: {out} {err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["corrupt"], serde_json::json!([bad.digest]));
    assert_eq!(r["checked"], 5, "config, 3 layers, manifest");
    // The running server answers it as missing, at once.
    s.assert_not_found(
        &format!("/v2/team/app/blobs/{}", bad.digest),
        "BLOB_UNKNOWN",
    )
    .await;
    assert!(s
        .config
        .data_dir
        .join("quarantine/sha256")
        .join(bad.digest.trim_start_matches("sha256:"))
        .exists());
    // A second scrub finds nothing more (the quarantined blob is out of service).
    let (ok, out, err) = berth_cli(&["scrub", "--data-dir", &data, "--rate", "50"], None);
    assert!(ok, "{out} {err}");
    assert!(
        out.contains("checked 4 blobs") && out.contains("0 corrupt"),
        "{out}"
    );

    // The next push uploads it again (HEAD said unknown), and the image is whole.
    assert_eq!(
        s.head_blob("team/app", &bad.digest).await.status(),
        StatusCode::NOT_FOUND
    );
    s.push_blob("team/app", &good).await;
    assert_pulls(&s, "team/app", "v1", &img).await;
    let (ok, _, err) = berth_cli(&["scrub", "--data-dir", &data], None);
    assert!(ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_killed_mid_run_loses_nothing_and_the_next_run_finishes() {
    let s = TestServer::start().await;
    let mut kept = Vec::new();
    for i in 0..5 {
        kept.push(s.push_image("team/app", &format!("v{i}"), 3).await.0);
    }
    let mut orphans = Vec::new();
    for _ in 0..600 {
        orphans.push(s.push_blob("team/junk", &random_bytes(256)).await);
    }
    let data = s.config.data_dir.to_str().unwrap().to_string();
    // Paced so that the kill lands in the middle of the run.
    let mut gc = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["gc", "--grace", "0s", "--data-dir", &data])
        .env("BERTH_GC__MAX_DELETES_PER_SEC", "200")
        .env("BERTH_GC__BATCH", "20")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    gc.kill().unwrap(); // SIGKILL
    gc.wait().unwrap();
    let left = s.blob_files();
    let removed = orphans.iter().filter(|d| !left.contains(*d)).count();
    assert!(
        removed > 0 && removed < orphans.len(),
        "the kill landed mid-run ({removed} of {} removed)",
        orphans.len()
    );
    for (i, img) in kept.iter().enumerate() {
        assert_pulls(&s, "team/app", &format!("v{i}"), img).await;
    }
    // Every orphan is either gone or still whole and served: nothing half-deleted is visible.
    for d in &orphans {
        let resp = s.get_blob("team/junk", d).await;
        if left.contains(d) && resp.status() == StatusCode::OK {
            assert_eq!(sha256(&resp.bytes().await.unwrap()), *d);
        } else {
            assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        }
    }
    // The next run waits out the dead run's lease and finishes the job.
    let (ok, out, err) = berth_cli(
        &["gc", "--grace", "0s", "--json", "--data-dir", &data],
        None,
    );
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert!(
        r["blobs"].as_u64().unwrap() as usize >= orphans.len() - removed,
        "{r}"
    );
    let reachable: std::collections::BTreeSet<String> =
        kept.iter().flat_map(image_digests).collect();
    assert_eq!(s.blob_files(), reachable);
    for (i, img) in kept.iter().enumerate() {
        assert_pulls(&s, "team/app", &format!("v{i}"), img).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_cached_blob_is_fetched_again() {
    let m = crate::proxy::mirror(|_| {}).await;
    let (img, _) = m.origin.push_image("library/alpine", "3.20", 1).await;
    let layer = &img.layers[0].digest;
    let resp = m.s.get_blob("hub/library/alpine", layer).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), *layer);
    let path = m.s.blob_path(layer);
    // The fill stores the blob as the response ends.
    within(Duration::from_secs(10), "blob cached", || async {
        path.exists()
    })
    .await;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&path, bytes).unwrap();

    let r =
        m.s.lifecycle
            .scrub(Default::default(), &|_| {})
            .await
            .unwrap();
    assert_eq!(r.corrupt, std::slice::from_ref(layer));
    let fetched = m.relay.count("GET blob");
    let resp = m.s.get_blob("hub/library/alpine", layer).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        sha256(&resp.bytes().await.unwrap()),
        *layer,
        "fetched again, verified"
    );
    assert_eq!(m.relay.count("GET blob"), fetched + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_runs_gc_on_its_own() {
    let s = TestServer::start_with(|c| {
        c.gc.schedule = berth::config::Schedule(Some(berth::config::Span(Duration::from_secs(1))));
        c.gc.grace = berth::config::Span(Duration::ZERO);
    })
    .await;
    let (img, _) = s.push_image("team/app", "v1", 1).await;
    let orphan = s.push_blob("team/app", &random_bytes(100)).await;
    within(Duration::from_secs(15), "scheduled GC", || async {
        !s.blob_files().contains(&orphan)
    })
    .await;
    assert_pulls(&s, "team/app", "v1", &img).await;
}
