//! The pull-through cache end to end: a berth configured with an upstream (another berth,
//! seen through a relay that counts and misbehaves on command) standing in for Docker Hub.

use std::time::{Duration, Instant};

use berth::config::{Config, UpstreamConfig};
use reqwest::{Response, StatusCode};
use serde_json::json;

use crate::common::*;
use crate::relay::Relay;

const ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// An origin registry, a relay in front of it, and a berth mirroring it as `hub` (Docker
/// Hub's normalization, host `docker.io`, and the default upstream).
pub(crate) struct Mirror {
    pub origin: TestServer,
    pub relay: Relay,
    pub s: TestServer,
}

pub(crate) async fn mirror(modify: impl FnOnce(&mut Config)) -> Mirror {
    let origin = TestServer::start().await;
    let relay = Relay::start(&origin.base).await;
    let url = relay.url.clone();
    let s = TestServer::start_with(|c| {
        let mut up = UpstreamConfig::new("hub", &url);
        up.hosts = vec!["docker.io".into()];
        c.proxy.upstreams = vec![up];
        c.proxy.default_upstream = Some("hub".into());
        modify(c);
    })
    .await;
    Mirror { origin, relay, s }
}

fn cache(resp: &Response) -> String {
    opt_header(resp.headers(), "x-berth-cache").unwrap_or_default()
}

async fn get_manifest(s: &TestServer, path: &str) -> Response {
    s.get(path).header("accept", ACCEPT).send().await.unwrap()
}

