//! Token authentication end to end: the Docker token-auth flow (challenge, `/token`, bearer),
//! the OAuth2 password and refresh-token grants, JWT validation (expiry, revocation, forged,
//! malformed and misdirected tokens), scope reduction, blob isolation between repositories,
//! login throttling and CI access tokens.
//!
//! References in comments:
//! - "token-auth": the Docker Registry v2 authentication spec
//!   (distribution/docs/spec/auth/token.md): 401 with `WWW-Authenticate: Bearer realm,service,
//!   scope`, `GET <realm>?service=..&scope=..` with optional Basic credentials, the response
//!   fields `token`, `access_token`, `expires_in`, `issued_at`, `refresh_token`.
//! - "oauth": the same spec's OAuth2 page (spec/auth/oauth.md): `POST /token` with
//!   `grant_type=password|refresh_token`, `access_type=offline`, space-separated `scope`.
//! - "jwt": the spec's JWT page (spec/auth/jwt.md): `iss`, `sub`, `aud`, `exp`, `nbf`, `iat`,
//!   `jti`, `access: [{type, name, actions}]`; the registry must verify signature, issuer,
//!   audience and lifetime.
//! - "scope": spec/auth/scope.md: `repository:<name>:<actions>`, `registry:catalog:*`,
//!   several scopes as repeated parameters.
//! - RFC 6750 §3.1: `error="invalid_token"` and `error="insufficient_scope"` in challenges.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::common::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use berth::auth::namespaces::Namespaces;
use berth::auth::tokens::{new_secret, secret_hash, AccessTokens};
use berth::auth::Users;
use berth::config::{AuthMode, Config};
use berth::metadata::access::TokenRecord;
use berth::metadata::Backend;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use sha2::Digest as _;

type Creds<'a> = (&'a str, &'a str);

/// Server administrator.
const ROOT: Creds = ("root", "root-secret");
/// Developer (pull, push) in team-a.
const DEV: Creds = ("dev", "dev-secret");
/// Guest (pull) in team-a.
const GUEST: Creds = ("guest", "guest-secret");
/// Maintainer (pull, push, delete) in team-a.
const MAINT: Creds = ("maint", "maint-secret");
/// Developer in team-a and guest in team-b.
const BOTH: Creds = ("both", "both-secret");
/// A user with no membership anywhere.
const OUTSIDER: Creds = ("outsider", "outsider-secret");

/// A running server and a second handle on its database, for setting up and changing users,
/// namespaces and tokens behind the server's back (as the CLI does).
struct Env {
    s: TestServer,
    meta: Arc<dyn Backend>,
}

impl Env {
    async fn start(mode: AuthMode, modify: impl FnOnce(&mut Config)) -> Env {
        let s = TestServer::start_with(|c| {
            c.auth.mode = mode;
            modify(c);
        })
        .await;
        let meta = s.db().await;
        Env { s, meta }
    }

    fn users(&self) -> Users {
        Users::new(self.meta.clone())
    }

    fn namespaces(&self) -> Namespaces {
        Namespaces::new(self.meta.clone(), self.meta.clone())
    }

    fn tokens(&self) -> AccessTokens {
        AccessTokens::new(self.meta.clone())
    }

    async fn add_user(&self, (name, password): Creds<'_>, admin: bool) {
        self.users()
            .add(&name.parse().unwrap(), password, admin)
            .await
            .unwrap();
    }

    async fn ci_token(
        &self,
        ns: &str,
        name: &str,
        access: &str,
        lifetime: Option<Duration>,
    ) -> String {
        self.tokens()
            .create(ns, name, access, lifetime)
            .await
            .unwrap()
            .1
    }

    async fn token_record(&self, ns: &str, name: &str) -> TokenRecord {
        self.tokens()
            .list(Some(ns))
            .await
            .unwrap()
            .into_iter()
            .find(|t| t.name == name)
            .unwrap()
    }

    /// The stored bcrypt hash of a user, for computing the `bnd` claim.
    async fn password_hash(&self, user: &str) -> String {
        self.meta.user(user).await.unwrap().unwrap().password_hash
    }

    /// Replaces the harness client by one sending `authorization` on every request (`None`:
    /// no credentials), so the harness's push helpers act as a given principal.
    fn set_auth(&mut self, authorization: Option<&str>) {
        self.s.client = client_with_auth(authorization);
    }

    /// The Authorization header value a user presents in this server's mode: Basic
    /// credentials, or a bearer token for `scopes` fetched with them.
    async fn auth(&self, (user, password): Creds<'_>, scopes: &[&str]) -> String {
        match self.s.config.auth.mode {
            AuthMode::Token => format!(
                "Bearer {}",
                self.token(Some((user, password)), scopes).await
            ),
            _ => basic_auth(user, password),
        }
    }

    async fn push_image_as(&mut self, who: Creds<'_>, repo: &str, tag: &str) -> (Image, String) {
        let auth = self
            .auth(who, &[&format!("repository:{repo}:pull,push")])
            .await;
        self.set_auth(Some(&auth));
        let r = self.s.push_image(repo, tag, 1).await;
        self.set_auth(None);
        r
    }

    async fn push_blob_as(&mut self, who: Creds<'_>, repo: &str, data: &[u8]) -> String {
        let auth = self
            .auth(who, &[&format!("repository:{repo}:pull,push")])
            .await;
        self.set_auth(Some(&auth));
        let d = self.s.push_blob(repo, data).await;
        self.set_auth(None);
        d
    }

    /// `GET /token?service=berth&scope=..` with optional Basic credentials and extra
    /// parameters (token-auth: "Requesting a Token").
    async fn token_get(
        &self,
        creds: Option<Creds<'_>>,
        scopes: &[&str],
        extra: &[(&str, &str)],
    ) -> Response {
        let mut q: Vec<(&str, &str)> = vec![("service", "berth")];
        q.extend(scopes.iter().map(|s| ("scope", *s)));
        q.extend_from_slice(extra);
        let mut rb = self.s.get("/token").query(&q);
        if let Some((u, p)) = creds {
            rb = rb.basic_auth(u, Some(p));
        }
        rb.send().await.unwrap()
    }

    /// The token's JSON answer, checked for 200.
    async fn token_json(&self, creds: Option<Creds<'_>>, scopes: &[&str]) -> Value {
        json_ok(self.token_get(creds, scopes, &[]).await).await
    }

    async fn token(&self, creds: Option<Creds<'_>>, scopes: &[&str]) -> String {
        self.token_json(creds, scopes).await["token"]
            .as_str()
            .expect("token is a string")
            .to_string()
    }

    /// `POST /token` with a form (oauth).
    async fn token_post(&self, form: &[(&str, &str)]) -> Response {
        self.s.post("/token").form(form).send().await.unwrap()
    }

    /// The signing key the server generated under its data dir.
    fn server_key(&self) -> EncodingKey {
        let pem = std::fs::read(self.s.config.data_dir.join("token.key")).unwrap();
        EncodingKey::from_ec_pem(&pem).unwrap()
    }

    fn realm(&self) -> String {
        format!("{}/token", self.s.base)
    }
}

/// A registry in `mode` with the users above, namespaces team-a and team-b (private) and pub
/// (public).
async fn fixture(mode: AuthMode) -> Env {
    fixture_with(mode, |_| {}).await
}

async fn fixture_with(mode: AuthMode, modify: impl FnOnce(&mut Config)) -> Env {
    let env = Env::start(mode, modify).await;
    futures::future::join_all(
        [
            (ROOT, true),
            (DEV, false),
            (GUEST, false),
            (MAINT, false),
            (BOTH, false),
            (OUTSIDER, false),
        ]
        .into_iter()
        .map(|(u, admin)| env.add_user(u, admin)),
    )
    .await;
    let ns = env.namespaces();
    ns.create("team-a", false).await.unwrap();
    ns.create("team-b", false).await.unwrap();
    ns.create("pub", true).await.unwrap();
    for (n, user, role) in [
        ("team-a", "dev", "developer"),
        ("team-a", "guest", "guest"),
        ("team-a", "maint", "maintainer"),
        ("team-a", "both", "developer"),
        ("team-b", "both", "guest"),
    ] {
        ns.set_member(n, user, role).await.unwrap();
    }
    env
}

async fn json_ok(resp: Response) -> Value {
    expect_status(resp, StatusCode::OK)
        .await
        .json()
        .await
        .unwrap()
}

async fn send(rb: RequestBuilder, auth: Option<&str>) -> Response {
    match auth {
        Some(a) => rb.header("authorization", a),
        None => rb,
    }
    .send()
    .await
    .unwrap()
}

/// Parses `Scheme k="v",k="v"` (values may contain commas).
fn parse_challenge(v: &str) -> (String, BTreeMap<String, String>) {
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    let mut params = BTreeMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=').expect("key=value");
        let k = k.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (val, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').expect("closing quote");
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(k, val);
        rest = tail.trim_start_matches([',', ' ']);
    }
    (scheme.to_string(), params)
}

