//! Manifest pulls, existence checks and pushes (end-3, end-7a, end-7b): byte-exact storage,
//! content negotiation, indexes, Docker media types, size limits and every invalid push.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn get_manifest(
    s: &TestServer,
    repo: &str,
    reference: &str,
    accept: &str,
) -> reqwest::Response {
    s.get(&format!("/v2/{repo}/manifests/{reference}"))
        .header("accept", accept)
        .send()
        .await
        .unwrap()
}

/// GETs a manifest and checks it is exactly `bytes`, typed `media_type`, named `digest`.
async fn assert_manifest(
    s: &TestServer,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
    digest: &str,
) {
    let resp = get_manifest(s, repo, reference, media_type).await;
    let resp = expect_status(resp, StatusCode::OK).await;
    assert_eq!(header(&resp, "content-type"), media_type);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(header(&resp, "content-length"), bytes.len().to_string());
    let body = resp.bytes().await.unwrap();
    assert!(
        body.as_ref() == bytes,
        "manifest bytes differ:\n got {:?}\nwant {:?}",
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(bytes)
    );
}

/// Pushes `body` to `repo:tag` and pulls it back by tag, byte-exact; returns its digest.
async fn push_and_pull(
    s: &TestServer,
    repo: &str,
    tag: &str,
    media_type: &str,
    body: &[u8],
) -> String {
    let d = s.push_manifest(repo, tag, media_type, body).await;
    assert_manifest(s, repo, tag, media_type, body, &d).await;
    d
}

/// A manifest or 404 for an unknown one: MANIFEST_UNKNOWN (or NAME_UNKNOWN for a repository
/// that does not exist).
async fn assert_manifest_unknown(resp: reqwest::Response) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let code = v["errors"][0]["code"].as_str().unwrap();
    assert!(
        code == "MANIFEST_UNKNOWN" || code == "NAME_UNKNOWN",
        "unexpected code {code}"
    );
}

/// GETs a manifest (no Accept header) and checks it is unknown, as [`assert_manifest_unknown`].
async fn assert_no_manifest(s: &TestServer, repo: &str, reference: &str) {
    let resp = s
        .get(&format!("/v2/{repo}/manifests/{reference}"))
        .send()
        .await
        .unwrap();
    assert_manifest_unknown(resp).await;
}

/// True when a tag list body lists no tags (`null` or `[]`).
fn no_tags(v: &Value) -> bool {
    v["tags"].is_null() || v["tags"] == json!([])
}

fn index_of(media_type: &str, children: &[(Desc, &str)]) -> Vec<u8> {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(d, arch)| {
            let mut j = d.json();
            j["platform"] = json!({ "architecture": arch, "os": "linux" });
            j
        })
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": manifests,
    }))
    .unwrap()
}