// Three ways in, one cache key: the path prefix (`/v2/hub/alpine/...`), containerd's
// `?ns=docker.io` on an unprefixed path, and the default upstream (Docker's
// registry-mirrors) all land on `hub/library/alpine`, fetched from the upstream once. The
// `ns` answers echo it in `OCI-Namespace` (spec: "Registry Proxying").
#[tokio::test]
async fn three_ways_in_share_one_cache_key() {
    let m = mirror(|_| {}).await;
    let (img, digest) = m.origin.push_image("library/alpine", "3.20", 2).await;
    let ways = [
        "/v2/hub/alpine/manifests/3.20",
        "/v2/hub/library/alpine/manifests/3.20",
        "/v2/alpine/manifests/3.20?ns=docker.io",
        "/v2/library/alpine/manifests/3.20?ns=docker.io",
        "/v2/alpine/manifests/3.20",
    ];
    for (i, path) in ways.iter().enumerate() {
        let resp = get_manifest(&m.s, path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(cache(&resp), if i == 0 { "miss" } else { "hit" }, "{path}");
        assert_eq!(header(&resp, "docker-content-digest"), digest);
        if path.contains("ns=") {
            assert_eq!(header(&resp, "oci-namespace"), "docker.io");
        }
        assert_eq!(resp.bytes().await.unwrap(), img.manifest, "byte-exact");
    }
    assert_eq!(m.relay.count("GET manifest"), 1, "{:?}", m.relay.log());
    let layer = &img.layers[0].digest;
    for (i, path) in [
        format!("/v2/alpine/blobs/{layer}?ns=docker.io"),
        format!("/v2/hub/alpine/blobs/{layer}"),
        format!("/v2/alpine/blobs/{layer}"),
    ]
    .iter()
    .enumerate()
    {
        let resp = m.s.get(path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(cache(&resp), if i == 0 { "miss" } else { "hit" });
        assert_eq!(sha256(&resp.bytes().await.unwrap()), *layer);
        if i == 0 {
            // The last byte goes out once the digest is verified, a moment before the blob
            // is durable and stored: wait for the store.
            let url = format!("/v2/hub/library/alpine/blobs/{layer}");
            within(
                Duration::from_secs(10),
                "the filled blob stored",
                || async {
                    let r = m.s.head(&url).send().await.unwrap();
                    cache(&r) == "hit"
                },
            )
            .await;
        }
    }
    assert_eq!(m.relay.count("GET blob"), 1);
    let catalog: serde_json::Value =
        m.s.get("/v2/_catalog")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(catalog["repositories"], json!(["hub/library/alpine"]));

    // A hosted repository is served locally even with a default upstream, and pushes at the
    // root stay local; an unknown `ns` is never dialled.
    m.relay.reset_counts();
    m.s.push_image("team/app", "v1", 1).await;
    assert_eq!(
        get_manifest(&m.s, "/v2/team/app/manifests/v1")
            .await
            .status(),
        StatusCode::OK
    );
    let resp = get_manifest(&m.s, "/v2/team/app/manifests/v1?ns=quay.io").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = get_manifest(&m.s, "/v2/other/manifests/1?ns=quay.io").await;
    assert_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    assert!(m.relay.log().is_empty(), "{:?}", m.relay.log());
}

// Stale if error: with the upstream gone (connections refused), a cached tag is served past
// its TTL, marked `X-Berth-Cache: stale`, and so are its blobs; after a restart of berth with
// the upstream still down, too. Nothing cached and upstream down: 503.
#[tokio::test]
async fn the_cache_survives_the_upstream_going_down_and_a_restart() {
    let mut m =
        mirror(|c| c.proxy.upstreams[0].tag_ttl = berth::config::Span(Duration::from_secs(1)))
            .await;
    let (img, digest) = m.origin.push_image("library/alpine", "3.20", 1).await;
    assert_eq!(
        get_manifest(&m.s, "/v2/hub/alpine/manifests/3.20")
            .await
            .status(),
        StatusCode::OK
    );
    let layer = img.layers[0].digest.clone();
    let blob_path = format!("/v2/hub/alpine/blobs/{layer}");
    // Pulled whole: the last byte goes out only once the blob is verified and stored.
    let resp = m.s.get(&blob_path).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), layer);
    m.relay.down();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let check = |s: TestServer| {
        let (digest, layer, blob_path) = (digest.clone(), layer.clone(), blob_path.clone());
        async move {
            let resp = get_manifest(&s, "/v2/hub/alpine/manifests/3.20").await;
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(cache(&resp), "stale");
            assert_eq!(header(&resp, "docker-content-digest"), digest);
            let resp = s.get(&blob_path).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(sha256(&resp.bytes().await.unwrap()), layer);
            let resp = get_manifest(&s, "/v2/hub/alpine/manifests/never-pulled").await;
            assert_error(resp, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE").await;
            s
        }
    };
    let s = check(m.s).await;
    let s = s.restart().await;
    let s = check(s).await;
    m.s = s;
    m.relay.up().await;
}

// A tag moved upstream: before tag_ttl the old digest is served with no upstream request;
// after it, exactly one HEAD revalidates (shared by concurrent requests) and the new manifest
// is fetched by digest; an unchanged tag costs one HEAD and no GET.
#[tokio::test]
async fn a_moved_tag_is_revalidated_once_after_its_ttl() {
    // Revalidation times are in whole seconds: a TTL of a few leaves the "still fresh" step
    // room on a loaded machine.
    const TTL: u64 = 3;
    let m =
        mirror(|c| c.proxy.upstreams[0].tag_ttl = berth::config::Span(Duration::from_secs(TTL)))
            .await;
    let (_, old) = m.origin.push_image("library/alpine", "latest", 1).await;
    let path = "/v2/hub/alpine/manifests/latest";
    assert_eq!(
        header(&get_manifest(&m.s, path).await, "docker-content-digest"),
        old
    );
    let (_, new) = m.origin.push_image("library/alpine", "latest", 1).await;
    m.relay.reset_counts();
    let resp = get_manifest(&m.s, path).await;
    assert_eq!(
        (header(&resp, "docker-content-digest"), cache(&resp)),
        (old.clone(), "hit".into())
    );
    assert!(m.relay.log().is_empty(), "fresh: no upstream request");
    tokio::time::sleep(Duration::from_millis(TTL * 1000 + 100)).await;
    let answers = futures::future::join_all((0..10).map(|_| get_manifest(&m.s, path))).await;
    for r in &answers {
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(r, "docker-content-digest"), new);
    }
    assert_eq!(m.relay.count("HEAD manifest"), 1, "{:?}", m.relay.log());
    assert_eq!(m.relay.count("GET manifest"), 1, "fetched once, by digest");
    assert!(m
        .relay
        .log()
        .iter()
        .any(|l| l.ends_with(&format!("manifests/{new}"))));
    tokio::time::sleep(Duration::from_millis(TTL * 1000 + 100)).await;
    m.relay.reset_counts();
    let resp = get_manifest(&m.s, path).await;
    assert_eq!(
        (header(&resp, "docker-content-digest"), cache(&resp)),
        (new, "hit".into())
    );
    assert_eq!(
        (
            m.relay.count("HEAD manifest"),
            m.relay.count("GET manifest")
        ),
        (1, 0)
    );
}

