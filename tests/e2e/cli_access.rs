//! `berth namespace ...` and `berth token ...` on a data dir, and their effect on a server
//! already running on it (basic auth): what the CLI writes applies within a second (the
//! server follows the database's auth generation).

use std::time::Duration;

use crate::common::berth_cli as berth;
use crate::common::within;
use reqwest::StatusCode;

fn ok(args: &[&str], d: &str) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data-dir", d]);
    let (ok, out, err) = berth(&all, None);
    assert!(ok, "berth {args:?} failed: {err}");
    out
}

fn fails(args: &[&str], d: &str) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data-dir", d]);
    let (ok, _, err) = berth(&all, None);
    assert!(!ok, "berth {args:?} should fail");
    err
}

#[test]
fn namespaces_and_members() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (added, _, err) = berth(
        &["user", "add", "alice", "--password-stdin", "--data-dir", d],
        Some("pw\n"),
    );
    assert!(added, "{err}");
    assert!(ok(&["namespace", "create", "team-a"], d).contains("team-a (private)"));
    assert!(ok(&["namespace", "create", "pub", "--public"], d).contains("(public)"));
    assert!(fails(&["namespace", "create", "team-a"], d).contains("already exists"));
    assert!(fails(&["namespace", "create", "Team/A"], d).contains("invalid namespace name"));
    assert!(ok(
        &[
            "namespace",
            "member",
            "add",
            "team-a",
            "alice",
            "maintainer"
        ],
        d
    )
    .contains("alice is now maintainer in team-a"));
    assert!(fails(
        &["namespace", "member", "add", "team-a", "nobody", "guest"],
        d
    )
    .contains("no user named nobody"));
    assert!(fails(
        &["namespace", "member", "add", "team-a", "alice", "owner"],
        d
    )
    .contains("unknown role"));
    assert!(
        fails(&["namespace", "member", "add", "nope", "alice", "guest"], d)
            .contains("no namespace named nope")
    );
    let members = ok(&["namespace", "member", "list", "team-a"], d);
    assert!(
        members
            .lines()
            .any(|l| l.starts_with("alice") && l.contains("maintainer")),
        "{members}"
    );
    ok(&["namespace", "set-public", "team-a", "true"], d);
    let list = ok(&["namespace", "list"], d);
    let row = list.lines().find(|l| l.starts_with("team-a")).unwrap();
    assert!(row.contains("yes"), "{list}");
    ok(&["namespace", "member", "remove", "team-a", "alice"], d);
    assert!(
        fails(&["namespace", "member", "remove", "team-a", "alice"], d).contains("not a member")
    );
    ok(&["namespace", "delete", "pub"], d);
    assert!(!ok(&["namespace", "list"], d).contains("pub "));
}

#[tokio::test]
async fn tokens_apply_to_a_running_server_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&["namespace", "create", "team-a"], d);
    let (mut server, base) = crate::common::spawn_serve(&["--auth", "basic", "--data-dir", d]);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    // The secret is alone on the last line of stdout, as scripts rely on.
    let out = ok(
        &[
            "token",
            "create",
            "--name",
            "ci",
            "--namespace",
            "team-a",
            "--access",
            "read",
            "--expires",
            "90d",
        ],
        d,
    );
    let secret = out.lines().last().unwrap().to_string();
    assert!(
        secret.starts_with("berth_") && !secret.contains(' '),
        "{out}"
    );
    assert!(fails(
        &[
            "token",
            "create",
            "--name",
            "ci",
            "--namespace",
            "team-a",
            "--access",
            "read"
        ],
        d
    )
    .contains("already exists"));
    assert!(fails(
        &[
            "token",
            "create",
            "--name",
            "x",
            "--namespace",
            "team-a",
            "--access",
            "write"
        ],
        d
    )
    .contains("unknown access"));
    assert!(fails(
        &[
            "token",
            "create",
            "--name",
            "x",
            "--namespace",
            "none",
            "--access",
            "read"
        ],
        d
    )
    .contains("no namespace named none"));
    let listed = ok(&["token", "list"], d);
    let row = listed.lines().find(|l| l.starts_with("team-a")).unwrap();
    assert!(
        row.contains("read") && row.contains("active") && row.ends_with("never"),
        "{listed}"
    );

    // Read access in its namespace: a pull of a missing manifest is 404 (allowed), a push
    // is 403 naming push, another namespace is 403.
    let get = |path: &str| {
        client
            .get(format!("{base}{path}"))
            .basic_auth("ci", Some(&secret))
            .send()
    };
    assert_eq!(get("/v2/").await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        get("/v2/team-a/app/manifests/v1").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get("/v2/team-b/app/manifests/v1").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let push = client
        .post(format!("{base}/v2/team-a/app/blobs/uploads/"))
        .basic_auth("ci", Some(&secret))
        .send()
        .await
        .unwrap();
    assert_eq!(push.status(), StatusCode::FORBIDDEN);
    assert!(push
        .text()
        .await
        .unwrap()
        .contains("requires the push permission"));
    let listed = ok(&["token", "list", "--namespace", "team-a"], d);
    assert!(
        !listed.lines().nth(1).unwrap().ends_with("never"),
        "last use recorded: {listed}"
    );

    ok(
        &["token", "revoke", "--name", "ci", "--namespace", "team-a"],
        d,
    );
    within(
        Duration::from_secs(1),
        "a token revoked by the CLI",
        || async { get("/v2/").await.unwrap().status() == StatusCode::UNAUTHORIZED },
    )
    .await;
    assert!(ok(&["token", "list"], d).contains("revoked"));
    assert!(fails(
        &["token", "revoke", "--name", "ci", "--namespace", "team-a"],
        d
    )
    .contains("no live token"));
    server.kill().unwrap();
    server.wait().unwrap();
}