/// Checks a 401 `UNAUTHORIZED` with a Bearer challenge naming this server's realm and service,
/// `scope` and `error` exactly (absent when `None`); returns the challenge's parameters.
///
/// token-auth "How to authenticate": the registry answers 401 with
/// `WWW-Authenticate: Bearer realm="..",service="..",scope=".."`.
async fn assert_bearer_challenge(
    env: &Env,
    resp: Response,
    scope: Option<&str>,
    error: Option<&str>,
) -> BTreeMap<String, String> {
    let www = opt_header(resp.headers(), "www-authenticate");
    assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let www = www.expect("401 carries WWW-Authenticate");
    let (scheme, p) = parse_challenge(&www);
    assert_eq!(scheme, "Bearer", "{www}");
    assert_eq!(p.get("realm"), Some(&env.realm()), "{www}");
    assert_eq!(p.get("service").map(String::as_str), Some("berth"), "{www}");
    assert_eq!(p.get("scope").map(String::as_str), scope, "{www}");
    assert_eq!(p.get("error").map(String::as_str), error, "{www}");
    p
}

/// One base64url JWT segment as JSON (0: header, 1: claims).
fn jwt_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).expect("three segments");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

fn claims(token: &str) -> Value {
    jwt_part(token, 1)
}

type Grant = (String, String, Vec<String>);

/// The `access` claim as sorted (type, name, sorted actions), with a repository `*` spelled
/// out: order is not significant, duplicates are.
fn access_of(claims: &Value) -> Vec<Grant> {
    let mut out: Vec<Grant> = claims["access"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let kind = e["type"].as_str().unwrap().to_string();
            let mut actions: Vec<String> = e["actions"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|a| match a.as_str().unwrap() {
                    "*" if kind == "repository" => vec!["pull", "push", "delete"],
                    s => vec![s],
                })
                .map(String::from)
                .collect();
            actions.sort();
            (kind, e["name"].as_str().unwrap().to_string(), actions)
        })
        .collect();
    out.sort();
    out
}

fn grants(list: &[(&str, &str, &[&str])]) -> Vec<Grant> {
    let mut out: Vec<Grant> = list
        .iter()
        .map(|(k, n, a)| {
            let mut a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
            a.sort();
            (k.to_string(), n.to_string(), a)
        })
        .collect();
    out.sort();
    out
}

/// An OAuth `scope` response field as a sorted list of (type, name, sorted actions).
fn scope_field(s: &str) -> Vec<Grant> {
    let mut out: Vec<Grant> = s
        .split(' ')
        .filter(|x| !x.is_empty())
        .map(|x| {
            let (kind, rest) = x.split_once(':').unwrap();
            let (name, actions) = rest.rsplit_once(':').unwrap();
            let mut a: Vec<String> = actions.split(',').map(String::from).collect();
            a.sort();
            (kind.to_string(), name.to_string(), a)
        })
        .collect();
    out.sort();
    out
}

fn fingerprint_of_hash(bcrypt_hash: &str) -> String {
    hex::encode(&sha2::Sha256::digest(bcrypt_hash.as_bytes())[..8])
}

fn fingerprint_of_secret(secret: &str) -> String {
    secret_hash(secret)[..16].to_string()
}

