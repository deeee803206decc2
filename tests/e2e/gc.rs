//! Online garbage collection: what goes (blobs no manifest references, after the grace,
//! counted from upload or from the loss of the last reference), what stays (everything a
//! manifest references, through indexes and subjects too), dry runs that predict exactly
//! what a run then removes, and GC while clients push and pull.

use std::collections::BTreeSet;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::lifecycle_util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_unreferenced_blobs_and_keeps_referenced_ones() {
    let s = TestServer::start().await;
    let (kept, _) = s.push_image("team/app", "v1", 2).await;
    let orphan = s.push_blob("team/app", &random_bytes(5000)).await;
    let (gone, gone_digest) = s.push_image("team/app", "v2", 2).await;
    // v2's layers are its own; deleting the manifest leaves them unreferenced.
    let resp = s
        .delete(&format!("/v2/team/app/manifests/{gone_digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    // Inside the default grace (1h) nothing goes.
    let data = s.config.data_dir.to_str().unwrap().to_string();
    let (ok, out, err) = berth_cli(&["gc", "--json", "--data-dir", &data], None);
    assert!(ok, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (r["blobs"].as_u64(), r["bytes"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    assert!(s.blob_files().contains(&orphan));

    // Dry run with no grace: exactly the orphan and v2's manifest, config and layers.
    let mut expected: BTreeSet<String> = image_digests(&gone).into_iter().collect();
    expected.insert(orphan.clone());
    let before = s.blob_files();
    let (ok, out, err) = berth_cli(
        &[
            "gc",
            "--dry-run",
            "--grace",
            "0s",
            "--json",
            "--data-dir",
            &data,
        ],
        None,
    );
    assert!(ok, "{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    let planned: BTreeSet<String> = plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(planned, expected);
    assert_eq!(plan["manifests"], 1);
    assert_eq!(s.blob_files(), before, "a dry run removes nothing");

    let (ok, out, err) = berth_cli(
        &["gc", "--grace", "0s", "--json", "--data-dir", &data],
        None,
    );
    assert!(ok, "{err}");
    let done: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(done["blobs"], plan["blobs"]);
    assert_eq!(
        done["bytes"], plan["bytes"],
        "reclaimed what the dry run predicted"
    );
    assert_eq!(done["manifests"], 1);
    let after = s.blob_files();
    assert_eq!(
        before.difference(&after).cloned().collect::<BTreeSet<_>>(),
        expected
    );
    // The running server forgets at once: the orphan is unknown, the kept image whole.
    s.assert_not_found(&format!("/v2/team/app/blobs/{orphan}"), "BLOB_UNKNOWN")
        .await;
    assert_pulls(&s, "team/app", "v1", &kept).await;

    // The human output says what went.
    let (ok, out, _) = berth_cli(&["gc", "--grace", "0s", "--data-dir", &data], None);
    assert!(ok);
    assert!(out.starts_with("removed 0 blobs"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_counts_from_upload_or_from_the_loss_of_the_last_reference() {
    let s = TestServer::start().await;
    let old_orphan = s.push_blob("team/app", &random_bytes(300)).await;
    let new_orphan = s.push_blob("team/app", &random_bytes(300)).await;
    let (img, d) = s.push_image("team/app", "v1", 1).await;
    // Everything was uploaded two hours ago, as far as GC can tell...
    s.sql("UPDATE repo_blobs SET created_at = created_at - 7200")
        .await;
    s.sql("UPDATE blobs SET created_at = created_at - 7200")
        .await;
    s.sql(&format!(
        "UPDATE repo_blobs SET created_at = strftime('%s','now') WHERE digest = '{new_orphan}'"
    ))
    .await;
    // ...but the image loses its last reference only now.
    let resp = s
        .delete(&format!("/v2/team/app/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let r = s.gc(3600).await;
    assert_eq!(r.blobs, 1, "{r:?}");
    let files = s.blob_files();
    assert!(!files.contains(&old_orphan));
    assert!(files.contains(&new_orphan), "uploaded within the grace");
    for d in image_digests(&img) {
        assert!(
            files.contains(&d),
            "{d} lost its reference within the grace"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_what_indexes_and_subjects_reach_and_links_of_other_repositories() {
    let s = TestServer::start().await;
    let amd = s.image("team/multi", 1).await;
    let arm = s.image("team/multi", 1).await;
    for i in [&amd, &arm] {
        s.push_manifest("team/multi", &i.digest(), &i.media_type, &i.manifest)
            .await;
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [amd.desc().json(), arm.desc().json()],
    });
    let index = serde_json::to_vec(&index).unwrap();
    s.push_manifest(
        "team/multi",
        "latest",
        "application/vnd.oci.image.index.v1+json",
        &index,
    )
    .await;
    // A signature: an untagged artifact whose subject is the index.
    let sig_blob = s.push_blob("team/multi", b"signature").await;
    let sig = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": s.push_blob("team/multi", b"{}").await, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sig_blob, "size": 9}],
        "subject": {"mediaType": "application/vnd.oci.image.index.v1+json",
                    "digest": sha256(&index), "size": index.len()},
    });
    let sig = serde_json::to_vec(&sig).unwrap();
    s.push_manifest(
        "team/multi",
        &sha256(&sig),
        "application/vnd.oci.image.manifest.v1+json",
        &sig,
    )
    .await;
    // A layer mounted into another repository that never references it: the link goes,
    // the blob stays for the repository that does.
    let shared = amd.layers[0].digest.clone();
    let resp = s
        .post(&format!(
            "/v2/team/other/blobs/uploads/?mount={shared}&from=team/multi"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    let r = s.gc(0).await;
    assert_eq!((r.blobs, r.links), (0, 1), "{r:?}");
    assert_pulls(&s, "team/multi", &amd.digest(), &amd).await;
    assert_pulls(&s, "team/multi", &arm.digest(), &arm).await;
    let resp = s
        .get(&format!("/v2/team/multi/referrers/{}", sha256(&index)))
        .send()
        .await
        .unwrap();
    let refs: Value = resp.json().await.unwrap();
    assert_eq!(refs["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(s.get_blob("team/multi", &sig_blob).await.status(), 200);
    s.assert_not_found(&format!("/v2/team/other/blobs/{shared}"), "BLOB_UNKNOWN")
        .await;
    assert_eq!(s.get_blob("team/multi", &shared).await.status(), 200);
}

/// A shared pool of layers, so images share blobs as real ones do.
struct Layers(Vec<(Vec<u8>, String)>);

impl Layers {
    fn new(n: usize) -> Layers {
        Layers(
            (0..n)
                .map(|_| {
                    let b = random_bytes(2048);
                    let d = sha256(&b);
                    (b, d)
                })
                .collect(),
        )
    }
}

/// Pushes an image of shared and unique layers as a client does: HEAD each blob, upload the
/// missing ones, then the manifest. A blob the HEAD found stays for the grace from then on,
/// even if nothing references it yet, so the manifest that follows finds it.
async fn push_like_a_client(
    s: &TestServer,
    repo: &str,
    tag: &str,
    pool: &Layers,
    i: usize,
) -> Image {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","n":{i}}}"#).into_bytes();
    let mut blobs = vec![(config.clone(), sha256(&config))];
    blobs.push(pool.0[i % pool.0.len()].clone());
    blobs.push(pool.0[(i * 7 + 3) % pool.0.len()].clone());
    let unique = random_bytes(1000 + i);
    blobs.push((unique.clone(), sha256(&unique)));
    for (data, d) in &blobs {
        if s.head_blob(repo, d).await.status() != StatusCode::OK {
            s.push_blob(repo, data).await;
        }
    }
    let desc = |(data, d): &(Vec<u8>, String), t: &str| Desc::new(t, data, d.clone());
    let config_desc = desc(&blobs[0], OCI_CONFIG);
    let layers: Vec<Desc> = blobs[1..].iter().map(|b| desc(b, OCI_LAYER)).collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc.json(),
        "layers": layers.iter().map(Desc::json).collect::<Vec<_>>(),
    }))
    .unwrap();
    s.push_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
    Image {
        config: config_desc,
        layers,
        manifest,
        media_type: OCI_MANIFEST.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_in_a_loop_while_clients_push_pull_and_delete() {
    const GRACE: u64 = 5;
    let s = Arc::new(TestServer::start().await);
    let pool = Arc::new(Layers::new(12));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc_loop = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                s.gc(GRACE).await;
                runs += 1;
            }
            runs
        })
    };
    let mut clients = Vec::new();
    for c in 0..4 {
        let (s, pool) = (s.clone(), pool.clone());
        clients.push(tokio::spawn(async move {
            let repo = format!("load/c{c}");
            let mut kept = Vec::new();
            for i in 0..60 {
                let tag = format!("t{i}");
                let img = push_like_a_client(&s, &repo, &tag, &pool, c * 100 + i).await;
                assert_pulls(&s, &repo, &tag, &img).await;
                if i % 3 == 0 {
                    // Garbage: delete every third image right away.
                    let resp = s
                        .delete(&format!("/v2/{repo}/manifests/{}", img.digest()))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), StatusCode::ACCEPTED);
                } else {
                    kept.push((tag, img));
                }
            }
            (repo, kept)
        }));
    }
    let mut kept = Vec::new();
    for c in clients {
        kept.push(c.await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = gc_loop.await.unwrap();
    assert!(runs > 1, "GC ran during the load ({runs} runs)");
    // Every tagged image pulls back whole, byte for byte.
    let mut reachable = BTreeSet::new();
    for (repo, images) in &kept {
        for (tag, img) in images {
            assert_pulls(&s, repo, tag, img).await;
            reachable.extend(image_digests(img));
        }
    }
    // After the grace, everything unreferenced is gone and nothing else.
    tokio::time::sleep(std::time::Duration::from_secs(GRACE + 1)).await;
    s.gc(GRACE).await;
    assert_eq!(s.blob_files(), reachable);
}

#[tokio::test]
async fn admin_api_shows_policies_and_runs_gc_and_retention() {
    let s = TestServer::start_with(|c| {
        c.quotas =
            std::collections::BTreeMap::from([("team".to_string(), berth::config::Bytes(1 << 20))]);
    })
    .await;
    s.push_image("team/app", "v1", 1).await;
    let orphan = s.push_blob("team/app", &random_bytes(100)).await;
    let v: Value = s
        .get("/api/v1/lifecycle")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["gc"]["grace"], "1h");
    assert_eq!(v["gc"]["schedule"], "6h");
    assert_eq!(v["quotas"][0]["namespace"], "team");
    assert_eq!(v["quotas"][0]["limit"], 1 << 20);
    assert!(v["quotas"][0]["used"].as_u64().unwrap() > 100);
    let plan: Value = s
        .post("/api/v1/gc")
        .body(r#"{"dry_run": true, "grace": "0s"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plan["items"][0]["digest"], orphan.as_str(), "{plan}");
    let resp = s
        .post("/api/v1/gc")
        .body(r#"{"grace": "0s"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let done: Value = resp.json().await.unwrap();
    assert_eq!(done["blobs"], 1);
    let v: Value = s
        .get("/api/v1/lifecycle")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["gc"]["last"]["blobs"], 1, "{v}");
    let resp = s
        .post("/api/v1/gc")
        .body(r#"{"grace": "soon"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let r: Value = s
        .post("/api/v1/retention")
        .body(r#"{"dry_run": true}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["tags"], json!([]));
    let u: Value = s
        .get("/api/v1/usage?namespace=team")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(u["repositories"][0]["repository"], "team/app");
}