// Upstream 429: a cached tag is served stale; an uncached one passes the 429 on with
// Retry-After; the budget headers (`ratelimit-limit: 100;w=21600`) are recorded; a budget of
// 0 stops manifest GETs (a HEAD still revalidates) until it recovers.
#[tokio::test]
async fn rate_limits_are_absorbed_by_the_cache() {
    let m = mirror(|c| c.proxy.upstreams[0].tag_ttl = berth::config::Span(Duration::from_secs(1)))
        .await;
    m.origin.push_image("library/alpine", "3.20", 1).await;
    m.origin.push_image("library/busybox", "1", 1).await;
    m.relay.set(|k| k.budget = Some((100, 76)));
    assert_eq!(
        get_manifest(&m.s, "/v2/hub/alpine/manifests/3.20")
            .await
            .status(),
        StatusCode::OK
    );
    let b = m.s.proxy().upstreams()[0]
        .budget()
        .expect("budget recorded");
    assert_eq!((b.limit, b.remaining, b.window), (100, 76, Some(21600)));
    m.s.proxy().flush_stats().await;
    let states = m.s.db().await.upstream_states().await.unwrap();
    assert_eq!(states[0].budget.map(|b| b.remaining), Some(76));
    assert!(states[0].counters.misses >= 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    m.relay.set(|k| k.too_many = Some(30));
    let resp = get_manifest(&m.s, "/v2/hub/alpine/manifests/3.20").await;
    assert_eq!(
        (resp.status(), cache(&resp)),
        (StatusCode::OK, "stale".into())
    );
    let resp = get_manifest(&m.s, "/v2/hub/busybox/manifests/1").await;
    let retry: u64 = header(&resp, "retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_error(resp, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;

    // Budget spent: the breaker from the 429 aside (a fresh mirror), HEADs go, GETs wait.
    let m = mirror(|_| {}).await;
    m.origin.push_image("library/busybox", "1", 1).await;
    m.relay.set(|k| k.budget = Some((100, 0)));
    let resp =
        m.s.head("/v2/hub/busybox/manifests/1")
            .header("accept", ACCEPT)
            .send()
            .await
            .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "a HEAD on a miss asks the upstream's HEAD"
    );
    m.relay.reset_counts();
    let resp = get_manifest(&m.s, "/v2/hub/busybox/manifests/1").await;
    assert_error(resp, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    assert_eq!(
        m.relay.count("GET manifest"),
        0,
        "no counted pull with the budget spent"
    );
    m.relay.set(|k| k.budget = Some((100, 5)));
    let resp =
        m.s.head("/v2/hub/busybox/manifests/1")
            .header("accept", ACCEPT)
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        get_manifest(&m.s, "/v2/hub/busybox/manifests/1")
            .await
            .status(),
        StatusCode::OK
    );
}

// A digest mismatch (the relay flips a byte of one layer): the client's body ends short of
// its Content-Length (never a complete-looking 200), nothing is cached, and once the
// upstream is clean again the next pull fetches and serves the right bytes.
#[tokio::test]
async fn a_tampered_blob_is_never_served_whole_nor_cached() {
    let m = mirror(|_| {}).await;
    let data = random_bytes(3 << 20);
    let d = m.origin.push_blob("library/alpine", &data).await;
    m.relay.set(|k| k.tamper = Some(d.clone()));
    let path = format!("/v2/hub/alpine/blobs/{d}");
    let resp = m.s.get(&path).send().await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "headers go out before the bytes are verified"
    );
    let announced = resp.content_length().unwrap();
    let got = resp.bytes().await;
    assert!(
        got.as_ref().map_or(true, |b| (b.len() as u64) < announced),
        "the body must end short, not complete"
    );
    assert_eq!(
        m.s.head(&path).send().await.unwrap().status(),
        StatusCode::OK
    );
    m.relay.set(|k| k.tamper = None);
    m.relay.reset_counts();
    let resp = m.s.get(&path).send().await.unwrap();
    assert_eq!(cache(&resp), "miss", "nothing was cached");
    assert_eq!(resp.bytes().await.unwrap(), data);
    assert_eq!(m.relay.count("GET blob"), 1);
    m.s.proxy().flush_stats().await;
    let states = m.s.db().await.upstream_states().await.unwrap();
    assert_eq!(states[0].counters.mismatches, 1);
}