/// Claims like the server's for `sub`/`bnd`, valid now, with `access`.
fn valid_claims(sub: &str, bnd: &str, access: Value) -> Value {
    let t = unix_now();
    json!({
        "iss": "berth", "sub": sub, "aud": "berth",
        "exp": t + 300, "nbf": t - 1, "iat": t,
        "jti": hex::encode(random_bytes(16)),
        "use": "access", "bnd": bnd, "access": access,
    })
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn with(mut v: Value, key: &str, val: Value) -> Value {
    v[key] = val;
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

fn manifest_path(repo: &str, reference: &str) -> String {
    format!("/v2/{repo}/manifests/{reference}")
}

async fn get_manifest(env: &Env, repo: &str, reference: &str, auth: Option<&str>) -> Response {
    send(
        env.s
            .get(&manifest_path(repo, reference))
            .header("accept", OCI_MANIFEST),
        auth,
    )
    .await
}

/// The realm's answer to `who` asking for the service and scope a challenge named, passed on
/// as they came.
async fn token_for_challenge(env: &Env, ch: &BTreeMap<String, String>, who: Creds<'_>) -> Response {
    env.s
        .client
        .get(&ch["realm"])
        .query(&[("service", &ch["service"]), ("scope", &ch["scope"])])
        .basic_auth(who.0, Some(who.1))
        .send()
        .await
        .unwrap()
}

/// `POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<from>`.
async fn mount(env: &Env, repo: &str, digest: &str, from: &str, auth: &str) -> Response {
    send(
        env.s
            .post(&format!("/v2/{repo}/blobs/uploads/"))
            .query(&[("mount", digest), ("from", from)])
            .header("content-length", "0"),
        Some(auth),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// The flow
// ---------------------------------------------------------------------------------------------

// token-auth "How to authenticate", steps 1-6: the client tries the operation, gets 401 with a
// Bearer challenge, asks the realm for a token for the challenge's service and scope with its
// Basic credentials, and retries with `Authorization: Bearer <token>`.
#[tokio::test]
async fn challenge_token_and_bearer_round_trip() {
    let mut env = fixture(AuthMode::Token).await;
    let (img, digest) = env.push_image_as(DEV, "team-a/app", "v1").await;

    // The base endpoint challenges without a scope (docker's "ping").
    let resp = env.s.get("/v2/").send().await.unwrap();
    assert_bearer_challenge(&env, resp, None, None).await;

    // A pull challenges for the pull scope of that repository.
    let resp = get_manifest(&env, "team-a/app", "v1", None).await;
    let ch = assert_bearer_challenge(&env, resp, Some("repository:team-a/app:pull"), None).await;

    // token-auth "Requesting a Token": GET <realm>?service=<service>&scope=<scope>.
    let resp = token_for_challenge(&env, &ch, DEV).await;
    assert_eq!(
        opt_header(resp.headers(), "content-type").as_deref(),
        Some("application/json")
    );
    let body = json_ok(resp).await;
    // token-auth "Token Response Fields": token, access_token (an alias), expires_in,
    // issued_at (RFC 3339); refresh_token only when offline_token=true was asked.
    let token = body["token"].as_str().unwrap().to_string();
    assert_eq!(body["access_token"], body["token"]);
    assert_eq!(body["expires_in"], 300);
    let issued = humantime::parse_rfc3339(body["issued_at"].as_str().unwrap()).unwrap();
    let issued = issued.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((issued - unix_now()).abs() <= 60, "issued_at is now");
    assert!(body.get("refresh_token").is_none(), "{body}");

    // jwt: the claims the spec lists, for this service and this subject.
    let h = jwt_part(&token, 0);
    assert_eq!(h["alg"], "ES256");
    assert!(h["kid"].as_str().is_some_and(|k| !k.is_empty()), "{h}");
    let c = claims(&token);
    assert_eq!(c["iss"], "berth");
    assert_eq!(c["aud"], "berth");
    assert_eq!(c["sub"], "dev");
    assert_eq!(c["use"], "access");
    assert_eq!(c["iat"].as_i64().unwrap(), issued);
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 300);
    assert!(c["nbf"].as_i64().unwrap() <= c["iat"].as_i64().unwrap());
    assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert_eq!(
        c["bnd"].as_str().unwrap(),
        fingerprint_of_hash(&env.password_hash("dev").await)
    );
    assert_eq!(
        access_of(&c),
        grants(&[("repository", "team-a/app", &["pull"])])
    );
    let again = env.token(Some(DEV), &["repository:team-a/app:pull"]).await;
    assert_ne!(claims(&again)["jti"], c["jti"], "jti is unique per token");

    // The retry with the bearer token succeeds.
    let bearer = format!("Bearer {token}");
    let resp = get_manifest(&env, "team-a/app", "v1", Some(&bearer)).await;
    let resp = expect_status(resp, StatusCode::OK).await;
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        img.manifest.as_slice()
    );
    let resp = send(
        env.s
            .get(&format!("/v2/team-a/app/blobs/{}", img.config.digest)),
        Some(&bearer),
    )
    .await;
    expect_status(resp, StatusCode::OK).await;
    let resp = send(env.s.get("/v2/"), Some(&bearer)).await;
    expect_status(resp, StatusCode::OK).await;

    // Pushing needs push too: the pull-only token gets a challenge for pull,push with
    // insufficient_scope (RFC 6750 §3.1), as the developer could have it.
    let resp = send(
        env.s
            .post("/v2/team-a/app/blobs/uploads/")
            .header("content-length", "0"),
        Some(&bearer),
    )
    .await;
    let ch = assert_bearer_challenge(
        &env,
        resp,
        Some("repository:team-a/app:pull,push"),
        Some("insufficient_scope"),
    )
    .await;
    let push_token = env.token(Some(DEV), &[&ch["scope"]]).await;
    assert_eq!(
        access_of(&claims(&push_token)),
        grants(&[("repository", "team-a/app", &["pull", "push"])])
    );
    env.set_auth(Some(&format!("Bearer {push_token}")));
    env.s.push_image("team-a/app", "v2", 2).await;
    env.set_auth(None);
}

// oauth "Getting a token" (password grant): POST form with grant_type=password, username,
// password, scope (space-separated) and access_type=offline for a refresh token; the answer
// has access_token, token_type, expires_in, issued_at, scope and refresh_token.
#[tokio::test]
async fn post_password_grant() {
    let mut env = fixture(AuthMode::Token).await;
    env.push_image_as(DEV, "team-a/app", "v1").await;

    let resp = env
        .token_post(&[
            ("grant_type", "password"),
            ("service", "berth"),
            ("client_id", "docker"),
            ("username", DEV.0),
            ("password", DEV.1),
            (
                "scope",
                "repository:team-a/app:pull,push repository:team-b/app:pull",
            ),
        ])
        .await;
    let body = json_ok(resp).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert!(humantime::parse_rfc3339(body["issued_at"].as_str().unwrap()).is_ok());
    assert!(
        body.get("refresh_token").is_none(),
        "no access_type=offline"
    );
    assert_eq!(
        scope_field(body["scope"].as_str().unwrap()),
        grants(&[("repository", "team-a/app", &["pull", "push"])]),
        "the granted scope: team-b dropped"
    );
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        access_of(&claims(token)),
        scope_field(body["scope"].as_str().unwrap())
    );
    let resp = get_manifest(&env, "team-a/app", "v1", Some(&format!("Bearer {token}"))).await;
    expect_status(resp, StatusCode::OK).await;

    // access_type=offline: a refresh token as well.
    let resp = env
        .token_post(&[
            ("grant_type", "password"),
            ("username", DEV.0),
            ("password", DEV.1),
            ("access_type", "offline"),
            ("scope", "repository:team-a/app:pull"),
        ])
        .await;
    let body = json_ok(resp).await;
    let refresh = body["refresh_token"].as_str().expect("refresh_token");
    assert_eq!(claims(refresh)["use"], "refresh");

    // Bad credentials: 401 UNAUTHORIZED; malformed requests: 400.
    let resp = env
        .token_post(&[
            ("grant_type", "password"),
            ("username", DEV.0),
            ("password", "wrong"),
        ])
        .await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let resp = env
        .token_post(&[
            ("grant_type", "password"),
            ("username", "nobody"),
            ("password", DEV.1),
        ])
        .await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    for form in [
        &[("username", DEV.0), ("password", DEV.1)][..],
        &[("grant_type", "client_credentials")][..],
        &[("grant_type", "password"), ("username", DEV.0)][..],
        &[("grant_type", "refresh_token")][..],
    ] {
        let resp = env.token_post(form).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{form:?}");
    }
}

// oauth "Refresh token" grant: grant_type=refresh_token exchanges a refresh token (docker's
// identity token, from offline_token=true or access_type=offline) for a new access token.
// A refresh token is not a bearer token and an access token is not a refresh token.
#[tokio::test]
async fn refresh_token_grant_and_kinds_are_not_interchangeable() {
    let mut env = fixture_with(AuthMode::Token, |c| c.auth.token.refresh_ttl_secs = 7200).await;
    env.push_image_as(DEV, "team-a/app", "v1").await;

    // token-auth: offline_token=true returns a refresh_token alongside the token.
    let resp = env
        .token_get(
            Some(DEV),
            &["repository:team-a/app:pull"],
            &[("offline_token", "true")],
        )
        .await;
    let body = json_ok(resp).await;
    let access = body["token"].as_str().unwrap().to_string();
    let refresh = body["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();
    let rc = claims(&refresh);
    assert_eq!(rc["use"], "refresh");
    assert_eq!(rc["sub"], "dev");
    assert_eq!(rc["aud"], "berth");
    assert_eq!(
        rc["exp"].as_i64().unwrap() - rc["iat"].as_i64().unwrap(),
        7200
    );
    assert!(access_of(&rc).is_empty(), "a refresh token grants nothing");

    // The refresh grant issues a new access token for the requested scope.
    let resp = env
        .token_post(&[
            ("grant_type", "refresh_token"),
            ("service", "berth"),
            ("client_id", "docker"),
            ("refresh_token", &refresh),
            ("scope", "repository:team-a/app:pull,push"),
        ])
        .await;
    let body = json_ok(resp).await;
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["refresh_token"].as_str().is_some());
    assert_eq!(
        scope_field(body["scope"].as_str().unwrap()),
        grants(&[("repository", "team-a/app", &["pull", "push"])])
    );
    let fresh = body["access_token"].as_str().unwrap();
    assert_eq!(claims(fresh)["sub"], "dev");
    assert_eq!(claims(fresh)["use"], "access");
    let resp = get_manifest(&env, "team-a/app", "v1", Some(&format!("Bearer {fresh}"))).await;
    expect_status(resp, StatusCode::OK).await;

    // A refresh token presented as a bearer token is an invalid token.
    let resp = get_manifest(&env, "team-a/app", "v1", Some(&format!("Bearer {refresh}"))).await;
    assert_bearer_challenge(
        &env,
        resp,
        Some("repository:team-a/app:pull"),
        Some("invalid_token"),
    )
    .await;

    // An access token (or garbage) presented as a refresh token is refused with 401.
    for bad in [access.as_str(), "garbage", ""] {
        let resp = env
            .token_post(&[("grant_type", "refresh_token"), ("refresh_token", bad)])
            .await;
        assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }

    // Anonymous callers never get a refresh token.
    let resp = env
        .token_get(
            None,
            &["repository:pub/app:pull"],
            &[("offline_token", "true")],
        )
        .await;
    let body = json_ok(resp).await;
    assert!(body.get("refresh_token").is_none(), "{body}");
}

// ---------------------------------------------------------------------------------------------
// Token validation
// ---------------------------------------------------------------------------------------------

/// A pushed image in team-a/app, dev's `bnd`, and a checker that a bearer token is refused on
/// a pull of it with 401 and `error="invalid_token"`.
async fn validation_env() -> (Env, String) {
    let mut env = fixture(AuthMode::Token).await;
    env.push_image_as(DEV, "team-a/app", "v1").await;
    let bnd = fingerprint_of_hash(&env.password_hash("dev").await);
    (env, bnd)
}

async fn assert_accepted(env: &Env, token: &str, what: &str) {
    let resp = get_manifest(env, "team-a/app", "v1", Some(&format!("Bearer {token}"))).await;
    assert_eq!(resp.status(), StatusCode::OK, "{what} should be accepted");
}

/// Like [`assert_invalid_token`] after a change made behind the server's back: the token
/// must be refused within one second.
async fn refused_within_a_second(env: &Env, token: &str, what: &str) {
    let auth = format!("Bearer {token}");
    within(Duration::from_secs(1), what, || async {
        get_manifest(env, "team-a/app", "v1", Some(&auth))
            .await
            .status()
            == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_invalid_token(env, token, what).await;
}

async fn assert_invalid_token(env: &Env, token: &str, what: &str) {
    let resp = get_manifest(env, "team-a/app", "v1", Some(&format!("Bearer {token}"))).await;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "{what} must be refused"
    );
    assert_bearer_challenge(
        env,
        resp,
        Some("repository:team-a/app:pull"),
        Some("invalid_token"),
    )
    .await;
}

fn pull_access() -> Value {
    json!([{ "type": "repository", "name": "team-a/app", "actions": ["pull"] }])
}

// jwt: the registry checks `exp` and `nbf` (with a small leeway for clock skew; berth: 5 s).
// Tokens signed with the server's own key but outside their lifetime are invalid tokens.
#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_rejected() {
    let (env, bnd) = validation_env().await;
    let key = env.server_key();
    let good = valid_claims("dev", &bnd, pull_access());
    // Positive control: the crafted claims are exactly what the server accepts.
    assert_accepted(
        &env,
        &sign(Algorithm::ES256, &key, &good),
        "a crafted valid token",
    )
    .await;

    let t = unix_now();
    let expired = with(
        with(good.clone(), "exp", json!(t - 60)),
        "iat",
        json!(t - 400),
    );
    let expired = with(expired, "nbf", json!(t - 400));
    assert_invalid_token(&env, &sign(Algorithm::ES256, &key, &expired), "expired").await;
    let within_leeway = with(good.clone(), "exp", json!(t - 1));
    assert_accepted(
        &env,
        &sign(Algorithm::ES256, &key, &within_leeway),
        "a token expired 1 s ago (within the leeway)",
    )
    .await;
    let future = with(good.clone(), "nbf", json!(t + 120));
    assert_invalid_token(
        &env,
        &sign(Algorithm::ES256, &key, &future),
        "not yet valid",
    )
    .await;
    let no_exp = without(good.clone(), "exp");
    assert_invalid_token(&env, &sign(Algorithm::ES256, &key, &no_exp), "without exp").await;
}

// jwt: "the audience ... must be the service name of the registry" and the issuer must be the
// configured issuer. A correctly signed token for another service or from another issuer is
// invalid here; so is one whose subject does not exist or whose credential binding differs.
#[tokio::test]
async fn tokens_for_another_service_issuer_subject_or_use_are_rejected() {
    let (env, bnd) = validation_env().await;
    let key = env.server_key();
    let good = valid_claims("dev", &bnd, pull_access());
    for (what, claims) in [
        ("aud=other", with(good.clone(), "aud", json!("other"))),
        ("aud missing", without(good.clone(), "aud")),
        ("iss=other", with(good.clone(), "iss", json!("other"))),
        ("iss missing", without(good.clone(), "iss")),
        ("use=refresh", with(good.clone(), "use", json!("refresh"))),
        (
            "unknown subject",
            with(good.clone(), "sub", json!("nobody")),
        ),
        (
            "another credential binding",
            with(good.clone(), "bnd", json!("0000000000000000")),
        ),
    ] {
        assert_invalid_token(&env, &sign(Algorithm::ES256, &key, &claims), what).await;
    }
}

// jwt: the signature must verify with the registry's trusted key. A token signed by another
// key, an HMAC token keyed with the public key (the classic algorithm-confusion attack) and
// a token whose payload was changed after signing are all invalid.
#[tokio::test]
async fn wrongly_signed_tokens_are_rejected() {
    let (env, bnd) = validation_env().await;
    let good = valid_claims("dev", &bnd, pull_access());

    let other_pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let other = EncodingKey::from_ec_pem(other_pem.as_bytes()).unwrap();
    assert_invalid_token(
        &env,
        &sign(Algorithm::ES256, &other, &good),
        "another P-256 key",
    )
    .await;

    use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let server_pem = std::fs::read_to_string(env.s.config.data_dir.join("token.key")).unwrap();
    let public = p256::SecretKey::from_pkcs8_pem(&server_pem)
        .unwrap()
        .public_key();
    let public_pem = public.to_public_key_pem(Default::default()).unwrap();
    let public_der = public.to_public_key_der().unwrap();
    for (what, secret) in [
        ("HS256 keyed with the public key PEM", public_pem.as_bytes()),
        ("HS256 keyed with the public key DER", public_der.as_bytes()),
    ] {
        let t = sign(Algorithm::HS256, &EncodingKey::from_secret(secret), &good);
        assert_invalid_token(&env, &t, what).await;
    }

    // Change the payload of a genuine token, keeping its signature.
    let genuine = env.token(Some(DEV), &["repository:team-a/app:pull"]).await;
    let parts: Vec<&str> = genuine.split('.').collect();
    let mut c = claims(&genuine);
    c["access"] = json!([{ "type": "repository", "name": "team-b/app", "actions": ["*"] }]);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(c.to_string()),
        parts[2]
    );
    assert_invalid_token(&env, &forged, "a tampered payload").await;
}

