//! Several replicas on one PostgreSQL database and one S3 bucket (Garage), as behind a load
//! balancer: every acknowledged write is visible on the other replica at the next request,
//! an upload session continues on any replica, GC on one loses nothing pushed through the
//! other, and a replica killed mid-push leaves the client able to finish on the other.
//! Distribution spec, "Pushing a blob in chunks" and "Pulling manifests": the client may
//! send each request to any replica.

use reqwest::StatusCode;

use crate::common::*;

/// Two replicas sharing a fresh database and bucket prefix; `None` when the test command
/// started no PostgreSQL or Garage.
async fn pair() -> Option<(TestServer, TestServer)> {
    let db = pg_database()?;
    let storage = s3_storage()?;
    let shared = |c: &mut berth::config::Config| {
        c.database = db.clone();
        c.storage = storage.clone();
    };
    let a = TestServer::start_with(shared).await;
    let b = TestServer::start_with(shared).await;
    Some((a, b))
}

#[tokio::test]
async fn a_chunked_upload_started_on_one_replica_finishes_on_the_other() {
    let Some((a, b)) = pair().await else { return };
    let data = random_bytes(3 * 1024 * 1024 + 17);
    let digest = sha256(&data);
    let location = a.start_upload("team/app").await;
    assert!(
        location.starts_with('/'),
        "a path, not tied to a replica: {location}"
    );
    let first = &data[..1024 * 1024];
    let resp = a
        .client
        .patch(a.url(&location))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("0-{}", first.len() - 1))
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    let resp = expect_status(resp, StatusCode::ACCEPTED).await;
    let location = header(&resp, "Location");

    // The other replica knows the session and how much of it was acknowledged.
    let status = b.client.get(b.url(&location)).send().await.unwrap();
    let status = expect_status(status, StatusCode::NO_CONTENT).await;
    assert_eq!(header(&status, "Range"), format!("0-{}", first.len() - 1));

    let resp = b
        .client
        .patch(b.url(&location))
        .header("Content-Type", "application/octet-stream")
        .header(
            "Content-Range",
            format!("{}-{}", first.len(), data.len() - 1),
        )
        .body(data[first.len()..].to_vec())
        .send()
        .await
        .unwrap();
    let resp = expect_status(resp, StatusCode::ACCEPTED).await;
    let location = header(&resp, "Location");
    let resp = b
        .client
        .put(b.url(&with_query(&location, &format!("digest={digest}"))))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::CREATED).await;

    for s in [&a, &b] {
        let got = s.get_blob("team/app", &digest).await;
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.bytes().await.unwrap().as_ref(), &data[..]);
    }
}

#[tokio::test]
async fn writes_on_one_replica_are_seen_by_the_other_at_the_next_request() {
    let Some((a, b)) = pair().await else { return };
    let (one, d1) = a.push_image("team/app", "latest", 2).await;
    // Read on b first, so that anything b might keep in memory is filled.
    let resp = b.get("/v2/team/app/manifests/latest").send().await.unwrap();
    let resp = expect_status(resp, StatusCode::OK).await;
    assert_eq!(header(&resp, "Docker-Content-Digest"), d1);
    for l in &one.layers {
        assert_eq!(
            b.head_blob("team/app", &l.digest).await.status(),
            StatusCode::OK
        );
    }

    // The tag moves on b: a answers the new digest at once, with no wait in between.
    let (_, d2) = b.push_image("team/app", "latest", 1).await;
    let resp = a.get("/v2/team/app/manifests/latest").send().await.unwrap();
    assert_eq!(header(&resp, "Docker-Content-Digest"), d2);

    // Deleted on a: gone on b at once.
    let resp = a
        .delete(&format!("/v2/team/app/manifests/{d2}"))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::ACCEPTED).await;
    b.assert_not_found("/v2/team/app/manifests/latest", "MANIFEST_UNKNOWN")
        .await;
    b.assert_not_found(&format!("/v2/team/app/manifests/{d2}"), "MANIFEST_UNKNOWN")
        .await;
    let tags = b.tags_list("team/app").await;
    assert_eq!(tags["tags"], serde_json::json!([]), "{tags}");
}

