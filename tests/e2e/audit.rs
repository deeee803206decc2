//! The audit log: a row for each kind of action (push, manifest pull, delete, login success
//! and failure, token creation and revocation, policy change, quota refusal, GC run,
//! retention deletion), with the actor, client address, repository, reference, digest and
//! result; queried through `GET /api/v1/audit` and `berth audit`; no credential in any row;
//! old rows pruned by `audit.keep`.

use std::time::Duration;

use berth::config::AuthMode;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::common::*;

const ROOT: (&str, &str) = ("root", "root-Secret-4fq9");

async fn entries(s: &TestServer, query: &str) -> Vec<Value> {
    let (status, v) = send_json(s.get(&format!("/api/v1/audit?limit=1000{query}"))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["entries"].as_array().unwrap().clone()
}

/// Waits (the log is written in batches) until an entry matches `want` (every field given).
async fn find(s: &TestServer, want: Value) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = entries(s, "").await;
        let hit = all
            .into_iter()
            .find(|e| want.as_object().unwrap().iter().all(|(k, v)| &e[k] == v));
        if let Some(e) = hit {
            return e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no audit entry {want}: {:#?}",
            entries(s, "").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_action_is_recorded_with_who_where_and_what() {
    let mut s = TestServer::start_with(|c| c.auth.mode = AuthMode::Basic).await;
    let db = s.db().await;
    berth::auth::Users::new(db.clone())
        .add(&ROOT.0.parse().unwrap(), ROOT.1, true)
        .await
        .unwrap();
    s.client = client_with_auth(Some(&basic_auth(ROOT.0, ROOT.1)));

    // Logins: `docker login` is a GET /v2/ with credentials; a wrong password fails.
    assert_eq!(s.get("/v2/").send().await.unwrap().status(), 200);
    let bad = client_with_auth(Some(&basic_auth(ROOT.0, "wrong-password-1")));
    let resp = bad.get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    // A bare challenge (no credentials) is not an event.
    let anon = client_with_auth(None);
    assert_eq!(anon.get(s.url("/v2/")).send().await.unwrap().status(), 401);

    // Push, pull, delete.
    let (img, digest) = s.push_image("team/app", "v1", 1).await;
    let pull = s
        .get("/v2/team/app/manifests/v1")
        .header("accept", OCI_MANIFEST)
        .header("x-request-id", "audit-pull-1")
        .send()
        .await
        .unwrap();
    assert_eq!(pull.status(), 200);
    let (_, gone) = s.push_image("team/app", "v2", 1).await;
    let resp = s
        .delete(&format!("/v2/team/app/manifests/{gone}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    // Token creation and revocation; the secret is answered once and never recorded.
    let (status, v) = send_json(
        s.post("/api/v1/namespaces")
            .json(&json!({"name": "team", "public": false})),
    )
    .await;
    assert!(status.is_success(), "{v}");
    let (status, tok) = send_json(
        s.post("/api/v1/namespaces/team/tokens")
            .json(&json!({"name": "ci", "access": "read-write"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{tok}");
    let secret = tok["secret"].as_str().unwrap().to_string();
    let resp = s
        .delete("/api/v1/namespaces/team/tokens/ci")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);

    // A policy change, and a push its quota refuses.
    let (status, v) = send_json(
        s.put("/api/v1/policies/quotas")
            .json(&json!({"quota": "1KiB"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let resp = s
        .post(&format!(
            "/v2/quota/app/blobs/uploads/?digest={}",
            sha256(&[7u8; 4096])
        ))
        .header("content-type", "application/octet-stream")
        .body(vec![7u8; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // Retention deletes v1's tag; GC then removes what nothing references.
    let rule = json!([{"repositories": "team/**", "keep_last": 0}]);
    let (status, v) = send_json(s.put("/api/v1/policies/retention").json(&rule)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = send_json(s.post("/api/v1/retention").body("{}")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = send_json(s.post("/api/v1/gc").body(r#"{"grace": "0s"}"#)).await;
    assert_eq!(status, StatusCode::OK, "{v}");

    let root = ROOT.0;
    find(
        &s,
        json!({"action": "login", "actor": root, "success": true, "status": 200}),
    )
    .await;
    let failed = find(
        &s,
        json!({"action": "login", "success": false, "status": 401}),
    )
    .await;
    assert_eq!(failed["actor"], root, "{failed}");
    assert_eq!(failed["addr"], "127.0.0.1", "{failed}");
    assert!(
        failed["detail"].as_str().unwrap().contains("UNAUTHORIZED"),
        "{failed}"
    );
    let push = find(
        &s,
        json!({"action": "push", "target": "manifest", "reference": "v1"}),
    )
    .await;
    assert_eq!(push["actor"], root);
    assert_eq!(push["repository"], "team/app");
    assert_eq!(push["digest"], digest.as_str());
    assert_eq!(push["status"], 201);
    assert_eq!(push["success"], true);
    let layer = &img.layers[0].digest;
    find(
        &s,
        json!({"action": "push", "target": "blob", "digest": layer}),
    )
    .await;
    let pulled = find(&s, json!({"action": "pull", "reference": "v1"})).await;
    assert_eq!(pulled["digest"], digest.as_str());
    assert_eq!(pulled["request_id"], "audit-pull-1");
    assert_eq!(pulled["addr"], "127.0.0.1");
    find(
        &s,
        json!({"action": "delete", "target": "manifest", "digest": gone}),
    )
    .await;
    let created = find(&s, json!({"action": "token.create", "actor": root})).await;
    assert!(created["detail"].as_str().unwrap().contains("team/ci"));
    find(&s, json!({"action": "token.revoke", "actor": root})).await;
    find(&s, json!({"action": "policy", "detail": "quotas set"})).await;
    let quota = find(&s, json!({"action": "quota", "repository": "quota/app"})).await;
    assert_eq!(quota["status"], 403);
    assert!(
        quota["detail"]
            .as_str()
            .unwrap()
            .contains("quota 1 KiB, used 0 B, this blob 4 KiB"),
        "{quota}"
    );
    let kept = find(
        &s,
        json!({"action": "delete", "actor": "retention", "reference": "v1"}),
    )
    .await;
    assert_eq!(kept["repository"], "team/app");
    let gc = find(&s, json!({"action": "gc", "success": true})).await;
    assert!(
        gc["detail"].as_str().unwrap().starts_with("removed "),
        "{gc}"
    );
    // No challenge made an entry: every login entry names a user.
    for e in entries(&s, "&action=login").await {
        assert_eq!(e["actor"], root, "{e}");
    }

    // Filters: by action, repository, actor and age.
    let pulls = entries(&s, "&action=pull").await;
    assert!(!pulls.is_empty() && pulls.iter().all(|e| e["action"] == "pull"));
    let app = entries(&s, "&repo=team/app&actor=retention").await;
    assert!(!app.is_empty());
    assert!(app
        .iter()
        .all(|e| e["repository"] == "team/app" && e["actor"] == "retention"));
    assert!(entries(&s, "&since=1h").await.len() >= 12);
    let (status, v) = send_json(s.get("/api/v1/audit?action=nap")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    // Admins only.
    let (status, _) = send_json(anon.get(s.url("/api/v1/audit"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // No credential appears anywhere in the table.
    let mut conn = sqlx::SqliteConnection::connect(&format!(
        "sqlite://{}",
        s.config.data_dir.join("berth.db").display()
    ))
    .await
    .unwrap();
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id || actor || addr || IFNULL(repo,'') || IFNULL(reference,'') || \
         IFNULL(digest,'') || detail || IFNULL(request_id,'') FROM audit_log",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(rows.len() >= 12, "{rows:?}");
    let basic = basic_auth(ROOT.0, ROOT.1);
    for (row,) in &rows {
        for secret in [ROOT.1, "wrong-password-1", secret.as_str(), basic.as_str()] {
            assert!(
                !row.contains(secret),
                "a credential in the audit log: {row}"
            );
        }
    }

    // `berth audit` reads the same log beside the running server.
    let data_dir = s.config.data_dir.display().to_string();
    let (ok, out, err) = berth_cli(
        &[
            "audit",
            "--data-dir",
            &data_dir,
            "--repo",
            "team/app",
            "--action",
            "push",
            "--since",
            "1h",
            "--json",
        ],
        None,
    );
    assert!(ok, "{err}");
    let cli: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert!(cli.iter().any(|e| e["digest"] == digest.as_str()), "{out}");
    assert!(cli
        .iter()
        .all(|e| e["action"] == "push" && e["repository"] == "team/app"));
    let (ok, out, err) = berth_cli(&["audit", "--data-dir", &data_dir, "--actor", root], None);
    assert!(ok, "{err}");
    assert!(
        out.contains("token.create") && out.contains("team/app:v1"),
        "{out}"
    );
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_logins_and_command_changes_are_recorded() {
    let s = TestServer::start_with(|c| c.auth.mode = AuthMode::Token).await;
    let db = s.db().await;
    berth::auth::Users::new(db.clone())
        .add(&ROOT.0.parse().unwrap(), ROOT.1, true)
        .await
        .unwrap();
    let form = |pw: &str| {
        format!(
            "grant_type=password&service={}&username=root&password={pw}",
            s.config.auth.token.service
        )
    };
    for (pw, status) in [(ROOT.1, 200), ("wrong-password-2", 401)] {
        let resp = s
            .post("/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(pw))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status);
    }
    // Anonymous token requests are not logins.
    let resp = s
        .get("/token?scope=repository:x/y:pull")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Token and policy changes made by the CLI beside the server.
    let data_dir = s.config.data_dir.display().to_string();
    let (ok, _, err) = berth_cli(
        &["namespace", "create", "ops", "--data-dir", &data_dir],
        None,
    );
    assert!(ok, "{err}");
    let (ok, out, err) = berth_cli(
        &[
            "token",
            "create",
            "--name",
            "bot",
            "--namespace",
            "ops",
            "--access",
            "read",
            "--data-dir",
            &data_dir,
        ],
        None,
    );
    assert!(ok, "{err}");
    let secret = out.lines().last().unwrap().trim().to_string();
    let (ok, _, err) = berth_cli(
        &["policy", "set", "quotas", "-", "--data-dir", &data_dir],
        Some("ops: 1GiB\n"),
    );
    assert!(ok, "{err}");

    let admin = client_with_auth(Some(&basic_auth(ROOT.0, ROOT.1)));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let v: Value = admin
            .get(s.url("/api/v1/audit?limit=100"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let seen = v["entries"].as_array().cloned().unwrap_or_default();
        let has = |action: &str, ok: bool| {
            seen.iter()
                .any(|e| e["action"] == action && e["success"] == ok)
        };
        if has("login", true)
            && has("login", false)
            && has("token.create", true)
            && has("policy", true)
        {
            break seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "missing entries: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let logins: Vec<_> = seen.iter().filter(|e| e["action"] == "login").collect();
    assert!(logins.iter().all(|e| e["actor"] == "root"), "{logins:?}");
    assert!(logins
        .iter()
        .any(|e| e["status"] == 401 && e["target"] == "token"));
    let token = seen.iter().find(|e| e["action"] == "token.create").unwrap();
    assert!(
        token["actor"].as_str().unwrap().starts_with("cli:"),
        "{token}"
    );
    assert_eq!(token["addr"], "local");
    for e in &seen {
        let text = e.to_string();
        assert!(!text.contains(&secret) && !text.contains(ROOT.1), "{text}");
    }
    drop(db);
}

#[tokio::test]
async fn entries_older_than_keep_are_removed() {
    let s = TestServer::start().await;
    s.push_image("old/app", "v1", 1).await;
    let first = find(&s, json!({"action": "push", "reference": "v1"})).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut s = s;
    s.config.audit.keep = berth::config::Span(Duration::from_secs(1));
    let s = s.restart().await;
    // Pruning runs at start and then hourly.
    within(Duration::from_secs(10), "the old entry pruned", || async {
        !entries(&s, "").await.iter().any(|e| e["id"] == first["id"])
    })
    .await;
    s.push_image("old/app", "v2", 1).await;
    find(&s, json!({"action": "push", "reference": "v2"})).await;
}