// jwt / RFC 6750 §3.1: anything that is not a well-formed, signed JWT is an invalid token.
#[tokio::test]
async fn malformed_bearer_tokens_are_rejected() {
    let (env, bnd) = validation_env().await;
    let genuine = env.token(Some(DEV), &["repository:team-a/app:pull"]).await;
    assert_accepted(&env, &genuine, "the genuine token").await;
    let parts: Vec<&str> = genuine.split('.').collect();
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let payload = b64(&valid_claims("dev", &bnd, pull_access()));
    let alg_none = format!(
        "{}.{payload}.",
        b64(&json!({ "alg": "none", "typ": "JWT" }))
    );
    let alg_none_sig = format!("{alg_none}{}", parts[2]);
    let truncated = genuine[..genuine.len() - 10].to_string();
    let unsigned = format!("{}.{}.", parts[0], parts[1]);
    let two_parts = format!("{}.{}", parts[0], parts[1]);
    let bad_b64 = format!("{}.{}!!.{}", parts[0], &parts[1][2..], parts[2]);
    let bad_json = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode("{not json"),
        parts[2]
    );
    let four_parts = format!("{genuine}.{}", parts[2]);
    for (what, token) in [
        ("garbage", "garbage"),
        ("dots only", ".."),
        ("truncated", truncated.as_str()),
        ("no signature", unsigned.as_str()),
        ("two segments", two_parts.as_str()),
        ("four segments", four_parts.as_str()),
        ("bad base64", bad_b64.as_str()),
        ("payload not JSON", bad_json.as_str()),
        ("alg none", alg_none.as_str()),
        ("alg none with a signature", alg_none_sig.as_str()),
    ] {
        assert_invalid_token(&env, token, what).await;
    }

    // Not a bearer token at all: the plain challenge (no token to call invalid).
    let basic_creds = basic_auth(DEV.0, DEV.1);
    for auth in ["Bearer", "Bearer ", basic_creds.as_str(), "Digest abc"] {
        let resp = get_manifest(&env, "team-a/app", "v1", Some(auth)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let www = header(&resp, "www-authenticate");
        let (scheme, p) = parse_challenge(&www);
        assert_eq!(scheme, "Bearer", "{auth:?}: {www}");
        assert_eq!(p.get("realm"), Some(&env.realm()));
        assert_eq!(p["scope"], "repository:team-a/app:pull");
        assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
}

// A role taken away, or a namespace made private, applies to JWTs already issued within one
// second, across processes: the change here is written to the database behind the server's
// back (as the CLI does), and a token's grants only ever count within what its subject may
// do now. A developer who lost the membership gets 403 DENIED; an anonymous token for a
// namespace made private gets a 401 challenge.
#[tokio::test]
async fn role_and_visibility_changes_apply_to_issued_tokens_within_a_second() {
    let mut env = fixture(AuthMode::Token).await;
    env.push_image_as(DEV, "team-a/app", "v1").await;
    env.push_image_as(ROOT, "pub/app", "v1").await;
    let dev = format!(
        "Bearer {}",
        env.token(Some(DEV), &["repository:team-a/app:pull"]).await
    );
    let anon = format!(
        "Bearer {}",
        env.token(None, &["repository:pub/app:pull"]).await
    );
    let status = |repo: &'static str, auth: String| {
        let env = &env;
        async move { get_manifest(env, repo, "v1", Some(&auth)).await.status() }
    };
    assert_eq!(status("team-a/app", dev.clone()).await, StatusCode::OK);
    assert_eq!(status("pub/app", anon.clone()).await, StatusCode::OK);

    env.namespaces()
        .remove_member("team-a", "dev")
        .await
        .unwrap();
    let took = within(Duration::from_secs(1), "a removed membership", || async {
        status("team-a/app", dev.clone()).await != StatusCode::OK
    })
    .await;
    let resp = get_manifest(&env, "team-a/app", "v1", Some(&dev)).await;
    let e = assert_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
    assert_eq!(e["detail"]["missing"], json!(["pull"]), "{e}");

    env.namespaces().set_public("pub", false).await.unwrap();
    within(
        Duration::from_secs(1),
        "a namespace made private",
        || async { status("pub/app", anon.clone()).await != StatusCode::OK },
    )
    .await;
    let resp = get_manifest(&env, "pub/app", "v1", Some(&anon)).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&resp, "www-authenticate").starts_with("Bearer "));
    assert!(took < Duration::from_secs(1));
}

