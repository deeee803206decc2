//! The JSON admin API under `/api/v1/`: each endpoint's success path and its effect on the
//! registry, who may call what (server admin, namespace admin, developer, CI token,
//! anonymous), and the error statuses with the error envelope `{"errors":[{code,message}]}`.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use crate::common::*;
use base64::Engine as _;
use berth::auth::namespaces::Namespaces;
use berth::auth::tokens::AccessTokens;
use berth::auth::Users;
use berth::config::{AuthMode, Config};
use berth::metadata::Backend;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

type Creds<'a> = (&'a str, &'a str);

/// Server administrator.
const ROOT: Creds = ("root", "root-secret");
/// Admin of team-a (and of gone-nsadmin, to show it still cannot delete a namespace).
const NSADMIN: Creds = ("nsadmin", "nsadmin-secret");
/// Developer in team-a.
const DEV: Creds = ("dev", "dev-secret");
/// No membership anywhere.
const OUTSIDER: Creds = ("outsider", "outsider-secret");

struct Env {
    s: TestServer,
    meta: Arc<dyn Backend>,
    /// The secret of the CI token `team-a/ci` (read-write-delete).
    ci: String,
}

/// A registry in `mode` with users root (admin), nsadmin (admin of team-a), dev (developer
/// in team-a) and outsider; namespaces team-a, team-b (private) and pub (public); the CI token
/// team-a/ci.
async fn fixture(mode: AuthMode) -> Env {
    fixture_with(mode, |_| {}).await
}

async fn fixture_with(mode: AuthMode, modify: impl FnOnce(&mut Config)) -> Env {
    let s = TestServer::start_with(|c| {
        c.auth.mode = mode;
        modify(c);
    })
    .await;
    let meta = s.db().await;
    let users = Users::new(meta.clone());
    futures::future::join_all(
        [
            (ROOT, true),
            (NSADMIN, false),
            (DEV, false),
            (OUTSIDER, false),
        ]
        .into_iter()
        .map(|((u, p), admin)| {
            let users = &users;
            async move { users.add(&u.parse().unwrap(), p, admin).await.unwrap() }
        }),
    )
    .await;
    let ns = Namespaces::new(meta.clone(), meta.clone());
    ns.create("team-a", false).await.unwrap();
    ns.create("team-b", false).await.unwrap();
    ns.create("pub", true).await.unwrap();
    ns.set_member("team-a", "nsadmin", "admin").await.unwrap();
    ns.set_member("team-a", "dev", "developer").await.unwrap();
    let (_, ci) = AccessTokens::new(meta.clone())
        .create("team-a", "ci", "read-write-delete", None)
        .await
        .unwrap();
    Env { s, meta, ci }
}

impl Env {
    fn namespaces(&self) -> Namespaces {
        Namespaces::new(self.meta.clone(), self.meta.clone())
    }

    fn tokens(&self) -> AccessTokens {
        AccessTokens::new(self.meta.clone())
    }

    async fn add_user(&self, name: &str, password: &str) {
        Users::new(self.meta.clone())
            .add(&name.parse().unwrap(), password, false)
            .await
            .unwrap();
    }

    /// Sends `method path` with an optional Authorization header and JSON body text.
    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> Response {
        let mut rb = self.s.client.request(method, self.s.url(path));
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        rb.send().await.unwrap()
    }

    /// `call` expecting `status`; returns the JSON body (Null for an empty one).
    async fn expect(
        &self,
        method: Method,
        path: &str,
        auth: &str,
        body: Option<Value>,
        status: StatusCode,
    ) -> Value {
        let body = body.map(|b| b.to_string());
        let resp = self
            .call(method.clone(), path, Some(auth), body.as_deref())
            .await;
        let got = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(got, status, "{method} {path}: {text}");
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON body")
        }
    }

    /// The Authorization header for Basic credentials.
    fn basic_auth(&self, (u, p): Creds<'_>) -> String {
        basic_auth(u, p)
    }

    /// A bearer token from the token service (token mode), for the admin API.
    async fn bearer(&self, creds: Option<Creds<'_>>) -> String {
        let mut rb = self.s.get("/token").query(&[
            ("service", "berth"),
            ("scope", "repository:team-a/app:pull"),
        ]);
        if let Some((u, p)) = creds {
            rb = rb.basic_auth(u, Some(p));
        }
        let v: Value = expect_status(rb.send().await.unwrap(), StatusCode::OK)
            .await
            .json()
            .await
            .unwrap();
        format!("Bearer {}", v["token"].as_str().unwrap())
    }

    /// Pushes a random image as whoever `auth` names (Basic mode); returns the response of
    /// the manifest PUT's status (201 when allowed).
    async fn try_push(&mut self, auth: &str, repo: &str, tag: &str) -> StatusCode {
        // Pushing the blobs first; if they are refused, so would be the manifest.
        let resp = self
            .s
            .post(&format!("/v2/{repo}/blobs/uploads/"))
            .header("authorization", auth)
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        if resp.status() != StatusCode::ACCEPTED {
            return resp.status();
        }
        self.s.client = client_with_auth(Some(auth));
        let img = self.s.image(repo, 1).await;
        let status = self
            .s
            .put_manifest(repo, tag, &img.media_type, &img.manifest)
            .await
            .status();
        self.s.client = client_with_auth(None);
        status
    }

    async fn pull_status(&self, auth: Option<&str>, repo: &str, tag: &str) -> StatusCode {
        self.call(
            Method::GET,
            &format!("/v2/{repo}/manifests/{tag}"),
            auth,
            None,
        )
        .await
        .status()
    }
}