// spec: "Pushing Manifests" (end-7a) and "Pulling manifests" (end-3): 201 with Location and
// Docker-Content-Digest; the manifest is then pullable by tag and by digest.
#[tokio::test]
async fn push_by_tag_then_pull_by_tag_and_digest() {
    let s = TestServer::start().await;
    let img = s.image("app", 2).await;
    let resp = s
        .put_manifest("app", "v1", OCI_MANIFEST, &img.manifest)
        .await;
    let resp = expect_status(resp, StatusCode::CREATED).await;
    let d = img.digest();
    assert_eq!(header(&resp, "docker-content-digest"), d);
    assert_eq!(header(&resp, "location"), format!("/v2/app/manifests/{d}"));
    assert!(resp.headers().get("oci-subject").is_none());
    assert_manifest(&s, "app", "v1", OCI_MANIFEST, &img.manifest, &d).await;
    assert_manifest(&s, "app", &d, OCI_MANIFEST, &img.manifest, &d).await;
    // The Location is pullable as given.
    let resp = s
        .get(&format!("/v2/app/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Re-pushing the same manifest is accepted and changes nothing.
    s.push_manifest("app", "v1", OCI_MANIFEST, &img.manifest)
        .await;
    assert_manifest(&s, "app", "v1", OCI_MANIFEST, &img.manifest, &d).await;
}

// spec: "Checking if content exists in the registry" (end-3): HEAD is 200 with
// Docker-Content-Digest and Content-Length, and no body.
#[tokio::test]
async fn head_manifest_reports_length_and_digest_without_body() {
    let s = TestServer::start().await;
    let (img, d) = s.push_image("headm", "latest", 1).await;
    for reference in ["latest", d.as_str()] {
        let resp = s
            .head(&format!("/v2/headm/manifests/{reference}"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{reference}");
        assert_eq!(header(&resp, "docker-content-digest"), d);
        assert_eq!(
            header(&resp, "content-length"),
            img.manifest.len().to_string()
        );
        assert_eq!(header(&resp, "content-type"), OCI_MANIFEST);
        assert!(resp.bytes().await.unwrap().is_empty());
    }
}

// spec: "Pulling manifests" / "Checking if content exists": "If the manifest is not found in
// the repository, the response code MUST be 404"; "An attempt to pull a nonexistent
// repository MUST return response code 404".
#[tokio::test]
async fn unknown_manifests_are_404() {
    let s = TestServer::start().await;
    s.push_image("known", "latest", 1).await;
    let missing = sha256(b"no manifest");
    for (repo, reference) in [
        ("known", "nope"),
        ("known", missing.as_str()),
        ("unknown", "latest"),
        ("unknown", missing.as_str()),
    ] {
        assert_no_manifest(&s, repo, reference).await;
        let resp = s
            .head(&format!("/v2/{repo}/manifests/{reference}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert!(resp.bytes().await.unwrap().is_empty());
    }
    // A manifest in one repository is unknown in another.
    let (_, d) = s.push_image("known", "other", 1).await;
    assert_no_manifest(&s, "elsewhere", &d).await;
}

// spec: "Pushing Manifests": "The registry MUST store the manifest in the exact byte
// representation provided by the client" - odd whitespace, key order, escapes and trailing
// newlines all survive, and the digest is of those bytes.
#[tokio::test]
async fn oci_manifest_round_trips_byte_exact() {
    let s = TestServer::start().await;
    let img = s.image("exact", 2).await;
    let (c, l0, l1) = (&img.config, &img.layers[0], &img.layers[1]);
    let body = format!(
        "\n{{ \"layers\" :[\n\t{{\"size\":{},\"digest\":  \"{}\",\"mediaType\":\"{}\"}} ,\r\n  {{ \"mediaType\" : \"{}\", \"digest\":\"{}\", \"size\" : {} }}\n ],\n\n\t\"config\":{{\"mediaType\":\"{}\",\"digest\":\"{}\",\"size\":{}}},   \"schemaVersion\" :2,\n \"annotations\":{{\"note\":\"caf\\u00e9 \\\"quoted\\\" \\/ ünïcödé ☃\",\"empty\":\"\"}},\n  \"mediaType\":\"{}\"   }}\n\n",
        l0.size, l0.digest, l0.media_type, l1.media_type, l1.digest, l1.size, c.media_type, c.digest, c.size, OCI_MANIFEST
    )
    .into_bytes();
    let d = push_and_pull(&s, "exact", "odd", OCI_MANIFEST, &body).await;
    assert_eq!(d, sha256(&body));
    assert_manifest(&s, "exact", &d, OCI_MANIFEST, &body, &d).await;
}

// spec: "Pushing Manifests" byte-exact storage and "Pulling manifests": "The Content-Type
// header SHOULD match what the client pushed" - Docker schema 2 manifests round-trip.
#[tokio::test]
async fn docker_schema2_manifest_round_trips_byte_exact() {
    let s = TestServer::start().await;
    let img = s
        .image_of("docker", 2, DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER)
        .await;
    let v: Value = serde_json::from_slice(&img.manifest).unwrap();
    // Pretty-printed with three-space indents and CRLF line ends, as no serializer would.
    let body = serde_json::to_string_pretty(&v)
        .unwrap()
        .replace("  ", "   ")
        .replace('\n', "\r\n")
        .into_bytes();
    let d = push_and_pull(&s, "docker", "v2", DOCKER_MANIFEST, &body).await;
    assert_manifest(&s, "docker", &d, DOCKER_MANIFEST, &body, &d).await;
}

// spec: "Pulling manifests" and "Pushing Manifests": a Docker manifest list of Docker schema 2
// manifests round-trips byte-exact under its own Content-Type.
#[tokio::test]
async fn docker_manifest_list_round_trips_byte_exact() {
    let s = TestServer::start().await;
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let img = s
            .image_of("dlist", 1, DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER)
            .await;
        let d = img.digest();
        s.push_manifest("dlist", &d, DOCKER_MANIFEST, &img.manifest)
            .await;
        children.push((img.desc(), arch));
    }
    let list = index_of(DOCKER_LIST, &children);
    let body = [b"  ".as_slice(), &list, b"\n\t "].concat();
    push_and_pull(&s, "dlist", "multi", DOCKER_LIST, &body).await;
    for (child, _) in &children {
        let resp = get_manifest(&s, "dlist", &child.digest, DOCKER_MANIFEST).await;
        let resp = expect_status(resp, StatusCode::OK).await;
        assert_eq!(header(&resp, "content-type"), DOCKER_MANIFEST);
    }
}

// spec: "Pushing Manifests" and "Pulling manifests" with an OCI image index: a multi-arch
// image is pushed children first (by digest), then the index by tag; a client pulls the index
// and then each platform's manifest and blobs.
#[tokio::test]
async fn multi_arch_index_push_and_pull() {
    let s = TestServer::start().await;
    let mut images = Vec::new();
    for arch in ["amd64", "arm64", "s390x"] {
        let img = s.image("multi/arch", 2).await;
        let d = img.digest();
        let resp = s
            .put_manifest("multi/arch", &d, OCI_MANIFEST, &img.manifest)
            .await;
        let resp = expect_status(resp, StatusCode::CREATED).await;
        assert_eq!(header(&resp, "docker-content-digest"), d);
        images.push((img, arch));
    }
    let children: Vec<(Desc, &str)> = images.iter().map(|(i, a)| (i.desc(), *a)).collect();
    let index = index_of(OCI_INDEX, &children);
    let d = push_and_pull(&s, "multi/arch", "latest", OCI_INDEX, &index).await;

    // Pull as a client would: the index, then the platform it wants, then its blobs.
    let resp = get_manifest(
        &s,
        "multi/arch",
        "latest",
        &format!("{OCI_MANIFEST}, {OCI_INDEX}"),
    )
    .await;
    let resp = expect_status(resp, StatusCode::OK).await;
    assert_eq!(header(&resp, "content-type"), OCI_INDEX);
    let parsed: Value = resp.json().await.unwrap();
    let entries = parsed["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for (entry, (img, arch)) in entries.iter().zip(&images) {
        assert_eq!(entry["platform"]["architecture"], *arch);
        let digest = entry["digest"].as_str().unwrap();
        assert_manifest(
            &s,
            "multi/arch",
            digest,
            OCI_MANIFEST,
            &img.manifest,
            digest,
        )
        .await;
        for blob in std::iter::once(&img.config).chain(&img.layers) {
            let resp = s.get_blob("multi/arch", &blob.digest).await;
            let resp = expect_status(resp, StatusCode::OK).await;
            assert_eq!(resp.bytes().await.unwrap().len() as u64, blob.size);
        }
    }

    // An index of indexes is an index too.
    let outer = index_of(
        OCI_INDEX,
        &[(Desc::new(OCI_INDEX, &index, d.clone()), "any")],
    );
    push_and_pull(&s, "multi/arch", "nested", OCI_INDEX, &outer).await;
}

// spec: "Push": "A registry MAY reject a manifest ... with descriptors ... that reference a
// manifest or blob that does not exist ... it MUST result in ... MANIFEST_BLOB_UNKNOWN"
// (code-5): an index whose children are missing.
#[tokio::test]
async fn index_with_missing_children_is_400_manifest_blob_unknown() {
    let s = TestServer::start().await;
    let present = s.image("idx", 1).await;
    s.push_manifest("idx", &present.digest(), OCI_MANIFEST, &present.manifest)
        .await;
    let absent = s.image("idx", 1).await; // blobs pushed, manifest never pushed
    let index = index_of(
        OCI_INDEX,
        &[(present.desc(), "amd64"), (absent.desc(), "arm64")],
    );
    let resp = s.put_manifest("idx", "latest", OCI_INDEX, &index).await;
    let e = assert_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    assert_eq!(e["detail"]["missing"], json!([absent.digest()]));
    assert_no_manifest(&s, "idx", "latest").await;
    assert_no_manifest(&s, "idx", &sha256(&index)).await;
    // A child present only in another repository does not count.
    let foreign = s.image("other", 1).await;
    s.push_manifest("other", &foreign.digest(), OCI_MANIFEST, &foreign.manifest)
        .await;
    let index = index_of(OCI_INDEX, &[(foreign.desc(), "amd64")]);
    let resp = s.put_manifest("idx", "latest", OCI_INDEX, &index).await;
    assert_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    // Pushing the missing child makes the index acceptable.
    s.push_manifest("idx", &absent.digest(), OCI_MANIFEST, &absent.manifest)
        .await;
    let index = index_of(
        OCI_INDEX,
        &[(present.desc(), "amd64"), (absent.desc(), "arm64")],
    );
    s.push_manifest("idx", "latest", OCI_INDEX, &index).await;
}

// spec: "Push": MANIFEST_BLOB_UNKNOWN (code-5) for an image whose config or layers are not in
// the repository (including blobs only another repository holds).
#[tokio::test]
async fn image_with_missing_blobs_is_400_manifest_blob_unknown() {
    let s = TestServer::start().await;
    let img = s.image("donor", 2).await; // blobs live in "donor" only
    let resp = s
        .put_manifest("recipient", "latest", OCI_MANIFEST, &img.manifest)
        .await;
    let e = assert_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    let mut missing: Vec<String> = e["detail"]["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    missing.sort();
    let mut want = vec![
        img.config.digest.clone(),
        img.layers[0].digest.clone(),
        img.layers[1].digest.clone(),
    ];
    want.sort();
    assert_eq!(missing, want);
    // Only a layer missing.
    let mut v: Value = serde_json::from_slice(&s.image("solo", 1).await.manifest).unwrap();
    let ghost = random_bytes(10);
    v["layers"]
        .as_array_mut()
        .unwrap()
        .push(Desc::new(OCI_LAYER, &ghost, sha256(&ghost)).json());
    let body = serde_json::to_vec(&v).unwrap();
    let resp = s.put_manifest("solo", "latest", OCI_MANIFEST, &body).await;
    let e = assert_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    assert_eq!(e["detail"]["missing"], json!([sha256(&ghost)]));
    assert_no_manifest(&s, "solo", "latest").await;
}

// A descriptor whose size disagrees with the blob it names makes the manifest invalid
// (code-6): clients would fail verifying that blob.
#[tokio::test]
async fn descriptor_size_mismatch_is_400_manifest_invalid() {
    let s = TestServer::start().await;
    let img = s.image("sizes", 1).await;
    let mut v: Value = serde_json::from_slice(&img.manifest).unwrap();
    v["layers"][0]["size"] = json!(img.layers[0].size + 1);
    let body = serde_json::to_vec(&v).unwrap();
    let resp = s.put_manifest("sizes", "latest", OCI_MANIFEST, &body).await;
    assert_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
}

// Image-spec "Layers": non-distributable (foreign) layers carrying `urls` live outside the
// registry and need not be pushed.
#[tokio::test]
async fn foreign_layers_need_not_exist() {
    let s = TestServer::start().await;
    let img = s.image("foreign", 0).await;
    let mut v: Value = serde_json::from_slice(&img.manifest).unwrap();
    let elsewhere = random_bytes(10);
    v["layers"] = json!([{
        "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "digest": sha256(&elsewhere),
        "size": 10,
        "urls": ["https://example.com/layer.tar.gz"],
    }]);
    let body = serde_json::to_vec(&v).unwrap();
    push_and_pull(&s, "foreign", "latest", OCI_MANIFEST, &body).await;
}

// spec: "Pulling manifests": the client's Accept lists the types it supports; a stored
// manifest of a type outside that list is not served (404 MANIFEST_UNKNOWN), while any list
// including its type (or a wildcard) gets it.
#[tokio::test]
async fn accept_header_negotiation() {
    let s = TestServer::start().await;
    let (img, d) = s.push_image("neg", "img", 1).await;
    for accept in [
        OCI_MANIFEST.to_string(),
        format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}"),
        format!("{DOCKER_MANIFEST};q=0.9, {OCI_MANIFEST};q=0.5"),
        format!("{OCI_INDEX},{OCI_MANIFEST}"),
        "*/*".to_string(),
        "application/*".to_string(),
    ] {
        let resp = get_manifest(&s, "neg", "img", &accept).await;
        let resp = expect_status(resp, StatusCode::OK).await;
        assert_eq!(header(&resp, "content-type"), OCI_MANIFEST, "{accept}");
        assert_eq!(
            resp.bytes().await.unwrap().as_ref(),
            img.manifest.as_slice()
        );
    }
    // Several Accept header lines are one list.
    let resp = s
        .get("/v2/neg/manifests/img")
        .header("accept", DOCKER_MANIFEST)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for accept in [
        DOCKER_MANIFEST.to_string(),
        format!("{DOCKER_MANIFEST}, {DOCKER_LIST}, {OCI_INDEX}"),
    ] {
        for reference in ["img", d.as_str()] {
            let resp = get_manifest(&s, "neg", reference, &accept).await;
            assert_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
            let resp = s
                .head(&format!("/v2/neg/manifests/{reference}"))
                .header("accept", &accept)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        }
    }
    // An index is refused to a client that only takes image manifests.
    let index = index_of(OCI_INDEX, &[(img.desc(), "amd64")]);
    s.push_manifest("neg", "idx", OCI_INDEX, &index).await;
    let resp = get_manifest(&s, "neg", "idx", OCI_MANIFEST).await;
    assert_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    let resp = get_manifest(&s, "neg", "idx", OCI_INDEX).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

// spec: "Pushing Manifests": a tag PUT again points at the new manifest; the old one stays
// pullable by digest.
#[tokio::test]
async fn pushing_a_tag_again_moves_it() {
    let s = TestServer::start().await;
    let (a, da) = s.push_image("moving", "latest", 1).await;
    // Pulled first, so that any cache of the tag has to notice the move.
    assert_manifest(&s, "moving", "latest", OCI_MANIFEST, &a.manifest, &da).await;
    let (b, db) = s.push_image("moving", "latest", 1).await;
    assert_ne!(da, db);
    assert_manifest(&s, "moving", "latest", OCI_MANIFEST, &b.manifest, &db).await;
    assert_manifest(&s, "moving", &da, OCI_MANIFEST, &a.manifest, &da).await;
}

// spec: "Pushing Manifests" (end-7a) by digest: 201, Docker-Content-Digest "MUST be equal to
// the client provided digest"; no tag is created.
#[tokio::test]
async fn push_by_digest() {
    let s = TestServer::start().await;
    let img = s.image("bydigest", 1).await;
    let d = img.digest();
    let resp = s
        .put_manifest("bydigest", &d, OCI_MANIFEST, &img.manifest)
        .await;
    let resp = expect_status(resp, StatusCode::CREATED).await;
    assert_eq!(header(&resp, "docker-content-digest"), d);
    assert_eq!(
        header(&resp, "location"),
        format!("/v2/bydigest/manifests/{d}")
    );
    assert!(resp.headers().get("oci-tag").is_none());
    assert_manifest(&s, "bydigest", &d, OCI_MANIFEST, &img.manifest, &d).await;
    let v = s.tags_list("bydigest").await;
    assert!(no_tags(&v), "{v}");
}

// spec: "Pushing Manifests": the digest in the URL must be the digest of the body (code-4
// DIGEST_INVALID); nothing is stored.
#[tokio::test]
async fn push_by_wrong_digest_is_400_digest_invalid() {
    let s = TestServer::start().await;
    let img = s.image("wrong", 1).await;
    let other = sha256(b"not the manifest");
    let resp = s
        .put_manifest("wrong", &other, OCI_MANIFEST, &img.manifest)
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    for reference in [other, img.digest()] {
        assert_no_manifest(&s, "wrong", &reference).await;
    }
    // The same body with a byte of whitespace more has a different digest.
    let mut padded = img.manifest.clone();
    padded.push(b' ');
    let resp = s
        .put_manifest("wrong", &img.digest(), OCI_MANIFEST, &padded)
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

// spec: "Pulling manifests" with a sha512 digest (apdx-3): pushed by sha512 digest, pulled by
// it, Docker-Content-Digest in sha512.
#[tokio::test]
async fn sha512_manifest_digests() {
    let s = TestServer::start().await;
    let img = s.image("five", 1).await;
    let d = sha512(&img.manifest);
    let resp = s
        .put_manifest("five", &d, OCI_MANIFEST, &img.manifest)
        .await;
    let resp = expect_status(resp, StatusCode::CREATED).await;
    assert_eq!(header(&resp, "docker-content-digest"), d);
    assert_eq!(header(&resp, "location"), format!("/v2/five/manifests/{d}"));
    assert_manifest(&s, "five", &d, OCI_MANIFEST, &img.manifest, &d).await;
    let resp = s
        .head(&format!("/v2/five/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "docker-content-digest"), d);
    // With a tag parameter the tag resolves to the same manifest.
    let path = format!("/v2/five/manifests/{d}?tag=t512");
    let resp = s.put_manifest_at(&path, OCI_MANIFEST, &img.manifest).await;
    expect_status(resp, StatusCode::CREATED).await;
    let resp = get_manifest(&s, "five", "t512", OCI_MANIFEST).await;
    let resp = expect_status(resp, StatusCode::OK).await;
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        img.manifest.as_slice()
    );
    // A sha512 digest of other bytes is refused.
    let resp = s
        .put_manifest("five", &sha512(b"other"), OCI_MANIFEST, &img.manifest)
        .await;
    assert_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

// spec: "Pushing Manifests" (end-7b): `?tag=` parameters on a push by digest create those tags
// and each accepted tag is echoed in an OCI-Tag header; at least 10 are supported.
#[tokio::test]
async fn push_by_digest_with_tag_parameters() {
    let s = TestServer::start().await;
    let img = s.image("tagged", 1).await;
    let d = img.digest();
    let tags: Vec<String> = ["1.2.3", "1.2", "1", "latest"]
        .iter()
        .map(|t| t.to_string())
        .chain((0..8).map(|i| format!("extra-{i}")))
        .collect();
    let query: Vec<String> = tags.iter().map(|t| format!("tag={t}")).collect();
    let path = format!("/v2/tagged/manifests/{d}?{}", query.join("&"));
    let resp = s.put_manifest_at(&path, OCI_MANIFEST, &img.manifest).await;
    let resp = expect_status(resp, StatusCode::CREATED).await;
    assert_eq!(header(&resp, "docker-content-digest"), d);
    let mut echoed = header_list(&resp, "oci-tag");
    echoed.sort();
    let mut want = tags.clone();
    want.sort();
    assert_eq!(echoed, want);
    for t in &tags {
        assert_manifest(&s, "tagged", t, OCI_MANIFEST, &img.manifest, &d).await;
    }
    let v = s.tags_list("tagged").await;
    assert_eq!(v["tags"], json!(want));
}

// spec: end-7b: `tag` parameters belong to pushes by digest, and must be valid tags.
#[tokio::test]
async fn bad_tag_parameters_are_400() {
    let s = TestServer::start().await;
    let img = s.image("tp", 1).await;
    let d = img.digest();
    for path in [
        "/v2/tp/manifests/latest?tag=other".to_string(),
        format!("/v2/tp/manifests/{d}?tag=-bad"),
        format!("/v2/tp/manifests/{d}?tag=ok&tag=no%2Fslash"),
        format!("/v2/tp/manifests/{d}?tag="),
    ] {
        let resp = s.put_manifest_at(&path, OCI_MANIFEST, &img.manifest).await;
        assert_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    }
    let resp = s.get("/v2/tp/tags/list").send().await.unwrap();
    if resp.status() == StatusCode::OK {
        let v: Value = resp.json().await.unwrap();
        assert!(no_tags(&v), "{v}");
    }
}

// spec: "Error Codes" code-6 MANIFEST_INVALID: bodies that are not JSON objects at all.
#[tokio::test]
async fn malformed_json_is_400_manifest_invalid() {
    let s = TestServer::start().await;
    for body in [
        "".as_bytes(),
        b"{",
        b"[]",
        b"null",
        b"\"string\"",
        b"not json",
        b"{\"schemaVersion\":2,}",
        b"\xff\xfe{}",
    ] {
        let resp = s.put_manifest("bad", "latest", OCI_MANIFEST, body).await;
        assert_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    }
    assert_no_manifest(&s, "bad", "latest").await;
}

// spec: "Pushing Manifests": "If a manifest includes a mediaType field, clients MUST set the
// Content-Type header to the value specified by the mediaType field" - a mismatch is refused
// (code-6); parameters on Content-Type are ignored.
#[tokio::test]
async fn media_type_must_match_content_type() {
    let s = TestServer::start().await;
    let img = s.image("mt", 1).await;
    for ct in [DOCKER_MANIFEST, OCI_INDEX, "application/vnd.example+json"] {
        let resp = s.put_manifest("mt", "latest", ct, &img.manifest).await;
        assert_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    }
    // "The registry SHOULD ignore parameters on the Content-Type header."
    let d = s
        .push_manifest(
            "mt",
            "params",
            &format!("{OCI_MANIFEST}; charset=utf-8"),
            &img.manifest,
        )
        .await;
    assert_manifest(&s, "mt", "params", OCI_MANIFEST, &img.manifest, &d).await;
    // No Content-Type at all: the body's mediaType decides.
    let resp = s
        .put("/v2/mt/manifests/noct")
        .body(img.manifest.clone())
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::CREATED).await;
    assert_manifest(&s, "mt", "noct", OCI_MANIFEST, &img.manifest, &d).await;
}

// spec: "Pushing Manifests": "All manifests SHOULD include a mediaType field"; without one the
// Content-Type names the type, and with neither the registry cannot know it (code-6).
#[tokio::test]
async fn missing_media_type() {
    let s = TestServer::start().await;
    let img = s.image("nomt", 1).await;
    let mut v: Value = serde_json::from_slice(&img.manifest).unwrap();
    v.as_object_mut().unwrap().remove("mediaType");
    let body = serde_json::to_vec(&v).unwrap();
    let resp = s
        .put("/v2/nomt/manifests/x")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    let resp = s.put_manifest("nomt", "x", "application/json", &body).await;
    assert_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    push_and_pull(&s, "nomt", "x", OCI_MANIFEST, &body).await;
}

/// A change that breaks a valid manifest.
type Edit = Box<dyn Fn(&mut Value)>;

// spec: "Error Codes" code-6 MANIFEST_INVALID: well-formed JSON that is not a valid manifest
// of a supported type.
#[tokio::test]
async fn structurally_invalid_manifests_are_400_manifest_invalid() {
    let s = TestServer::start().await;
    let img = s.image("inv", 1).await;
    let base: Value = serde_json::from_slice(&img.manifest).unwrap();
    let edits: Vec<(&str, Edit)> = vec![
        (
            "schemaVersion 1",
            Box::new(|v| v["schemaVersion"] = json!(1)),
        ),
        (
            "no schemaVersion",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("schemaVersion");
            }),
        ),
        (
            "schemaVersion string",
            Box::new(|v| v["schemaVersion"] = json!("2")),
        ),
        (
            "no config",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("config");
            }),
        ),
        (
            "config without digest",
            Box::new(|v| {
                v["config"].as_object_mut().unwrap().remove("digest");
            }),
        ),
        (
            "config without size",
            Box::new(|v| {
                v["config"].as_object_mut().unwrap().remove("size");
            }),
        ),
        (
            "config without mediaType",
            Box::new(|v| {
                v["config"].as_object_mut().unwrap().remove("mediaType");
            }),
        ),
        (
            "bad layer digest",
            Box::new(|v| v["layers"][0]["digest"] = json!("sha256:xyz")),
        ),
        (
            "unsupported layer digest algorithm",
            Box::new(|v| v["layers"][0]["digest"] = json!(format!("md5:{}", "a".repeat(32)))),
        ),
        (
            "negative size",
            Box::new(|v| v["layers"][0]["size"] = json!(-1)),
        ),
        (
            "bad layer media type",
            Box::new(|v| v["layers"][0]["mediaType"] = json!("nope")),
        ),
        ("layers not a list", Box::new(|v| v["layers"] = json!({}))),
        (
            "image with manifests",
            Box::new(|v| v["manifests"] = json!([])),
        ),
        (
            "bad artifactType",
            Box::new(|v| v["artifactType"] = json!("not a type")),
        ),
        (
            "bad subject",
            Box::new(|v| v["subject"] = json!({"mediaType": OCI_MANIFEST})),
        ),
        (
            "unknown media type",
            Box::new(|v| v["mediaType"] = json!("application/vnd.example.manifest+json")),
        ),
        (
            "docker schema 1",
            Box::new(|v| {
                v["mediaType"] = json!("application/vnd.docker.distribution.manifest.v1+prettyjws")
            }),
        ),
    ];
    for (what, edit) in edits {
        let mut v = base.clone();
        edit(&mut v);
        let body = serde_json::to_vec(&v).unwrap();
        let ct = v["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string();
        let resp = s.put_manifest("inv", "latest", &ct, &body).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {text}");
        let e: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(e["errors"][0]["code"], "MANIFEST_INVALID", "{what}: {text}");
    }
    // Indexes: no config or layers, and a manifests list is required.
    let index_edits = [
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX}),
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [], "config": img.config.json()}),
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [], "layers": []}),
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST}]}),
    ];
    for v in index_edits {
        let body = serde_json::to_vec(&v).unwrap();
        let resp = s.put_manifest("inv", "idx", OCI_INDEX, &body).await;
        assert_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    }
    assert_no_manifest(&s, "inv", "latest").await;
}