// Revocation: a CI token revoked after a JWT was issued for it makes that JWT invalid at once
// (the JWT names the token as subject and is bound to its secret).
#[tokio::test]
async fn revoked_ci_token_invalidates_outstanding_jwts() {
    let (env, _) = validation_env().await;
    let secret = env.ci_token("team-a", "ci", "read", None).await;
    let body = json_ok(
        env.token_get(
            Some(("ci", &secret)),
            &["repository:team-a/app:pull"],
            &[("offline_token", "true")],
        )
        .await,
    )
    .await;
    let jwt = body["token"].as_str().unwrap().to_string();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    let c = claims(&jwt);
    assert_eq!(c["sub"], "team-a/ci");
    assert_eq!(c["bnd"].as_str().unwrap(), fingerprint_of_secret(&secret));
    assert_accepted(&env, &jwt, "the CI token's JWT").await;

    env.tokens().revoke("team-a", "ci").await.unwrap();
    refused_within_a_second(&env, &jwt, "a JWT of a revoked CI token").await;
    let resp = env
        .token_post(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
        .await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let resp = env
        .token_get(Some(("ci", &secret)), &["repository:team-a/app:pull"], &[])
        .await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    // A new token of the same name does not revive the old JWTs.
    let secret2 = env.ci_token("team-a", "ci", "read", None).await;
    assert_invalid_token(&env, &jwt, "a JWT of the revoked predecessor").await;
    let jwt2 = env
        .token(Some(("ci", &secret2)), &["repository:team-a/app:pull"])
        .await;
    assert_accepted(&env, &jwt2, "the new token's JWT").await;
}

// Revocation: deleting a user ends their access and refresh tokens at once, and re-creating
// a user of the same name (with the same password) does not revive them.
#[tokio::test]
async fn deleted_user_invalidates_outstanding_jwts() {
    let (env, _) = validation_env().await;
    let body = json_ok(
        env.token_get(
            Some(DEV),
            &["repository:team-a/app:pull"],
            &[("offline_token", "true")],
        )
        .await,
    )
    .await;
    let jwt = body["token"].as_str().unwrap();
    let refresh = body["refresh_token"].as_str().unwrap();
    assert_accepted(&env, jwt, "dev's token").await;

    env.users().delete(&"dev".parse().unwrap()).await.unwrap();
    refused_within_a_second(&env, jwt, "a deleted user's token").await;
    let resp = env
        .token_post(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    env.add_user(DEV, false).await;
    env.namespaces()
        .set_member("team-a", "dev", "developer")
        .await
        .unwrap();
    assert_invalid_token(&env, jwt, "a token of a previous user of that name").await;
    let resp = env
        .token_post(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let fresh = env.token(Some(DEV), &["repository:team-a/app:pull"]).await;
    assert_accepted(&env, &fresh, "the new user's token").await;
}

// Revocation: changing a password ends the tokens issued against the old one.
#[tokio::test]
async fn password_change_invalidates_outstanding_jwts() {
    let (env, _) = validation_env().await;
    let body = json_ok(
        env.token_get(
            Some(DEV),
            &["repository:team-a/app:pull"],
            &[("offline_token", "true")],
        )
        .await,
    )
    .await;
    let jwt = body["token"].as_str().unwrap();
    let refresh = body["refresh_token"].as_str().unwrap();
    assert_accepted(&env, jwt, "dev's token").await;

    env.users()
        .set_password(&"dev".parse().unwrap(), "new-password")
        .await
        .unwrap();
    refused_within_a_second(&env, jwt, "a token issued before the password change").await;
    let resp = env
        .token_post(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let resp = env
        .token_get(Some(DEV), &["repository:team-a/app:pull"], &[])
        .await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let fresh = env
        .token(
            Some(("dev", "new-password")),
            &["repository:team-a/app:pull"],
        )
        .await;
    assert_eq!(
        claims(&fresh)["bnd"].as_str().unwrap(),
        fingerprint_of_hash(&env.password_hash("dev").await)
    );
    assert_accepted(&env, &fresh, "a token for the new password").await;
}

// ---------------------------------------------------------------------------------------------
// Scopes
// ---------------------------------------------------------------------------------------------

// scope: a client may ask several scopes (repeated parameters); token-auth: the token service
// grants "the intersection of the requested and the allowed" and may grant less than asked
// without failing. Malformed scopes are ignored; the same repository asked twice is one entry.
#[tokio::test]
async fn scopes_are_reduced_merged_and_malformed_dropped() {
    let env = fixture(AuthMode::Token).await;
    let requested = [
        "repository:team-a/app:pull,push,delete", // delete as developer: reduced
        "repository:team-a/app:pull",             // same repository again: merged
        "repository:team-a/lib:*",                // wildcard: reduced to pull,push
        "repository:team-a/other:pull",
        "repository:team-a/other:push", // merged with the previous one
        "repository:team-b/app:pull",   // another namespace: dropped
        "repository:pub/app:pull,push", // public namespace: pull only
        "repository:team-a/app:fly",    // unknown action: grants nothing
        "registry:catalog:*",
        // Malformed: dropped without failing the request.
        "repository:Team-A/app:pull",
        "repository:team-a/app",
        "repository::pull",
        "repository",
        "garbage",
        "",
        "registry:other:*",
        "volume:team-a/app:pull",
        "repository(plugin):team-a/app:pull",
    ];
    let body = env.token_json(Some(DEV), &requested).await;
    let expected = grants(&[
        ("repository", "team-a/app", &["pull", "push"]),
        ("repository", "team-a/lib", &["pull", "push"]),
        ("repository", "team-a/other", &["pull", "push"]),
        ("repository", "pub/app", &["pull"]),
        ("registry", "catalog", &["*"]),
    ]);
    assert_eq!(
        access_of(&claims(body["token"].as_str().unwrap())),
        expected
    );

    // The same request through the OAuth form, scopes space-separated: same grant, and the
    // response's `scope` names it.
    let resp = env
        .token_post(&[
            ("grant_type", "password"),
            ("username", DEV.0),
            ("password", DEV.1),
            ("scope", &requested.join(" ")),
        ])
        .await;
    let body = json_ok(resp).await;
    assert_eq!(scope_field(body["scope"].as_str().unwrap()), expected);
    assert_eq!(
        access_of(&claims(body["access_token"].as_str().unwrap())),
        expected
    );

    // Per role: guest pull only; maintainer everything in team-a; the server admin anything.
    for (who, scope, want) in [
        (GUEST, "repository:team-a/app:*", &["pull"][..]),
        (
            MAINT,
            "repository:team-a/app:*",
            &["pull", "push", "delete"][..],
        ),
        (
            MAINT,
            "repository:team-a/app:pull,push,delete",
            &["pull", "push", "delete"][..],
        ),
        (
            ROOT,
            "repository:team-b/app:*",
            &["pull", "push", "delete"][..],
        ),
        (BOTH, "repository:team-b/app:pull,push", &["pull"][..]),
    ] {
        let name = scope.split(':').nth(1).unwrap();
        let t = env.token(Some(who), &[scope]).await;
        assert_eq!(
            access_of(&claims(&t)),
            grants(&[("repository", name, want)]),
            "{} asking {scope}",
            who.0
        );
    }
    // Nothing allowed: an empty grant, still a 200.
    let t = env
        .token(Some(OUTSIDER), &["repository:team-a/app:pull"])
        .await;
    assert!(access_of(&claims(&t)).is_empty());
    // No scope at all: a token good for the base endpoint only.
    let t = env.token(Some(DEV), &[]).await;
    assert!(access_of(&claims(&t)).is_empty());
    let resp = send(env.s.get("/v2/"), Some(&format!("Bearer {t}"))).await;
    expect_status(resp, StatusCode::OK).await;
}

// scope: `registry:catalog:*` grants the catalog, which lists only what the subject may pull;
// without it the catalog answers 401 asking for that scope.
#[tokio::test]
async fn catalog_scope() {
    let mut env = fixture(AuthMode::Token).await;
    for repo in ["team-a/app", "team-b/app", "pub/app"] {
        env.push_image_as(ROOT, repo, "v1").await;
    }
    let t = env.token(Some(DEV), &["repository:team-a/app:pull"]).await;
    let resp = send(env.s.get("/v2/_catalog"), Some(&format!("Bearer {t}"))).await;
    assert_bearer_challenge(
        &env,
        resp,
        Some("registry:catalog:*"),
        Some("insufficient_scope"),
    )
    .await;
    let resp = env.s.get("/v2/_catalog").send().await.unwrap();
    assert_bearer_challenge(&env, resp, Some("registry:catalog:*"), None).await;

    for (who, want) in [
        (Some(DEV), &["pub/app", "team-a/app"][..]),
        (Some(ROOT), &["pub/app", "team-a/app", "team-b/app"][..]),
        (Some(OUTSIDER), &["pub/app"][..]),
        (None, &["pub/app"][..]),
    ] {
        let body = env.token_json(who, &["registry:catalog:*"]).await;
        let t = body["token"].as_str().unwrap();
        assert_eq!(
            access_of(&claims(t)),
            grants(&[("registry", "catalog", &["*"])])
        );
        let resp = send(env.s.get("/v2/_catalog"), Some(&format!("Bearer {t}"))).await;
        let v = json_ok(resp).await;
        assert_eq!(v["repositories"], json!(want), "{who:?}");
    }
}

// token-auth: the token service serves the services it knows; berth answers 400 for another.
// Outside token mode there is no token service at all.
#[tokio::test]
async fn unknown_service_is_400_and_no_token_service_outside_token_mode() {
    let env = fixture(AuthMode::Token).await;
    let resp = env
        .s
        .get("/token")
        .query(&[
            ("service", "other"),
            ("scope", "repository:team-a/app:pull"),
        ])
        .basic_auth(DEV.0, Some(DEV.1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = env
        .token_post(&[
            ("grant_type", "password"),
            ("service", "other"),
            ("username", DEV.0),
            ("password", DEV.1),
        ])
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Bad credentials on GET: 401 UNAUTHORIZED.
    let resp = env
        .token_get(Some((DEV.0, "wrong")), &["repository:team-a/app:pull"], &[])
        .await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    for mode in [AuthMode::None, AuthMode::Basic] {
        let env = fixture(mode).await;
        let resp = env.token_get(Some(DEV), &[], &[]).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{mode:?}");
        let resp = env
            .token_post(&[
                ("grant_type", "password"),
                ("username", DEV.0),
                ("password", DEV.1),
            ])
            .await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{mode:?}");
    }
}

// token-auth: a client without credentials may still ask for a token; it gets what anonymous
// users may do, which is pulling from public namespaces.
#[tokio::test]
async fn anonymous_tokens_only_pull_public_namespaces() {
    let mut env = fixture(AuthMode::Token).await;
    let (img, _) = env.push_image_as(ROOT, "pub/app", "v1").await;
    env.push_image_as(ROOT, "team-a/app", "v1").await;
    let body = env
        .token_json(
            None,
            &[
                "repository:pub/app:pull,push,delete",
                "repository:team-a/app:pull",
                "repository:team-b/app:*",
            ],
        )
        .await;
    let t = body["token"].as_str().unwrap();
    let c = claims(t);
    assert_eq!(c["sub"], "");
    assert_eq!(
        access_of(&c),
        grants(&[("repository", "pub/app", &["pull"])])
    );
    let bearer = format!("Bearer {t}");

    let resp = get_manifest(&env, "pub/app", "v1", Some(&bearer)).await;
    let resp = expect_status(resp, StatusCode::OK).await;
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        img.manifest.as_slice()
    );
    // Anything more: 401, as credentials might help (RFC 6750 insufficient_scope).
    let resp = get_manifest(&env, "team-a/app", "v1", Some(&bearer)).await;
    assert_bearer_challenge(
        &env,
        resp,
        Some("repository:team-a/app:pull"),
        Some("insufficient_scope"),
    )
    .await;
    let resp = send(
        env.s
            .post("/v2/pub/app/blobs/uploads/")
            .header("content-length", "0"),
        Some(&bearer),
    )
    .await;
    assert_bearer_challenge(
        &env,
        resp,
        Some("repository:pub/app:pull,push"),
        Some("insufficient_scope"),
    )
    .await;
    // Without any token, even public content asks for one.
    let resp = get_manifest(&env, "pub/app", "v1", None).await;
    assert_bearer_challenge(&env, resp, Some("repository:pub/app:pull"), None).await;
}

// RFC 6750 §3.1 / token-auth: a token lacking an action the subject could have gets 401
// `insufficient_scope` (fetch a better token); when no token could help the subject, 403 DENIED.
#[tokio::test]
async fn insufficient_scope_versus_denied() {
    let mut env = fixture(AuthMode::Token).await;
    let (_, digest) = env.push_image_as(ROOT, "team-a/app", "v1").await;
    let read_ci = env.ci_token("team-a", "reader", "read", None).await;
    let put = |env: &Env, auth: String| {
        let rb = env
            .s
            .post("/v2/team-a/app/blobs/uploads/")
            .header("content-length", "0")
            .header("authorization", auth);
        async move { rb.send().await.unwrap() }
    };

    // Developer with a pull-only token pushing: could push, so 401 insufficient_scope.
    let t = env.token(Some(DEV), &["repository:team-a/app:pull"]).await;
    let resp = put(&env, format!("Bearer {t}")).await;
    assert_bearer_challenge(
        &env,
        resp,
        Some("repository:team-a/app:pull,push"),
        Some("insufficient_scope"),
    )
    .await;
    // Developer deleting: never allowed, 403 DENIED.
    let t = env
        .token(Some(DEV), &["repository:team-a/app:pull,push,delete"])
        .await;
    let resp = send(
        env.s.delete(&manifest_path("team-a/app", &digest)),
        Some(&format!("Bearer {t}")),
    )
    .await;
    assert_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
    // Maintainer with the delete scope: 202.
    let t = env
        .token(Some(MAINT), &["repository:team-a/app:pull,push,delete"])
        .await;
    let (_, d2) = env.push_image_as(MAINT, "team-a/app", "v2").await;
    let resp = send(
        env.s.delete(&manifest_path("team-a/app", &d2)),
        Some(&format!("Bearer {t}")),
    )
    .await;
    expect_status(resp, StatusCode::ACCEPTED).await;

    // Guest and read-only CI token pushing: no token could help, 403 DENIED naming what is
    // missing.
    let guest = env.auth(GUEST, &["repository:team-a/app:pull,push"]).await;
    let reader = env
        .auth(("reader", &read_ci), &["repository:team-a/app:pull,push"])
        .await;
    for (who, auth) in [("guest", guest), ("read CI token", reader)] {
        let resp = put(&env, auth).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{who}");
        let e = assert_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
        assert_eq!(e["detail"]["repository"], "team-a/app", "{who}: {e}");
        assert_eq!(e["detail"]["missing"], json!(["push"]), "{who}: {e}");
    }
    let t = env
        .token(Some(OUTSIDER), &["repository:team-a/app:pull"])
        .await;
    let resp = get_manifest(&env, "team-a/app", "v1", Some(&format!("Bearer {t}"))).await;
    assert_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
}

// ---------------------------------------------------------------------------------------------
// Blob isolation
// ---------------------------------------------------------------------------------------------

/// A blob is served by digest only through repositories it is linked to; mounting it from a
/// repository the caller may not pull from answers 202 with an ordinary upload session, as
/// if it did not exist (OCI distribution spec "Mounting a blob from another repository": "If
/// a registry does not support cross-repository mounting or is unable to mount the requested
/// blob, it SHOULD return a 202"), and must not link it.
async fn blob_isolation(mode: AuthMode) {
    let mut env = fixture(mode).await;
    let ci = env.ci_token("team-a", "ci", "read-write", None).await;
    let data = random_bytes(777);
    let secret_blob = env.push_blob_as(ROOT, "team-b/src", &data).await;
    env.push_blob_as(ROOT, "team-a/app", &random_bytes(10))
        .await;
    let never = sha256(b"never pushed anywhere");
    let scopes = [
        "repository:team-a/app:pull,push",
        "repository:team-b/src:pull",
    ];
    let through_a = format!("/v2/team-a/app/blobs/{secret_blob}");

    for who in [("ci", ci.as_str()), DEV] {
        let auth = env.auth(who, &scopes).await;
        if mode == AuthMode::Token {
            let t = auth.strip_prefix("Bearer ").unwrap();
            assert_eq!(
                access_of(&claims(t)),
                grants(&[("repository", "team-a/app", &["pull", "push"])]),
                "{}: no pull on team-b",
                who.0
            );
        }
        // Not through A by digest.
        let resp = send(env.s.get(&through_a), Some(&auth)).await;
        assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
        let resp = send(env.s.head(&through_a), Some(&auth)).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{}: HEAD", who.0);
        // Not directly from B either.
        let resp = send(
            env.s.get(&format!("/v2/team-b/src/blobs/{secret_blob}")),
            Some(&auth),
        )
        .await;
        assert_error(resp, StatusCode::FORBIDDEN, "DENIED").await;

        // The mount is an ordinary session, indistinguishable from mounting a missing blob.
        for digest in [&secret_blob, &never] {
            let resp = mount(&env, "team-a/app", digest, "team-b/src", &auth).await;
            assert_eq!(
                resp.status(),
                StatusCode::ACCEPTED,
                "{}: mount {digest}",
                who.0
            );
            let loc = header(&resp, "location");
            assert!(loc.contains("/v2/team-a/app/blobs/uploads/"), "{loc}");
            assert!(opt_header(resp.headers(), "docker-upload-uuid").is_some());
            assert_eq!(header(&resp, "range"), "0-0");
            assert!(opt_header(resp.headers(), "docker-content-digest").is_none());
        }
        let resp = send(env.s.get(&through_a), Some(&auth)).await;
        assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
        let resp = send(env.s.head(&through_a), Some(&auth)).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }

    if mode == AuthMode::Token {
        // token-auth "How to authenticate" and Distribution's answer to a mount: the challenge
        // asks for pull on the source too, in one space-separated scope parameter.
        let both_scopes = "repository:team-a/app:pull,push repository:team-b/src:pull";
        let resp = send(
            env.s
                .post("/v2/team-a/app/blobs/uploads/")
                .query(&[("mount", secret_blob.as_str()), ("from", "team-b/src")])
                .header("content-length", "0"),
            None,
        )
        .await;
        let ch = assert_bearer_challenge(&env, resp, Some(both_scopes), None).await;
        // A subject who could pull from B but whose token lacks that scope is challenged for
        // a token that has it, and nothing is linked meanwhile.
        let auth = env.auth(BOTH, &["repository:team-a/app:pull,push"]).await;
        let resp = mount(&env, "team-a/app", &secret_blob, "team-b/src", &auth).await;
        assert_bearer_challenge(&env, resp, Some(both_scopes), Some("insufficient_scope")).await;
        let resp = send(env.s.get(&through_a), Some(&auth)).await;
        assert_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
        // The token the challenge's scope parameter asks for, passed as it came, grants both.
        let resp = token_for_challenge(&env, &ch, BOTH).await;
        let token = json_ok(resp).await["token"].as_str().unwrap().to_string();
        assert_eq!(
            access_of(&claims(&token)),
            grants(&[
                ("repository", "team-a/app", &["pull", "push"]),
                ("repository", "team-b/src", &["pull"]),
            ])
        );
    }

    // With pull on B the mount links the blob: 201, then readable through A.
    let auth = env.auth(BOTH, &scopes).await;
    let resp = mount(&env, "team-a/app", &secret_blob, "team-b/src", &auth).await;
    let resp = expect_status(resp, StatusCode::CREATED).await;
    assert_eq!(header(&resp, "docker-content-digest"), secret_blob);
    assert!(header(&resp, "location").ends_with(&through_a));
    let resp = send(env.s.get(&through_a), Some(&auth)).await;
    let resp = expect_status(resp, StatusCode::OK).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());
    // Now that A holds it, A's other users read it too.
    let auth = env.auth(DEV, &scopes).await;
    let resp = send(env.s.head(&through_a), Some(&auth)).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn blob_isolation_token_mode() {
    blob_isolation(AuthMode::Token).await;
}

#[tokio::test]
async fn blob_isolation_basic_mode() {
    blob_isolation(AuthMode::Basic).await;
}

// ---------------------------------------------------------------------------------------------
// Throttling
// ---------------------------------------------------------------------------------------------

fn retry_after(resp: &Response) -> u64 {
    header(resp, "retry-after")
        .parse()
        .expect("Retry-After in seconds")
}

async fn assert_throttled(resp: Response, max: u64) -> u64 {
    let secs = retry_after(&resp);
    assert!((1..=max).contains(&secs), "Retry-After {secs}");
    assert_error(resp, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    secs
}

async fn token_from(env: &Env, client: &Client, (user, password): Creds<'_>) -> Response {
    client
        .get(env.s.url("/token"))
        .query(&[
            ("service", "berth"),
            ("scope", "repository:team-a/app:pull"),
        ])
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap()
}

async fn basic_v2(client: &Client, env: &Env, (user, password): Creds<'_>) -> Response {
    client
        .get(env.s.url("/v2/"))
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap()
}

// With the default limits: failed passwords are counted per (user, address) pair. Twenty
// wrong passwords for dev from one address: the first ten are 401 UNAUTHORIZED, the 11th and
// after 429 TOOMANYREQUESTS (OCI distribution spec code-14, RFC 6585) with Retry-After. At
// once, from that same address, another user and an access token log in, and dev logs in
// from a second address; dev's right password from the first address is still refused.
#[tokio::test]
async fn a_blocked_pair_locks_out_no_one_else() {
    let env = fixture(AuthMode::Basic).await;
    let secret = env.ci_token("team-a", "ci", "read", None).await;
    let (a, b) = (client_from("127.0.0.2"), client_from("127.0.0.3"));
    for attempt in 1..=20 {
        let resp = basic_v2(&a, &env, (DEV.0, &format!("wrong-{attempt}"))).await;
        if attempt <= 10 {
            assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
        } else {
            let secs = assert_throttled(resp, 30).await;
            assert!(secs >= 29, "the first block is 30 s by default, got {secs}");
        }
    }
    expect_status(basic_v2(&a, &env, GUEST).await, StatusCode::OK).await;
    expect_status(basic_v2(&a, &env, ("ci", &secret)).await, StatusCode::OK).await;
    expect_status(basic_v2(&b, &env, DEV).await, StatusCode::OK).await;
    assert_throttled(basic_v2(&a, &env, DEV).await, 30).await;
    // The block is logged with user and address, never with a password.
    let log = env.s.log();
    assert!(
        log.contains("login blocked for user from address") && log.contains("127.0.0.2"),
        "{log}"
    );
    assert!(!log.contains("wrong-1"), "no password in the log");
}

// With the default limits, password spraying from one address (one wrong password for each of
// 100 user names in 15 minutes) blocks password logins from that address for every user, with
// Retry-After up to the 15 minute window; other addresses are unaffected, and a valid access
// token still logs in from the blocked address (a wrong one is refused).
#[tokio::test]
async fn spraying_user_names_blocks_the_address() {
    let env = fixture(AuthMode::Basic).await;
    let secret = env.ci_token("team-a", "ci", "read", None).await;
    let (a, b) = (client_from("127.0.0.2"), client_from("127.0.0.3"));
    let names: Vec<String> = (0..100).map(|i| format!("sprayed{i}")).collect();
    let answers = futures::future::join_all(
        names
            .iter()
            .map(|n| basic_v2(&a, &env, (n.as_str(), "Winter2026!"))),
    )
    .await;
    for resp in answers {
        assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
    let secs = assert_throttled(basic_v2(&a, &env, DEV).await, 900).await;
    assert!(
        secs > 800,
        "blocked until the failures leave the window: {secs} s"
    );
    assert_throttled(basic_v2(&a, &env, ("fresh-name", "x")).await, 900).await;
    expect_status(basic_v2(&b, &env, DEV).await, StatusCode::OK).await;
    expect_status(basic_v2(&a, &env, ("ci", &secret)).await, StatusCode::OK).await;
    assert_throttled(basic_v2(&a, &env, ("ci", &new_secret())).await, 900).await;
    assert!(env.s.log().contains("logins blocked for address"));
}

// Wrong access-token secrets count toward the address, never toward a user: they do not
// block the user whose name they were sent with, and enough of them block the address.
#[tokio::test]
async fn wrong_token_secrets_count_toward_the_address_only() {
    let env = fixture_with(AuthMode::Basic, |c| {
        c.auth.throttle.max_failures = 2;
        c.auth.throttle.address_max_failures = 5;
    })
    .await;
    let a = client_from("127.0.0.2");
    for _ in 0..4 {
        let resp = basic_v2(&a, &env, (DEV.0, &new_secret())).await;
        assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
    expect_status(basic_v2(&a, &env, DEV).await, StatusCode::OK).await;
    let resp = basic_v2(&a, &env, (GUEST.0, &new_secret())).await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    assert_throttled(basic_v2(&a, &env, DEV).await, 900).await;
}

// A pair's block ends: after max_failures failures the pair waits block_secs (1 s here), and a
// success clears its count, so one new failure does not block again.
#[tokio::test]
async fn a_pair_block_ends_and_a_success_clears_the_count() {
    let env = fixture_with(AuthMode::Token, |c| {
        c.auth.throttle.max_failures = 3;
        c.auth.throttle.block_secs = 1;
        c.auth.throttle.max_block_secs = 2;
    })
    .await;
    let a = client_from("127.0.0.2");
    for _ in 0..3 {
        let resp = token_from(&env, &a, (DEV.0, "wrong")).await;
        assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
    let resp = token_from(&env, &a, DEV).await;
    assert_eq!(assert_throttled(resp, 2).await, 1, "the first block is 1 s");
    let resp = a
        .post(env.s.url("/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", DEV.0),
            ("password", DEV.1),
        ])
        .send()
        .await
        .unwrap();
    assert_throttled(resp, 2).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    expect_status(token_from(&env, &a, DEV).await, StatusCode::OK).await;
    let resp = token_from(&env, &a, (DEV.0, "wrong")).await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    expect_status(token_from(&env, &a, DEV).await, StatusCode::OK).await;
    assert!(env
        .s
        .log()
        .contains("login block for user from address ended"));
}

// The block doubles with each further failure up to max_block_secs; Retry-After must say how
// long to wait (RFC 9110 §10.2.3: the minimum time the client is asked to wait), so a client
// honouring it is not refused again.
#[tokio::test]
async fn throttle_block_doubles_and_retry_after_covers_it() {
    let env = fixture_with(AuthMode::Token, |c| {
        c.auth.throttle.max_failures = 3;
        c.auth.throttle.block_secs = 1;
        c.auth.throttle.max_block_secs = 2;
    })
    .await;
    let scope = ["repository:team-a/app:pull"];
    for _ in 0..3 {
        let resp = env.token_get(Some((DEV.0, "wrong")), &scope, &[]).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = env.token_get(Some(DEV), &scope, &[]).await;
    assert_throttled(resp, 2).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // A fourth failure after the first block: blocked for 2 s now.
    let resp = env.token_get(Some((DEV.0, "wrong")), &scope, &[]).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = env.token_get(Some(DEV), &scope, &[]).await;
    let advertised = assert_throttled(resp, 2).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let resp = env.token_get(Some(DEV), &scope, &[]).await;
    assert_throttled(resp, 2).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // A fifth failure after the second block: 4 s, capped at max_block_secs (2 s).
    let resp = env.token_get(Some((DEV.0, "wrong")), &scope, &[]).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = env.token_get(Some(DEV), &scope, &[]).await;
    assert_eq!(
        assert_throttled(resp, 2).await,
        2,
        "capped at max_block_secs"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    env.token(Some(DEV), &scope).await;
    assert_eq!(
        advertised, 2,
        "Retry-After must cover the 2 s block (a client waiting {advertised} s is refused again)"
    );
}

// An address block ends when its failures leave the window (1 s here), and is logged.
#[tokio::test]
async fn an_address_block_ends_with_its_window() {
    let env = fixture_with(AuthMode::Basic, |c| {
        c.auth.throttle.address_max_failures = 3;
        c.auth.throttle.address_window_secs = 1;
    })
    .await;
    let (a, b) = (client_from("127.0.0.2"), client_from("127.0.0.3"));
    for name in ["nobody1", "nobody2", "nobody3"] {
        let resp = basic_v2(&a, &env, (name, "guess")).await;
        let www = header(&resp, "www-authenticate");
        assert!(www.starts_with("Basic "), "{www}");
        assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
    assert_throttled(basic_v2(&a, &env, DEV).await, 1).await;
    expect_status(basic_v2(&b, &env, DEV).await, StatusCode::OK).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    expect_status(basic_v2(&a, &env, DEV).await, StatusCode::OK).await;
    assert!(env.s.log().contains("login block for address ended"));
}

// ---------------------------------------------------------------------------------------------
// CI access tokens
// ---------------------------------------------------------------------------------------------

// A CI token logs in with its name as user name and its secret as password, to the token
// service (GET and POST) and, in basic mode, to the registry. It is confined to its namespace
// and access level (plus public pulls), and its use is recorded.
#[tokio::test]
async fn ci_token_login_scopes_and_last_used() {
    let mut env = fixture(AuthMode::Token).await;
    env.push_image_as(ROOT, "team-a/app", "v1").await;
    let secret = env.ci_token("team-a", "ci", "read-write", None).await;
    assert!(env
        .token_record("team-a", "ci")
        .await
        .last_used_at
        .is_none());
    let before = unix_now();

    let body = env
        .token_json(
            Some(("ci", &secret)),
            &[
                "repository:team-a/app:pull,push,delete",
                "repository:team-b/app:pull",
                "repository:pub/app:pull,push",
            ],
        )
        .await;
    let c = claims(body["token"].as_str().unwrap());
    assert_eq!(c["sub"], "team-a/ci");
    assert_eq!(c["bnd"].as_str().unwrap(), fingerprint_of_secret(&secret));
    assert_eq!(
        access_of(&c),
        grants(&[
            ("repository", "team-a/app", &["pull", "push"]),
            ("repository", "pub/app", &["pull"]),
        ])
    );
    let used = env
        .token_record("team-a", "ci")
        .await
        .last_used_at
        .expect("last_used_at recorded");
    assert!(used >= before - 1 && used <= unix_now() + 1, "{used}");

    // The token pushes and pulls in its namespace.
    let auth = format!("Bearer {}", body["token"].as_str().unwrap());
    env.set_auth(Some(&auth));
    env.s.push_image("team-a/app", "from-ci", 1).await;
    env.set_auth(None);
    let resp = get_manifest(&env, "team-a/app", "from-ci", Some(&auth)).await;
    expect_status(resp, StatusCode::OK).await;

    // The OAuth password grant takes the same credentials.
    let resp = env
        .token_post(&[
            ("grant_type", "password"),
            ("username", "ci"),
            ("password", &secret),
            ("scope", "repository:team-a/app:pull"),
        ])
        .await;
    let body = json_ok(resp).await;
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["sub"],
        "team-a/ci"
    );

    // Wrong name with the right secret, right name with a wrong secret, another token's name:
    // all 401.
    let other = env.ci_token("team-b", "other", "read", None).await;
    for (name, pw) in [
        ("cj", secret.as_str()),
        ("other", secret.as_str()),
        ("ci", other.as_str()),
        ("ci", "berth_wrong"),
        ("team-a/ci", secret.as_str()),
    ] {
        let resp = env
            .token_get(Some((name, pw)), &["repository:team-a/app:pull"], &[])
            .await;
        assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
}

// Same credentials in basic mode, straight to the registry.
#[tokio::test]
async fn ci_token_basic_mode() {
    let mut env = fixture(AuthMode::Basic).await;
    env.push_image_as(ROOT, "team-a/app", "v1").await;
    env.push_image_as(ROOT, "team-b/app", "v1").await;
    let secret = env.ci_token("team-a", "ci", "read", None).await;
    let auth = basic_auth("ci", &secret);
    let resp = get_manifest(&env, "team-a/app", "v1", Some(&auth)).await;
    expect_status(resp, StatusCode::OK).await;
    let resp = get_manifest(&env, "team-b/app", "v1", Some(&auth)).await;
    assert_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
    let resp = send(
        env.s
            .post("/v2/team-a/app/blobs/uploads/")
            .header("content-length", "0"),
        Some(&auth),
    )
    .await;
    assert_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
    let resp = get_manifest(&env, "team-a/app", "v1", Some(&basic_auth("cj", &secret))).await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    assert!(env
        .token_record("team-a", "ci")
        .await
        .last_used_at
        .is_some());
}

// An expired CI token cannot log in, and JWTs issued while it was live stop working when it
// expires.
#[tokio::test]
async fn expired_ci_token() {
    let mut env = fixture(AuthMode::Token).await;
    env.push_image_as(ROOT, "team-a/app", "v1").await;

    // A record that expired ten seconds ago.
    let secret = new_secret();
    let t = unix_now();
    env.meta
        .create_token(&TokenRecord {
            namespace: "team-a".into(),
            name: "old".into(),
            access: "read".into(),
            secret_hash: secret_hash(&secret),
            created_at: t - 100,
            expires_at: Some(t - 10),
            last_used_at: None,
            revoked_at: None,
        })
        .await
        .unwrap();
    let resp = env
        .token_get(Some(("old", &secret)), &["repository:team-a/app:pull"], &[])
        .await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    assert!(env
        .token_record("team-a", "old")
        .await
        .last_used_at
        .is_none());

    // A token living 2 s: its JWT works at first, not after it expired.
    let secret = env
        .ci_token("team-a", "short", "read", Some(Duration::from_secs(2)))
        .await;
    let jwt = env
        .token(Some(("short", &secret)), &["repository:team-a/app:pull"])
        .await;
    let auth = format!("Bearer {jwt}");
    let resp = get_manifest(&env, "team-a/app", "v1", Some(&auth)).await;
    expect_status(resp, StatusCode::OK).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let resp = get_manifest(&env, "team-a/app", "v1", Some(&auth)).await;
    assert_bearer_challenge(
        &env,
        resp,
        Some("repository:team-a/app:pull"),
        Some("invalid_token"),
    )
    .await;
    let resp = env
        .token_get(
            Some(("short", &secret)),
            &["repository:team-a/app:pull"],
            &[],
        )
        .await;
    assert_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

// ---------------------------------------------------------------------------------------------
// Signing keys
// ---------------------------------------------------------------------------------------------

// Token mode generates a P-256 key (PKCS#8 PEM, mode 0600) under the data dir on first start,
// and its tokens verify with that key's public half (ES256).
#[tokio::test]
async fn generated_key_is_p256_and_verifies_tokens() {
    use jsonwebtoken::{DecodingKey, Validation};
    use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
    use std::os::unix::fs::PermissionsExt;

    let env = fixture(AuthMode::Token).await;
    let path = env.s.config.data_dir.join("token.key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let pem = std::fs::read_to_string(&path).unwrap();
    assert!(pem.contains("BEGIN PRIVATE KEY"), "PKCS#8");
    let public_pem = p256::SecretKey::from_pkcs8_pem(&pem)
        .unwrap()
        .public_key()
        .to_public_key_pem(Default::default())
        .unwrap();
    let t = env.token(Some(DEV), &["repository:team-a/app:pull"]).await;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&["berth"]);
    v.set_issuer(&["berth"]);
    let data = jsonwebtoken::decode::<Value>(
        &t,
        &DecodingKey::from_ec_pem(public_pem.as_bytes()).unwrap(),
        &v,
    )
    .expect("the token verifies with the server key");
    assert_eq!(data.claims["sub"], "dev");
}

// A configured RSA key (auth.token.key) signs RS256 tokens, which the registry accepts.
#[tokio::test]
async fn configured_rsa_key_signs_rs256() {
    use rsa::pkcs8::EncodePrivateKey;
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("rsa.pem");
    let sk = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    std::fs::write(
        &key_path,
        sk.to_pkcs8_pem(Default::default()).unwrap().as_bytes(),
    )
    .unwrap();
    let kp = key_path.clone();
    let mut env = fixture_with(AuthMode::Token, move |c| c.auth.token.key = Some(kp)).await;
    assert!(!env.s.config.data_dir.join("token.key").exists());
    let (img, _) = env.push_image_as(DEV, "team-a/app", "v1").await;
    let t = env.token(Some(DEV), &["repository:team-a/app:pull"]).await;
    assert_eq!(jwt_part(&t, 0)["alg"], "RS256");
    let resp = get_manifest(&env, "team-a/app", "v1", Some(&format!("Bearer {t}"))).await;
    let resp = expect_status(resp, StatusCode::OK).await;
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        img.manifest.as_slice()
    );

    // An ES256 token (another key, another algorithm) is refused.
    let bnd = claims(&t)["bnd"].as_str().unwrap().to_string();
    let other = EncodingKey::from_ec_pem(
        rcgen::KeyPair::generate()
            .unwrap()
            .serialize_pem()
            .as_bytes(),
    )
    .unwrap();
    let forged = sign(
        Algorithm::ES256,
        &other,
        &valid_claims("dev", &bnd, pull_access()),
    );
    assert_invalid_token(&env, &forged, "an ES256 token on an RS256 registry").await;
}