/// Checks `status` and the error envelope (JSON `errors` with string `code` and `message`);
/// 401 must be UNAUTHORIZED and 403 DENIED. Returns the first error.
async fn assert_envelope(resp: Response, status: StatusCode, what: &str) -> Value {
    let got = resp.status();
    let ct = opt_header(resp.headers(), "content-type");
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "{what}: {text}");
    assert_eq!(ct.as_deref(), Some("application/json"), "{what}");
    let v: Value = serde_json::from_str(&text).expect("error body is JSON");
    let e = v["errors"][0].clone();
    let code = e["code"].as_str().unwrap_or_else(|| panic!("{what}: {v}"));
    assert!(e["message"].is_string(), "{what}: {v}");
    assert!(
        code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
        "{what}: {code}"
    );
    match status {
        StatusCode::UNAUTHORIZED => assert_eq!(code, "UNAUTHORIZED", "{what}"),
        StatusCode::FORBIDDEN => assert_eq!(code, "DENIED", "{what}"),
        _ => {}
    }
    e
}

fn names(v: &Value, list: &str, field: &str) -> Vec<String> {
    let mut out: Vec<String> = v[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {v}"))
        .iter()
        .map(|e| e[field].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

fn rfc3339_secs(v: &Value) -> i64 {
    humantime::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------------------------------------
// The permission matrix
// ---------------------------------------------------------------------------------------------

/// The callers of the matrix, in column order.
const WHO: [&str; 6] = ["root", "nsadmin", "dev", "ci", "anon", "wrongpw"];

/// One request of the matrix: `{who}` in the path or body is replaced by the caller's name, so
/// each caller acts on its own object; then the expected status per caller (columns of WHO).
struct Row {
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
    expect: [u16; 6],
}

fn row(method: Method, path: &'static str, body: Option<&'static str>, expect: [u16; 6]) -> Row {
    Row {
        method,
        path,
        body,
        expect,
    }
}

fn matrix() -> Vec<Row> {
    use Method as M;
    vec![
        // Every user may ask who they are; CI tokens may not use the admin API at all.
        row(M::GET, "/api/v1/me", None, [200, 200, 200, 403, 401, 401]),
        // Users: server admins only.
        row(
            M::GET,
            "/api/v1/users",
            None,
            [200, 403, 403, 403, 401, 401],
        ),
        row(
            M::POST,
            "/api/v1/users",
            Some(r#"{"name":"new-{who}","password":"pw-{who}"}"#),
            [201, 403, 403, 403, 401, 401],
        ),
        row(
            M::DELETE,
            "/api/v1/users/victim-{who}",
            None,
            [204, 403, 403, 403, 401, 401],
        ),
        // Namespaces: listing and reading for every user (filtered); creating and deleting
        // for server admins; PATCH for server admins and the namespace's admins.
        row(
            M::GET,
            "/api/v1/namespaces",
            None,
            [200, 200, 200, 403, 401, 401],
        ),
        row(
            M::POST,
            "/api/v1/namespaces",
            Some(r#"{"name":"ns-{who}","public":false}"#),
            [201, 403, 403, 403, 401, 401],
        ),
        row(
            M::GET,
            "/api/v1/namespaces/team-a",
            None,
            [200, 200, 200, 403, 401, 401],
        ),
        row(
            M::PATCH,
            "/api/v1/namespaces/team-a",
            Some(r#"{"public":false}"#),
            [200, 200, 403, 403, 401, 401],
        ),
        row(
            M::PATCH,
            "/api/v1/namespaces/team-b",
            Some(r#"{"public":false}"#),
            [200, 403, 403, 403, 401, 401],
        ),
        row(
            M::DELETE,
            "/api/v1/namespaces/gone-{who}",
            None,
            [204, 403, 403, 403, 401, 401],
        ),
        // Members: server admins and the namespace's admins.
        row(
            M::GET,
            "/api/v1/namespaces/team-a/members",
            None,
            [200, 200, 403, 403, 401, 401],
        ),
        row(
            M::GET,
            "/api/v1/namespaces/team-b/members",
            None,
            [200, 403, 403, 403, 401, 401],
        ),
        row(
            M::PUT,
            "/api/v1/namespaces/team-a/members/outsider",
            Some(r#"{"role":"guest"}"#),
            [200, 200, 403, 403, 401, 401],
        ),
        row(
            M::PUT,
            "/api/v1/namespaces/team-b/members/outsider",
            Some(r#"{"role":"guest"}"#),
            [200, 403, 403, 403, 401, 401],
        ),
        row(
            M::DELETE,
            "/api/v1/namespaces/team-a/members/m-{who}",
            None,
            [204, 204, 403, 403, 401, 401],
        ),
        // Tokens: server admins and the namespace's admins.
        row(
            M::GET,
            "/api/v1/namespaces/team-a/tokens",
            None,
            [200, 200, 403, 403, 401, 401],
        ),
        row(
            M::POST,
            "/api/v1/namespaces/team-a/tokens",
            Some(r#"{"name":"t-{who}","access":"read"}"#),
            [201, 201, 403, 403, 401, 401],
        ),
        row(
            M::POST,
            "/api/v1/namespaces/team-b/tokens",
            Some(r#"{"name":"t-{who}","access":"read"}"#),
            [201, 403, 403, 403, 401, 401],
        ),
        row(
            M::DELETE,
            "/api/v1/namespaces/team-a/tokens/r-{who}",
            None,
            [204, 204, 403, 403, 401, 401],
        ),
        row(
            M::DELETE,
            "/api/v1/namespaces/team-b/tokens/r-{who}",
            None,
            [204, 403, 403, 403, 401, 401],
        ),
    ]
}

/// Per-caller objects the matrix's mutating rows act on.
async fn matrix_objects(env: &Env) {
    let ns = env.namespaces();
    let tokens = env.tokens();
    for who in WHO {
        env.add_user(&format!("victim-{who}"), "pw").await;
        env.add_user(&format!("m-{who}"), "pw").await;
        ns.set_member("team-a", &format!("m-{who}"), "guest")
            .await
            .unwrap();
        ns.create(&format!("gone-{who}"), false).await.unwrap();
        for n in ["team-a", "team-b"] {
            tokens
                .create(n, &format!("r-{who}"), "read", None)
                .await
                .unwrap();
        }
    }
    // A namespace admin may still not delete their namespace.
    ns.set_member("gone-nsadmin", "nsadmin", "admin")
        .await
        .unwrap();
}

/// Runs the matrix with each caller's Authorization header, then checks that exactly the
/// allowed requests had an effect.
async fn run_matrix(env: &Env, auth: &[Option<String>; 6]) {
    matrix_objects(env).await;
    for (n, r) in matrix().into_iter().enumerate() {
        for (i, who) in WHO.iter().enumerate() {
            let path = r.path.replace("{who}", who);
            let body = r.body.map(|b| b.replace("{who}", who));
            // The wrong-password caller tries another user's name on each row: one user
            // failing twenty times from one address would (rightly) be blocked by the login
            // throttle after ten, and this matrix is about the admin API's answers.
            let auth = match (who, &auth[i]) {
                (&"wrongpw", Some(a)) if a.starts_with("Basic ") => {
                    Some(basic_auth(&format!("victim-{}", WHO[n % 5]), "wrong"))
                }
                (_, a) => a.clone(),
            };
            let resp = env
                .call(r.method.clone(), &path, auth.as_deref(), body.as_deref())
                .await;
            let want = StatusCode::from_u16(r.expect[i]).unwrap();
            let what = format!("{who}: {} {path}", r.method);
            if want.is_success() {
                assert_eq!(
                    resp.status(),
                    want,
                    "{what}: {}",
                    resp.text().await.unwrap()
                );
            } else {
                let www = opt_header(resp.headers(), "www-authenticate");
                assert_envelope(resp, want, &what).await;
                if want == StatusCode::UNAUTHORIZED {
                    assert!(www.is_some(), "{what}: 401 carries a challenge");
                }
            }
        }
    }

    // Only the allowed requests changed anything.
    let root = basic_auth(ROOT.0, ROOT.1);
    let users = env
        .expect(Method::GET, "/api/v1/users", &root, None, StatusCode::OK)
        .await;
    let users = names(&users, "users", "name");
    for who in WHO {
        let allowed = who == "root";
        assert_eq!(users.contains(&format!("new-{who}")), allowed, "new-{who}");
        assert_eq!(
            users.contains(&format!("victim-{who}")),
            !allowed,
            "victim-{who}"
        );
    }
    let nss = env
        .expect(
            Method::GET,
            "/api/v1/namespaces",
            &root,
            None,
            StatusCode::OK,
        )
        .await;
    let nss = names(&nss, "namespaces", "name");
    for who in WHO {
        let allowed = who == "root";
        assert_eq!(nss.contains(&format!("ns-{who}")), allowed, "ns-{who}");
        assert_eq!(nss.contains(&format!("gone-{who}")), !allowed, "gone-{who}");
    }
    let members = env
        .expect(
            Method::GET,
            "/api/v1/namespaces/team-a/members",
            &root,
            None,
            StatusCode::OK,
        )
        .await;
    let members = names(&members, "members", "user");
    assert!(members.contains(&"outsider".to_string()));
    for who in WHO {
        let allowed = who == "root" || who == "nsadmin";
        assert_eq!(members.contains(&format!("m-{who}")), !allowed, "m-{who}");
    }
    for (n, managers) in [
        ("team-a", &["root", "nsadmin"][..]),
        ("team-b", &["root"][..]),
    ] {
        let list = env.tokens().list(Some(n)).await.unwrap();
        for who in WHO {
            let allowed = managers.contains(&who);
            let created = list.iter().any(|t| t.name == format!("t-{who}"));
            assert_eq!(created, allowed, "{n}: t-{who}");
            let revoked = list
                .iter()
                .find(|t| t.name == format!("r-{who}"))
                .unwrap()
                .revoked_at
                .is_some();
            assert_eq!(revoked, allowed, "{n}: r-{who}");
        }
    }
}

// The permission rules with Basic credentials: server admins may do everything; namespace
// admins manage members, tokens and visibility of their own namespace; other users only read;
// CI tokens get 403; no or wrong credentials get 401 with a challenge.
#[tokio::test]
async fn permission_matrix_basic_mode() {
    let env = fixture(AuthMode::Basic).await;
    let auth = [
        Some(basic_auth(ROOT.0, ROOT.1)),
        Some(basic_auth(NSADMIN.0, NSADMIN.1)),
        Some(basic_auth(DEV.0, DEV.1)),
        Some(basic_auth("ci", &env.ci)),
        None,
        Some(basic_auth(ROOT.0, "wrong")),
    ];
    run_matrix(&env, &auth).await;
}

// The same rules with bearer tokens from the token service (token mode).
#[tokio::test]
async fn permission_matrix_token_mode() {
    let env = fixture(AuthMode::Token).await;
    let auth = [
        Some(env.bearer(Some(ROOT)).await),
        Some(env.bearer(Some(NSADMIN)).await),
        Some(env.bearer(Some(DEV)).await),
        Some(env.bearer(Some(("ci", &env.ci))).await),
        // An anonymous token is no login.
        Some(env.bearer(None).await),
        Some("Bearer not-a-token".to_string()),
    ];
    run_matrix(&env, &auth).await;
}

// ---------------------------------------------------------------------------------------------
// Endpoints and their effects
// ---------------------------------------------------------------------------------------------

// GET /api/v1/me names the caller and whether they are a server admin.
#[tokio::test]
async fn me_names_the_caller() {
    let env = fixture(AuthMode::Basic).await;
    for ((u, p), admin) in [(ROOT, true), (NSADMIN, false), (DEV, false)] {
        let v = env
            .expect(
                Method::GET,
                "/api/v1/me",
                &basic_auth(u, p),
                None,
                StatusCode::OK,
            )
            .await;
        assert_eq!(v["name"], u);
        assert_eq!(v["admin"], admin);
    }
    let resp = env.call(Method::GET, "/api/v1/me", None, None).await;
    let www = header(&resp, "www-authenticate");
    assert!(www.starts_with("Basic "), "{www}");
    assert_envelope(resp, StatusCode::UNAUTHORIZED, "no credentials").await;
}

// Users: list, add (then log in and act by their rights), delete (then no login), and the
// password never leaves the server.
#[tokio::test]
async fn users_add_list_delete_and_effects() {
    let mut env = fixture(AuthMode::Basic).await;
    let root = env.basic_auth(ROOT);

    let v = env
        .expect(Method::GET, "/api/v1/users", &root, None, StatusCode::OK)
        .await;
    assert_eq!(
        names(&v, "users", "name"),
        ["dev", "nsadmin", "outsider", "root"]
    );
    for u in v["users"].as_array().unwrap() {
        assert_eq!(u["admin"], u["name"] == "root", "{u}");
        assert!(rfc3339_secs(&u["created_at"]) > 0);
        assert!(u.get("password").is_none() && u.get("password_hash").is_none());
    }

    let v = env
        .expect(
            Method::POST,
            "/api/v1/users",
            &root,
            Some(json!({ "name": "carol", "password": "carol-pw", "admin": false })),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(v, json!({ "name": "carol", "admin": false }));
    let carol = basic_auth("carol", "carol-pw");
    let me = env
        .expect(Method::GET, "/api/v1/me", &carol, None, StatusCode::OK)
        .await;
    assert_eq!(me["admin"], false);
    assert_eq!(
        env.call(Method::GET, "/v2/", Some(&carol), None)
            .await
            .status(),
        StatusCode::OK
    );
    // A plain user may not push anywhere yet.
    assert_eq!(
        env.try_push(&carol, "team-a/app", "v1").await,
        StatusCode::FORBIDDEN
    );

    // An admin added through the API can push anywhere and administer.
    env.expect(
        Method::POST,
        "/api/v1/users",
        &root,
        Some(json!({ "name": "boss", "password": "boss-pw", "admin": true })),
        StatusCode::CREATED,
    )
    .await;
    let boss = basic_auth("boss", "boss-pw");
    assert_eq!(
        env.try_push(&boss, "team-b/app", "v1").await,
        StatusCode::CREATED
    );
    env.expect(Method::GET, "/api/v1/users", &boss, None, StatusCode::OK)
        .await;

    // Delete: the user can no longer log in.
    let resp = env
        .call(Method::DELETE, "/api/v1/users/carol", Some(&root), None)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = env.call(Method::GET, "/v2/", Some(&carol), None).await;
    assert_envelope(resp, StatusCode::UNAUTHORIZED, "deleted user").await;
    let resp = env
        .call(Method::DELETE, "/api/v1/users/carol", Some(&root), None)
        .await;
    assert_envelope(resp, StatusCode::NOT_FOUND, "delete twice").await;
    let v = env
        .expect(Method::GET, "/api/v1/users", &root, None, StatusCode::OK)
        .await;
    assert!(!names(&v, "users", "name").contains(&"carol".to_string()));
}

// Namespaces: create, read, list (filtered by visibility), make public and private (anonymous
// pulls follow), delete (with its members and tokens).
#[tokio::test]
async fn namespaces_crud_and_effects() {
    let mut env = fixture(AuthMode::Basic).await;
    let root = env.basic_auth(ROOT);
    let dev = env.basic_auth(DEV);

    let v = env
        .expect(
            Method::POST,
            "/api/v1/namespaces",
            &root,
            Some(json!({ "name": "team-c" })),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(v["name"], "team-c");
    assert_eq!(v["public"], false, "private unless asked");
    assert!((rfc3339_secs(&v["created_at"]) - unix_now()).abs() < 60);
    let got = env
        .expect(
            Method::GET,
            "/api/v1/namespaces/team-c",
            &root,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(got, v);
    let all = env
        .expect(
            Method::GET,
            "/api/v1/namespaces",
            &root,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        names(&all, "namespaces", "name"),
        ["pub", "team-a", "team-b", "team-c"]
    );
    // A developer of team-a sees team-a and the public namespace only.
    let mine = env
        .expect(
            Method::GET,
            "/api/v1/namespaces",
            &dev,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(names(&mine, "namespaces", "name"), ["pub", "team-a"]);
    // ... and cannot read a private namespace it is not in.
    let resp = env
        .call(Method::GET, "/api/v1/namespaces/team-c", Some(&dev), None)
        .await;
    let status = resp.status();
    assert!(
        status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN,
        "{status}"
    );
    assert_envelope(resp, status, "hidden namespace").await;

    // Content in the new namespace: private, so anonymous pulls are challenged and a
    // non-member is denied.
    assert_eq!(
        env.try_push(&root, "team-c/app", "v1").await,
        StatusCode::CREATED
    );
    assert_eq!(
        env.pull_status(None, "team-c/app", "v1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        env.pull_status(Some(&dev), "team-c/app", "v1").await,
        StatusCode::FORBIDDEN
    );

    // PATCH public: anyone may pull (not push).
    let v = env
        .expect(
            Method::PATCH,
            "/api/v1/namespaces/team-c",
            &root,
            Some(json!({ "public": true })),
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["public"], true);
    assert_eq!(
        env.pull_status(None, "team-c/app", "v1").await,
        StatusCode::OK
    );
    assert_eq!(
        env.pull_status(Some(&dev), "team-c/app", "v1").await,
        StatusCode::OK
    );
    assert_eq!(
        env.try_push(&dev, "team-c/app", "v2").await,
        StatusCode::FORBIDDEN
    );
    let mine = env
        .expect(
            Method::GET,
            "/api/v1/namespaces",
            &dev,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        names(&mine, "namespaces", "name"),
        ["pub", "team-a", "team-c"]
    );
    env.expect(
        Method::PATCH,
        "/api/v1/namespaces/team-c",
        &root,
        Some(json!({ "public": false })),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        env.pull_status(None, "team-c/app", "v1").await,
        StatusCode::UNAUTHORIZED
    );

    // DELETE takes its members and tokens with it.
    env.expect(
        Method::PUT,
        "/api/v1/namespaces/team-c/members/dev",
        &root,
        Some(json!({ "role": "developer" })),
        StatusCode::OK,
    )
    .await;
    let t = env
        .expect(
            Method::POST,
            "/api/v1/namespaces/team-c/tokens",
            &root,
            Some(json!({ "name": "deploy", "access": "read" })),
            StatusCode::CREATED,
        )
        .await;
    let deploy = basic_auth("deploy", t["secret"].as_str().unwrap());
    assert_eq!(
        env.pull_status(Some(&deploy), "team-c/app", "v1").await,
        StatusCode::OK
    );
    let resp = env
        .call(
            Method::DELETE,
            "/api/v1/namespaces/team-c",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for path in [
        "/api/v1/namespaces/team-c",
        "/api/v1/namespaces/team-c/members",
        "/api/v1/namespaces/team-c/tokens",
    ] {
        let resp = env.call(Method::GET, path, Some(&root), None).await;
        assert_envelope(resp, StatusCode::NOT_FOUND, path).await;
    }
    let resp = env
        .call(
            Method::DELETE,
            "/api/v1/namespaces/team-c",
            Some(&root),
            None,
        )
        .await;
    assert_envelope(resp, StatusCode::NOT_FOUND, "delete twice").await;
    let resp = env.call(Method::GET, "/v2/", Some(&deploy), None).await;
    assert_envelope(
        resp,
        StatusCode::UNAUTHORIZED,
        "token of a deleted namespace",
    )
    .await;
    assert_eq!(
        env.pull_status(Some(&dev), "team-c/app", "v1").await,
        StatusCode::FORBIDDEN,
        "membership gone with the namespace"
    );
}

// A namespace admin may change the visibility of their namespace.
#[tokio::test]
async fn namespace_admin_patches_visibility() {
    let mut env = fixture(AuthMode::Basic).await;
    let root = env.basic_auth(ROOT);
    assert_eq!(
        env.try_push(&root, "team-a/app", "v1").await,
        StatusCode::CREATED
    );
    let v = env
        .expect(
            Method::PATCH,
            "/api/v1/namespaces/team-a",
            &env.basic_auth(NSADMIN),
            Some(json!({ "public": true })),
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["name"], "team-a");
    assert_eq!(v["public"], true);
    assert_eq!(
        env.pull_status(None, "team-a/app", "v1").await,
        StatusCode::OK
    );
}

// Members: a user added through the API gets the role's rights at once; changing the role
// changes them; removing the member takes them away; a namespace admin can do all of this.
#[tokio::test]
async fn members_set_change_remove_and_effects() {
    let mut env = fixture(AuthMode::Basic).await;
    let admin = env.basic_auth(NSADMIN);
    env.add_user("dev2", "dev2-pw").await;
    let dev2 = basic_auth("dev2", "dev2-pw");
    assert_eq!(
        env.try_push(&env.basic_auth(ROOT), "team-a/app", "v1")
            .await,
        StatusCode::CREATED
    );
    assert_eq!(
        env.try_push(&dev2, "team-a/app", "v2").await,
        StatusCode::FORBIDDEN
    );
    let member_path = "/api/v1/namespaces/team-a/members/dev2";

    let v = env
        .expect(
            Method::PUT,
            member_path,
            &admin,
            Some(json!({ "role": "developer" })),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        v,
        json!({ "namespace": "team-a", "user": "dev2", "role": "developer" })
    );
    assert_eq!(
        env.try_push(&dev2, "team-a/app", "v2").await,
        StatusCode::CREATED
    );
    let list = env
        .expect(
            Method::GET,
            "/api/v1/namespaces/team-a/members",
            &admin,
            None,
            StatusCode::OK,
        )
        .await;
    let entry = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == "dev2")
        .cloned()
        .expect("dev2 listed");
    assert_eq!(entry["role"], "developer");
    assert!(rfc3339_secs(&entry["created_at"]) > 0);
    assert_eq!(names(&list, "members", "user"), ["dev", "dev2", "nsadmin"]);

    // Guest: pull only.
    env.expect(
        Method::PUT,
        member_path,
        &admin,
        Some(json!({ "role": "guest" })),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        env.try_push(&dev2, "team-a/app", "v3").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        env.pull_status(Some(&dev2), "team-a/app", "v2").await,
        StatusCode::OK
    );

    // Maintainer: may delete.
    env.expect(
        Method::PUT,
        member_path,
        &admin,
        Some(json!({ "role": "maintainer" })),
        StatusCode::OK,
    )
    .await;
    let resp = env
        .call(
            Method::DELETE,
            "/v2/team-a/app/manifests/v2",
            Some(&dev2),
            None,
        )
        .await;
    assert_ne!(resp.status(), StatusCode::FORBIDDEN);
    assert_ne!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = env
        .call(
            Method::GET,
            "/api/v1/namespaces/team-a/members",
            Some(&dev2),
            None,
        )
        .await;
    assert_envelope(resp, StatusCode::FORBIDDEN, "maintainer listing members").await;

    // Admin: may manage the namespace's members.
    env.expect(
        Method::PUT,
        member_path,
        &admin,
        Some(json!({ "role": "admin" })),
        StatusCode::OK,
    )
    .await;
    env.expect(
        Method::GET,
        "/api/v1/namespaces/team-a/members",
        &dev2,
        None,
        StatusCode::OK,
    )
    .await;

    // Removed: no access at all.
    let resp = env
        .call(Method::DELETE, member_path, Some(&admin), None)
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        env.pull_status(Some(&dev2), "team-a/app", "v1").await,
        StatusCode::FORBIDDEN
    );
    let list = env
        .expect(
            Method::GET,
            "/api/v1/namespaces/team-a/members",
            &admin,
            None,
            StatusCode::OK,
        )
        .await;
    assert!(!names(&list, "members", "user").contains(&"dev2".to_string()));
    let resp = env
        .call(Method::DELETE, member_path, Some(&admin), None)
        .await;
    assert_envelope(resp, StatusCode::NOT_FOUND, "remove twice").await;
}

// Tokens: create (secret shown once, expiry), log in with it by its access level, list
// (state, last use, no secret), revoke (no login), re-create under the same name.
#[tokio::test]
async fn tokens_create_list_revoke_and_effects() {
    let mut env = fixture(AuthMode::Basic).await;
    let admin = env.basic_auth(NSADMIN);
    let path = "/api/v1/namespaces/team-a/tokens";

    let v = env
        .expect(
            Method::POST,
            path,
            &admin,
            Some(json!({ "name": "deploy", "access": "read-write", "expires": "90d" })),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(v["namespace"], "team-a");
    assert_eq!(v["name"], "deploy");
    assert_eq!(v["access"], "read-write");
    assert_eq!(v["state"], "active");
    assert!(
        v["last_used_at"].is_null() && v["revoked_at"].is_null(),
        "{v}"
    );
    let created = rfc3339_secs(&v["created_at"]);
    assert!((created - unix_now()).abs() < 60);
    assert_eq!(rfc3339_secs(&v["expires_at"]) - created, 90 * 86400);
    let secret = v["secret"].as_str().expect("the secret, once").to_string();
    assert!(secret.starts_with("berth_"), "{secret}");
    let deploy = basic_auth("deploy", &secret);

    // read-write: push and pull in team-a, not delete, nothing in team-b.
    assert_eq!(
        env.try_push(&deploy, "team-a/app", "v1").await,
        StatusCode::CREATED
    );
    assert_eq!(
        env.pull_status(Some(&deploy), "team-a/app", "v1").await,
        StatusCode::OK
    );
    let resp = env
        .call(
            Method::DELETE,
            "/v2/team-a/app/manifests/v1",
            Some(&deploy),
            None,
        )
        .await;
    assert_envelope(resp, StatusCode::FORBIDDEN, "read-write deleting").await;
    assert_eq!(
        env.try_push(&deploy, "team-b/app", "v1").await,
        StatusCode::FORBIDDEN
    );

    // No expiry when none is asked.
    let v = env
        .expect(
            Method::POST,
            path,
            &admin,
            Some(json!({ "name": "forever", "access": "read" })),
            StatusCode::CREATED,
        )
        .await;
    assert!(v["expires_at"].is_null(), "{v}");

    // The list: both, used and unused, and no secrets.
    let list = env
        .expect(Method::GET, path, &admin, None, StatusCode::OK)
        .await;
    assert_eq!(names(&list, "tokens", "name"), ["ci", "deploy", "forever"]);
    for t in list["tokens"].as_array().unwrap() {
        assert!(
            t.get("secret").is_none() && t.get("secret_hash").is_none(),
            "{t}"
        );
        assert_eq!(t["state"], "active");
        assert_eq!(t["namespace"], "team-a");
    }
    let d = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "deploy")
        .unwrap();
    assert!(rfc3339_secs(&d["last_used_at"]) >= created, "{d}");

    // A live token's name is taken.
    let resp = env
        .call(
            Method::POST,
            path,
            Some(&admin),
            Some(r#"{"name":"deploy","access":"read"}"#),
        )
        .await;
    assert_envelope(resp, StatusCode::CONFLICT, "duplicate token").await;

    // Revoke: no more logins; listed as revoked.
    let resp = env
        .call(
            Method::DELETE,
            "/api/v1/namespaces/team-a/tokens/deploy",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = env.call(Method::GET, "/v2/", Some(&deploy), None).await;
    assert_envelope(resp, StatusCode::UNAUTHORIZED, "revoked token").await;
    let list = env
        .expect(Method::GET, path, &admin, None, StatusCode::OK)
        .await;
    let d = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "deploy")
        .unwrap()
        .clone();
    assert_eq!(d["state"], "revoked");
    assert!(rfc3339_secs(&d["revoked_at"]) >= created);
    let resp = env
        .call(
            Method::DELETE,
            "/api/v1/namespaces/team-a/tokens/deploy",
            Some(&admin),
            None,
        )
        .await;
    assert_envelope(resp, StatusCode::NOT_FOUND, "revoke twice").await;

    // The name is free again, with a new secret; the old one stays dead.
    let v = env
        .expect(
            Method::POST,
            path,
            &admin,
            Some(json!({ "name": "deploy", "access": "read" })),
            StatusCode::CREATED,
        )
        .await;
    assert_ne!(v["secret"].as_str().unwrap(), secret);
    let resp = env.call(Method::GET, "/v2/", Some(&deploy), None).await;
    assert_envelope(resp, StatusCode::UNAUTHORIZED, "old secret").await;
    let fresh = basic_auth("deploy", v["secret"].as_str().unwrap());
    assert_eq!(
        env.pull_status(Some(&fresh), "team-a/app", "v1").await,
        StatusCode::OK
    );
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

// 400 for bad JSON, unknown fields, bad names, roles, access levels and durations; 404 for
// unknown users, namespaces, members and tokens; 409 for what already exists. Each in the
// error envelope.
#[tokio::test]
async fn error_statuses() {
    let env = fixture(AuthMode::Basic).await;
    let root = env.basic_auth(ROOT);
    let long_pw = format!(r#"{{"name":"longpw","password":"{}"}}"#, "x".repeat(73));
    use Method as M;
    let cases: Vec<(Method, &str, Option<&str>, u16)> = vec![
        // Users.
        (M::POST, "/api/v1/users", Some("not json"), 400),
        (M::POST, "/api/v1/users", Some(""), 400),
        (M::POST, "/api/v1/users", Some(r#"{"name":"x"}"#), 400),
        (
            M::POST,
            "/api/v1/users",
            Some(r#"{"name":"x","password":"p","extra":1}"#),
            400,
        ),
        (
            M::POST,
            "/api/v1/users",
            Some(r#"{"name":"x","password":"p","admin":"yes"}"#),
            400,
        ),
        (
            M::POST,
            "/api/v1/users",
            Some(r#"{"name":"bad name","password":"p"}"#),
            400,
        ),
        (
            M::POST,
            "/api/v1/users",
            Some(r#"{"name":"-x","password":"p"}"#),
            400,
        ),
        (
            M::POST,
            "/api/v1/users",
            Some(r#"{"name":"a:b","password":"p"}"#),
            400,
        ),
        (
            M::POST,
            "/api/v1/users",
            Some(r#"{"name":"","password":"p"}"#),
            400,
        ),
        (
            M::POST,
            "/api/v1/users",
            Some(r#"{"name":"y","password":""}"#),
            400,
        ),
        (M::POST, "/api/v1/users", Some(long_pw.as_str()), 400),
        (
            M::POST,
            "/api/v1/users",
            Some(r#"{"name":"dev","password":"p"}"#),
            409,
        ),
        (M::DELETE, "/api/v1/users/nobody", None, 404),
        (M::DELETE, "/api/v1/users/-bad", None, 400),
        // Namespaces.
        (M::POST, "/api/v1/namespaces", Some("{"), 400),
        (
            M::POST,
            "/api/v1/namespaces",
            Some(r#"{"public":true}"#),
            400,
        ),
        (
            M::POST,
            "/api/v1/namespaces",
            Some(r#"{"name":"Team"}"#),
            400,
        ),
        (
            M::POST,
            "/api/v1/namespaces",
            Some(r#"{"name":"a/b"}"#),
            400,
        ),
        (M::POST, "/api/v1/namespaces", Some(r#"{"name":""}"#), 400),
        (M::POST, "/api/v1/namespaces", Some(r#"{"name":"-x"}"#), 400),
        (
            M::POST,
            "/api/v1/namespaces",
            Some(r#"{"name":"x","public":"yes"}"#),
            400,
        ),
        (
            M::POST,
            "/api/v1/namespaces",
            Some(r#"{"name":"x","owner":"dev"}"#),
            400,
        ),
        (
            M::POST,
            "/api/v1/namespaces",
            Some(r#"{"name":"team-a"}"#),
            409,
        ),
        (M::GET, "/api/v1/namespaces/nope", None, 404),
        (
            M::PATCH,
            "/api/v1/namespaces/nope",
            Some(r#"{"public":true}"#),
            404,
        ),
        (
            M::PATCH,
            "/api/v1/namespaces/team-a",
            Some(r#"{"public":"yes"}"#),
            400,
        ),
        (M::PATCH, "/api/v1/namespaces/team-a", Some("{}"), 400),
        (M::PATCH, "/api/v1/namespaces/team-a", Some("[]"), 400),
        (M::DELETE, "/api/v1/namespaces/nope", None, 404),
        // Members.
        (M::GET, "/api/v1/namespaces/nope/members", None, 404),
        (
            M::PUT,
            "/api/v1/namespaces/team-a/members/dev",
            Some(r#"{"role":"owner"}"#),
            400,
        ),
        (
            M::PUT,
            "/api/v1/namespaces/team-a/members/dev",
            Some(r#"{"role":"Admin"}"#),
            400,
        ),
        (
            M::PUT,
            "/api/v1/namespaces/team-a/members/dev",
            Some("{}"),
            400,
        ),
        (
            M::PUT,
            "/api/v1/namespaces/team-a/members/dev",
            Some("guest"),
            400,
        ),
        (
            M::PUT,
            "/api/v1/namespaces/team-a/members/nobody",
            Some(r#"{"role":"guest"}"#),
            404,
        ),
        (
            M::PUT,
            "/api/v1/namespaces/nope/members/dev",
            Some(r#"{"role":"guest"}"#),
            404,
        ),
        (
            M::DELETE,
            "/api/v1/namespaces/team-a/members/outsider",
            None,
            404,
        ),
        (
            M::DELETE,
            "/api/v1/namespaces/team-a/members/nobody",
            None,
            404,
        ),
        (M::DELETE, "/api/v1/namespaces/nope/members/dev", None, 404),
        // Tokens.
        (M::GET, "/api/v1/namespaces/nope/tokens", None, 404),
        (
            M::POST,
            "/api/v1/namespaces/team-a/tokens",
            Some("nope"),
            400,
        ),
        (
            M::POST,
            "/api/v1/namespaces/team-a/tokens",
            Some(r#"{"name":"t"}"#),
            400,
        ),
        (
            M::POST,
            "/api/v1/namespaces/team-a/tokens",
            Some(r#"{"name":"t","access":"write"}"#),
            400,
        ),
        (
            M::POST,
            "/api/v1/namespaces/team-a/tokens",
            Some(r#"{"name":"bad name","access":"read"}"#),
            400,
        ),
        (
            M::POST,
            "/api/v1/namespaces/team-a/tokens",
            Some(r#"{"name":"a/b","access":"read"}"#),
            400,
        ),
        (
            M::POST,
            "/api/v1/namespaces/team-a/tokens",
            Some(r#"{"name":"t","access":"read","expires":"soon"}"#),
            400,
        ),
        (
            M::POST,
            "/api/v1/namespaces/team-a/tokens",
            Some(r#"{"name":"t","access":"read","expires":90}"#),
            400,
        ),
        (
            M::POST,
            "/api/v1/namespaces/team-a/tokens",
            Some(r#"{"name":"t","access":"read","scope":"x"}"#),
            400,
        ),
        (
            M::POST,
            "/api/v1/namespaces/team-a/tokens",
            Some(r#"{"name":"ci","access":"read"}"#),
            409,
        ),
        (
            M::POST,
            "/api/v1/namespaces/nope/tokens",
            Some(r#"{"name":"t","access":"read"}"#),
            404,
        ),
        (
            M::DELETE,
            "/api/v1/namespaces/team-a/tokens/nope",
            None,
            404,
        ),
        (M::DELETE, "/api/v1/namespaces/team-b/tokens/ci", None, 404),
        (M::DELETE, "/api/v1/namespaces/nope/tokens/ci", None, 404),
    ];
    for (method, path, body, status) in cases {
        let what = format!("{method} {path} {body:?}");
        let resp = env.call(method, path, Some(&root), body).await;
        assert_envelope(resp, StatusCode::from_u16(status).unwrap(), &what).await;
    }

    // Nothing of the refused requests was created.
    let users = env
        .expect(Method::GET, "/api/v1/users", &root, None, StatusCode::OK)
        .await;
    assert_eq!(
        names(&users, "users", "name"),
        ["dev", "nsadmin", "outsider", "root"]
    );
    let nss = env
        .expect(
            Method::GET,
            "/api/v1/namespaces",
            &root,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        names(&nss, "namespaces", "name"),
        ["pub", "team-a", "team-b"]
    );
    let tokens = env
        .expect(
            Method::GET,
            "/api/v1/namespaces/team-a/tokens",
            &root,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(names(&tokens, "tokens", "name"), ["ci"]);
}

// ---------------------------------------------------------------------------------------------
// Token mode and mode none
// ---------------------------------------------------------------------------------------------

// In token mode the admin API takes Basic credentials and bearer tokens; a bearer token dies
// with its user (deleted through the API) like on the registry, and a membership set through
// the API shows in the next token's grant.
#[tokio::test]
async fn token_mode_bearer_and_basic() {
    let env = fixture(AuthMode::Token).await;
    let root_bearer = env.bearer(Some(ROOT)).await;
    let me = env
        .expect(
            Method::GET,
            "/api/v1/me",
            &root_bearer,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(me["name"], "root");
    assert_eq!(me["admin"], true);
    let me = env
        .expect(
            Method::GET,
            "/api/v1/me",
            &env.basic_auth(NSADMIN),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(me["name"], "nsadmin");

    // A member added through the API is granted push in the next token.
    env.add_user("dev2", "dev2-pw").await;
    let grant = |env: &Env| {
        let rb = env
            .s
            .get("/token")
            .query(&[
                ("service", "berth"),
                ("scope", "repository:team-a/app:pull,push"),
            ])
            .basic_auth("dev2", Some("dev2-pw"));
        async move {
            let v: Value = rb.send().await.unwrap().json().await.unwrap();
            let t = v["token"].as_str().unwrap().to_string();
            let claims = t.split('.').nth(1).unwrap().to_string();
            let claims: Value = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(claims)
                    .unwrap(),
            )
            .unwrap();
            claims["access"].clone()
        }
    };
    assert!(grant(&env).await.as_array().is_none_or(|a| a.is_empty()));
    env.expect(
        Method::PUT,
        "/api/v1/namespaces/team-a/members/dev2",
        &env.bearer(Some(NSADMIN)).await,
        Some(json!({ "role": "developer" })),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        grant(&env).await,
        json!([{ "type": "repository", "name": "team-a/app", "actions": ["pull", "push"] }])
    );

    // Deleting a user through the API ends their bearer tokens on the admin API too.
    let dev2_bearer = {
        let v: Value = env
            .s
            .get("/token")
            .query(&[("service", "berth")])
            .basic_auth("dev2", Some("dev2-pw"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        format!("Bearer {}", v["token"].as_str().unwrap())
    };
    env.expect(
        Method::GET,
        "/api/v1/me",
        &dev2_bearer,
        None,
        StatusCode::OK,
    )
    .await;
    let resp = env
        .call(
            Method::DELETE,
            "/api/v1/users/dev2",
            Some(&root_bearer),
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = env
        .call(Method::GET, "/api/v1/me", Some(&dev2_bearer), None)
        .await;
    assert_envelope(resp, StatusCode::UNAUTHORIZED, "bearer of a deleted user").await;

    // Refresh tokens are not bearer tokens here either.
    let v: Value = env
        .s
        .get("/token")
        .query(&[("service", "berth"), ("offline_token", "true")])
        .basic_auth(ROOT.0, Some(ROOT.1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh = format!("Bearer {}", v["refresh_token"].as_str().unwrap());
    let resp = env
        .call(Method::GET, "/api/v1/users", Some(&refresh), None)
        .await;
    assert_envelope(resp, StatusCode::UNAUTHORIZED, "refresh token as bearer").await;
}

// With access control off, the admin API is open (there is nobody to tell apart), and what it
// sets up is stored for when access control is turned on.
#[tokio::test]
async fn mode_none_admin_api_is_open() {
    let env = fixture(AuthMode::None).await;
    let resp = env.call(Method::GET, "/api/v1/me", None, None).await;
    let v: Value = expect_status(resp, StatusCode::OK)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["admin"], true);
    let resp = env
        .call(
            Method::POST,
            "/api/v1/namespaces",
            None,
            Some(r#"{"name":"team-z","public":true}"#),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(env.namespaces().get("team-z").await.is_ok_and(|n| n.public));
}
