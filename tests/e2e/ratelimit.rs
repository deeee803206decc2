//! Rate limits: at the limit a client gets `429 TOOMANYREQUESTS` with `Retry-After`,
//! `RateLimit-Limit` and `RateLimit-Remaining` (as Docker Hub answers), and recovers once
//! its bucket refills; pulls and other requests have separate buckets; clients (users,
//! tokens, addresses) have their own; rules give repositories or tokens other rates; admins
//! are exempt.

use std::time::Duration;

use berth::auth::namespaces::Namespaces;
use berth::auth::tokens::AccessTokens;
use berth::auth::Users;
use berth::config::{AuthMode, RateLimitRule};
use reqwest::{Client, Response, StatusCode};

use crate::common::*;

async fn pull(client: &Client, s: &TestServer, repo: &str) -> Response {
    client
        .get(s.url(&format!("/v2/{repo}/manifests/v1")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_client_at_the_limit_gets_429_and_recovers_after_the_window() {
    let s = TestServer::start_with(|c| {
        c.rate_limit.pull = "3/3s".parse().unwrap();
        c.rate_limit.other = "1000/1s".parse().unwrap();
    })
    .await;
    let (img, _) = s.push_image("team/app", "v1", 1).await;
    // The pushes drew from the "other" bucket only.
    for left in ["2;w=3", "1;w=3", "0;w=3"] {
        let resp = pull(&s.client, &s, "team/app").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(&resp, "ratelimit-limit"), "3;w=3");
        assert_eq!(header(&resp, "ratelimit-remaining"), left);
    }
    let resp = pull(&s.client, &s, "team/app").await;
    let retry: u64 = header(&resp, "retry-after").parse().unwrap();
    assert!(
        (1..=1).contains(&retry),
        "one token comes back every second: {retry}"
    );
    assert_eq!(header(&resp, "ratelimit-limit"), "3;w=3");
    assert_eq!(header(&resp, "ratelimit-remaining"), "0;w=3");
    let body = assert_error(resp, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    let msg = body["message"].as_str().unwrap_or_else(|| panic!("{body}"));
    assert!(
        msg.contains("too many pulls") && msg.contains("3/3s"),
        "{msg}"
    );
    // Blobs are "other" requests: still served while pulls are refused; HEAD is not a pull.
    let blob = s.get_blob("team/app", &img.layers[0].digest).await;
    assert_eq!(blob.status(), StatusCode::OK);
    assert_eq!(header(&blob, "ratelimit-limit"), "1000;w=1");
    let head = s
        .head("/v2/team/app/manifests/v1")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);

    // After Retry-After the bucket has a token again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let resp = pull(&s.client, &s, "team/app").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "ratelimit-remaining"), "0;w=3");
    assert_eq!(
        pull(&s.client, &s, "team/app").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn buckets_are_per_client_rules_pick_rates_and_admins_are_exempt() {
    let s = TestServer::start_with(|c| {
        c.auth.mode = AuthMode::Basic;
        c.rate_limit.pull = "2/1h".parse().unwrap();
        c.rate_limit.rules = vec![
            RateLimitRule {
                tokens: Some("ci/*".into()),
                pull: Some("unlimited".parse().unwrap()),
                ..Default::default()
            },
            RateLimitRule {
                repositories: Some("ci/big".into()),
                pull: Some("4/1h".parse().unwrap()),
                ..Default::default()
            },
        ];
    })
    .await;
    let db = s.db().await;
    let users = Users::new(db.clone());
    users
        .add(&"root".parse().unwrap(), "root-pw", true)
        .await
        .unwrap();
    users
        .add(&"dev".parse().unwrap(), "dev-pw", false)
        .await
        .unwrap();
    Namespaces::new(db.clone(), db.clone())
        .create("ci", true)
        .await
        .unwrap();
    let (_, secret) = AccessTokens::new(db.clone())
        .create("ci", "bot", "read", None)
        .await
        .unwrap();
    let root = client_with_auth(Some(&basic_auth("root", "root-pw")));
    let dev = client_with_auth(Some(&basic_auth("dev", "dev-pw")));
    let bot = client_with_auth(Some(&basic_auth("bot", &secret)));
    let anon = client_with_auth(None);
    let mut admin_server = s;
    admin_server.client = root.clone();
    let s = admin_server;
    s.push_image("ci/app", "v1", 1).await;
    s.push_image("ci/big", "v1", 1).await;

    // The admin is never limited.
    for _ in 0..6 {
        let resp = pull(&root, &s, "ci/app").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().get("ratelimit-limit").is_none());
    }
    // A user and an anonymous client (same address) have a bucket each.
    for c in [&dev, &anon] {
        for _ in 0..2 {
            assert_eq!(pull(c, &s, "ci/app").await.status(), StatusCode::OK);
        }
        let resp = pull(c, &s, "ci/app").await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(header(&resp, "retry-after").parse::<u64>().unwrap() > 1000);
    }
    // The ci tokens' rule: unlimited pulls.
    for _ in 0..6 {
        let resp = pull(&bot, &s, "ci/app").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().get("ratelimit-limit").is_none());
    }
    // The repository rule: 4 pulls of ci/big, in a bucket of its own.
    for _ in 0..4 {
        let resp = pull(&dev, &s, "ci/big").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(&resp, "ratelimit-limit"), "4;w=3600");
    }
    assert_eq!(
        pull(&dev, &s, "ci/big").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}
