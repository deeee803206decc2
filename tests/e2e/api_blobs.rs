//! Blob pulls and existence checks (end-2), ranges, sha512, and repository scoping.

use crate::common::*;
use reqwest::StatusCode;

// spec: "Pulling blobs" (end-2): 200 with the bytes and a Docker-Content-Digest matching them.
#[tokio::test]
async fn get_blob_returns_bytes_and_digest() {
    let s = TestServer::start().await;
    let data = random_bytes(10_000);
    let d = s.push_blob("pull/me", &data).await;
    let resp = s.get_blob("pull/me", &d).await;
    let resp = expect_status(resp, StatusCode::OK).await;
    assert_eq!(header(&resp, "docker-content-digest"), d);
    assert_eq!(header(&resp, "content-length"), "10000");
    assert_eq!(header(&resp, "content-type"), "application/octet-stream");
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.as_ref(), data.as_slice());
    assert_eq!(sha256(&body), d);
}

// spec: "Checking if content exists in the registry" (end-2): HEAD is 200 with
// Docker-Content-Digest and Content-Length (the blob's size), and no body.
#[tokio::test]
async fn head_blob_has_length_and_digest_but_no_body() {
    let s = TestServer::start().await;
    let data = random_bytes(4321);
    let d = s.push_blob("head", &data).await;
    let resp = s.head_blob("head", &d).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "docker-content-digest"), d);
    assert_eq!(header(&resp, "content-length"), "4321");
    assert!(resp.bytes().await.unwrap().is_empty());
}

// spec: "Pulling blobs" / "Checking if content exists": unknown blob is 404 (code-1
// BLOB_UNKNOWN), in a known and an unknown repository.
#[tokio::test]
async fn unknown_blob_is_404_blob_unknown() {
    let s = TestServer::start().await;
    s.push_blob("known", b"something").await;
    let missing = sha256(b"never pushed");
    for repo in ["known", "unknown"] {
        let path = format!("/v2/{repo}/blobs/{missing}");
        let (e, head) = s.assert_not_found(&path, "BLOB_UNKNOWN").await;
        assert_eq!(e["detail"]["digest"], missing);
        assert!(head.bytes().await.unwrap().is_empty());
    }
}

// spec: "Pulling blobs": "If the blob is not found in the repository" - a blob pushed to one
// repository is not reachable through another until mounted there.
#[tokio::test]
async fn blobs_are_scoped_to_their_repository() {
    let s = TestServer::start().await;
    let data = random_bytes(100);
    let d = s.push_blob("owner", &data).await;
    s.assert_not_found(&format!("/v2/other/blobs/{d}"), "BLOB_UNKNOWN")
        .await;
    // spec: "Mounting a blob from another repository" (end-11) makes it reachable.
    let resp = s
        .post(&format!("/v2/other/blobs/uploads/?mount={d}&from=owner"))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::CREATED).await;
    let resp = expect_status(s.get_blob("other", &d).await, StatusCode::OK).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());
    // Pushing the same bytes directly also links them (de-duplicated storage).
    let resp = s.get_blob("third", &d).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    s.push_blob("third", &data).await;
    let resp = s.get_blob("third", &d).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

// Manifests are content in their repository: their bytes are reachable at the blob endpoint
// of that repository, and only that one.
#[tokio::test]
async fn manifest_bytes_are_reachable_as_a_blob_in_their_repository() {
    let s = TestServer::start().await;
    let (img, d) = s.push_image("mrepo", "latest", 1).await;
    let resp = expect_status(s.get_blob("mrepo", &d).await, StatusCode::OK).await;
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        img.manifest.as_slice()
    );
    let resp = s.get_blob("elsewhere", &d).await;
    assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}

async fn ranged(s: &TestServer, path: &str, range: &str) -> reqwest::Response {
    s.get(path).header("range", range).send().await.unwrap()
}

// spec: "Pulling blobs": "A registry SHOULD support the Range request header in accordance
// with RFC 9110 (section 14)": single ranges give 206 with Content-Range.
#[tokio::test]
async fn single_byte_ranges_give_206_with_content_range() {
    let s = TestServer::start().await;
    let data = random_bytes(1000);
    let d = s.push_blob("ranges", &data).await;
    let path = format!("/v2/ranges/blobs/{d}");
    let cases: [(&str, usize, usize); 7] = [
        ("bytes=0-9", 0, 9),
        ("bytes=10-19", 10, 19),
        ("bytes=990-", 990, 999),
        ("bytes=-10", 990, 999),
        ("bytes=-5000", 0, 999),
        ("bytes=500-5000", 500, 999),
        ("bytes=999-999", 999, 999),
    ];
    for (range, start, end) in cases {
        let resp = ranged(&s, &path, range).await;
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&resp, "content-range"),
            format!("bytes {start}-{end}/1000"),
            "{range}"
        );
        assert_eq!(
            header(&resp, "content-length"),
            (end - start + 1).to_string()
        );
        assert_eq!(header(&resp, "docker-content-digest"), d);
        let body = resp.bytes().await.unwrap();
        assert_eq!(body.as_ref(), &data[start..=end], "{range}");
    }
}