// Fifty concurrent cold pulls of one 64 MiB blob: one upstream GET, fifty byte-identical
// bodies, and the first byte reaches a client before the upstream has finished sending.
#[tokio::test]
async fn fifty_cold_pulls_fetch_once_and_stream() {
    let m = mirror(|_| {}).await;
    let data = random_bytes(64 << 20);
    let want = sha256(&data);
    let d = m.origin.push_blob("library/big", &data).await;
    m.relay.set(|k| k.pace = Some(Duration::from_millis(2)));
    let path = format!("/v2/hub/big/blobs/{d}");
    let pulls = (0..50).map(|_| {
        let req = m.s.get(&path);
        async move {
            use futures::StreamExt;
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let mut body = resp.bytes_stream();
            let mut first = None;
            let mut h = <sha2::Sha256 as sha2::Digest>::new();
            let mut n = 0;
            while let Some(c) = body.next().await {
                let c = c.unwrap();
                first.get_or_insert_with(Instant::now);
                n += c.len();
                sha2::Digest::update(&mut h, &c);
            }
            (
                format!("sha256:{}", hex::encode(sha2::Digest::finalize(h))),
                n,
                first.unwrap(),
            )
        }
    });
    let results = futures::future::join_all(pulls).await;
    assert_eq!(m.relay.count("GET blob"), 1, "{:?}", m.relay.log());
    for (digest, n, _) in &results {
        assert_eq!((digest.as_str(), *n), (want.as_str(), data.len()));
    }
    let done = m.relay.blobs_done()[0];
    let first = results.iter().map(|r| r.2).min().unwrap();
    assert!(
        first < done,
        "the first byte went out before the upstream finished"
    );
    m.s.proxy().flush_stats().await;
    let states = m.s.db().await.upstream_states().await.unwrap();
    assert_eq!(states[0].counters.coalesced, 49);
}

