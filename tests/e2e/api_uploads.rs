//! Blob uploads: monolithic (end-4a + end-6, end-4b), chunked (end-5, end-6, end-13), cancel
//! (end-14) and cross-repository mounts (end-11), with every malformed request.

use crate::common::*;
use proptest::prelude::*;
use reqwest::StatusCode;

/// PATCHes one chunk with a Content-Range and checks the 202 and its Range; returns the
/// response.
async fn patch_chunk_accepted(
    s: &TestServer,
    loc: &str,
    start: usize,
    chunk: &[u8],
) -> reqwest::Response {
    let end = start + chunk.len() - 1;
    let resp = s
        .patch(loc)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{start}-{end}"))
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap();
    let resp = expect_status(resp, StatusCode::ACCEPTED).await;
    assert_eq!(header(&resp, "range"), format!("0-{end}"));
    resp
}

/// [`patch_chunk_accepted`], returning the new Location.
async fn patch_chunk(s: &TestServer, loc: &str, start: usize, chunk: &[u8]) -> String {
    let resp = patch_chunk_accepted(s, loc, start, chunk).await;
    header(&resp, "location")
}

/// PATCHes `body` with a Content-Range (and no Content-Type); returns the raw response.
async fn patch_range(
    s: &TestServer,
    loc: &str,
    range: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    s.patch(loc)
        .header("content-range", range)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// GETs the upload status (end-13) and returns its Range header after checking the 204.
async fn status_range(s: &TestServer, loc: &str) -> String {
    let resp = s.get(loc).send().await.unwrap();
    let resp = expect_status(resp, StatusCode::NO_CONTENT).await;
    assert_eq!(header(&resp, "location"), loc);
    header(&resp, "range")
}

/// The closing `PUT <loc>?digest=<digest>`, not yet sent.
fn closing_put(s: &TestServer, loc: &str, digest: &str) -> reqwest::RequestBuilder {
    s.put(&with_query(loc, &format!("digest={digest}")))
}

/// Sends the closing PUT without a body.
async fn close(s: &TestServer, loc: &str, digest: &str) -> reqwest::Response {
    closing_put(s, loc, digest).send().await.unwrap()
}

/// Sends the closing PUT carrying `body` (the final chunk, or the whole blob), with a
/// Content-Range when `range` is given.
async fn close_with(
    s: &TestServer,
    loc: &str,
    digest: &str,
    range: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = closing_put(s, loc, digest);
    if let Some(range) = range {
        req = req.header("content-range", range);
    }
    req.body(body).send().await.unwrap()
}

/// Checks the 416 BLOB_UPLOAD_INVALID of a chunk that does not continue the session.
async fn assert_out_of_order(resp: reqwest::Response) {
    assert_error(
        resp,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "BLOB_UPLOAD_INVALID",
    )
    .await;
}

async fn assert_blob(s: &TestServer, repo: &str, digest: &str, data: &[u8]) {
    let resp = expect_status(s.get_blob(repo, digest).await, StatusCode::OK).await;
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert!(
        resp.bytes().await.unwrap().as_ref() == data,
        "blob bytes differ"
    );
}

/// Checks an upload's completing response (201 naming `digest`), then that `repo` serves the
/// blob with exactly `data`.
async fn assert_uploaded(
    s: &TestServer,
    resp: reqwest::Response,
    repo: &str,
    digest: &str,
    data: &[u8],
) {
    let resp = expect_status(resp, StatusCode::CREATED).await;
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_blob(s, repo, digest, data).await;
}

async fn assert_no_blob(s: &TestServer, repo: &str, digest: &str) {
    let resp = s.get_blob(repo, digest).await;
    assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}

fn uuid_of(location: &str) -> &str {
    location
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
}

// spec: "POST then PUT" (end-4a): 202 with a Location holding a UUID; "Pushing a blob in
// chunks": the POST response SHOULD carry OCI-Chunk-Min-Length.
#[tokio::test]
async fn post_opens_a_session() {
    let s = TestServer::start().await;
    let resp = s
        .post("/v2/up/load/blobs/uploads/")
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let loc = header(&resp, "location");
    assert!(loc.starts_with("/v2/up/load/blobs/uploads/"), "{loc}");
    let id = uuid_of(&loc);
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(id.matches('-').count(), 4, "{id}");
    assert_eq!(header(&resp, "docker-upload-uuid"), id);
    assert_eq!(header(&resp, "range"), "0-0");
    assert_eq!(header(&resp, "oci-chunk-min-length"), "5242880");
    // Two sessions never share an id.
    let other = s.start_upload("up/load").await;
    assert_ne!(uuid_of(&other), id);
    // The advertised minimum follows the configuration.
    let s2 = TestServer::start_with(|c| c.uploads.chunk_min_length = 1234).await;
    let resp = s2.post("/v2/x/blobs/uploads/").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&resp, "oci-chunk-min-length"), "1234");
}

