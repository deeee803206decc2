//! Content discovery: tag listing with pagination (end-8a, end-8b), the catalog, and the
//! referrers API (end-12a, end-12b) with `subject` pushes.

use std::collections::BTreeMap;

use crate::common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const TAGS: &[&str] = &[
    "latest",
    "v1.2",
    "v1.10",
    "v1.0.0",
    "v1.0.0-rc1",
    "A",
    "Z",
    "B10",
    "B2",
    "_under",
    "a",
    "a.b",
    "a-b",
    "a_b",
    "b",
    "0",
    "9",
    "zzz",
    "Latest",
    "a__b",
];

const SBOM_TYPE: &str = "application/vnd.example.sbom.v1";
const SIG_TYPE: &str = "application/vnd.example.sig.v1";

/// Pushes one image and points every tag in `tags` at it.
async fn tag_all(s: &TestServer, repo: &str, tags: &[&str]) -> String {
    let img = s.image(repo, 1).await;
    let mut d = String::new();
    for t in tags {
        d = s.push_manifest(repo, t, OCI_MANIFEST, &img.manifest).await;
    }
    d
}

fn ascii_sorted(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|t| t.to_string()).collect();
    v.sort();
    v
}

async fn json_ok(resp: reqwest::Response) -> (Option<String>, Value) {
    let resp = expect_status(resp, StatusCode::OK).await;
    assert_eq!(header(&resp, "content-type"), "application/json");
    let link = next_link(&resp);
    (link, resp.json().await.unwrap())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

// spec: "Listing Tags" (end-8a): 200 with `{"name","tags"}`, tags in ASCIIbetical order.
#[tokio::test]
async fn tags_are_listed_in_ascii_order() {
    let s = TestServer::start().await;
    tag_all(&s, "listing", TAGS).await;
    tag_all(&s, "other", &["not-mine"]).await;
    let (link, v) = json_ok(s.get("/v2/listing/tags/list").send().await.unwrap()).await;
    assert!(link.is_none());
    assert_eq!(v["name"], "listing");
    assert_eq!(strings(&v["tags"]), ascii_sorted(TAGS));
}

/// Walks a paginated listing from `first`, following `Link` headers; returns every page.
async fn walk(s: &TestServer, first: &str, field: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(url) = next {
        assert!(pages.len() <= 1000, "pagination does not end");
        let (link, v) = json_ok(s.get(&url).send().await.unwrap()).await;
        pages.push(strings(&v[field]));
        next = link;
    }
    pages
}

// spec: "Listing Tags" (end-8b): with `n`, pages of n tags (fewer only on the last page) and a
// `Link: <...>; rel="next"` header while more remain; following the links yields every tag
// exactly once, in order.
#[tokio::test]
async fn tag_pagination_follows_link_headers_to_the_end() {
    let s = TestServer::start().await;
    tag_all(&s, "pages", TAGS).await;
    let want = ascii_sorted(TAGS);
    let total = want.len();
    for n in [1, 2, 3, 7, total - 1, total, total + 1, 1000] {
        let pages = walk(&s, &format!("/v2/pages/tags/list?n={n}"), "tags").await;
        let (last, full) = pages.split_last().unwrap();
        for p in full {
            assert_eq!(p.len(), n, "n={n}: a page before the last is short");
        }
        assert!(
            !last.is_empty() && last.len() <= n,
            "n={n}: last page {last:?}"
        );
        assert_eq!(pages.len(), total.div_ceil(n).max(1), "n={n}");
        let all: Vec<String> = pages.concat();
        assert_eq!(all, want, "n={n}");
    }
}

// spec: "Listing Tags" (end-8b): `last` starts the list non-inclusively after that tag, with
// or without `n`.
#[tokio::test]
async fn tags_after_last() {
    let s = TestServer::start().await;
    tag_all(&s, "last", TAGS).await;
    let want = ascii_sorted(TAGS);
    for (i, t) in want.iter().enumerate() {
        let (link, v) = json_ok(
            s.get(&format!("/v2/last/tags/list?last={t}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert!(link.is_none());
        assert_eq!(strings(&v["tags"]), want[i + 1..].to_vec(), "last={t}");
        let (_, v) = json_ok(
            s.get(&format!("/v2/last/tags/list?n=2&last={t}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let end = (i + 3).min(want.len());
        assert_eq!(
            strings(&v["tags"]),
            want[i + 1..end].to_vec(),
            "n=2&last={t}"
        );
    }
    // A `last` that is not itself a tag still cuts the list lexically.
    let (_, v) = json_ok(s.get("/v2/last/tags/list?last=a0").send().await.unwrap()).await;
    let expect: Vec<String> = want.iter().filter(|t| t.as_str() > "a0").cloned().collect();
    assert_eq!(strings(&v["tags"]), expect);
}

// spec: "Listing Tags": "When n is zero, this endpoint MUST return an empty list, and MUST NOT
// include a Link header"; n beyond the count returns everything without a Link.
#[tokio::test]
async fn n_zero_and_n_large() {
    let s = TestServer::start().await;
    tag_all(&s, "zero", &["a", "b", "c"]).await;
    let resp = s.get("/v2/zero/tags/list?n=0").send().await.unwrap();
    assert!(resp.headers().get("link").is_none());
    let (_, v) = json_ok(resp).await;
    assert_eq!(v["tags"], json!([]));
    assert_eq!(v["name"], "zero");
    let resp = s.get("/v2/zero/tags/list?n=3").send().await.unwrap();
    assert!(resp.headers().get("link").is_none());
    let (_, v) = json_ok(resp).await;
    assert_eq!(v["tags"], json!(["a", "b", "c"]));
    let resp = s.get("/v2/zero/tags/list?n=100000").send().await.unwrap();
    let (_, v) = json_ok(resp).await;
    assert_eq!(v["tags"], json!(["a", "b", "c"]));
}

// spec: "Listing Tags": "The list of tags MAY be empty if there are no tags on the repository"
// - a repository holding only untagged content lists none.
#[tokio::test]
async fn repository_without_tags_lists_none() {
    let s = TestServer::start().await;
    let img = s.image("untagged", 1).await;
    s.push_manifest("untagged", &img.digest(), OCI_MANIFEST, &img.manifest)
        .await;
    let (link, v) = json_ok(s.get("/v2/untagged/tags/list").send().await.unwrap()).await;
    assert!(link.is_none());
    assert_eq!(v["name"], "untagged");
    assert!(
        v["tags"].is_null() || v["tags"] == json!([]),
        "expected no tags: {v}"
    );
}

// spec: "Listing Tags": "Assuming a repository is found" 200, otherwise 404 (end-8a/8b error
// column); code-9 NAME_UNKNOWN - whatever the pagination parameters.
#[tokio::test]
async fn tags_of_unknown_repository_are_404_name_unknown() {
    let s = TestServer::start().await;
    s.push_blob("exists", b"x").await;
    for q in ["", "?n=10", "?last=a", "?n=2&last=b"] {
        let resp = s
            .get(&format!("/v2/does/not/exist/tags/list{q}"))
            .send()
            .await
            .unwrap();
        assert_error(resp, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
    }
}

// spec: "Listing Tags" (end-8b error 404): `n=0` asks for an empty page of an existing
// repository; it does not make an unknown repository exist.
#[tokio::test]
async fn tags_of_unknown_repository_with_n_zero_are_404() {
    let s = TestServer::start().await;
    let resp = s
        .get("/v2/does/not/exist/tags/list?n=0")
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
}

// spec: "Listing Tags": `<int>` is an integer; anything else is a bad request.
#[tokio::test]
async fn non_integer_n_is_400() {
    let s = TestServer::start().await;
    tag_all(&s, "badn", &["a"]).await;
    for n in ["abc", "-1", "1.5", "0x10"] {
        let resp = s
            .get(&format!("/v2/badn/tags/list?n={n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "n={n}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["errors"][0]["code"].is_string());
        let resp = s.get(&format!("/v2/_catalog?n={n}")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "catalog n={n}");
    }
}

// Docker Registry HTTP API V2 "Catalog": `GET /v2/_catalog` lists repositories in lexical
// order, paginated with `n`, `last` and `Link` like tags.
#[tokio::test]
async fn catalog_lists_and_paginates_repositories() {
    let s = TestServer::start().await;
    let repos = [
        "b",
        "a",
        "a/b",
        "a-b",
        "library/alpine",
        "z/y/x",
        "0repo",
        "a.b",
        "a_b",
        "m",
    ];
    for r in repos {
        s.push_blob(r, r.as_bytes()).await;
    }
    // A session alone does not make a repository.
    s.start_upload("only-an-upload").await;
    let want = ascii_sorted(&repos);
    let (link, v) = json_ok(s.get("/v2/_catalog").send().await.unwrap()).await;
    assert!(link.is_none());
    assert_eq!(strings(&v["repositories"]), want);
    for n in [1, 3, 4, repos.len(), repos.len() + 5] {
        let pages = walk(&s, &format!("/v2/_catalog?n={n}"), "repositories").await;
        let (_, full) = pages.split_last().unwrap();
        for p in full {
            assert_eq!(p.len(), n);
        }
        assert_eq!(pages.concat(), want, "n={n}");
    }
    let resp = s.get("/v2/_catalog?n=0").send().await.unwrap();
    assert!(resp.headers().get("link").is_none());
    let (_, v) = json_ok(resp).await;
    assert_eq!(v["repositories"], json!([]));
    let (_, v) = json_ok(s.get("/v2/_catalog?last=a/b").send().await.unwrap()).await;
    let after: Vec<String> = want
        .iter()
        .filter(|r| r.as_str() > "a/b")
        .cloned()
        .collect();
    assert_eq!(strings(&v["repositories"]), after);
}

// Catalog of an empty registry.
#[tokio::test]
async fn empty_catalog() {
    let s = TestServer::start().await;
    let (link, v) = json_ok(s.get("/v2/_catalog").send().await.unwrap()).await;
    assert!(link.is_none());
    assert_eq!(v["repositories"], json!([]));
}

/// Pushes a manifest with a `subject` and checks the 201 carries `OCI-Subject`.
async fn push_referrer(
    s: &TestServer,
    repo: &str,
    media_type: &str,
    body: &Value,
    subject: &str,
) -> (String, usize) {
    let bytes = serde_json::to_vec(body).unwrap();
    let d = sha256(&bytes);
    let resp = s.put_manifest(repo, &d, media_type, &bytes).await;
    let resp = expect_status(resp, StatusCode::CREATED).await;
    // spec: "Pushing Manifests with Subject": the registry MUST answer with
    // `OCI-Subject: <subject digest>`.
    assert_eq!(header(&resp, "oci-subject"), subject);
    assert_eq!(header(&resp, "docker-content-digest"), d);
    (d, bytes.len())
}

/// Pushes the empty JSON config (`{}`) to `repo`; returns its descriptor.
async fn empty_config(s: &TestServer, repo: &str) -> Desc {
    Desc::new(OCI_EMPTY, b"{}", s.push_blob(repo, b"{}").await)
}

fn artifact(
    artifact_type: Option<&str>,
    config: &Desc,
    subject: &Desc,
    annotations: Option<Value>,
) -> Value {
    let mut v = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.json(),
        "layers": [],
        "subject": subject.json(),
    });
    if let Some(t) = artifact_type {
        v["artifactType"] = json!(t);
    }
    if let Some(a) = annotations {
        v["annotations"] = a;
    }
    v
}

async fn referrers(
    s: &TestServer,
    repo: &str,
    subject: &str,
    query: &str,
) -> (reqwest::header::HeaderMap, Value) {
    let resp = s
        .get(&format!("/v2/{repo}/referrers/{subject}{query}"))
        .send()
        .await
        .unwrap();
    let resp = expect_status(resp, StatusCode::OK).await;
    assert_eq!(header(&resp, "content-type"), OCI_INDEX);
    let h = resp.headers().clone();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    assert!(v["manifests"].is_array(), "{v}");
    (h, v)
}

fn by_digest(v: &Value) -> BTreeMap<String, Value> {
    v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["digest"].as_str().unwrap().to_string(), d.clone()))
        .collect()
}

// spec: "Listing Referrers" (end-12a) and "Pushing Manifests with Subject": every manifest
// or index in the repository whose subject is <digest> is listed, with mediaType, size,
// digest, `artifactType` (the manifest's, else the config's mediaType for an image manifest,
// omitted for an index without one) and the manifest's annotations.
#[tokio::test]
async fn referrers_list_every_kind_of_referrer() {
    let s = TestServer::start().await;
    let (subject_img, subject) = s.push_image("refs", "latest", 1).await;
    let sd = subject_img.desc();
    assert_eq!(sd.digest, subject);
    let empty = empty_config(&s, "refs").await;

    let sbom_annotations = json!({
        "org.opencontainers.image.created": "2022-01-01T14:42:55Z",
        "org.example.sbom.format": "json",
    });
    let sbom = artifact(Some(SBOM_TYPE), &empty, &sd, Some(sbom_annotations.clone()));
    let (sbom_d, sbom_len) = push_referrer(&s, "refs", OCI_MANIFEST, &sbom, &subject).await;

    let sig_config = br#"{"sig":"config"}"#;
    let sig_cfg = Desc::new(
        "application/vnd.example.signature.config.v1+json",
        sig_config,
        s.push_blob("refs", sig_config).await,
    );
    let sig = artifact(None, &sig_cfg, &sd, None);
    let (sig_d, sig_len) = push_referrer(&s, "refs", OCI_MANIFEST, &sig, &subject).await;

    let typed_index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle.v1",
        "manifests": [],
        "subject": sd.json(),
        "annotations": { "k": "v" },
    });
    let (ti_d, ti_len) = push_referrer(&s, "refs", OCI_INDEX, &typed_index, &subject).await;

    let plain_index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [sd.json()],
        "subject": sd.json(),
        "annotations": { "org.opencontainers.image.created": "2023-01-01T07:21:33Z" },
    });
    let (pi_d, pi_len) = push_referrer(&s, "refs", OCI_INDEX, &plain_index, &subject).await;

    // Not referrers of the subject: no subject at all, and a subject elsewhere.
    s.push_image("refs", "unrelated", 1).await;
    let other_subject = Desc::new(OCI_MANIFEST, b"zzz", sha256(b"zzz"));
    push_referrer(
        &s,
        "refs",
        OCI_MANIFEST,
        &artifact(Some("application/x.other"), &empty, &other_subject, None),
        &other_subject.digest,
    )
    .await;

    let (h, v) = referrers(&s, "refs", &subject, "").await;
    assert!(h.get("oci-filters-applied").is_none());
    let got = by_digest(&v);
    assert_eq!(got.len(), 4, "{v}");
    let want = [
        (
            &sbom_d,
            json!({"mediaType": OCI_MANIFEST, "digest": sbom_d, "size": sbom_len,
                   "artifactType": SBOM_TYPE,
                   "annotations": sbom_annotations}),
        ),
        (
            &sig_d,
            json!({"mediaType": OCI_MANIFEST, "digest": sig_d, "size": sig_len,
                   "artifactType": "application/vnd.example.signature.config.v1+json"}),
        ),
        (
            &ti_d,
            json!({"mediaType": OCI_INDEX, "digest": ti_d, "size": ti_len,
                   "artifactType": "application/vnd.example.bundle.v1",
                   "annotations": {"k": "v"}}),
        ),
        (
            &pi_d,
            json!({"mediaType": OCI_INDEX, "digest": pi_d, "size": pi_len,
                   "annotations": {"org.opencontainers.image.created": "2023-01-01T07:21:33Z"}}),
        ),
    ];
    for (d, expected) in want {
        let mut entry = got[d.as_str()].clone();
        // Descriptor fields beyond these (none expected) would not be wrong; compare these.
        let obj = entry.as_object_mut().unwrap();
        obj.retain(|k, _| {
            ["mediaType", "digest", "size", "artifactType", "annotations"].contains(&k.as_str())
        });
        assert_eq!(entry, expected, "descriptor of {d}");
    }
    // Each listed descriptor names pullable content.
    for d in got.keys() {
        let resp = s
            .get(&format!("/v2/refs/manifests/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}

// spec: "Listing Referrers" (end-12b): `?artifactType=` filters, and the response then
// carries `OCI-Filters-Applied: artifactType`; no match is an empty list.
#[tokio::test]
async fn referrers_filter_by_artifact_type() {
    let s = TestServer::start().await;
    let (img, subject) = s.push_image("filter", "latest", 1).await;
    let empty = empty_config(&s, "filter").await;
    let sbom = artifact(Some(SBOM_TYPE), &empty, &img.desc(), None);
    let (sbom_d, _) = push_referrer(&s, "filter", OCI_MANIFEST, &sbom, &subject).await;
    let sig = artifact(Some(SIG_TYPE), &empty, &img.desc(), None);
    let (sig_d, _) = push_referrer(&s, "filter", OCI_MANIFEST, &sig, &subject).await;
    // artifactType taken from the config when the manifest has none.
    let cfg = Desc::new(OCI_EMPTY, b"{}", empty.digest.clone());
    let implicit = artifact(None, &cfg, &img.desc(), Some(json!({"n": "1"})));
    let (implicit_d, _) = push_referrer(&s, "filter", OCI_MANIFEST, &implicit, &subject).await;

    for (t, want) in [
        (SBOM_TYPE, vec![&sbom_d]),
        (SIG_TYPE, vec![&sig_d]),
        (OCI_EMPTY, vec![&implicit_d]),
        ("application/vnd.example.none", vec![]),
    ] {
        let q = format!("?artifactType={}", t.replace('+', "%2B"));
        let (h, v) = referrers(&s, "filter", &subject, &q).await;
        assert_eq!(
            opt_header(&h, "oci-filters-applied").as_deref(),
            Some("artifactType"),
            "{t}"
        );
        let got: Vec<String> = by_digest(&v).into_keys().collect();
        let mut want: Vec<String> = want.into_iter().cloned().collect();
        want.sort();
        assert_eq!(got, want, "filter {t}");
        for m in v["manifests"].as_array().unwrap() {
            assert_eq!(m["artifactType"], t);
        }
    }
    let (_, v) = referrers(&s, "filter", &subject, "").await;
    assert_eq!(v["manifests"].as_array().unwrap().len(), 3);
}

// spec: "Listing Referrers": "If a query results in no matching referrers, an empty manifest
// list MUST be returned" and the registry "MUST NOT return a 404" - for an unknown subject
// and an unknown repository alike.
#[tokio::test]
async fn referrers_of_nothing_are_an_empty_index() {
    let s = TestServer::start().await;
    let (_, subject) = s.push_image("lonely", "latest", 1).await;
    for (repo, d) in [
        ("lonely", subject.clone()),
        ("lonely", sha256(b"unknown subject")),
        ("no/such/repo", sha256(b"unknown subject")),
        ("lonely", sha512(b"sha512 subject")),
    ] {
        let (_, v) = referrers(&s, repo, &d, "").await;
        assert_eq!(v["manifests"], json!([]), "{repo} {d}");
    }
}

// spec: "Listing Referrers": "If the request is invalid, such as a <digest> with an invalid
// syntax, a 400 Bad Request MUST be returned."
#[tokio::test]
async fn referrers_with_invalid_digest_are_400() {
    let s = TestServer::start().await;
    for d in [
        "sha256:abc",
        "latest",
        "sha256:",
        &format!("foo:{}", "a".repeat(64)),
    ] {
        let resp = s
            .get(&format!("/v2/repo/referrers/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{d}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["errors"][0]["code"].is_string());
    }
}

// spec: "Push": "A registry MUST initially accept an otherwise valid manifest with a subject
// field that references a manifest that does not exist in the repository, allowing clients to
// push a manifest and referrers to that manifest in either order."
#[tokio::test]
async fn referrer_may_be_pushed_before_its_subject() {
    let s = TestServer::start().await;
    let img = s.image("order", 1).await; // blobs only; manifest not yet pushed
    let subject = img.digest();
    let empty = empty_config(&s, "order").await;
    let sig = artifact(Some(SIG_TYPE), &empty, &img.desc(), None);
    let bytes = serde_json::to_vec(&sig).unwrap();
    // By tag this time.
    let resp = s.put_manifest("order", "sig", OCI_MANIFEST, &bytes).await;
    let resp = expect_status(resp, StatusCode::CREATED).await;
    assert_eq!(header(&resp, "oci-subject"), subject);
    let (_, v) = referrers(&s, "order", &subject, "").await;
    assert_eq!(
        by_digest(&v).keys().collect::<Vec<_>>(),
        vec![&sha256(&bytes)]
    );
    // The subject arrives later; the referrer stays listed.
    s.push_manifest("order", "latest", OCI_MANIFEST, &img.manifest)
        .await;
    let (_, v) = referrers(&s, "order", &subject, "").await;
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
}

// spec: "Listing Referrers": "Each descriptor is of an image manifest or index in the same
// <name> namespace" - referrers pushed to another repository are not listed.
#[tokio::test]
async fn referrers_are_scoped_to_the_repository() {
    let s = TestServer::start().await;
    let (img, subject) = s.push_image("home", "latest", 1).await;
    let empty = empty_config(&s, "away").await;
    let sig = artifact(Some(SIG_TYPE), &empty, &img.desc(), None);
    let (sig_d, _) = push_referrer(&s, "away", OCI_MANIFEST, &sig, &subject).await;
    let (_, v) = referrers(&s, "home", &subject, "").await;
    assert_eq!(v["manifests"], json!([]));
    let (_, v) = referrers(&s, "away", &subject, "").await;
    assert_eq!(by_digest(&v).keys().collect::<Vec<_>>(), vec![&sig_d]);
}