#[tokio::test]
async fn gc_on_one_replica_while_the_other_takes_pushes_loses_nothing() {
    let Some((a, b)) = pair().await else { return };
    // Content GC may take: an image whose tag is deleted.
    let (_, old) = b.push_image("team/old", "v1", 2).await;
    let resp = b
        .delete(&format!("/v2/team/old/manifests/{old}"))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::ACCEPTED).await;
    // GC keeps what is younger than its grace (a push's blobs before its manifest): past it
    // for the old image, within it for every push below.
    const GRACE: u64 = 2;
    tokio::time::sleep(std::time::Duration::from_secs(GRACE + 1)).await;

    let pushing = async {
        let mut pushed = Vec::new();
        for i in 0..12 {
            pushed.push(b.push_image("team/app", &format!("t{i}"), 2).await);
        }
        pushed
    };
    let collecting = async {
        let mut freed = 0;
        for _ in 0..6 {
            freed += a.gc(GRACE).await.blobs;
        }
        freed
    };
    let (pushed, freed) = tokio::join!(pushing, collecting);
    assert!(
        freed >= 4,
        "the old image's manifest, config and layers go: {freed}"
    );
    a.gc(GRACE).await;

    for (img, digest) in &pushed {
        for s in [&a, &b] {
            let resp = s
                .get(&format!("/v2/team/app/manifests/{digest}"))
                .header("Accept", &img.media_type)
                .send()
                .await
                .unwrap();
            expect_status(resp, StatusCode::OK).await;
            for blob in img.layers.iter().chain([&img.config]) {
                let got = s.get_blob("team/app", &blob.digest).await;
                assert_eq!(got.status(), StatusCode::OK, "{}", blob.digest);
                assert_eq!(sha256(&got.bytes().await.unwrap()), blob.digest);
            }
        }
    }
}

#[tokio::test]
async fn a_replica_killed_mid_push_leaves_the_push_to_finish_on_the_other() {
    let Some((b, _)) = pair().await else { return };
    // Replica a is a process of its own, killed with SIGKILL halfway through an upload.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = b.config.clone();
    cfg.data_dir = dir.path().join("data");
    let file = dir.path().join("berth.yaml");
    std::fs::write(&file, serde_json::to_string(&cfg).unwrap()).unwrap();
    let (mut a, base) = spawn_serve(&["--config", file.to_str().unwrap()]);

    let img = b.image("team/app", 2).await;
    let data = random_bytes(2 * 1024 * 1024);
    let digest = sha256(&data);
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{base}/v2/team/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let resp = expect_status(resp, StatusCode::ACCEPTED).await;
    let location = header(&resp, "Location");
    let half = data.len() / 2;
    let resp = client
        .patch(format!("{base}{location}"))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("0-{}", half - 1))
        .body(data[..half].to_vec())
        .send()
        .await
        .unwrap();
    let resp = expect_status(resp, StatusCode::ACCEPTED).await;
    let location = header(&resp, "Location");
    a.kill().unwrap();
    a.wait().unwrap();

    // The client retries on the surviving replica from the last acknowledged byte.
    let status = b.client.get(b.url(&location)).send().await.unwrap();
    let status = expect_status(status, StatusCode::NO_CONTENT).await;
    assert_eq!(header(&status, "Range"), format!("0-{}", half - 1));
    let resp = b
        .client
        .put(b.url(&with_query(&location, &format!("digest={digest}"))))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("{}-{}", half, data.len() - 1))
        .body(data[half..].to_vec())
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::CREATED).await;
    let d = b
        .push_manifest("team/app", "v1", &img.media_type, &img.manifest)
        .await;
    assert_eq!(d, img.digest());
    let got = b.get_blob("team/app", &digest).await;
    assert_eq!(sha256(&got.bytes().await.unwrap()), digest);
    for blob in img.layers.iter().chain([&img.config]) {
        let got = b.get_blob("team/app", &blob.digest).await;
        assert_eq!(sha256(&got.bytes().await.unwrap()), blob.digest);
    }
}
