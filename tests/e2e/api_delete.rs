//! Content management: deleting tags and manifests (end-9) and blobs (end-10), twice, when
//! unknown, and with deletion disabled.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn tags(s: &TestServer, repo: &str) -> Value {
    let v = s.tags_list(repo).await;
    if v["tags"].is_null() {
        json!([])
    } else {
        v["tags"].clone()
    }
}

async fn status_of(s: &TestServer, path: &str) -> StatusCode {
    s.get(path).send().await.unwrap().status()
}

// spec: "Deleting Manifests" (end-9): 202; afterwards the digest "and any tag pointing to that
// digest will return a 404"; deleting again is 404 MANIFEST_UNKNOWN.
#[tokio::test]
async fn delete_manifest_by_digest_removes_it_and_its_tags() {
    let s = TestServer::start().await;
    let (img, d) = s.push_image("del", "a", 1).await;
    s.push_manifest("del", "b", OCI_MANIFEST, &img.manifest)
        .await;
    let (_, other) = s.push_image("del", "c", 1).await;
    let by_digest = format!("/v2/del/manifests/{d}");
    // Pull everything first, so that any cache has to forget it.
    for reference in [d.as_str(), "a", "b"] {
        let path = format!("/v2/del/manifests/{reference}");
        assert_eq!(status_of(&s, &path).await, StatusCode::OK);
    }
    assert_eq!(
        status_of(&s, &format!("/v2/del/blobs/{d}")).await,
        StatusCode::OK
    );
    let resp = s.delete(&by_digest).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    for reference in [d.as_str(), "a", "b"] {
        let path = format!("/v2/del/manifests/{reference}");
        s.assert_not_found(&path, "MANIFEST_UNKNOWN").await;
    }
    // Nor are the manifest's bytes served as a blob of the repository any more.
    let resp = s.get_blob("del", &d).await;
    assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    assert_eq!(tags(&s, "del").await, json!(["c"]));
    assert_eq!(
        status_of(&s, &format!("/v2/del/manifests/{other}")).await,
        StatusCode::OK
    );
    let resp = s.delete(&by_digest).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    // It can be pushed again, and is then back.
    s.push_manifest("del", "a", OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(status_of(&s, &by_digest).await, StatusCode::OK);
    assert_eq!(tags(&s, "del").await, json!(["a", "c"]));
}

// spec: "Deleting Manifests" with a sha512 digest.
#[tokio::test]
async fn delete_manifest_by_sha512_digest() {
    let s = TestServer::start().await;
    let img = s.image("del512", 1).await;
    let d = sha512(&img.manifest);
    let by_digest = format!("/v2/del512/manifests/{d}");
    let resp = s
        .put_manifest_at(&format!("{by_digest}?tag=t"), OCI_MANIFEST, &img.manifest)
        .await;
    expect_status(resp, StatusCode::CREATED).await;
    let resp = s.delete(&by_digest).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(status_of(&s, &by_digest).await, StatusCode::NOT_FOUND);
    assert_eq!(
        status_of(&s, "/v2/del512/manifests/t").await,
        StatusCode::NOT_FOUND
    );
}

// spec: "Deleting tags" (end-9): 202; "Once deleted, a GET to /v2/<name>/manifests/<tag> will
// return a 404"; the manifest and its other tags remain.
#[tokio::test]
async fn delete_tag_untags_only() {
    let s = TestServer::start().await;
    let (img, d) = s.push_image("untag", "keep", 1).await;
    s.push_manifest("untag", "drop", OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(
        status_of(&s, "/v2/untag/manifests/drop").await,
        StatusCode::OK
    );
    let resp = s.delete("/v2/untag/manifests/drop").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = s.get("/v2/untag/manifests/drop").send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    assert_eq!(
        status_of(&s, "/v2/untag/manifests/keep").await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(&s, &format!("/v2/untag/manifests/{d}")).await,
        StatusCode::OK
    );
    assert_eq!(tags(&s, "untag").await, json!(["keep"]));
    // Deleting the same tag twice.
    let resp = s.delete("/v2/untag/manifests/drop").send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    // The last tag goes too; the manifest stays reachable by digest.
    let resp = s.delete("/v2/untag/manifests/keep").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(tags(&s, "untag").await, json!([]));
    assert_eq!(
        status_of(&s, &format!("/v2/untag/manifests/{d}")).await,
        StatusCode::OK
    );
}

// spec: "Deleting Manifests": "If the repository does not exist, the response MUST return 404
// Not Found"; an unknown tag or digest in a known repository is 404 too.
#[tokio::test]
async fn deleting_unknown_manifests_is_404() {
    let s = TestServer::start().await;
    s.push_image("known", "latest", 1).await;
    let d = sha256(b"never");
    for path in [
        format!("/v2/known/manifests/{d}"),
        "/v2/known/manifests/nope".to_string(),
        format!("/v2/unknown/manifests/{d}"),
        "/v2/unknown/manifests/latest".to_string(),
    ] {
        let resp = s.delete(&path).send().await.unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        let code = v["errors"][0]["code"].as_str().unwrap();
        assert!(
            code == "MANIFEST_UNKNOWN" || code == "NAME_UNKNOWN",
            "{path}: {code}"
        );
    }
}

// spec: "Endpoints" end-9/end-10 allow 404 and 400: a malformed reference or digest names
// content that cannot exist, so it is 404 (as Distribution answers); a malformed repository
// name is 400 NAME_INVALID (code-8). The stored image is untouched.
#[tokio::test]
async fn deleting_with_malformed_references_is_404() {
    let s = TestServer::start().await;
    s.push_image("bad", "latest", 1).await;
    let resp = s
        .delete("/v2/bad/manifests/sha256:1234")
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    let resp = s.delete("/v2/bad/manifests/-tag").send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    let resp = s.delete("/v2/bad/blobs/sha256:1234").send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    let resp = s.get("/v2/bad/manifests/latest").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = s.delete("/v2/BAD/manifests/latest").send().await.unwrap();
    assert_error(resp, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
}

// spec: "Deleting Blobs" (end-10): 202; "If the blob is not found, a 404 Not Found code MUST be
// returned" - afterwards, a second time, and for unknown blobs. Other repositories holding the
// same blob keep it.
#[tokio::test]
async fn delete_blob() {
    let s = TestServer::start().await;
    let data = random_bytes(256);
    let d = s.push_blob("blobdel", &data).await;
    s.push_blob("keeper", &data).await;
    let blob = format!("/v2/blobdel/blobs/{d}");
    assert_eq!(status_of(&s, &blob).await, StatusCode::OK);
    let resp = s.delete(&blob).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    s.assert_not_found(&blob, "BLOB_UNKNOWN").await;
    let resp = s.delete(&blob).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    // The other repository still serves it.
    let resp = expect_status(s.get_blob("keeper", &d).await, StatusCode::OK).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());
    // Unknown blob, unknown repository.
    for path in [
        format!("/v2/blobdel/blobs/{}", sha256(b"never")),
        format!("/v2/nowhere/blobs/{d}"),
    ] {
        let resp = s.delete(&path).send().await.unwrap();
        assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    }
    // Pushing it again brings it back.
    s.push_blob("blobdel", &data).await;
    assert_eq!(status_of(&s, &blob).await, StatusCode::OK);
}

// spec: "Deleting Manifests" + "Listing Referrers": a deleted referrer is no longer listed.
#[tokio::test]
async fn deleted_referrers_leave_the_referrers_list() {
    let s = TestServer::start().await;
    let (img, subject) = s.push_image("refdel", "latest", 1).await;
    let empty = s.push_blob("refdel", b"{}").await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sig.v1",
        "config": { "mediaType": OCI_EMPTY, "digest": empty, "size": 2 },
        "layers": [],
        "subject": img.desc().json(),
    }))
    .unwrap();
    let rd = sha256(&body);
    s.push_manifest("refdel", &rd, OCI_MANIFEST, &body).await;
    let list = |s: &TestServer| {
        let url = s.url(&format!("/v2/refdel/referrers/{subject}"));
        let c = s.client.clone();
        async move {
            let v: Value = c.get(url).send().await.unwrap().json().await.unwrap();
            v["manifests"].as_array().unwrap().len()
        }
    };
    assert_eq!(list(&s).await, 1);
    let resp = s
        .delete(&format!("/v2/refdel/manifests/{rd}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(list(&s).await, 0);
}

// spec: "Content Management": "Registries MAY implement deletion or they MAY disable it";
// disabled, deleting tags, manifests and blobs "MUST respond with either a 400 Bad Request or
// a 405 Method Not Allowed" (here 405 UNSUPPORTED, code-13), and nothing is deleted.
#[tokio::test]
async fn deletes_are_405_when_disabled() {
    let s = TestServer::start_with(|c| c.delete.enabled = false).await;
    let (img, d) = s.push_image("locked", "latest", 1).await;
    let layer = img.layers[0].digest.clone();
    let never = sha256(b"never");
    for path in [
        format!("/v2/locked/manifests/{d}"),
        "/v2/locked/manifests/latest".to_string(),
        format!("/v2/locked/blobs/{layer}"),
        format!("/v2/locked/manifests/{never}"),
        "/v2/locked/manifests/unknown-tag".to_string(),
        format!("/v2/locked/blobs/{never}"),
        format!("/v2/nowhere/manifests/{never}"),
    ] {
        let resp = s.delete(&path).send().await.unwrap();
        assert_error(resp, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    }
    assert_eq!(
        status_of(&s, &format!("/v2/locked/manifests/{d}")).await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(&s, "/v2/locked/manifests/latest").await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(&s, &format!("/v2/locked/blobs/{layer}")).await,
        StatusCode::OK
    );
    assert_eq!(tags(&s, "locked").await, json!(["latest"]));
}

// spec: "Cancel a blob upload" (end-14) is not content management: a client aborting an upload
// still gets its 204 when deletion of content is disabled.
#[tokio::test]
async fn upload_cancel_works_when_deletes_are_disabled() {
    let s = TestServer::start_with(|c| c.delete.enabled = false).await;
    let loc = s.start_upload("locked").await;
    let resp = s.delete(&loc).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = s.get(&loc).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
}