// spec: "Pulling blobs" via RFC 9110 §14.4/§15.5.17: a range that starts past the end is 416
// with `Content-Range: bytes */<size>`; so is one whose end comes before its start (§14.2
// lets a server reject it; Distribution and the OCI conformance suite's "range 500-0" do).
#[tokio::test]
async fn unsatisfiable_ranges_give_416_with_size() {
    let s = TestServer::start().await;
    let data = random_bytes(100);
    let d = s.push_blob("ranges", &data).await;
    let path = format!("/v2/ranges/blobs/{d}");
    for range in [
        "bytes=100-",
        "bytes=100-200",
        "bytes=5000-6000",
        "bytes=-0",
        "bytes=50-0",
        "bytes=9-1",
    ] {
        let resp = ranged(&s, &path, range).await;
        assert_eq!(header(&resp, "content-range"), "bytes */100", "{range}");
        assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert!(v["errors"][0]["code"].is_string());
    }
    // An empty blob has no satisfiable range at all.
    let empty = s.push_blob("ranges", b"").await;
    let resp = ranged(&s, &format!("/v2/ranges/blobs/{empty}"), "bytes=0-").await;
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&resp, "content-range"), "bytes */0");
}

// spec: RFC 9110 §14.2: a server MAY ignore a Range it does not support (several ranges,
// other units, bad syntax) and serve the whole representation with 200.
#[tokio::test]
async fn unsupported_or_malformed_ranges_serve_the_whole_blob() {
    let s = TestServer::start().await;
    let data = random_bytes(300);
    let d = s.push_blob("ranges", &data).await;
    let path = format!("/v2/ranges/blobs/{d}");
    for range in [
        "bytes=0-1,5-6",
        "items=0-5",
        "bytes=x-5",
        "bytes=-",
        "garbage",
    ] {
        let resp = ranged(&s, &path, range).await;
        assert_eq!(resp.status(), StatusCode::OK, "{range}");
        assert!(resp.headers().get("content-range").is_none());
        assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());
    }
    // HEAD ignores Range and reports the full size.
    let resp = s
        .head(&path)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-length"), "300");
}

// spec: "Pulling blobs": a zero-length blob round-trips.
#[tokio::test]
async fn empty_blob_round_trips() {
    let s = TestServer::start().await;
    let d = s.push_blob("empty", b"").await;
    assert_eq!(
        d,
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let resp = expect_status(s.get_blob("empty", &d).await, StatusCode::OK).await;
    assert_eq!(header(&resp, "content-length"), "0");
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = s.head_blob("empty", &d).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-length"), "0");
}

// spec: "Pulling blobs" with a body larger than any I/O buffer: the stream arrives whole.
#[tokio::test]
async fn large_blob_round_trips() {
    let s = TestServer::start().await;
    let data = random_bytes(3 * 1024 * 1024 + 17);
    let d = s.push_blob("large", &data).await;
    let resp = expect_status(s.get_blob("large", &d).await, StatusCode::OK).await;
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), data.len());
    assert!(body.as_ref() == data.as_slice());
    // A range straddling the 1 MiB buffer boundary.
    let start = (1 << 20) - 5;
    let resp = ranged(
        &s,
        &format!("/v2/large/blobs/{d}"),
        &format!("bytes={start}-{}", start + 9),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        &data[start..start + 10]
    );
}

// spec: "Content Verification" / apdx-3: sha512 digests are pushed and pulled like sha256.
#[tokio::test]
async fn sha512_blobs_push_and_pull() {
    let s = TestServer::start().await;
    let data = random_bytes(777);
    let d = sha512(&data);
    s.push_blob_as("five-twelve", &data, &d).await;
    let resp = expect_status(s.get_blob("five-twelve", &d).await, StatusCode::OK).await;
    assert_eq!(header(&resp, "docker-content-digest"), d);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());
    let resp = s.head_blob("five-twelve", &d).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-length"), "777");
    // The same bytes under sha256 are a different name in the same repository.
    let resp = s.get_blob("five-twelve", &sha256(&data)).await;
    assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}