/// A valid image manifest padded with an annotation to exactly `len` bytes.
fn padded_manifest(img: &Image, len: usize) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&img.manifest).unwrap();
    v["annotations"] = json!({ "pad": "" });
    let bare = serde_json::to_vec(&v).unwrap().len();
    assert!(len >= bare, "cannot pad {bare} bytes down to {len}");
    v["annotations"]["pad"] = json!("x".repeat(len - bare));
    let body = serde_json::to_vec(&v).unwrap();
    assert_eq!(body.len(), len);
    body
}

// spec: "Pushing Manifests": "A registry that enforces this limit SHOULD respond to a request
// to push a manifest over this limit with a response code 413 Payload Too Large" - with a
// Content-Length and with a streamed body; exactly at the limit is fine.
#[tokio::test]
async fn oversized_manifest_is_413() {
    let s = TestServer::start_with(|c| c.manifests.max_bytes = 2048).await;
    let img = s.image("big", 1).await;
    let at_limit = padded_manifest(&img, 2048);
    push_and_pull(&s, "big", "fits", OCI_MANIFEST, &at_limit).await;

    let over = padded_manifest(&img, 2049);
    let resp = s.put_manifest("big", "over", OCI_MANIFEST, &over).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let v: Value = resp.json().await.unwrap();
    assert!(v["errors"][0]["code"].is_string(), "{v}");

    let way_over = padded_manifest(&img, 8000);
    let resp = s
        .put("/v2/big/manifests/streamed")
        .header("content-type", OCI_MANIFEST)
        .body(streamed(
            way_over.chunks(1000).map(<[u8]>::to_vec).collect(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    for tag in ["over", "streamed"] {
        assert_no_manifest(&s, "big", tag).await;
    }
}

// spec: "Pushing Manifests": "Client and registry implementations SHOULD expect to be able to
// support manifest pushes of at least 4 megabytes" - the default limit takes one.
#[tokio::test]
async fn four_megabyte_manifest_is_accepted_by_default() {
    let s = TestServer::start().await;
    let img = s.image("huge", 1).await;
    let body = padded_manifest(&img, 4_000_000);
    push_and_pull(&s, "huge", "latest", OCI_MANIFEST, &body).await;
}

// spec: "Pushing Manifests" - an artifact manifest with an empty config and no layers
// (image-spec "Guidelines for Artifact Usage") is a valid image manifest.
#[tokio::test]
async fn artifact_manifest_with_empty_config() {
    let s = TestServer::start().await;
    let empty = s.push_blob("art", b"{}").await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.thing.v1",
        "config": { "mediaType": OCI_EMPTY, "digest": empty, "size": 2 },
        "layers": [],
    }))
    .unwrap();
    push_and_pull(&s, "art", "thing", OCI_MANIFEST, &body).await;
}