// spec: "POST then PUT" (end-4a, end-6): the PUT with the whole blob gives 201 with a pullable
// Location; the session is then closed.
#[tokio::test]
async fn post_then_put_uploads_a_blob() {
    let s = TestServer::start().await;
    let data = random_bytes(5000);
    let d = sha256(&data);
    let loc = s.start_upload("mono").await;
    let resp = closing_put(&s, &loc, &d)
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let resp = expect_status(resp, StatusCode::CREATED).await;
    assert_eq!(header(&resp, "docker-content-digest"), d);
    let blob_loc = header(&resp, "location");
    assert_eq!(blob_loc, format!("/v2/mono/blobs/{d}"));
    let pulled = s.get(&blob_loc).send().await.unwrap();
    let pulled = expect_status(pulled, StatusCode::OK).await;
    assert_eq!(pulled.bytes().await.unwrap().as_ref(), data.as_slice());
    let resp = s.get(&loc).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
}

// spec: "POST then PUT" (end-6) with a zero-length blob and no body on the PUT.
#[tokio::test]
async fn empty_blob_through_a_session() {
    let s = TestServer::start().await;
    let d = sha256(b"");
    let loc = s.start_upload("empty").await;
    let resp = close(&s, &loc, &d).await;
    expect_status(resp, StatusCode::CREATED).await;
    assert_blob(&s, "empty", &d, b"").await;
}

// spec: "Single POST" (end-4b): 201 with a pullable Location.
#[tokio::test]
async fn single_post_uploads_a_blob() {
    let s = TestServer::start().await;
    let data = random_bytes(2048);
    let d = sha256(&data);
    let resp = s
        .post(&format!("/v2/single/blobs/uploads/?digest={d}"))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let resp = expect_status(resp, StatusCode::CREATED).await;
    assert_eq!(header(&resp, "location"), format!("/v2/single/blobs/{d}"));
    assert_eq!(header(&resp, "docker-content-digest"), d);
    assert_blob(&s, "single", &d, &data).await;
    // Pushing the same content again is fine.
    s.push_blob("single", &data).await;
    // A percent-encoded digest (as Go clients send it) and a path without the trailing slash.
    let data = random_bytes(99);
    let d = sha256(&data);
    let resp = s
        .post(&format!(
            "/v2/single/blobs/uploads?digest={}",
            d.replace(':', "%3A")
        ))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_uploaded(&s, resp, "single", &d, &data).await;
}

