//! Blobs in an object store. In an S3 server (Garage, started by scripts/test.sh): chunked and
//! monolithic pushes
//! (spec: "Pushing a blob in chunks", "Pushing a blob monolithically"), ranged pulls
//! ("Pulling blobs"), one object per blob holding its raw bytes under the prefix, redirects
//! to presigned URLs, GC removing objects, restart, and readiness following the store. In the
//! Azure emulator (Azurite): the same driver code through `driver: azure`.

use std::sync::Arc;
use std::time::Duration;

use berth::config::StorageConfig;
use berth::lifecycle::GcOptions;
use futures::TryStreamExt;
use object_store::ObjectStore;
use reqwest::StatusCode;

use crate::common::*;

/// A server on S3 storage as `modify` adjusts it, and the store and prefix it writes to;
/// `None` when no S3 server is configured (outside CI).
async fn s3_server(
    modify: impl FnOnce(&mut berth::config::S3Config),
) -> Option<(TestServer, Arc<dyn ObjectStore>, String)> {
    let StorageConfig::S3 { mut s3 } = s3_storage()? else {
        unreachable!()
    };
    modify(&mut s3);
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(std::env::var("TEST_S3_ENDPOINT").unwrap())
        .with_allow_http(true)
        .with_region("garage")
        .with_bucket_name(&s3.bucket)
        .with_access_key_id(s3.access_key_id.clone().unwrap())
        .with_secret_access_key(s3.secret_access_key.clone().unwrap())
        .build()
        .unwrap();
    let prefix = s3.prefix.clone();
    let s = TestServer::start_with(|c| c.storage = StorageConfig::S3 { s3 }).await;
    Some((s, Arc::new(store), prefix))
}

fn blob_key(prefix: &str, digest: &str) -> object_store::path::Path {
    let hex = digest.strip_prefix("sha256:").unwrap();
    object_store::path::Path::from(format!("{prefix}/blobs/sha256/{}/{hex}", &hex[..2]))
}

async fn object(store: &dyn ObjectStore, key: &object_store::path::Path) -> Option<Vec<u8>> {
    match store.get(key).await {
        Ok(got) => Some(got.bytes().await.unwrap().to_vec()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("{key}: {e}"),
    }
}

/// Every object under the prefix, by key.
async fn keys(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    let p = object_store::path::Path::from(prefix);
    let listed: Vec<_> = store.list(Some(&p)).try_collect().await.unwrap();
    listed.into_iter().map(|m| m.location.to_string()).collect()
}

#[tokio::test]
async fn chunked_and_monolithic_pushes_land_as_one_object_per_blob() {
    let Some((s, store, prefix)) = s3_server(|_| {}).await else {
        return;
    };
    // Chunks of 1 MiB, below S3's 5 MiB minimum part size, as oras sends them.
    let data = random_bytes((2 << 20) + 300_000);
    let digest = sha256(&data);
    let loc = s.start_upload("s3/chunked").await;
    let mut at = 0usize;
    let mut loc = loc;
    for size in [1 << 20, 1 << 20, 300_000] {
        let resp = s
            .client
            .patch(s.url(&loc))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{at}-{}", at + size - 1))
            .body(data[at..at + size].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "PATCH at {at}");
        at += size;
        assert_eq!(header(&resp, "range"), format!("0-{}", at - 1));
        loc = header(&resp, "location");
        // The session's status answers from the shared store and database.
        let status = s.client.get(s.url(&loc)).send().await.unwrap();
        assert_eq!(status.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&status, "range"), format!("0-{}", at - 1));
    }
    let sep = if loc.contains('?') { '&' } else { '?' };
    let resp = s
        .client
        .put(s.url(&format!("{loc}{sep}digest={digest}")))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        object(&*store, &blob_key(&prefix, &digest))
            .await
            .as_deref(),
        Some(&data[..]),
        "the blob is one object holding its raw bytes"
    );
    // No chunk objects stay behind once the upload is committed.
    assert!(
        !keys(&*store, &prefix)
            .await
            .iter()
            .any(|k| k.contains("/uploads/")),
        "uploads are cleaned up"
    );

    let (img, _) = s.push_image("s3/chunked", "v1", 2).await;
    let resp = s.get_blob("s3/chunked", &digest).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), &data[..]);
    let part = s
        .get(&format!("/v2/s3/chunked/blobs/{digest}"))
        .header("range", "bytes=1048570-1048580")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.unwrap(), &data[1048570..=1048580]);
    let m = s.get("/v2/s3/chunked/manifests/v1").send().await.unwrap();
    assert_eq!(m.bytes().await.unwrap(), img.manifest);
    // The data dir holds metadata only: no blob bytes.
    assert!(!s.config.data_dir.join("blobs").exists());
}