// spec: "Pulling manifests" defers to RFC 7231 §5.3 for Accept: a media range with `q=0` is
// "not acceptable", so a manifest of only that type is not served to that client.
#[tokio::test]
async fn accept_with_q_zero_excludes_the_type() {
    let s = TestServer::start().await;
    s.push_image("qzero", "latest", 1).await;
    let resp = get_manifest(
        &s,
        "qzero",
        "latest",
        &format!("{OCI_MANIFEST};q=0, {DOCKER_MANIFEST}"),
    )
    .await;
    assert_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
}

// Image-spec: the same layer may appear more than once in an image (Docker's empty layer
// does); the manifest is valid.
#[tokio::test]
async fn repeated_layers_are_fine() {
    let s = TestServer::start().await;
    let img = s.image("repeat", 1).await;
    let mut v: Value = serde_json::from_slice(&img.manifest).unwrap();
    let layer = v["layers"][0].clone();
    v["layers"] = json!([layer.clone(), layer.clone(), layer]);
    let body = serde_json::to_vec(&v).unwrap();
    push_and_pull(&s, "repeat", "latest", OCI_MANIFEST, &body).await;
}

// spec: "Pushing Manifests" with descriptors in sha512 (image-spec "Digests"): the blobs they
// name are checked under that algorithm.
#[tokio::test]
async fn sha512_descriptors_in_a_manifest() {
    let s = TestServer::start().await;
    let config = br#"{"architecture":"arm64","os":"linux"}"#;
    let layer = random_bytes(1000);
    let (cd, ld) = (sha512(config), sha512(&layer));
    let cfg = Desc::new(OCI_CONFIG, config, cd.clone());
    let lyr = Desc::new(OCI_LAYER, &layer, ld.clone());
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": cfg.json(),
        "layers": [lyr.json()],
    }))
    .unwrap();
    let resp = s.put_manifest("s512", "latest", OCI_MANIFEST, &body).await;
    let e = assert_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    assert_eq!(e["detail"]["missing"].as_array().unwrap().len(), 2);
    s.push_blob_as("s512", config, &cd).await;
    s.push_blob_as("s512", &layer, &ld).await;
    push_and_pull(&s, "s512", "latest", OCI_MANIFEST, &body).await;
}

// spec: "Pushing Manifests": concurrent pushes of different manifests to one tag all succeed,
// and the tag then names exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_to_one_tag() {
    let s = TestServer::start().await;
    let mut images = Vec::new();
    for _ in 0..6 {
        images.push(s.image("contend", 1).await);
    }
    let pushes = images
        .iter()
        .map(|img| s.put_manifest("contend", "latest", OCI_MANIFEST, &img.manifest));
    for resp in futures::future::join_all(pushes).await {
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    let resp = get_manifest(&s, "contend", "latest", OCI_MANIFEST).await;
    let resp = expect_status(resp, StatusCode::OK).await;
    let d = header(&resp, "docker-content-digest");
    let body = resp.bytes().await.unwrap();
    assert_eq!(sha256(&body), d);
    assert!(images.iter().any(|i| i.digest() == d));
    for img in &images {
        let d = img.digest();
        assert_manifest(&s, "contend", &d, OCI_MANIFEST, &img.manifest, &d).await;
    }
}