// spec: "Single POST": "the <digest> MUST match the blob's digest"; code-4 DIGEST_INVALID.
#[tokio::test]
async fn single_post_with_wrong_digest_is_400_digest_invalid() {
    let s = TestServer::start().await;
    let data = random_bytes(100);
    let wrong = sha256(b"something else");
    let resp = s
        .post(&format!("/v2/single/blobs/uploads/?digest={wrong}"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    assert_no_blob(&s, "single", &wrong).await;
    assert_no_blob(&s, "single", &sha256(&data)).await;
}

// spec: "Single POST": the request carries `Content-Length: <length>`; without one the upload
// is refused (code-10 SIZE_INVALID) and nothing is stored.
#[tokio::test]
async fn single_post_without_content_length_is_400_size_invalid() {
    let s = TestServer::start().await;
    let data = random_bytes(300);
    let d = sha256(&data);
    let resp = s
        .post(&format!("/v2/single/blobs/uploads/?digest={d}"))
        .body(streamed(vec![data[..100].to_vec(), data[100..].to_vec()]))
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::BAD_REQUEST, "SIZE_INVALID").await;
    assert_no_blob(&s, "single", &d).await;
}

// spec: "Pushing blobs": an invalid digest or unsupported algorithm SHOULD be 400 (code-4).
#[tokio::test]
async fn malformed_digest_parameters_are_400_digest_invalid() {
    let s = TestServer::start().await;
    for d in [
        "sha256:zz".to_string(),
        format!("md5:{}", "a".repeat(32)),
        "nocolon".to_string(),
    ] {
        let resp = s
            .post(&format!("/v2/p/blobs/uploads/?digest={d}"))
            .body(b"abc".to_vec())
            .send()
            .await
            .unwrap();
        assert_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
        let loc = s.start_upload("p").await;
        let resp = close_with(&s, &loc, &d, None, b"abc".to_vec()).await;
        assert_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    }
    // spec: end-4c: an unsupported digest-algorithm is refused too.
    let resp = s
        .post("/v2/p/blobs/uploads/?digest-algorithm=md5")
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

// spec: "Pushing a blob in chunks" (end-4c): `?digest-algorithm=sha512` opens a session that
// completes under a sha512 digest.
#[tokio::test]
async fn sha512_chunked_upload() {
    let s = TestServer::start().await;
    let data = random_bytes(3000);
    let d = sha512(&data);
    let resp = s
        .post("/v2/five/blobs/uploads/?digest-algorithm=sha512")
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    let resp = expect_status(resp, StatusCode::ACCEPTED).await;
    let loc = header(&resp, "location");
    let loc = patch_chunk(&s, &loc, 0, &data[..1000]).await;
    let loc = patch_chunk(&s, &loc, 1000, &data[1000..]).await;
    let resp = close(&s, &loc, &d).await;
    assert_uploaded(&s, resp, "five", &d, &data).await;
}

// spec: "Pushing a blob in chunks" (end-5, end-6, end-13): PATCHes with Content-Range are 202
// with Location and `Range: 0-<end>`; GET reports 204 with the same; PUT ?digest closes with
// 201.
#[tokio::test]
async fn chunked_upload_with_content_range() {
    let s = TestServer::start().await;
    let data = random_bytes(10_000);
    let d = sha256(&data);
    let mut loc = s.start_upload("chunky").await;
    let id = uuid_of(&loc).to_string();
    for (start, end) in [(0, 2999), (3000, 6999), (7000, 9999)] {
        let resp = patch_chunk_accepted(&s, &loc, start, &data[start..=end]).await;
        assert_eq!(header(&resp, "docker-upload-uuid"), id);
        loc = header(&resp, "location");
        assert_eq!(uuid_of(&loc), id);
        assert_eq!(status_range(&s, &loc).await, format!("0-{end}"));
    }
    let resp = close(&s, &loc, &d).await;
    let resp = expect_status(resp, StatusCode::CREATED).await;
    assert_eq!(header(&resp, "location"), format!("/v2/chunky/blobs/{d}"));
    assert_blob(&s, "chunky", &d, &data).await;
}

// spec: "Pushing a blob in chunks" (end-13): a new session's status is 204 with Location and
// Docker-Upload-UUID.
#[tokio::test]
async fn status_of_a_fresh_session() {
    let s = TestServer::start().await;
    let loc = s.start_upload("fresh").await;
    let resp = s.get(&loc).send().await.unwrap();
    let resp = expect_status(resp, StatusCode::NO_CONTENT).await;
    assert_eq!(header(&resp, "location"), loc);
    assert_eq!(header(&resp, "range"), "0-0");
    assert_eq!(header(&resp, "docker-upload-uuid"), uuid_of(&loc));
    assert!(resp.bytes().await.unwrap().is_empty());
}

// spec: "Pushing a blob in chunks" (end-5): chunks streamed without Content-Range (as Docker
// clients do) append in order.
#[tokio::test]
async fn chunked_upload_without_content_range() {
    let s = TestServer::start().await;
    let data = random_bytes(9000);
    let d = sha256(&data);
    let mut loc = s.start_upload("stream").await;
    for (start, end) in [(0usize, 4000usize), (4000, 9000)] {
        let resp = s
            .patch(&loc)
            .body(streamed(vec![
                data[start..start + 10].to_vec(),
                data[start + 10..end].to_vec(),
            ]))
            .send()
            .await
            .unwrap();
        let resp = expect_status(resp, StatusCode::ACCEPTED).await;
        assert_eq!(header(&resp, "range"), format!("0-{}", end - 1));
        loc = header(&resp, "location");
    }
    expect_status(close(&s, &loc, &d).await, StatusCode::CREATED).await;
    assert_blob(&s, "stream", &d, &data).await;
}

// spec: "Pushing a blob in chunks" (end-6): "The final chunk MAY be uploaded ... in the closing
// PUT request", with its Content-Range and Content-Length.
#[tokio::test]
async fn final_chunk_in_the_closing_put() {
    let s = TestServer::start().await;
    let data = random_bytes(6000);
    let d = sha256(&data);
    let loc = s.start_upload("final").await;
    let loc = patch_chunk(&s, &loc, 0, &data[..4000]).await;
    let resp = closing_put(&s, &loc, &d)
        .header("content-type", "application/octet-stream")
        .header("content-range", "4000-5999")
        .body(data[4000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_uploaded(&s, resp, "final", &d, &data).await;
}

// spec: "Pushing a blob in chunks" (end-5): "If a chunk is uploaded out of order, the registry
// MUST respond with a 416"; a GET then gives the valid offset and location. The session
// survives and accepts the right chunk.
#[tokio::test]
async fn out_of_order_chunks_are_416_and_recoverable() {
    let s = TestServer::start().await;
    let data = random_bytes(30);
    let d = sha256(&data);
    let loc = s.start_upload("ooo").await;
    // The first chunk MUST begin with 0.
    let resp = patch_range(&s, &loc, "5-9", data[5..10].to_vec()).await;
    assert_eq!(header(&resp, "location"), loc);
    assert_out_of_order(resp).await;
    let loc = patch_chunk(&s, &loc, 0, &data[..10]).await;
    for (start, end) in [(20, 29), (5, 14), (0, 9), (11, 20)] {
        let range = format!("{start}-{end}");
        let resp = patch_range(&s, &loc, &range, data[start..=end].to_vec()).await;
        assert_eq!(header(&resp, "location"), loc, "{range}");
        assert_eq!(header(&resp, "range"), "0-9", "{range}");
        assert_out_of_order(resp).await;
        assert_eq!(status_range(&s, &loc).await, "0-9");
    }
    let loc = patch_chunk(&s, &loc, 10, &data[10..]).await;
    expect_status(close(&s, &loc, &d).await, StatusCode::CREATED).await;
    assert_blob(&s, "ooo", &d, &data).await;
}

// spec: "Pushing a blob in chunks" (end-6): "If the final chunk is uploaded out of order, the
// registry MUST respond with a 416".
#[tokio::test]
async fn out_of_order_final_chunk_is_416() {
    let s = TestServer::start().await;
    let data = random_bytes(20);
    let d = sha256(&data);
    let loc = s.start_upload("ooo").await;
    let loc = patch_chunk(&s, &loc, 0, &data[..10]).await;
    let resp = close_with(&s, &loc, &d, Some("12-19"), data[12..].to_vec()).await;
    assert_eq!(header(&resp, "range"), "0-9");
    assert_out_of_order(resp).await;
    assert_no_blob(&s, "ooo", &d).await;
    // The right final chunk still completes the session.
    let resp = close_with(&s, &loc, &d, Some("10-19"), data[10..].to_vec()).await;
    expect_status(resp, StatusCode::CREATED).await;
    assert_blob(&s, "ooo", &d, &data).await;
}

// spec: "Pushing a blob in chunks": Content-Range "MUST match ^[0-9]+-[0-9]+$" and be
// inclusive; anything else is a 400 BLOB_UPLOAD_INVALID (code-2) that changes nothing.
#[tokio::test]
async fn malformed_content_range_is_400_blob_upload_invalid() {
    let s = TestServer::start().await;
    let loc = s.start_upload("cr").await;
    let loc = patch_chunk(&s, &loc, 0, b"0123456789").await;
    for cr in [
        "abc",
        "10-",
        "-19",
        "19-10",
        "bytes=10-19",
        "10-19-20",
        "10 - 19",
        "x10-19",
        "",
    ] {
        let resp = patch_range(&s, &loc, cr, b"abcdefghij".to_vec()).await;
        assert_error(resp, StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID").await;
        assert_eq!(status_range(&s, &loc).await, "0-9", "{cr:?}");
    }
}

// spec: "Pushing a blob in chunks": Content-Length is the chunk's length and Content-Range its
// inclusive range; a chunk longer or shorter than its range is refused (code-10 SIZE_INVALID)
// and the session keeps its acknowledged length.
#[tokio::test]
async fn chunk_length_disagreeing_with_content_range_is_400_size_invalid() {
    let s = TestServer::start().await;
    let data = random_bytes(20);
    let d = sha256(&data);
    let loc = s.start_upload("len").await;
    let loc = patch_chunk(&s, &loc, 0, &data[..10]).await;
    // With Content-Length: shorter, then longer, than the range.
    for (cr, body) in [("10-19", &data[10..15]), ("10-14", &data[10..20])] {
        let resp = patch_range(&s, &loc, cr, body.to_vec()).await;
        assert_error(resp, StatusCode::BAD_REQUEST, "SIZE_INVALID").await;
        assert_eq!(status_range(&s, &loc).await, "0-9");
    }
    // Streamed (no Content-Length): shorter, then longer, than the range.
    let short = vec![data[10..13].to_vec(), data[13..15].to_vec()];
    let long = vec![
        data[10..15].to_vec(),
        data[15..20].to_vec(),
        b"extra".to_vec(),
    ];
    for body in [short, long] {
        let resp = patch_range(&s, &loc, "10-19", streamed(body)).await;
        assert_error(resp, StatusCode::BAD_REQUEST, "SIZE_INVALID").await;
        assert_eq!(status_range(&s, &loc).await, "0-9");
    }
    // Nothing of the refused chunks leaked into the blob.
    let loc = patch_chunk(&s, &loc, 10, &data[10..]).await;
    expect_status(close(&s, &loc, &d).await, StatusCode::CREATED).await;
    assert_blob(&s, "len", &d, &data).await;
}

// spec: "Pushing a blob in chunks" (end-6): the closing PUT MUST carry the whole blob's
// digest; a mismatch is 400 DIGEST_INVALID (code-4) and no blob appears.
#[tokio::test]
async fn closing_put_with_wrong_digest_is_400_digest_invalid() {
    let s = TestServer::start().await;
    let data = random_bytes(64);
    let loc = s.start_upload("dig").await;
    let loc = patch_chunk(&s, &loc, 0, &data).await;
    // The digest of the last chunk only, not the whole blob.
    let wrong = sha256(&data[32..]);
    let resp = close(&s, &loc, &wrong).await;
    assert_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    assert_no_blob(&s, "dig", &wrong).await;
    assert_no_blob(&s, "dig", &sha256(&data)).await;
    // Also wrong when the final chunk rides on the PUT.
    let loc = s.start_upload("dig").await;
    let resp = close_with(&s, &loc, &wrong, None, data.clone()).await;
    assert_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    // A sha512 digest of other content is just as wrong.
    let loc = s.start_upload("dig").await;
    let loc = patch_chunk(&s, &loc, 0, &data).await;
    let resp = close(&s, &loc, &sha512(b"nope")).await;
    assert_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

// spec: "Pushing a blob in chunks": "The closing PUT request MUST include the <digest>".
#[tokio::test]
async fn closing_put_without_digest_is_400_digest_invalid() {
    let s = TestServer::start().await;
    let loc = s.start_upload("nodig").await;
    let loc = patch_chunk(&s, &loc, 0, b"hello").await;
    let resp = s.put(&loc).send().await.unwrap();
    assert_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let resp = s.put(&with_query(&loc, "digest=")).send().await.unwrap();
    assert_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    // The session is still there and completes with a digest.
    assert_eq!(status_range(&s, &loc).await, "0-4");
    expect_status(
        close(&s, &loc, &sha256(b"hello")).await,
        StatusCode::CREATED,
    )
    .await;
}

// spec: "Error Codes" code-3 BLOB_UPLOAD_UNKNOWN; "Endpoints" end-5/6/13/14 error 404: an
// upload id the registry never issued.
#[tokio::test]
async fn unknown_upload_ids_are_404_blob_upload_unknown() {
    let s = TestServer::start().await;
    let real = s.start_upload("uu").await;
    let ids = [
        "2f9b8d4e-3c1a-4b7e-9d2f-0a1b2c3d4e5f".to_string(),
        "not-a-uuid".to_string(),
        uuid_of(&real).to_uppercase(),
        format!("{}0", uuid_of(&real)),
    ];
    for id in &ids {
        let loc = format!("/v2/uu/blobs/uploads/{id}");
        let d = sha256(b"x");
        let resps = [
            s.get(&loc).send().await.unwrap(),
            patch_range(&s, &loc, "0-0", b"x".to_vec()).await,
            close_with(&s, &loc, &d, None, b"x".to_vec()).await,
            s.delete(&loc).send().await.unwrap(),
        ];
        for resp in resps {
            assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
        }
    }
}

// spec: "POST then PUT": the session belongs to the repository it was opened in; the same id
// under another name is unknown.
#[tokio::test]
async fn upload_sessions_are_bound_to_their_repository() {
    let s = TestServer::start().await;
    let loc = s.start_upload("mine").await;
    let foreign = loc.replacen("/v2/mine/", "/v2/theirs/", 1);
    let d = sha256(b"data");
    let resps = [
        s.get(&foreign).send().await.unwrap(),
        s.patch(&foreign)
            .body(b"data".to_vec())
            .send()
            .await
            .unwrap(),
        close_with(&s, &foreign, &d, None, b"data".to_vec()).await,
        s.delete(&foreign).send().await.unwrap(),
    ];
    for resp in resps {
        assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    }
    assert_eq!(status_range(&s, &loc).await, "0-0");
    assert_no_blob(&s, "theirs", &d).await;
}

// spec: "POST then PUT": once closed with 201 the session is gone (code-3 for any reuse).
#[tokio::test]
async fn closed_sessions_are_gone() {
    let s = TestServer::start().await;
    let loc = s.start_upload("done").await;
    let d = sha256(b"abc");
    let resp = close_with(&s, &loc, &d, None, b"abc".to_vec()).await;
    expect_status(resp, StatusCode::CREATED).await;
    let resps = [
        s.get(&loc).send().await.unwrap(),
        patch_range(&s, &loc, "3-5", b"def".to_vec()).await,
        close(&s, &loc, &d).await,
        s.delete(&loc).send().await.unwrap(),
    ];
    for resp in resps {
        assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    }
    assert_blob(&s, "done", &d, b"abc").await;
}

// spec: "Cancel a blob upload" (end-14): DELETE is 204; the session is then unknown, and a
// second DELETE is 404.
#[tokio::test]
async fn cancel_upload() {
    let s = TestServer::start().await;
    let data = random_bytes(10);
    let loc = s.start_upload("cancel").await;
    let loc = patch_chunk(&s, &loc, 0, &data).await;
    let resp = s
        .delete(&loc)
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = s.get(&loc).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = close(&s, &loc, &sha256(&data)).await;
    assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = s.delete(&loc).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    assert_no_blob(&s, "cancel", &sha256(&data)).await;
}

// spec: "Pushing a blob in chunks": independent sessions on one repository do not interfere.
#[tokio::test]
async fn interleaved_sessions_stay_separate() {
    let s = TestServer::start().await;
    let a = random_bytes(200);
    let b = random_bytes(300);
    let la = s.start_upload("multi").await;
    let lb = s.start_upload("multi").await;
    let la = patch_chunk(&s, &la, 0, &a[..100]).await;
    let lb = patch_chunk(&s, &lb, 0, &b[..150]).await;
    let la = patch_chunk(&s, &la, 100, &a[100..]).await;
    let lb = patch_chunk(&s, &lb, 150, &b[150..]).await;
    expect_status(close(&s, &lb, &sha256(&b)).await, StatusCode::CREATED).await;
    expect_status(close(&s, &la, &sha256(&a)).await, StatusCode::CREATED).await;
    assert_blob(&s, "multi", &sha256(&a), &a).await;
    assert_blob(&s, "multi", &sha256(&b), &b).await;
}

// spec: "Mounting a blob from another repository" (end-11): 201 with Location (and
// Docker-Content-Digest) when `from` holds the blob; it is then pullable in the target.
#[tokio::test]
async fn mount_from_a_repository_holding_the_blob() {
    let s = TestServer::start().await;
    let data = random_bytes(500);
    let d = s.push_blob("source/repo", &data).await;
    let resp = s
        .post(&format!(
            "/v2/target/repo/blobs/uploads/?mount={d}&from=source/repo"
        ))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    let resp = expect_status(resp, StatusCode::CREATED).await;
    assert_eq!(
        header(&resp, "location"),
        format!("/v2/target/repo/blobs/{d}")
    );
    assert_eq!(header(&resp, "docker-content-digest"), d);
    assert_blob(&s, "target/repo", &d, &data).await;
    // The source keeps it.
    assert_blob(&s, "source/repo", &d, &data).await;
    // Mounting again is idempotent.
    let resp = s
        .post(&format!(
            "/v2/target/repo/blobs/uploads/?mount={d}&from=source/repo"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

// spec: "Mounting a blob from another repository": "if a registry ... is unable to mount the
// requested blob, it SHOULD return a 202", an upload session the client may use.
#[tokio::test]
async fn mount_that_cannot_happen_opens_a_session() {
    let s = TestServer::start().await;
    let data = random_bytes(50);
    let d = sha256(&data);
    s.push_blob("has-other", b"other content").await;
    for (from, target) in [("has-other", "target-a"), ("no-such-repo", "target-b")] {
        let resp = s
            .post(&format!(
                "/v2/{target}/blobs/uploads/?mount={d}&from={from}"
            ))
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        let resp = expect_status(resp, StatusCode::ACCEPTED).await;
        let loc = header(&resp, "location");
        assert!(
            loc.starts_with(&format!("/v2/{target}/blobs/uploads/")),
            "{loc}"
        );
        assert_eq!(header(&resp, "range"), "0-0");
        assert_no_blob(&s, target, &d).await;
        // The session works.
        let resp = close_with(&s, &loc, &d, None, data.clone()).await;
        expect_status(resp, StatusCode::CREATED).await;
        assert_blob(&s, target, &d, &data).await;
    }
}

// spec: "Mounting a blob from another repository": "The registry MAY treat the from parameter
// as optional"; either way the answer is a 201 mount or a usable 202 session.
#[tokio::test]
async fn mount_without_from() {
    let s = TestServer::start().await;
    let data = random_bytes(50);
    let d = s.push_blob("somewhere", &data).await;
    let resp = s
        .post(&format!("/v2/target/blobs/uploads/?mount={d}"))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    match resp.status() {
        StatusCode::CREATED => assert_blob(&s, "target", &d, &data).await,
        StatusCode::ACCEPTED => {
            let loc = header(&resp, "location");
            assert_eq!(status_range(&s, &loc).await, "0-0");
        }
        other => panic!("mount without from: {other}"),
    }
}

// spec: end-11 with a malformed `mount` digest (code-4) or `from` name (code-8): 400.
#[tokio::test]
async fn mount_with_bad_parameters_is_400() {
    let s = TestServer::start().await;
    let d = s.push_blob("src", b"payload").await;
    let resp = s
        .post("/v2/target/blobs/uploads/?mount=sha256:nothex&from=src")
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    for from in ["UPPER", "a//b", "../src"] {
        let resp = s
            .post(&format!("/v2/target/blobs/uploads/?mount={d}&from={from}"))
            .send()
            .await
            .unwrap();
        assert_error(resp, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
    }
    assert_no_blob(&s, "target", &d).await;
}

/// One chunked upload of `data` cut at `cuts`, each chunk with or without Content-Range, the
/// last one optionally inside the closing PUT.
async fn upload_in_pieces(
    s: &TestServer,
    repo: &str,
    data: &[u8],
    cuts: &[usize],
    with_range: &[bool],
    last_in_put: bool,
    sha512_digest: bool,
) {
    let digest = if sha512_digest {
        sha512(data)
    } else {
        sha256(data)
    };
    let mut bounds: Vec<usize> = cuts.to_vec();
    bounds.push(0);
    bounds.push(data.len());
    bounds.sort_unstable();
    bounds.dedup();
    let chunks: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
    let (patches, put_chunk) = match (last_in_put, chunks.split_last()) {
        (true, Some((last, rest))) => (rest.to_vec(), Some(*last)),
        _ => (chunks.clone(), None),
    };
    let mut loc = s.start_upload(repo).await;
    for (i, (a, b)) in patches.iter().copied().enumerate() {
        let mut req = s.patch(&loc);
        if with_range[i % with_range.len()] {
            req = req
                .header("content-range", format!("{a}-{}", b - 1))
                .body(data[a..b].to_vec());
        } else {
            req = req.body(streamed(vec![data[a..b].to_vec()]));
        }
        let resp = expect_status(req.send().await.unwrap(), StatusCode::ACCEPTED).await;
        assert_eq!(header(&resp, "range"), format!("0-{}", b - 1));
        loc = header(&resp, "location");
    }
    let mut put = closing_put(s, &loc, &digest);
    if let Some((a, b)) = put_chunk {
        if with_range[patches.len() % with_range.len()] {
            put = put.header("content-range", format!("{a}-{}", b - 1));
        }
        put = put.body(data[a..b].to_vec());
    }
    assert_uploaded(s, put.send().await.unwrap(), repo, &digest, data).await;
}

// spec: "Pushing a blob in chunks" (end-5, end-6): any split of a blob into in-order chunks,
// however uneven, reassembles to the blob with the right digest.
#[test]
fn chunked_uploads_reassemble_at_any_boundaries() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(TestServer::start());
    let config = ProptestConfig {
        cases: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (
        proptest::collection::vec(any::<u8>(), 1..40_000),
        proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        proptest::collection::vec(any::<bool>(), 1..4),
        any::<bool>(),
        any::<bool>(),
    );
    let case = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(
            &strategy,
            |(data, cuts, with_range, last_in_put, sha512)| {
                let cuts: Vec<usize> = cuts.iter().map(|i| i.index(data.len())).collect();
                let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                rt.block_on(upload_in_pieces(
                    &server,
                    &format!("prop/case{n}"),
                    &data,
                    &cuts,
                    &with_range,
                    last_in_put,
                    sha512,
                ));
                Ok(())
            },
        )
        .unwrap();
    drop(server);
}

// spec: "Pushing a blob in chunks": "Chunks MUST be uploaded in order" - two clients racing
// the same first chunk into one session: exactly one is accepted, the other is out of order
// (416), whichever order the server sees them in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_chunks_on_one_session() {
    let s = TestServer::start().await;
    let data = random_bytes(10);
    for _ in 0..5 {
        let loc = s.start_upload("race").await;
        let send = || {
            s.patch(&loc)
                .header("content-range", "0-9")
                .body(data.clone())
                .send()
        };
        let (a, b) = tokio::join!(send(), send());
        let mut statuses = [a.unwrap().status(), b.unwrap().status()];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::ACCEPTED, StatusCode::RANGE_NOT_SATISFIABLE]
        );
        assert_eq!(status_range(&s, &loc).await, "0-9");
        expect_status(close(&s, &loc, &sha256(&data)).await, StatusCode::CREATED).await;
    }
    assert_blob(&s, "race", &sha256(&data), &data).await;
}

// spec: "Layer Upload De-duplication": the same blob pushed by many clients at once, to one
// repository and to several, is stored once and served to each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_of_the_same_blob() {
    let s = TestServer::start().await;
    let data = random_bytes(200_000);
    let d = sha256(&data);
    let pushes = (0..8).map(|i| {
        let repo = format!("dedup/r{}", i % 3);
        let url = s.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}"));
        let req = s.client.post(url).body(data.clone());
        async move { (repo, req.send().await.unwrap().status()) }
    });
    let results = futures::future::join_all(pushes).await;
    for (repo, status) in results {
        assert_eq!(status, StatusCode::CREATED, "{repo}");
        assert_blob(&s, &repo, &d, &data).await;
    }
}
