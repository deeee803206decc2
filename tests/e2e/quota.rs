//! Quotas per namespace: refused at POST when the size is known, at PATCH with a length, and
//! at the latest when the upload completes, with `403 DENIED` naming quota, usage and blob
//! size; the refused session is discarded and nothing of it stays; a blob the namespace holds
//! already costs nothing; concurrent pushes cannot overshoot together.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth::config::Bytes;
use reqwest::StatusCode;

use crate::common::*;

async fn quota_server() -> TestServer {
    TestServer::start_with(|c| {
        c.quotas = BTreeMap::from([("team".to_string(), Bytes(10 * 1024))]);
    })
    .await
}

async fn denied(resp: reqwest::Response) -> String {
    let e = assert_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
    e["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn quota_refuses_at_post_patch_and_completion_leaving_nothing() {
    let s = quota_server().await;
    let first = random_bytes(6000);
    s.push_blob("team/a", &first).await;

    // POST with the whole blob: refused before the body is read.
    let big = random_bytes(6000);
    let resp = s
        .post(&format!(
            "/v2/team/a/blobs/uploads/?digest={}",
            sha256(&big)
        ))
        .header("content-length", big.len().to_string())
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        denied(resp).await,
        "namespace team is over its storage quota: quota 10 KiB, used 5.9 KiB, this blob 5.9 KiB"
    );

    // PATCH with a length: refused, and the session is gone.
    let loc = s.start_upload("team/b").await;
    let resp = s
        .patch(&loc)
        .header("content-type", "application/octet-stream")
        .header("content-length", big.len().to_string())
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert!(denied(resp).await.contains("this blob 5.9 KiB"));
    let resp = s.get(&loc).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;

    // A streamed chunk of unknown length is taken, and the completion refused.
    let loc = s.start_upload("team/b").await;
    let resp = s
        .patch(&loc)
        .header("content-type", "application/octet-stream")
        .body(streamed(vec![big[..3000].to_vec(), big[3000..].to_vec()]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let loc = header(&resp, "location");
    let resp = s
        .put(&with_query(&loc, &format!("digest={}", sha256(&big))))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert!(denied(resp).await.contains("used 5.9 KiB"));
    let resp = s.get(&loc).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    s.assert_not_found(
        &format!("/v2/team/b/blobs/{}", sha256(&big)),
        "BLOB_UNKNOWN",
    )
    .await;
    let storage = s.lifecycle.storage();
    let big_digest: berth::oci::Digest = sha256(&big).parse().unwrap();
    assert_eq!(
        storage.stat(&big_digest).await.unwrap(),
        None,
        "no bytes of a refused push stay"
    );
    assert!(storage.list_uploads().await.unwrap().is_empty());

    // A blob the namespace holds costs nothing, pushed or mounted into another repository.
    s.push_blob("team/c", &first).await;
    let resp = s
        .post(&format!(
            "/v2/team/d/blobs/uploads/?mount={}&from=team/a",
            sha256(&first)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // Another namespace has no quota; a mount from it into the full one is refused.
    s.push_blob("other/x", &big).await;
    let resp = s
        .post(&format!(
            "/v2/team/a/blobs/uploads/?mount={}&from=other/x",
            sha256(&big)
        ))
        .send()
        .await
        .unwrap();
    assert!(denied(resp).await.contains("quota 10 KiB"));
    // Room left is still usable.
    s.push_blob("team/a", &random_bytes(4000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_cannot_overshoot_the_quota() {
    let s = Arc::new(quota_server().await);
    s.push_blob("team/a", &random_bytes(6000)).await;
    // Room for one of these (6000 + 3000 <= 10240 < 6000 + 2 * 3000).
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let data = random_bytes(3000);
            let loc = s.start_upload("team/a").await;
            let resp = s
                .put(&with_query(&loc, &format!("digest={}", sha256(&data))))
                .header("content-type", "application/octet-stream")
                .body(data)
                .send()
                .await
                .unwrap();
            resp.status()
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::FORBIDDEN => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 1);
    let data = s.config.data_dir.to_str().unwrap().to_string();
    let (ok, out, err) = berth_cli(&["du", "team", "--json", "--data-dir", &data], None);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total"], 9000);
}