#[tokio::test]
async fn restart_and_gc_work_on_objects() {
    let Some((s, store, prefix)) = s3_server(|_| {}).await else {
        return;
    };
    let (img, _) = s.push_image("s3/gc", "kept", 1).await;
    let orphan = random_bytes(5000);
    let orphan_digest = s.push_blob("s3/gc", &orphan).await;
    let s = s.restart().await;
    let resp = s.get_blob("s3/gc", &img.layers[0].digest).await;
    assert_eq!(resp.status(), StatusCode::OK, "blobs outlive a restart");
    let report = s
        .lifecycle
        .gc(GcOptions {
            dry_run: false,
            grace: Some(Duration::ZERO),
        })
        .await
        .unwrap();
    assert!(report.blobs >= 1, "{report:?}");
    assert_eq!(
        object(&*store, &blob_key(&prefix, &orphan_digest)).await,
        None,
        "the unreferenced blob's object is deleted"
    );
    for d in [&img.config.digest, &img.layers[0].digest] {
        assert!(
            object(&*store, &blob_key(&prefix, d)).await.is_some(),
            "referenced {d} is kept"
        );
    }
    let m = s.get("/v2/s3/gc/manifests/kept").send().await.unwrap();
    assert_eq!(m.status(), StatusCode::OK);
}

#[tokio::test]
async fn downloads_redirect_to_presigned_urls() {
    let Some((s, _store, _)) = s3_server(|c| c.redirect = true).await else {
        return;
    };
    let data = random_bytes(70_000);
    let digest = s.push_blob("s3/redirect", &data).await;
    let resp = s.get_blob("s3/redirect", &digest).await;
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    let location = header(&resp, "location");
    assert!(location.contains("X-Amz-Signature"), "{location}");
    // The client follows it to the store, without berth's credentials.
    let direct = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(&location)
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), StatusCode::OK);
    assert_eq!(direct.bytes().await.unwrap(), &data[..]);
    // HEAD still answers from berth, with the size.
    let head = s.head_blob("s3/redirect", &digest).await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "content-length"), data.len().to_string());
    // An unknown blob is still a 404 from berth, never a redirect.
    s.assert_not_found(
        &format!("/v2/s3/redirect/blobs/{}", sha256(b"absent")),
        "BLOB_UNKNOWN",
    )
    .await;
}

