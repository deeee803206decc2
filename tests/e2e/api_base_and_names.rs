//! `/v2/` (end-1), unknown endpoints and methods, and the name/reference grammar that every
//! endpoint enforces before doing any I/O.

use crate::common::*;
use reqwest::StatusCode;

// spec: "Determining Support" (end-1): GET /v2/ answers 200.
// spec: "Legacy Docker support HTTP headers": Docker-Distribution-API-Version.
#[tokio::test]
async fn base_endpoint_answers_200_with_api_version() {
    let s = TestServer::start().await;
    for path in ["/v2/", "/v2"] {
        let resp = expect_status(s.get(path).send().await.unwrap(), StatusCode::OK).await;
        assert_eq!(
            header(&resp, "docker-distribution-api-version"),
            "registry/2.0"
        );
        assert_eq!(header(&resp, "content-type"), "application/json");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v, serde_json::json!({}));
    }
    let resp = s.head("/v2/").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert!(resp.bytes().await.unwrap().is_empty());
}

// spec: "Legacy Docker support HTTP headers": the header also rides on error responses.
#[tokio::test]
async fn api_version_header_is_on_error_responses() {
    let s = TestServer::start().await;
    let resp = s.get("/v2/nothing/manifests/latest").send().await.unwrap();
    assert_eq!(
        header(&resp, "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
}

// spec: "Endpoints": a path that matches no endpoint is not found.
#[tokio::test]
async fn unknown_endpoints_are_404() {
    let s = TestServer::start().await;
    for path in ["/v2/justaname", "/v2/a/whatever/x", "/v2/a/blobs"] {
        let resp = s.get(path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let resp = s.get("/nope").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

// spec: "Endpoints" table: a method an endpoint does not define is refused (405 UNSUPPORTED,
// code-13).
#[tokio::test]
async fn undefined_methods_are_405_unsupported() {
    let s = TestServer::start().await;
    let d = sha256(b"x");
    let cases = [
        (reqwest::Method::POST, "/v2/a/manifests/latest".to_string()),
        (reqwest::Method::PATCH, "/v2/".to_string()),
        (reqwest::Method::PUT, format!("/v2/a/blobs/{d}")),
        (reqwest::Method::DELETE, "/v2/a/tags/list".to_string()),
        (reqwest::Method::POST, "/v2/_catalog".to_string()),
        (reqwest::Method::PUT, format!("/v2/a/referrers/{d}")),
        (reqwest::Method::GET, "/v2/a/blobs/uploads/".to_string()),
    ];
    for (m, path) in cases {
        let resp = s
            .client
            .request(m.clone(), s.url(&path))
            .send()
            .await
            .unwrap();
        assert_error(resp, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    }
}

// spec: "Pulling manifests": <name> MUST match
// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`;
// code-8 NAME_INVALID for anything else, on every endpoint family.
#[tokio::test]
async fn invalid_names_are_400_name_invalid_everywhere() {
    let s = TestServer::start().await;
    let d = sha256(b"x");
    let long = format!("{}/{}", "a".repeat(200), "b".repeat(60));
    for name in [
        "UPPER", "a//b", "a/", "-a", "a-", "a..b", "a___b", "a_-b", "a.", "a%20b", &long,
    ] {
        let paths = [
            format!("/v2/{name}/tags/list"),
            format!("/v2/{name}/manifests/latest"),
            format!("/v2/{name}/manifests/{d}"),
            format!("/v2/{name}/blobs/{d}"),
            format!("/v2/{name}/referrers/{d}"),
        ];
        for p in &paths {
            let resp = s.get(p).send().await.unwrap();
            let e = assert_error(resp, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
            assert!(e["message"].as_str().is_some(), "{p}");
        }
        let resp = s
            .post(&format!("/v2/{name}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_error(resp, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
        let resp = s.put_manifest(name, "latest", OCI_MANIFEST, b"{}").await;
        assert_error(resp, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
    }
}

// spec: "Pulling manifests" name grammar: `..` is not a path component; sent raw because HTTP
// clients normalize dot segments away.
#[tokio::test]
async fn dot_dot_names_are_rejected() {
    let s = TestServer::start().await;
    for path in [
        "/v2/../x/tags/list",
        "/v2/a/../b/manifests/latest",
        "/v2/./a/tags/list",
        "/v2/../../etc/blobs/uploads/",
    ] {
        let method = if path.ends_with("uploads/") {
            "POST"
        } else {
            "GET"
        };
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let r = s.raw(req.into_bytes()).await;
        r.assert_error(400, "NAME_INVALID");
    }
}

// spec: "Pulling manifests" name grammar: every separator form is accepted, and so are
// multi-component names, end to end.
#[tokio::test]
async fn valid_names_of_every_shape_work_end_to_end() {
    let s = TestServer::start().await;
    let long = format!("{}/{}", "a".repeat(200), "b".repeat(54)); // 255 characters
    for name in [
        "a",
        "0",
        "library/alpine",
        "a/b/c/d",
        "my-app",
        "my---app",
        "my_app",
        "my__app",
        "my.app",
        "team-a/app.v2/x_y",
        "x/blobs/y",
        "x/manifests/y",
        "x/blobs/uploads",
        "x/tags/list",
        "x/referrers/y",
        &long,
    ] {
        let (img, digest) = s.push_image(name, "v1", 1).await;
        let resp = s
            .get(&format!("/v2/{name}/manifests/v1"))
            .send()
            .await
            .unwrap();
        let resp = expect_status(resp, StatusCode::OK).await;
        assert_eq!(header(&resp, "docker-content-digest"), digest);
        assert_eq!(
            resp.bytes().await.unwrap().as_ref(),
            img.manifest.as_slice()
        );
        let v = s.tags_list(name).await;
        assert_eq!(v["name"], *name);
        assert_eq!(v["tags"], serde_json::json!(["v1"]));
    }
}

// spec: "Pulling manifests": a tag MUST match `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`. A push to
// a tag outside the grammar is refused with 400 MANIFEST_INVALID; a pull of one is 404
// MANIFEST_UNKNOWN ("If the manifest is not found in the repository, the response code MUST
// be 404", end-3), as the OCI conformance suite checks with `.INVALID_MANIFEST_NAME`.
#[tokio::test]
async fn tag_grammar_is_enforced() {
    let s = TestServer::start().await;
    let img = s.image("tags", 1).await;
    for tag in ["latest", "_x", "A-b_c.d", "0", &"t".repeat(128)] {
        s.push_manifest("tags", tag, OCI_MANIFEST, &img.manifest)
            .await;
        let resp = s
            .head(&format!("/v2/tags/manifests/{tag}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{tag}");
    }
    for tag in [
        ".x",
        "-x",
        &"t".repeat(129),
        "a%20b",
        "a+b",
        ".INVALID_MANIFEST_NAME",
    ] {
        let resp = s
            .put_manifest("tags", tag, OCI_MANIFEST, &img.manifest)
            .await;
        assert_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
        let path = format!("/v2/tags/manifests/{tag}");
        let resp = s.get(&path).send().await.unwrap();
        assert_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
        let resp = s.head(&path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "HEAD {tag}");
        let resp = s.delete(&path).send().await.unwrap();
        assert_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    }
}

// Digests outside the grammar (or of an unsupported algorithm) in paths. Content under such a
// digest cannot exist: blob and manifest reads and deletes are 404 BLOB_UNKNOWN /
// MANIFEST_UNKNOWN (end-2, end-3, end-9, end-10). The referrers API says otherwise: "If the
// request is invalid, such as a <digest> with an invalid syntax, a 400 Bad Request MUST be
// returned" ("Listing Referrers"), so that is 400 DIGEST_INVALID (code-4).
#[tokio::test]
async fn malformed_digests_in_paths() {
    let s = TestServer::start().await;
    let bad = [
        "sha256:zz".to_string(),
        "sha256:".to_string(),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha256:{}", "a".repeat(63)),
        format!("sha512:{}", "a".repeat(64)),
        format!("md5:{}", "a".repeat(32)),
        ":abc".to_string(),
    ];
    for d in &bad {
        for (p, code) in [
            (format!("/v2/repo/blobs/{d}"), "BLOB_UNKNOWN"),
            (format!("/v2/repo/manifests/{d}"), "MANIFEST_UNKNOWN"),
        ] {
            let resp = s.get(&p).send().await.unwrap();
            assert_error(resp, StatusCode::NOT_FOUND, code).await;
            let resp = s.head(&p).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "HEAD {p}");
            let resp = s.delete(&p).send().await.unwrap();
            assert_error(resp, StatusCode::NOT_FOUND, code).await;
        }
        let resp = s
            .get(&format!("/v2/repo/referrers/{d}"))
            .send()
            .await
            .unwrap();
        assert_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
        // A push by a malformed digest is a bad request, not a missing manifest.
        let resp = s
            .put(&format!("/v2/repo/manifests/{d}"))
            .header("content-type", OCI_MANIFEST)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
        // Methods no blob path has stay 405.
        let resp = s.put(&format!("/v2/repo/blobs/{d}")).send().await.unwrap();
        assert_error(resp, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    }
}
