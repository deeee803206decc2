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
    pair_with(|_| {}).await
}

/// [`pair`], both replicas with the configuration `modify` makes.
async fn pair_with(
    modify: impl Fn(&mut berth::config::Config),
) -> Option<(TestServer, TestServer)> {
    let db = pg_database()?;
    let storage = s3_storage()?;
    let shared = |c: &mut berth::config::Config| {
        c.database = db.clone();
        c.storage = storage.clone();
        modify(c);
    };
    let a = TestServer::start_with(&shared).await;
    let b = TestServer::start_with(&shared).await;
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

/// `berth migrate --to FILE` moves a registry on the embedded default (filesystem and
/// SQLite) to S3 and PostgreSQL: beside the running server it copies the blobs and leaves
/// the metadata for later; once the server is stopped it copies the rest and the database;
/// replicas on the target then serve every tag, user and token as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_moves_an_embedded_registry_to_s3_and_postgres() {
    let (Some(db), Some(storage)) = (pg_database(), s3_storage()) else {
        return;
    };
    // Outlives the embedded server, whose own temp dir goes when it stops.
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start_with(|c| {
        c.data_dir = dir.path().join("data");
        c.database = berth::config::DatabaseConfig::Embedded;
        c.storage = berth::config::StorageConfig::Filesystem;
        c.auth.mode = berth::config::AuthMode::Basic;
    })
    .await;
    let data_dir = s.config.data_dir.to_str().unwrap().to_string();
    let (ok, _, err) = berth_cli(
        &[
            "user",
            "add",
            "ci",
            "--admin",
            "--password-stdin",
            "--data-dir",
            &data_dir,
        ],
        Some("s3cret-pw\n"),
    );
    assert!(ok, "{err}");
    let auth = basic_auth("ci", "s3cret-pw");
    let c = client_with_auth(Some(&auth));
    s.client = c.clone();
    let (a, _) = s.push_image("mig/app", "v1", 2).await;
    let (b, _) = s.push_image("mig/other", "v2", 2).await;

    let target = berth::config::Config {
        storage,
        database: db,
        data_dir: dir.path().join("replica"),
        ..s.config.clone()
    };
    let file = dir.path().join("target.yaml");
    std::fs::write(&file, target.to_yaml()).unwrap();
    let run = || {
        let (ok, report, err) = migrate_cli(&file, &data_dir);
        assert!(ok, "{report}{err}");
        report
    };
    let live = run();
    assert_eq!(live["blobs_copied"], 8, "{live}");
    assert_eq!(live["metadata_pending"], true, "{live}");
    assert!(live["metadata"].is_null());

    s.stop().await;
    let stopped = run();
    assert_eq!(stopped["blobs_copied"], 0, "{stopped}");
    assert_eq!(stopped["metadata_pending"], false);
    let rows: std::collections::BTreeMap<String, u64> = stopped["metadata"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_u64().unwrap()))
        .collect();
    assert_eq!(rows["repositories"], 2, "{stopped}");
    assert_eq!(rows["tags"], 2);
    assert_eq!(rows["users"], 1);
    // A second copy into the now full database is refused, and changes nothing.
    let (ok, _, err) = migrate_cli(&file, &data_dir);
    assert!(!ok && err.contains("not empty"), "{err}");

    let mut t = TestServer::start_with(|c| *c = target.clone()).await;
    for (repo, img, tag) in [("mig/app", &a, "v1"), ("mig/other", &b, "v2")] {
        let m = c
            .get(t.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header("Accept", &img.media_type)
            .send()
            .await
            .unwrap();
        assert_eq!(m.status(), StatusCode::OK, "{repo}:{tag}");
        assert_eq!(m.bytes().await.unwrap(), img.manifest);
        for d in img.layers.iter().chain([&img.config]) {
            let blob = c
                .get(t.url(&format!("/v2/{repo}/blobs/{}", d.digest)))
                .send()
                .await
                .unwrap();
            assert_eq!(sha256(&blob.bytes().await.unwrap()), d.digest);
        }
    }
    // The user came along; without credentials nothing is served.
    let anon = t.get("/v2/mig/app/manifests/v1").send().await.unwrap();
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    // New rows continue after the copied ones.
    t.client = c.clone();
    t.push_image("mig/new", "v1", 1).await;
    let tags = c.get(t.url("/v2/_catalog")).send().await.unwrap();
    let v: serde_json::Value = tags.json().await.unwrap();
    assert_eq!(
        v["repositories"],
        serde_json::json!(["mig/app", "mig/new", "mig/other"]),
        "{v}"
    );
}