// Pushes stay local: a push, mount or delete on a mirrored repository is 403 DENIED naming
// the upstream; a push to a hosted repository (at the root, with a default upstream) works.
#[tokio::test]
async fn mirrors_are_read_only() {
    let m = mirror(|_| {}).await;
    let (img, digest) = m.origin.push_image("library/alpine", "3.20", 1).await;
    assert_eq!(
        get_manifest(&m.s, "/v2/hub/alpine/manifests/3.20")
            .await
            .status(),
        StatusCode::OK
    );
    let layer = &img.layers[0].digest;
    let denied = |resp: Response| async move {
        let e = assert_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
        assert!(
            e["message"].as_str().unwrap().contains("read-only mirror"),
            "{e}"
        );
    };
    denied(
        m.s.post("/v2/hub/library/alpine/blobs/uploads/")
            .send()
            .await
            .unwrap(),
    )
    .await;
    denied(
        m.s.post("/v2/alpine/blobs/uploads/?ns=docker.io")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let resp =
        m.s.put_manifest("hub/library/alpine", "evil", &img.media_type, &img.manifest)
            .await;
    denied(resp).await;
    denied(
        m.s.delete(&format!("/v2/hub/library/alpine/manifests/{digest}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    denied(
        m.s.delete(&format!("/v2/hub/library/alpine/blobs/{layer}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let d = m.s.push_blob("team/app", b"local bytes").await;
    let resp =
        m.s.post(&format!(
            "/v2/hub/library/alpine/blobs/uploads/?mount={d}&from=team/app"
        ))
        .send()
        .await
        .unwrap();
    denied(resp).await;
    // At the root, a push to a name that is not an upstream prefix is hosted.
    m.s.push_image("alpine", "mine", 1).await;
    assert_eq!(
        get_manifest(&m.s, "/v2/alpine/manifests/mine")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(m.relay.count("POST other"), 0);
}

// The size bound evicts least recently pulled images, keeping blobs still used by a kept
// image and everything in a pinned repository.
#[tokio::test]
async fn eviction_keeps_shared_blobs_and_pins() {
    let m = mirror(|c| c.proxy.max_bytes = berth::config::Bytes(1)).await;
    let base = random_bytes(200_000);
    let mut images = Vec::new();
    for name in ["one", "two", "three"] {
        let repo = format!("library/{name}");
        let base_d = m.origin.push_blob(&repo, &base).await;
        let own = random_bytes(100_000);
        let own_d = m.origin.push_blob(&repo, &own).await;
        let config = format!(r#"{{"architecture":"amd64","os":"linux","name":"{name}"}}"#);
        let config_d = m.origin.push_blob(&repo, config.as_bytes()).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_d, "size": config.len()},
            "layers": [
                {"mediaType": OCI_LAYER, "digest": base_d, "size": base.len()},
                {"mediaType": OCI_LAYER, "digest": own_d, "size": own.len()},
            ],
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        m.origin
            .push_manifest(&repo, "1", OCI_MANIFEST, &manifest)
            .await;
        images.push((name, base_d, own_d, config_d));
    }
    m.s.proxy()
        .hosted()
        .store()
        .set_pin("hub/library/three", true)
        .await
        .unwrap();
    for (name, base_d, own_d, config_d) in &images {
        assert_eq!(
            get_manifest(&m.s, &format!("/v2/hub/{name}/manifests/1"))
                .await
                .status(),
            StatusCode::OK
        );
        for d in [base_d, own_d, config_d] {
            let resp =
                m.s.get(&format!("/v2/hub/{name}/blobs/{d}"))
                    .send()
                    .await
                    .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.bytes().await.unwrap();
        }
        m.s.proxy().hosted().flush_pulls().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await; // distinct pull times
    }
    let report = m.s.proxy().enforce_bound().await.unwrap();
    assert_eq!(
        report.manifests, 2,
        "one and two go; three is pinned: {report:?}"
    );
    let storage = m.s.proxy().hosted().storage().clone();
    let stored = |d: &str| {
        let storage = storage.clone();
        let d: berth::oci::Digest = d.parse().unwrap();
        async move { storage.stat(&d).await.unwrap().is_some() }
    };
    let (_, base_d, own1, _) = &images[0];
    let (_, _, own3, _) = &images[2];
    assert!(
        stored(base_d).await,
        "the shared base layer stays (three uses it)"
    );
    assert!(stored(own3).await, "the pinned image stays whole");
    assert!(!stored(own1).await, "one's own layer is gone");
    m.relay.reset_counts();
    let resp = get_manifest(&m.s, "/v2/hub/three/manifests/1").await;
    assert_eq!(cache(&resp), "hit");
    let resp =
        m.s.get(&format!("/v2/hub/one/blobs/{own1}"))
            .send()
            .await
            .unwrap();
    assert_eq!(
        (resp.status(), cache(&resp)),
        (StatusCode::OK, "miss".into())
    );
}

// A two-level chain: an edge mirror whose upstream is a regional berth mirror (token auth,
// a user of its own), whose upstream is the origin. The edge's url carries the path of the
// regional mirror's `hub` namespace, as containerd's override_path does.
#[tokio::test]
async fn mirrors_chain_with_token_auth() {
    let origin = TestServer::start().await;
    let (img, digest) = origin.push_image("library/alpine", "3.20", 2).await;
    let origin_url = origin.base.clone();
    let regional = TestServer::start_with(|c| {
        c.auth.mode = berth::config::AuthMode::Token;
        let mut up = UpstreamConfig::new("hub", &origin_url);
        up.hosts = vec!["docker.io".into()];
        up.pull = Some(berth::config::PullAccess::Authenticated);
        c.proxy.upstreams = vec![up];
    })
    .await;
    berth::auth::Users::new(regional.db().await)
        .add(&"edge".parse().unwrap(), "edge-secret", false)
        .await
        .unwrap();
    let pw = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pw.path(), "edge-secret\n").unwrap();
    let regional_url = format!("{}/v2/hub", regional.base);
    let pw_path = pw.path().to_path_buf();
    let edge = TestServer::start_with(|c| {
        let mut up = UpstreamConfig::new("eu", &regional_url);
        up.username = Some("edge".into());
        up.password_file = Some(pw_path);
        c.proxy.upstreams = vec![up];
    })
    .await;
    let resp = get_manifest(&edge, "/v2/eu/library/alpine/manifests/3.20").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    for l in &img.layers {
        let resp = edge
            .get(&format!("/v2/eu/library/alpine/blobs/{}", l.digest))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(sha256(&resp.bytes().await.unwrap()), l.digest);
    }
    // Both levels hold it now (the regional one by digest: the edge resolved the tag with a
    // HEAD, which the regional mirror answers from its upstream's HEAD).
    let regional_cache = regional.db().await;
    let repo: berth::oci::RepoName = "hub/library/alpine".parse().unwrap();
    let d: berth::oci::Digest = digest.parse().unwrap();
    assert!(regional_cache
        .manifest_by_digest(&repo, &d)
        .await
        .unwrap()
        .is_some());
    // Without credentials the regional mirror refuses (pull requires a login there).
    let resp = regional
        .get("/v2/hub/library/alpine/manifests/3.20")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // The edge's password and the tokens the regional mirror issued appear in no log line
    // (both servers log into this test's capture).
    let log = edge.log();
    assert!(log.contains("request"), "logs are captured");
    assert!(
        !log.contains("edge-secret"),
        "the upstream password was logged"
    );
    assert!(!log.contains("eyJ"), "a bearer token was logged");
}