async fn metrics_text(s: &TestServer) -> String {
    s.get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Forwards TCP connections to `target` until the returned handle is aborted.
async fn forwarder(
    target: std::net::SocketAddr,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            conns.spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_object_store() {
    let Some(endpoint) = started("TEST_S3_ENDPOINT") else {
        return;
    };
    let target = url::Url::parse(&endpoint)
        .unwrap()
        .socket_addrs(|| None)
        .unwrap()[0];
    let (addr, task) = forwarder(target).await;
    let Some((s, _, _)) = s3_server(|c| c.endpoint = Some(format!("http://{addr}"))).await else {
        return;
    };
    let ready = s.get("/readyz").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let text = metrics_text(&s).await;
    assert!(
        text.contains("registry_backend_up{backend=\"storage\"} 1"),
        "{text}"
    );
    task.abort();
    let _ = task.await;
    let resp = s.get("/readyz").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["checks"]["storage"]["ok"], false, "{v}");
    assert_eq!(v["checks"]["database"]["ok"], true, "{v}");
    // Metrics say the same, for the BerthBackendDown alert.
    let text = metrics_text(&s).await;
    assert!(
        text.contains("registry_backend_up{backend=\"storage\"} 0"),
        "{text}"
    );
    assert!(text.contains("registry_backend_up{backend=\"database\"} 1"));
}

#[tokio::test]
async fn the_azure_driver_pushes_pulls_and_collects() {
    let Some(storage) = azure_storage() else {
        return;
    };
    let s = TestServer::start_with(|c| c.storage = storage).await;
    let (img, _) = s.push_image("azure/app", "v1", 2).await;
    let data = random_bytes(3 << 20);
    let digest = s.push_blob("azure/app", &data).await;
    let part = s
        .get(&format!("/v2/azure/app/blobs/{digest}"))
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.unwrap(), &data[100..200]);
    let s = s.restart().await;
    let m = s.get("/v2/azure/app/manifests/v1").send().await.unwrap();
    assert_eq!(m.bytes().await.unwrap(), img.manifest);
    let layer = s.get_blob("azure/app", &img.layers[1].digest).await;
    assert_eq!(layer.status(), StatusCode::OK);
    let report = s
        .lifecycle
        .gc(GcOptions {
            dry_run: false,
            grace: Some(Duration::ZERO),
        })
        .await
        .unwrap();
    assert_eq!(report.blobs, 1, "the unreferenced blob goes: {report:?}");
    s.assert_not_found(&format!("/v2/azure/app/blobs/{digest}"), "BLOB_UNKNOWN")
        .await;
    let ready = s.get("/readyz").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

/// `berth migrate --to FILE` copies every blob of a registry on the embedded default into
/// S3, beside the running server; a second run copies nothing; the registry then restarts on
/// S3 with the same database and serves everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_moves_every_blob_into_the_object_store() {
    let Some(storage) = s3_storage() else {
        return;
    };
    let mut s = TestServer::start().await;
    let (a, _) = s.push_image("mig/app", "v1", 2).await;
    let (b, _) = s.push_image("mig/other", "v2", 1).await;
    let data_dir = s.config.data_dir.to_str().unwrap().to_string();
    let target = berth::config::Config {
        storage: storage.clone(),
        ..s.config.clone()
    };
    let file = s.config.data_dir.with_file_name("target.yaml");
    std::fs::write(&file, target.to_yaml()).unwrap();
    let run = || {
        let (ok, report, err) = migrate_cli(&file, &data_dir);
        assert!(ok, "{report}{err}");
        report
    };
    let first = run();
    // Two configs, three layers and two manifests.
    assert_eq!(first["blobs_copied"], 7, "{first}");
    assert_eq!(first["failed"].as_array().unwrap().len(), 0);
    let second = run();
    assert_eq!(second["blobs_copied"], 0, "{second}");
    assert_eq!(second["blobs_present"], 7);

    s.config.storage = storage;
    let s = s.restart().await;
    for (repo, img, tag) in [("mig/app", &a, "v1"), ("mig/other", &b, "v2")] {
        let m = s
            .get(&format!("/v2/{repo}/manifests/{tag}"))
            .send()
            .await
            .unwrap();
        assert_eq!(m.bytes().await.unwrap(), img.manifest);
        for d in img.layers.iter().chain([&img.config]) {
            let blob = s.get_blob(repo, &d.digest).await;
            assert_eq!(blob.status(), StatusCode::OK, "{repo} {}", d.digest);
            assert_eq!(sha256(&blob.bytes().await.unwrap()), d.digest);
        }
    }
}
