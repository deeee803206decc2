//! Retention rules: keep_last by push time, keep_tags by regex, delete_older_than,
//! delete_not_pulled_for, delete_untagged_after; immutable tags always kept; the children of
//! kept indexes and the referrers of kept subjects never removed; `--dry-run` listing every
//! tag with its repository and reason.

use berth::config::{ImmutableTagRule, RetentionRule, Span};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

fn days(n: u64) -> Option<Span> {
    Some(Span(std::time::Duration::from_secs(n * 86400)))
}

fn rule(repositories: &str) -> RetentionRule {
    RetentionRule {
        repositories: repositories.into(),
        keep_last: None,
        keep_tags: None,
        delete_older_than: None,
        delete_not_pulled_for: None,
        delete_untagged_after: None,
    }
}

async fn retention_server() -> TestServer {
    TestServer::start_with(|c| {
        c.retention = vec![
            RetentionRule {
                keep_last: Some(2),
                keep_tags: Some(r"^v\d+".into()),
                ..rule("ci/**")
            },
            RetentionRule {
                keep_last: Some(1),
                delete_older_than: days(30),
                ..rule("old/**")
            },
            RetentionRule {
                delete_not_pulled_for: days(60),
                ..rule("stale/**")
            },
            RetentionRule {
                delete_untagged_after: days(7),
                ..rule("untagged/**")
            },
        ];
        c.immutable_tags = vec![ImmutableTagRule {
            repositories: "ci/**".into(),
            tags: "release-*".into(),
        }];
    })
    .await
}

/// Sets a tag's push time (and optionally last pull) to `days` ago.
async fn age_tag(
    s: &TestServer,
    repo: &str,
    tag: &str,
    pushed_days: i64,
    pulled_days: Option<i64>,
) {
    let pulled = pulled_days.map_or("NULL".to_string(), |d| {
        format!("strftime('%s','now') - {}", d * 86400)
    });
    s.sql(&format!(
        "UPDATE tags SET updated_at = strftime('%s','now') - {}, pulled_at = {pulled} \
         WHERE name = '{tag}' AND repo_id = (SELECT id FROM repositories WHERE name = '{repo}')",
        pushed_days * 86400
    ))
    .await;
}

