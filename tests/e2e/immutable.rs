//! Immutable tags (`immutable_tags:` rules of a repository glob and a tag glob). Refusals use
//! the spec's error format ("Error Codes": `DENIED`, 403) and name the rule.

use reqwest::StatusCode;

use crate::common::*;

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.immutable_tags = vec![berth::config::ImmutableTagRule {
            repositories: "prod/**".into(),
            tags: "v*".into(),
        }]
    })
    .await
}

async fn tag_digest(s: &TestServer, repo: &str, tag: &str) -> String {
    let resp = s
        .head(&format!("/v2/{repo}/manifests/{tag}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{repo}:{tag}");
    header(&resp, "docker-content-digest")
}

fn names_the_rule(v: &serde_json::Value) {
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(r#"repositories "prod/**" tags "v*""#) && msg.contains("immutable"),
        "{v}"
    );
}

// A tag under a rule is created once; the same digest may be pushed again; another digest
// is refused, by tag and through `?tag=` on a push by digest; mutable tags and other
// repositories move freely.
#[tokio::test]
async fn an_immutable_tag_never_moves() {
    let s = server().await;
    let (a, da) = s.push_image("prod/api", "v1", 1).await;
    assert_eq!(a.digest(), da);
    let b = s.image("prod/api", 1).await;
    let db = b.digest();
    expect_status(
        s.put_manifest("prod/api", "v1", &a.media_type, &a.manifest)
            .await,
        StatusCode::CREATED,
    )
    .await;
    let v = assert_error(
        s.put_manifest("prod/api", "v1", &b.media_type, &b.manifest)
            .await,
        StatusCode::FORBIDDEN,
        "DENIED",
    )
    .await;
    names_the_rule(&v);
    let v = assert_error(
        s.put_manifest_at(
            &format!("/v2/prod/api/manifests/{db}?tag=v1"),
            &b.media_type,
            &b.manifest,
        )
        .await,
        StatusCode::FORBIDDEN,
        "DENIED",
    )
    .await;
    names_the_rule(&v);
    assert_eq!(tag_digest(&s, "prod/api", "v1").await, da, "unmoved");

    // Not covered: another tag, a repository outside prod/**, prod itself: both pushes land.
    for (repo, tag) in [("prod/api", "latest"), ("dev/api", "v1"), ("prod", "v1")] {
        for _ in 0..2 {
            let img = s.image(repo, 1).await;
            expect_status(
                s.put_manifest(repo, tag, &img.media_type, &img.manifest)
                    .await,
                StatusCode::CREATED,
            )
            .await;
            assert_eq!(tag_digest(&s, repo, tag).await, img.digest());
        }
    }
    // A new tag under the rule may be created, for any digest.
    let w = s.image("prod/api/worker", 1).await;
    expect_status(
        s.put_manifest("prod/api/worker", "v2", &w.media_type, &w.manifest)
            .await,
        StatusCode::CREATED,
    )
    .await;
}

// An immutable tag cannot be deleted, nor the manifest it points at; a manifest no immutable
// tag points at is deleted as usual.
#[tokio::test]
async fn an_immutable_tag_and_its_manifest_stay() {
    let s = server().await;
    let (_, da) = s.push_image("prod/api", "v1", 1).await;
    let v = assert_error(
        s.delete("/v2/prod/api/manifests/v1").send().await.unwrap(),
        StatusCode::FORBIDDEN,
        "DENIED",
    )
    .await;
    names_the_rule(&v);
    let v = assert_error(
        s.delete(&format!("/v2/prod/api/manifests/{da}"))
            .send()
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
        "DENIED",
    )
    .await;
    names_the_rule(&v);
    assert_eq!(tag_digest(&s, "prod/api", "v1").await, da);

    let (_, dl) = s.push_image("prod/api", "latest", 1).await;
    expect_status(
        s.delete(&format!("/v2/prod/api/manifests/{dl}"))
            .send()
            .await
            .unwrap(),
        StatusCode::ACCEPTED,
    )
    .await;
    // Deleting a tag that does not exist stays a 404, rule or not.
    assert_error(
        s.delete("/v2/prod/api/manifests/v9").send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

// A bad glob is a configuration error naming its place.
#[test]
fn a_bad_rule_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("berth.yaml");
    std::fs::write(
        &cfg,
        "immutable_tags:\n  - repositories: \"prod/**\"\n    tags: \"v***\"\n",
    )
    .unwrap();
    let (ok, _, err) = berth_cli(
        &[
            "config",
            "check",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        None,
    );
    assert!(!ok && err.contains("immutable_tags[0].tags"), "{err}");
}

// Racing pushes of different digests to one new immutable tag: the check runs inside the
// metadata transaction, so exactly one wins and the tag points at the winner.
#[tokio::test]
async fn racing_pushes_to_a_new_immutable_tag_have_one_winner() {
    let s = server().await;
    let mut imgs = Vec::new();
    for _ in 0..8 {
        imgs.push(s.image("prod/race", 1).await);
    }
    let puts = imgs
        .iter()
        .map(|img| s.put_manifest("prod/race", "v1", &img.media_type, &img.manifest));
    let resps = futures::future::join_all(puts).await;
    let mut winners = Vec::new();
    for (img, resp) in imgs.iter().zip(resps) {
        match resp.status() {
            StatusCode::CREATED => winners.push(img.digest()),
            StatusCode::FORBIDDEN => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(tag_digest(&s, "prod/race", "v1").await, winners[0]);
}