/// Two replicas caching the same upstream: a cold blob pulled through both at once is
/// fetched from the upstream once. The replica that takes the database's fill lease fetches
/// it; the other waits for the stored copy and serves it, verified, from the shared store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cold_blob_pulled_through_two_replicas_is_fetched_once() {
    let (Some(db), Some(storage)) = (pg_database(), s3_storage()) else {
        return;
    };
    let origin = TestServer::start().await;
    let relay = crate::relay::Relay::start(&origin.base).await;
    let url = relay.url.clone();
    let shared = |c: &mut berth::config::Config| {
        c.database = db.clone();
        c.storage = storage.clone();
        c.proxy.upstreams = vec![berth::config::UpstreamConfig::new("hub", &url)];
    };
    let a = TestServer::start_with(shared).await;
    let b = TestServer::start_with(shared).await;
    let data = random_bytes(4 << 20);
    let layer = origin.push_blob("library/big", &data).await;
    // Slow enough that both requests arrive while the first fetch runs.
    relay.set(|k| k.pace = Some(std::time::Duration::from_millis(300)));
    let path = format!("/v2/hub/library/big/blobs/{layer}");
    let (ra, rb) = tokio::join!(a.get(&path).send(), async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        b.get(&path).send().await
    });
    for r in [ra.unwrap(), rb.unwrap()] {
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(sha256(&r.bytes().await.unwrap()), layer);
    }
    assert_eq!(relay.count("GET blob"), 1, "{:?}", relay.log());
}

async fn v2_status(client: &reqwest::Client, s: &TestServer, user: &str, pw: &str) -> StatusCode {
    client
        .get(s.url("/v2/"))
        .basic_auth(user, Some(pw))
        .send()
        .await
        .unwrap()
        .status()
}

// Access control is shared by the replicas: a token revoked through one replica's admin API
// is refused by the other within 1 s, and failed logins are counted across replicas, so a
// guesser alternating between them meets the same limit as on one (and a replica started
// later knows the block).
#[tokio::test]
async fn revokes_and_failed_logins_are_shared_by_the_replicas() {
    let Some((a, b)) = pair_with(|c| {
        c.auth.mode = berth::config::AuthMode::Basic;
        c.auth.throttle.max_failures = 4;
    })
    .await
    else {
        return;
    };
    let db = a.db().await;
    let users = berth::auth::Users::new(db.clone());
    users
        .add(&"root".parse().unwrap(), "root-secret", true)
        .await
        .unwrap();
    users
        .add(&"dev".parse().unwrap(), "dev-secret", false)
        .await
        .unwrap();
    berth::auth::namespaces::Namespaces::new(db.clone(), db.clone())
        .create("team", false)
        .await
        .unwrap();
    let (_, secret) = berth::auth::tokens::AccessTokens::new(db.clone())
        .create("team", "ci", "read", None)
        .await
        .unwrap();
    let local = client_from("127.0.0.1");
    assert_eq!(v2_status(&local, &b, "ci", &secret).await, StatusCode::OK);
    let resp = a
        .delete("/api/v1/namespaces/team/tokens/ci")
        .basic_auth("root", Some("root-secret"))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::NO_CONTENT).await;
    within(
        std::time::Duration::from_secs(1),
        "revoke seen by b",
        || async { v2_status(&local, &b, "ci", &secret).await == StatusCode::UNAUTHORIZED },
    )
    .await;

    // Two wrong passwords on each replica: four for the pair, the limit.
    let guesser = client_from("127.0.0.7");
    for s in [&a, &b, &a, &b] {
        assert_eq!(
            v2_status(&guesser, s, "dev", "guess").await,
            StatusCode::UNAUTHORIZED
        );
    }
    // Each replica applies the other's failures within 200 ms. (Polling with the right
    // password instead would clear the count on a replica not yet blocked: a success does.)
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    for s in [&a, &b] {
        assert_eq!(
            v2_status(&guesser, s, "dev", "dev-secret").await,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    assert_eq!(
        v2_status(&client_from("127.0.0.8"), &b, "dev", "dev-secret").await,
        StatusCode::OK,
        "only that address is blocked"
    );
    let c = TestServer::start_with(|cfg| {
        cfg.database = a.config.database.clone();
        cfg.storage = a.config.storage.clone();
        cfg.auth = a.config.auth.clone();
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        v2_status(&guesser, &c, "dev", "dev-secret").await,
        StatusCode::TOO_MANY_REQUESTS,
        "a replica started later applies the log"
    );
}