fn cli_retention(s: &TestServer, dry_run: bool) -> Value {
    let config = s.config_file();
    let mut args = vec!["retention", "run", "--json", "--config", &config];
    if dry_run {
        args.push("--dry-run");
    }
    let (ok, out, err) = berth_cli(&args, None);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn deleted_tags(r: &Value) -> Vec<String> {
    r["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}:{}",
                t["repository"].as_str().unwrap(),
                t["tag"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_last_keep_tags_and_immutable_tags() {
    let s = retention_server().await;
    let mut digests = Vec::new();
    for i in 1..=5 {
        let (_, d) = s.push_image("ci/app", &format!("b{i}"), 1).await;
        age_tag(&s, "ci/app", &format!("b{i}"), 10 - i, None).await;
        digests.push(d);
    }
    // v2 shares b3's manifest: b3 goes, the manifest stays for v2.
    let b3 = digests[2].clone();
    let m = s
        .get(&format!("/v2/ci/app/manifests/{b3}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    s.push_manifest("ci/app", "v2", OCI_MANIFEST, &m).await;
    s.push_image("ci/app", "v1", 1).await;
    s.push_image("ci/app", "release-1", 1).await;
    age_tag(&s, "ci/app", "v1", 100, None).await;
    age_tag(&s, "ci/app", "v2", 100, None).await;
    age_tag(&s, "ci/app", "release-1", 100, None).await;

    let plan = cli_retention(&s, true);
    assert_eq!(deleted_tags(&plan), ["ci/app:b1", "ci/app:b2", "ci/app:b3"]);
    assert_eq!(plan["tags"][0]["reason"], "beyond keep_last 2");
    assert_eq!(plan["manifests"].as_array().unwrap().len(), 2, "{plan}");
    // The human plan: one line per tag, with repository and reason.
    let config = s.config_file();
    let (ok, out, _) = berth_cli(
        &["retention", "run", "--dry-run", "--config", &config],
        None,
    );
    assert!(ok);
    assert!(
        out.contains(&format!(
            "would delete tag ci/app:b1 {} (beyond keep_last 2)",
            digests[0]
        )),
        "{out}"
    );
    assert_eq!(
        s.tags_list("ci/app").await["tags"]
            .as_array()
            .unwrap()
            .len(),
        8
    );

    let done = cli_retention(&s, false);
    assert_eq!(deleted_tags(&done), deleted_tags(&plan));
    assert_eq!(
        s.tags_list("ci/app").await["tags"],
        json!(["b4", "b5", "release-1", "v1", "v2"])
    );
    for d in &digests[..2] {
        s.assert_not_found(&format!("/v2/ci/app/manifests/{d}"), "MANIFEST_UNKNOWN")
            .await;
    }
    let resp = s
        .get(&format!("/v2/ci/app/manifests/{b3}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "v2 still points at it");
    // Nothing left to do.
    assert!(deleted_tags(&cli_retention(&s, false)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_older_than_and_not_pulled_for() {
    let s = retention_server().await;
    for (tag, age) in [("a", 40), ("b", 40), ("c", 10), ("d", 20)] {
        s.push_image("old/app", tag, 1).await;
        age_tag(&s, "old/app", tag, age, None).await;
    }
    for (tag, pushed, pulled) in [
        ("p", 100, Some(70)),
        ("q", 100, Some(10)),
        ("r", 90, None),
        ("s", 1, None),
    ] {
        s.push_image("stale/app", tag, 1).await;
        age_tag(&s, "stale/app", tag, pushed, pulled).await;
    }
    let done = cli_retention(&s, false);
    assert_eq!(
        deleted_tags(&done),
        ["old/app:a", "old/app:b", "stale/app:p", "stale/app:r"]
    );
    let reasons: Vec<&str> = done["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "pushed 40d ago, beyond delete_older_than 30d",
            "pushed 40d ago, beyond delete_older_than 30d",
            "not pulled for 70d, beyond delete_not_pulled_for 60d",
            "never pulled, pushed 90d ago, beyond delete_not_pulled_for 60d",
        ]
    );
    assert_eq!(s.tags_list("old/app").await["tags"], json!(["c", "d"]));
    assert_eq!(s.tags_list("stale/app").await["tags"], json!(["q", "s"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untagged_cleanup_keeps_index_children_and_referrers() {
    let s = retention_server().await;
    let repo = "untagged/app";
    let amd = s.image(repo, 1).await;
    let arm = s.image(repo, 1).await;
    for i in [&amd, &arm] {
        s.push_manifest(repo, &i.digest(), &i.media_type, &i.manifest)
            .await;
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [amd.desc().json(), arm.desc().json()],
    }))
    .unwrap();
    s.push_manifest(repo, "latest", OCI_INDEX, &index).await;
    let empty = s.push_blob(repo, b"{}").await;
    let referrer = |subject: &Image, n: &str| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom",
            "config": {"mediaType": OCI_EMPTY, "digest": empty, "size": 2},
            "layers": [{"mediaType": OCI_EMPTY, "digest": empty, "size": 2}],
            "subject": subject.desc().json(),
            "annotations": {"n": n},
        }))
        .unwrap()
    };
    let sbom = referrer(&amd, "kept");
    s.push_manifest(repo, &sha256(&sbom), OCI_MANIFEST, &sbom)
        .await;
    // Untagged leftovers: pushed by digest long ago, and a tag moved away long ago.
    let lone = s.image(repo, 1).await;
    s.push_manifest(repo, &lone.digest(), &lone.media_type, &lone.manifest)
        .await;
    let (_, moved) = s.push_image(repo, "moving", 1).await;
    let (_, recent) = s.push_image(repo, "moving2", 1).await;
    s.push_image(repo, "moving", 1).await; // moves the tag off `moved`
    s.push_image(repo, "moving2", 1).await; // moves the tag off `recent`
    let fresh = s.image(repo, 1).await;
    s.push_manifest(repo, &fresh.digest(), &fresh.media_type, &fresh.manifest)
        .await;
    // An SBOM of the lone image goes with it.
    let lone_sbom = referrer(&lone, "dangling");
    s.push_manifest(repo, &sha256(&lone_sbom), OCI_MANIFEST, &lone_sbom)
        .await;
    s.sql(&format!(
        "UPDATE manifests SET created_at = created_at - 30 * 86400 WHERE digest <> '{}'",
        fresh.digest()
    ))
    .await;
    s.sql(&format!(
        "UPDATE manifests SET untagged_at = strftime('%s','now') - 10 * 86400 WHERE digest = '{moved}'"
    ))
    .await;
    s.sql(&format!(
        "UPDATE manifests SET untagged_at = strftime('%s','now') - 86400 WHERE digest = '{recent}'"
    ))
    .await;

    let done = cli_retention(&s, false);
    let mut gone: Vec<String> = done["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    gone.sort();
    let mut expected = vec![lone.digest(), moved.clone(), sha256(&lone_sbom)];
    expected.sort();
    assert_eq!(gone, expected, "{done}");
    for d in [
        amd.digest(),
        arm.digest(),
        sha256(&sbom),
        recent,
        fresh.digest(),
    ] {
        let resp = s
            .head(&format!("/v2/{repo}/manifests/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{d} kept");
    }
    let refs: Value = s
        .get(&format!("/v2/{repo}/referrers/{}", amd.digest()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refs["manifests"].as_array().unwrap().len(), 1);
    // The index's children and the SBOM survive GC too; the deleted images' blobs go.
    let r = s.gc(0).await;
    assert!(r.blobs > 0, "{r:?}");
    for img in [&amd, &arm] {
        crate::lifecycle_util::assert_pulls(&s, repo, &img.digest(), img).await;
    }
}
