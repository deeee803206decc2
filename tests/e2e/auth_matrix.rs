//! The access-control permission matrix, end to end, in both authentication modes.
//!
//! Every subject (anonymous; users holding each namespace role; a server admin; CI tokens of
//! each access level) tries every action (pull, push, delete, tag list, referrers, catalog) on a
//! repository in every kind of namespace (the subject's own private namespace, another private
//! namespace, a public namespace, and a namespace that does not exist), once with HTTP Basic
//! credentials and once with bearer tokens from `/token`.
//!
//! The expected outcome of every cell comes from [`allowed`] (what a subject may do in a kind
//! of namespace) and [`outcome`] (what the server answers when that is or is not enough),
//! written once from the access rules; everything else runs the requests and checks the
//! status, the error body, the challenge and, on success, the effect (pulled bytes are the
//! pushed ones; a push can then be pulled; a delete makes things 404). Failures are collected
//! across the whole matrix and reported together, one line per failing cell.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::common::*;
use base64::Engine;
use berth::auth::namespaces::Namespaces;
use berth::auth::tokens::AccessTokens;
use berth::auth::Users;
use berth::config::AuthMode;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// The specification
// ---------------------------------------------------------------------------------------------

/// Who makes the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Subject {
    Anonymous,
    /// A user with the `guest` role in the own namespace.
    Guest,
    /// A user with the `developer` role in the own namespace.
    Developer,
    /// A user with the `maintainer` role in the own namespace.
    Maintainer,
    /// A user with the `admin` role in the own namespace (a namespace admin).
    NsAdmin,
    /// A user with the server-admin flag and no memberships.
    ServerAdmin,
    /// CI tokens of the own namespace, by access level.
    CiRead,
    CiReadWrite,
    CiReadWriteDelete,
}

const SUBJECTS: [Subject; 9] = [
    Subject::Anonymous,
    Subject::Guest,
    Subject::Developer,
    Subject::Maintainer,
    Subject::NsAdmin,
    Subject::ServerAdmin,
    Subject::CiRead,
    Subject::CiReadWrite,
    Subject::CiReadWriteDelete,
];

/// The kinds of namespace a repository can be in, relative to the subjects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Ns {
    /// `own`: private; every user subject is a member with its role, the CI tokens belong here.
    Own,
    /// `other`: private, no members.
    Other,
    /// `pub`: public, no members.
    Public,
    /// `nons`: no such namespace exists.
    Missing,
}

const NAMESPACES: [Ns; 4] = [Ns::Own, Ns::Other, Ns::Public, Ns::Missing];

/// Repository permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Perm {
    Pull,
    Push,
    Delete,
}

const ALL_PERMS: [Perm; 3] = [Perm::Pull, Perm::Push, Perm::Delete];

/// What a subject tries (the catalog, which has no namespace, is handled apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// GET/HEAD a manifest by tag and by digest, GET/HEAD a blob.
    Pull,
    /// An upload session (POST, PATCH, PUT), a single-request upload, a manifest PUT.
    Push,
    /// Untag, delete a manifest by digest, delete a blob.
    Delete,
    /// `tags/list`.
    TagList,
    /// The referrers API.
    Referrers,
}

const ACTIONS: [Action; 5] = [
    Action::Pull,
    Action::Push,
    Action::Delete,
    Action::TagList,
    Action::Referrers,
];

impl Action {
    /// The permission an action needs: GET/HEAD of manifests, blobs, tags/list and referrers
    /// is pull; uploads and manifest PUT are push; DELETE of manifests, tags, blobs is delete.
    fn needs(self) -> Perm {
        match self {
            Action::Pull | Action::TagList | Action::Referrers => Perm::Pull,
            Action::Push => Perm::Push,
            Action::Delete => Perm::Delete,
        }
    }
}

/// THE RULES: what `who` may do to a repository in a namespace of kind `ns`.
fn allowed(who: Subject, ns: Ns) -> &'static [Perm] {
    use Perm::{Delete, Pull, Push};
    use Subject::*;
    const NOTHING: &[Perm] = &[];
    const R: &[Perm] = &[Pull];
    const RW: &[Perm] = &[Pull, Push];
    const RWD: &[Perm] = &[Pull, Push, Delete];
    match (who, ns) {
        // Server admins may do everything everywhere, even where no namespace exists.
        (ServerAdmin, _) => RWD,
        // Repositories in a namespace that does not exist: only server admins.
        (_, Ns::Missing) => NOTHING,
        // A public namespace allows pull to everyone, anonymous included, and no more to
        // non-members.
        (_, Ns::Public) => R,
        // A private namespace one is not a member of (or a CI token not of): nothing.
        (_, Ns::Other) => NOTHING,
        (Anonymous, Ns::Own) => NOTHING,
        // Roles: guest = pull; developer = pull, push; maintainer = pull, push, delete;
        // namespace admin = everything.
        (Guest, Ns::Own) => R,
        (Developer, Ns::Own) => RW,
        (Maintainer | NsAdmin, Ns::Own) => RWD,
        // CI tokens in their own namespace: read = pull; read-write = pull, push;
        // read-write-delete = all.
        (CiRead, Ns::Own) => R,
        (CiReadWrite, Ns::Own) => RW,
        (CiReadWriteDelete, Ns::Own) => RWD,
    }
}

/// What the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The success status of the request.
    Allowed,
    /// 401 `UNAUTHORIZED` with a challenge (Basic, or Bearer with the request's scope):
    /// credentials could help.
    Challenge,
    /// Token mode: 401 `UNAUTHORIZED` with a Bearer challenge carrying
    /// `error="insufficient_scope"`: the principal may do it, the token does not say so.
    InsufficientScope,
    /// 403 `DENIED`, the message naming the missing permission and `detail.missing` listing it:
    /// the caller is known and may not do it.
    Denied(Perm),
}

/// The outcome when the credentials (or the token) carry everything the subject may do.
fn outcome(who: Subject, action: Action, ns: Ns) -> Outcome {
    let need = action.needs();
    if allowed(who, ns).contains(&need) {
        Outcome::Allowed
    } else if who == Subject::Anonymous {
        Outcome::Challenge
    } else {
        Outcome::Denied(need)
    }
}

/// Token mode: the outcome with a valid token that grants everything on the repository except
/// the needed action. If the principal could do it -> insufficient_scope; anonymous -> 401;
/// otherwise 403 naming the missing permission.
fn outcome_lacking(who: Subject, action: Action, ns: Ns) -> Outcome {
    let need = action.needs();
    if allowed(who, ns).contains(&need) {
        Outcome::InsufficientScope
    } else if who == Subject::Anonymous {
        Outcome::Challenge
    } else {
        Outcome::Denied(need)
    }
}

/// `/v2/_catalog` lists only repositories in namespaces the caller may pull from.
fn catalog_shows(who: Subject, repo: &str) -> bool {
    allowed(who, Ns::of(repo)).contains(&Perm::Pull)
}

// ---------------------------------------------------------------------------------------------
// Names, accounts, scopes
// ---------------------------------------------------------------------------------------------

/// How a subject's account is set up.
enum Account {
    None,
    User {
        admin: bool,
        role: Option<&'static str>,
    },
    Ci(&'static str),
}

impl Subject {
    /// The name it logs in with: a user name, or a CI token's name.
    fn login(self) -> Option<&'static str> {
        match self {
            Subject::Anonymous => None,
            Subject::Guest => Some("guest"),
            Subject::Developer => Some("dev"),
            Subject::Maintainer => Some("maint"),
            Subject::NsAdmin => Some("nsadmin"),
            Subject::ServerAdmin => Some("root"),
            Subject::CiRead => Some("ci-read"),
            Subject::CiReadWrite => Some("ci-rw"),
            Subject::CiReadWriteDelete => Some("ci-rwd"),
        }
    }

    /// A repository-name-safe label.
    fn slug(self) -> &'static str {
        self.login().unwrap_or("anon")
    }

    fn account(self) -> Account {
        let member = |role| Account::User {
            admin: false,
            role: Some(role),
        };
        match self {
            Subject::Anonymous => Account::None,
            Subject::Guest => member("guest"),
            Subject::Developer => member("developer"),
            Subject::Maintainer => member("maintainer"),
            Subject::NsAdmin => member("admin"),
            Subject::ServerAdmin => Account::User {
                admin: true,
                role: None,
            },
            Subject::CiRead => Account::Ci("read"),
            Subject::CiReadWrite => Account::Ci("read-write"),
            Subject::CiReadWriteDelete => Account::Ci("read-write-delete"),
        }
    }
}

impl Ns {
    fn name(self) -> &'static str {
        match self {
            Ns::Own => "own",
            Ns::Other => "other",
            Ns::Public => "pub",
            Ns::Missing => "nons",
        }
    }

    /// The namespace kind of a repository: its first path segment.
    fn of(repo: &str) -> Ns {
        let first = repo.split('/').next().unwrap();
        NAMESPACES
            .into_iter()
            .find(|n| n.name() == first)
            .unwrap_or_else(|| panic!("{repo} is in no test namespace"))
    }

    /// The seeded repository (an image tagged `v1` and a referrer of it).
    fn app(self) -> String {
        format!("{}/app", self.name())
    }

    /// The fresh repository a subject pushes to.
    fn push_repo(self, who: Subject) -> String {
        format!("{}/push-{}", self.name(), who.slug())
    }

    /// The repository a subject deletes from (seeded with tags `a`, `b` and a loose blob).
    fn del_repo(self, who: Subject) -> String {
        format!("{}/del-{}", self.name(), who.slug())
    }
}

impl Perm {
    fn name(self) -> &'static str {
        match self {
            Perm::Pull => "pull",
            Perm::Push => "push",
            Perm::Delete => "delete",
        }
    }

    fn parse(s: &str) -> Option<Perm> {
        ALL_PERMS.into_iter().find(|p| p.name() == s)
    }
}

/// The scope a token-mode challenge asks for: pushes ask `pull,push` (as docker does), a
/// delete asks `delete`, everything else `pull`.
fn challenge_scope(repo: &str, need: Perm) -> String {
    let actions = match need {
        Perm::Pull => "pull",
        Perm::Push => "pull,push",
        Perm::Delete => "delete",
    };
    format!("repository:{repo}:{actions}")
}

/// A scope asking for every permission except `need`.
fn scope_without(repo: &str, need: Perm) -> String {
    let others: Vec<&str> = ALL_PERMS
        .into_iter()
        .filter(|p| *p != need)
        .map(Perm::name)
        .collect();
    format!("repository:{repo}:{}", others.join(","))
}

/// The repositories an action touches (for the token's scopes).
fn touched(who: Subject, action: Action, ns: Ns) -> Vec<String> {
    match action {
        Action::Pull | Action::TagList | Action::Referrers => vec![ns.app()],
        // The push cell also works on a session the server admin opened in the seeded repo.
        Action::Push => vec![ns.push_repo(who), ns.app()],
        Action::Delete => vec![ns.del_repo(who)],
    }
}

const CATALOG_SCOPE: &str = "registry:catalog:*";

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

type Check<T = ()> = Result<T, String>;

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Check {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

/// A seeded image in `<ns>/app`, with a referrer.
struct Seed {
    manifest: Vec<u8>,
    digest: String,
    layer: Vec<u8>,
    layer_digest: String,
    referrer: String,
}

/// What a delete cell's repository holds before the cell.
struct DelSeed {
    /// Digest of the manifest tagged `a`.
    a: String,
    /// Digest of the manifest tagged `b`.
    b: String,
    /// A blob no manifest references.
    blob: String,
}

/// One request of a cell.
struct Step {
    method: Method,
    path: String,
    body: Option<(&'static str, Vec<u8>)>,
    ok: StatusCode,
    /// The scope a token-mode challenge must ask for (`None`: no scope, as on `/v2/`).
    scope: Option<String>,
}

impl Step {
    fn new(method: Method, path: impl Into<String>, ok: StatusCode, scope: Option<String>) -> Step {
        Step {
            method,
            path: path.into(),
            body: None,
            ok,
            scope,
        }
    }

    fn body(mut self, content_type: &'static str, bytes: &[u8]) -> Step {
        self.body = Some((content_type, bytes.to_vec()));
        self
    }
}

/// A server in one auth mode, its accounts, and its seeded content.
struct World {
    mode: AuthMode,
    /// Its `client` carries the server admin's credentials (seeding and checking effects).
    s: TestServer,
    /// A client without credentials; cells add their own `Authorization`.
    plain: Client,
    /// Password or CI-token secret of each subject that has one.
    secrets: HashMap<Subject, String>,
    seeds: BTreeMap<Ns, Seed>,
    dels: HashMap<(Ns, Subject), DelSeed>,
    /// Every repository that exists, for the catalog's expectations.
    repos: BTreeSet<String>,
    cells: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

fn plain_client(headers: HeaderMap) -> Client {
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .expect("reqwest client")
}

fn basic_header(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// `scheme k="v", k="v"` to the scheme and its parameters (values may hold commas).
fn challenge_params(c: &str) -> Option<(String, BTreeMap<String, String>)> {
    let (scheme, mut rest) = c.split_once(' ')?;
    let mut map = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if rest.is_empty() {
            break;
        }
        let (k, r) = rest.split_once('=')?;
        let r = r.strip_prefix('"')?;
        let (v, r) = r.split_once('"')?;
        map.insert(k.trim().to_string(), v.to_string());
        rest = r;
    }
    Some((scheme.to_string(), map))
}

/// The JSON payload of a JWT (not verified).
fn jwt_payload(token: &str) -> Check<Value> {
    let part = token
        .split('.')
        .nth(1)
        .ok_or_else(|| format!("not a JWT: {token}"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|e| format!("JWT payload is not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("JWT payload is not JSON: {e}"))
}

/// An OCI image manifest of one config and one layer.
fn image_manifest(config: &Desc, layer: &Desc) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.json(),
        "layers": [layer.json()],
    }))
    .unwrap()
}

fn random_config() -> Vec<u8> {
    format!(
        r#"{{"architecture":"amd64","os":"linux","nonce":"{}"}}"#,
        hex::encode(random_bytes(8))
    )
    .into_bytes()
}

impl World {
    async fn open(mode: AuthMode) -> World {
        let s = TestServer::start_with(|c| {
            c.auth.mode = mode;
        })
        .await;
        // Accounts go straight into the server's database (it ran the migrations already).
        let meta = s.db().await;
        let users = Users::new(meta.clone());
        let namespaces = Namespaces::new(meta.clone(), meta.clone());
        let tokens = AccessTokens::new(meta.clone());
        for (ns, public) in [(Ns::Own, false), (Ns::Other, false), (Ns::Public, true)] {
            namespaces.create(ns.name(), public).await.unwrap();
        }
        let mut secrets = HashMap::new();
        for who in SUBJECTS {
            let Some(name) = who.login() else { continue };
            match who.account() {
                Account::None => {}
                Account::User { admin, role } => {
                    let pw = format!("pw-{name}");
                    users.add(&name.parse().unwrap(), &pw, admin).await.unwrap();
                    if let Some(role) = role {
                        namespaces
                            .set_member(Ns::Own.name(), name, role)
                            .await
                            .unwrap();
                    }
                    secrets.insert(who, pw);
                }
                Account::Ci(access) => {
                    let (_, secret) = tokens
                        .create(Ns::Own.name(), name, access, None)
                        .await
                        .unwrap();
                    secrets.insert(who, secret);
                }
            }
        }
        let mut w = World {
            mode,
            s,
            plain: plain_client(HeaderMap::new()),
            secrets,
            seeds: BTreeMap::new(),
            dels: HashMap::new(),
            repos: BTreeSet::new(),
            cells: AtomicUsize::new(0),
            failures: Mutex::new(Vec::new()),
        };
        // The server admin's client, for seeding through the common helpers and for checking
        // effects: Basic credentials, or one token for every repository this test touches.
        let admin = match mode {
            AuthMode::Token => {
                let mut scopes = Vec::new();
                for ns in NAMESPACES {
                    scopes.push(format!("repository:{}:pull,push,delete", ns.app()));
                    for who in SUBJECTS {
                        for repo in [ns.push_repo(who), ns.del_repo(who)] {
                            scopes.push(format!("repository:{repo}:pull,push,delete"));
                        }
                    }
                }
                let (token, _) = w
                    .token(Subject::ServerAdmin, &scopes)
                    .await
                    .expect("the server admin gets a token");
                format!("Bearer {token}")
            }
            _ => w.basic(Subject::ServerAdmin).unwrap(),
        };
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&admin).unwrap());
        w.s.client = plain_client(headers);
        w.seed().await;
        w
    }

    /// Pushes, as the server admin, the content every cell works on.
    async fn seed(&mut self) {
        for ns in NAMESPACES {
            let repo = ns.app();
            let config = random_config();
            let layer = random_bytes(300);
            let cd = self.s.push_blob(&repo, &config).await;
            let layer_digest = self.s.push_blob(&repo, &layer).await;
            let manifest = image_manifest(
                &Desc::new(OCI_CONFIG, &config, cd),
                &Desc::new(OCI_LAYER, &layer, layer_digest.clone()),
            );
            let digest = self
                .s
                .push_manifest(&repo, "v1", OCI_MANIFEST, &manifest)
                .await;
            // A referrer: an artifact manifest whose subject is the image.
            let empty = Desc::new(OCI_EMPTY, b"{}", self.s.push_blob(&repo, b"{}").await);
            let subject = Desc::new(OCI_MANIFEST, &manifest, digest.clone());
            let artifact = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": "application/vnd.example.sbom.v1",
                "config": empty.json(),
                "layers": [],
                "subject": subject.json(),
            }))
            .unwrap();
            let referrer = sha256(&artifact);
            self.s
                .push_manifest(&repo, &referrer, OCI_MANIFEST, &artifact)
                .await;
            self.seeds.insert(
                ns,
                Seed {
                    manifest,
                    digest,
                    layer,
                    layer_digest,
                    referrer,
                },
            );
            self.repos.insert(repo);
            for who in SUBJECTS {
                let repo = ns.del_repo(who);
                let (_, a) = self.s.push_image(&repo, "a", 1).await;
                let (_, b) = self.s.push_image(&repo, "b", 1).await;
                let blob = self.s.push_blob(&repo, &random_bytes(40)).await;
                self.dels.insert((ns, who), DelSeed { a, b, blob });
                self.repos.insert(repo);
            }
        }
    }

    fn basic(&self, who: Subject) -> Option<String> {
        let name = who.login()?;
        Some(basic_header(name, &self.secrets[&who]))
    }

    /// `GET /token` for `scopes`, with the subject's Basic credentials (none: anonymous).
    /// Returns the token and its decoded payload.
    async fn token(&self, who: Subject, scopes: &[String]) -> Check<(String, Value)> {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("service", "berth");
        for s in scopes {
            q.append_pair("scope", s);
        }
        let mut rb = self
            .plain
            .get(self.s.url(&format!("/token?{}", q.finish())));
        if let Some(b) = self.basic(who) {
            rb = rb.header(AUTHORIZATION, b);
        }
        let resp = rb.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        ensure(status == StatusCode::OK, || {
            format!("GET /token as {who:?}: {status} {text}")
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("/token body: {e}"))?;
        let token = v["token"]
            .as_str()
            .ok_or_else(|| format!("/token body has no token: {v}"))?
            .to_string();
        ensure(v["access_token"] == token.as_str(), || {
            format!("/token: access_token differs from token: {v}")
        })?;
        ensure(v["expires_in"].as_u64().is_some_and(|n| n > 0), || {
            format!("/token: expires_in: {v}")
        })?;
        ensure(v["issued_at"].is_string(), || {
            format!("/token: issued_at: {v}")
        })?;
        let payload = jwt_payload(&token)?;
        Ok((token, payload))
    }

    /// The `Authorization` a subject sends for a cell: Basic credentials (none for
    /// anonymous), or in token mode a bearer token requested for `scopes`.
    async fn auth(&self, who: Subject, scopes: &[String]) -> Check<Option<String>> {
        match self.mode {
            AuthMode::Token => Ok(Some(format!("Bearer {}", self.token(who, scopes).await?.0))),
            _ => Ok(self.basic(who)),
        }
    }

    async fn send(&self, auth: Option<&str>, step: &Step) -> Check<Response> {
        let mut rb = self
            .plain
            .request(step.method.clone(), self.s.url(&step.path));
        if let Some(a) = auth {
            rb = rb.header(AUTHORIZATION, a);
        }
        match &step.body {
            Some((ct, bytes)) => {
                rb = rb
                    .header("content-type", *ct)
                    .header("content-length", bytes.len().to_string())
                    .body(bytes.clone());
            }
            None if [Method::POST, Method::PUT, Method::PATCH].contains(&step.method) => {
                rb = rb.header("content-length", "0");
            }
            None => {}
        }
        rb.send()
            .await
            .map_err(|e| format!("{} {}: {e}", step.method, step.path))
    }

    /// Sends a step and checks the answer against `want`; the response when allowed.
    async fn run(&self, auth: Option<&str>, step: &Step, want: Outcome) -> Check<Option<Response>> {
        let resp = self.send(auth, step).await?;
        self.judge(resp, step, want)
            .await
            .map_err(|e| format!("{} {}: {e}", step.method, step.path))
    }

    async fn judge(&self, resp: Response, step: &Step, want: Outcome) -> Check<Option<Response>> {
        let status = resp.status();
        if want == Outcome::Allowed {
            if status != step.ok {
                let body = resp.text().await.unwrap_or_default();
                return Err(format!("expected {}, got {status}: {body}", step.ok));
            }
            return Ok(Some(resp));
        }
        let challenge = opt_header(resp.headers(), "www-authenticate");
        let ct = opt_header(resp.headers(), "content-type");
        let body = resp.text().await.unwrap_or_default();
        let (expected, code) = match want {
            Outcome::Denied(_) => (StatusCode::FORBIDDEN, "DENIED"),
            _ => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        };
        ensure(status == expected, || {
            format!("expected {expected} {code} ({want:?}), got {status}: {body}")
        })?;
        if step.method != Method::HEAD {
            ensure(ct.as_deref() == Some("application/json"), || {
                format!("error Content-Type {ct:?}")
            })?;
            let v: Value =
                serde_json::from_str(&body).map_err(|e| format!("error body {body:?}: {e}"))?;
            let e = &v["errors"][0];
            ensure(e["code"] == code, || {
                format!("expected code {code}: {body}")
            })?;
            if let Outcome::Denied(p) = want {
                let needle = format!("requires the {} permission", p.name());
                ensure(
                    e["message"].as_str().is_some_and(|m| m.contains(&needle)),
                    || format!("message does not say {needle:?}: {body}"),
                )?;
                ensure(e["detail"]["missing"] == json!([p.name()]), || {
                    format!("detail.missing is not [{:?}]: {body}", p.name())
                })?;
            }
        }
        if matches!(want, Outcome::Challenge | Outcome::InsufficientScope) {
            let c = challenge.ok_or("401 without WWW-Authenticate")?;
            self.check_challenge(
                &c,
                step.scope.as_deref(),
                want == Outcome::InsufficientScope,
            )?;
        }
        Ok(None)
    }

    /// Basic mode: `Basic realm="berth"`. Token mode: `Bearer realm="<base>/token",
    /// service="berth"`, the scope the request needs, and `error="insufficient_scope"` when
    /// the token (not the principal) is what falls short.
    fn check_challenge(&self, c: &str, scope: Option<&str>, insufficient: bool) -> Check {
        let (scheme, p) = challenge_params(c).ok_or_else(|| format!("bad challenge {c:?}"))?;
        if self.mode == AuthMode::Basic {
            return ensure(
                scheme == "Basic" && p.get("realm").map(String::as_str) == Some("berth"),
                || format!("expected a Basic realm=\"berth\" challenge, got {c:?}"),
            );
        }
        let realm = format!("{}/token", self.s.base);
        ensure(
            scheme == "Bearer"
                && p.get("realm") == Some(&realm)
                && p.get("service").map(String::as_str) == Some("berth")
                && p.get("scope").map(String::as_str) == scope,
            || {
                format!(
                    "expected Bearer realm={realm:?} service=\"berth\" scope={scope:?}, got {c:?}"
                )
            },
        )?;
        if insufficient {
            ensure(
                p.get("error").map(String::as_str) == Some("insufficient_scope"),
                || format!("expected error=\"insufficient_scope\" in {c:?}"),
            )?;
        }
        Ok(())
    }

    /// Records a cell's result.
    fn record(&self, cell: String, result: Check) {
        self.cells.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            self.failures
                .lock()
                .unwrap()
                .push(format!("[{:?}] {cell}: {e}", self.mode));
        }
    }

    fn finish(self) {
        let cells = self.cells.load(Ordering::Relaxed);
        let failures = self.failures.into_inner().unwrap();
        eprintln!(
            "{:?} mode: {cells} cells, {} failed",
            self.mode,
            failures.len()
        );
        assert!(
            failures.is_empty(),
            "{} of {cells} cells failed in {:?} mode:\n{}",
            failures.len(),
            self.mode,
            failures.join("\n")
        );
    }

    // --- checks made as the server admin -------------------------------------------------

    /// The status (and body) of a GET made as the server admin.
    async fn admin_get(&self, path: &str) -> Check<(StatusCode, Vec<u8>)> {
        let resp = self
            .s
            .get(path)
            .send()
            .await
            .map_err(|e| format!("admin GET {path}: {e}"))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| e.to_string())?.to_vec();
        Ok((status, body))
    }

    async fn admin_expect(&self, path: &str, status: StatusCode, bytes: Option<&[u8]>) -> Check {
        let (got, body) = self.admin_get(path).await?;
        ensure(got == status, || {
            format!(
                "afterwards, admin GET {path}: expected {status}, got {got}: {}",
                String::from_utf8_lossy(&body)
            )
        })?;
        if let Some(b) = bytes {
            ensure(body == b, || {
                format!("afterwards, admin GET {path}: other bytes")
            })?;
        }
        Ok(())
    }

    // --- the cells -------------------------------------------------------------------------

    async fn cell(
        &self,
        who: Subject,
        action: Action,
        ns: Ns,
        auth: Option<&str>,
        want: Outcome,
    ) -> Check {
        match action {
            Action::Pull => self.pull(ns, auth, want).await,
            Action::TagList => self.tag_list(ns, auth, want).await,
            Action::Referrers => self.referrers(ns, auth, want).await,
            Action::Push => self.push(who, ns, auth, want).await,
            Action::Delete => self.delete(who, ns, auth, want).await,
        }
    }

    /// Pull: the manifest by tag and digest (GET, HEAD) and a layer (GET, HEAD), byte-exact.
    async fn pull(&self, ns: Ns, auth: Option<&str>, want: Outcome) -> Check {
        let seed = &self.seeds[&ns];
        let repo = ns.app();
        let scope = Some(challenge_scope(&repo, Perm::Pull));
        let step = |m: Method, what: &str| {
            Step::new(
                m,
                format!("/v2/{repo}/{what}"),
                StatusCode::OK,
                scope.clone(),
            )
        };
        for reference in ["v1", seed.digest.as_str()] {
            let path = format!("manifests/{reference}");
            if let Some(r) = self.run(auth, &step(Method::GET, &path), want).await? {
                let body = r.bytes().await.map_err(|e| e.to_string())?;
                ensure(body.as_ref() == seed.manifest, || {
                    format!("GET {path}: not the pushed manifest")
                })?;
            }
            if let Some(r) = self.run(auth, &step(Method::HEAD, &path), want).await? {
                ensure(header(&r, "docker-content-digest") == seed.digest, || {
                    format!("HEAD {path}: wrong Docker-Content-Digest")
                })?;
            }
        }
        let path = format!("blobs/{}", seed.layer_digest);
        if let Some(r) = self.run(auth, &step(Method::GET, &path), want).await? {
            let body = r.bytes().await.map_err(|e| e.to_string())?;
            ensure(body.as_ref() == seed.layer, || {
                format!("GET {path}: not the pushed layer")
            })?;
        }
        if let Some(r) = self.run(auth, &step(Method::HEAD, &path), want).await? {
            ensure(
                header(&r, "content-length") == seed.layer.len().to_string(),
                || format!("HEAD {path}: wrong Content-Length"),
            )?;
        }
        Ok(())
    }

    async fn tag_list(&self, ns: Ns, auth: Option<&str>, want: Outcome) -> Check {
        let repo = ns.app();
        let step = Step::new(
            Method::GET,
            format!("/v2/{repo}/tags/list"),
            StatusCode::OK,
            Some(challenge_scope(&repo, Perm::Pull)),
        );
        if let Some(r) = self.run(auth, &step, want).await? {
            let v: Value = r.json().await.map_err(|e| e.to_string())?;
            ensure(v == json!({"name": repo, "tags": ["v1"]}), || {
                format!("tags/list: {v}")
            })?;
        }
        Ok(())
    }

    async fn referrers(&self, ns: Ns, auth: Option<&str>, want: Outcome) -> Check {
        let seed = &self.seeds[&ns];
        let repo = ns.app();
        let step = Step::new(
            Method::GET,
            format!("/v2/{repo}/referrers/{}", seed.digest),
            StatusCode::OK,
            Some(challenge_scope(&repo, Perm::Pull)),
        );
        if let Some(r) = self.run(auth, &step, want).await? {
            let v: Value = r.json().await.map_err(|e| e.to_string())?;
            let digests: Vec<&str> = v["manifests"]
                .as_array()
                .map(|a| a.iter().filter_map(|d| d["digest"].as_str()).collect())
                .unwrap_or_default();
            ensure(digests == [seed.referrer.as_str()], || {
                format!("referrers: {v}")
            })?;
        }
        Ok(())
    }

    /// Push to a fresh repository: a session (POST, PATCH, PUT) for the config, a
    /// single-request upload for the layer, then the manifest. Allowed: the tag and blobs can
    /// then be pulled. Refused: every request is refused, including PATCH and PUT on a session
    /// the server admin opened in the seeded repository, and nothing landed.
    async fn push(&self, who: Subject, ns: Ns, auth: Option<&str>, want: Outcome) -> Check {
        let repo = ns.push_repo(who);
        let app = ns.app();
        let scope = Some(challenge_scope(&repo, Perm::Push));
        let config = random_config();
        let layer = random_bytes(200);
        let (cd, ld) = (sha256(&config), sha256(&layer));
        let manifest = image_manifest(
            &Desc::new(OCI_CONFIG, &config, cd.clone()),
            &Desc::new(OCI_LAYER, &layer, ld.clone()),
        );
        let start = Step::new(
            Method::POST,
            format!("/v2/{repo}/blobs/uploads/"),
            StatusCode::ACCEPTED,
            scope.clone(),
        );
        let session = match self.run(auth, &start, want).await? {
            Some(r) => header(&r, "location"),
            None => {
                // Someone else's session, in a repository of the same namespace.
                let resp = self
                    .s
                    .post(&format!("/v2/{app}/blobs/uploads/"))
                    .header("content-length", "0")
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                ensure(resp.status() == StatusCode::ACCEPTED, || {
                    format!("admin POST /v2/{app}/blobs/uploads/: {}", resp.status())
                })?;
                header(&resp, "location")
            }
        };
        let session_scope = Some(challenge_scope(session_repo(&session), Perm::Push));
        let patch = Step::new(
            Method::PATCH,
            session.clone(),
            StatusCode::ACCEPTED,
            session_scope.clone(),
        )
        .body("application/octet-stream", &config);
        let session = match self.run(auth, &patch, want).await? {
            Some(r) => header(&r, "location"),
            None => session,
        };
        let close = Step::new(
            Method::PUT,
            with_query(&session, &format!("digest={cd}")),
            StatusCode::CREATED,
            session_scope,
        );
        self.run(auth, &close, want).await?;
        let mono = Step::new(
            Method::POST,
            format!("/v2/{repo}/blobs/uploads/?digest={ld}"),
            StatusCode::CREATED,
            scope.clone(),
        )
        .body("application/octet-stream", &layer);
        self.run(auth, &mono, want).await?;
        let put = Step::new(
            Method::PUT,
            format!("/v2/{repo}/manifests/t"),
            StatusCode::CREATED,
            scope,
        )
        .body(OCI_MANIFEST, &manifest);
        self.run(auth, &put, want).await?;
        // The effect.
        let m = format!("/v2/{repo}/manifests/t");
        let c = format!("/v2/{repo}/blobs/{cd}");
        let l = format!("/v2/{repo}/blobs/{ld}");
        if want == Outcome::Allowed {
            self.admin_expect(&m, StatusCode::OK, Some(&manifest))
                .await?;
            self.admin_expect(&c, StatusCode::OK, Some(&config)).await?;
            self.admin_expect(&l, StatusCode::OK, Some(&layer)).await?;
        } else {
            for path in [&m, &c, &l] {
                self.admin_expect(path, StatusCode::NOT_FOUND, None).await?;
            }
            // Nothing was appended to the admin's session.
            let resp = self
                .s
                .get(&session)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            ensure(
                resp.status() == StatusCode::NO_CONTENT
                    && opt_header(resp.headers(), "range").as_deref() == Some("0-0"),
                || {
                    format!(
                        "afterwards, the admin's session: {} range {:?}",
                        resp.status(),
                        opt_header(resp.headers(), "range")
                    )
                },
            )?;
        }
        Ok(())
    }

    /// Delete: untag `b`, delete the manifest tagged `a` by digest, delete a blob. Allowed:
    /// they 404 afterwards (and `b`'s manifest stays); refused: all are still there.
    async fn delete(&self, who: Subject, ns: Ns, auth: Option<&str>, want: Outcome) -> Check {
        let repo = ns.del_repo(who);
        let d = &self.dels[&(ns, who)];
        let scope = Some(challenge_scope(&repo, Perm::Delete));
        let targets = [
            format!("/v2/{repo}/manifests/b"),
            format!("/v2/{repo}/manifests/{}", d.a),
            format!("/v2/{repo}/blobs/{}", d.blob),
        ];
        for path in &targets {
            let step = Step::new(Method::DELETE, path, StatusCode::ACCEPTED, scope.clone());
            self.run(auth, &step, want).await?;
        }
        let gone = if want == Outcome::Allowed {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        for path in targets
            .iter()
            .cloned()
            .chain([format!("/v2/{repo}/manifests/a")])
        {
            self.admin_expect(&path, gone, None).await?;
        }
        self.admin_expect(
            &format!("/v2/{repo}/manifests/{}", d.b),
            StatusCode::OK,
            None,
        )
        .await
    }

    /// The catalog: exactly the repositories in namespaces the subject may pull from, in one
    /// page and when paged by 3 along `Link`.
    async fn catalog(&self, who: Subject) -> Check {
        let auth = self.auth(who, &[CATALOG_SCOPE.to_string()]).await?;
        let expected: Vec<&str> = self
            .repos
            .iter()
            .filter(|r| catalog_shows(who, r))
            .map(String::as_str)
            .collect();
        let step = |path: &str| {
            Step::new(
                Method::GET,
                path,
                StatusCode::OK,
                Some(CATALOG_SCOPE.to_string()),
            )
        };
        let list = |v: &Value| -> Vec<String> {
            v["repositories"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let r = self
            .run(auth.as_deref(), &step("/v2/_catalog"), Outcome::Allowed)
            .await?
            .unwrap();
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        ensure(list(&v) == expected, || {
            format!("catalog: expected {expected:?}, got {v}")
        })?;
        let mut paged = Vec::new();
        let mut next = Some("/v2/_catalog?n=3".to_string());
        for _ in 0..100 {
            let Some(path) = next.take() else { break };
            let r = self
                .run(auth.as_deref(), &step(&path), Outcome::Allowed)
                .await?
                .unwrap();
            next = next_link(&r);
            let v: Value = r.json().await.map_err(|e| e.to_string())?;
            let page = list(&v);
            ensure(page.len() <= 3, || {
                format!("{path}: page of {}", page.len())
            })?;
            paged.extend(page);
        }
        ensure(paged == expected, || {
            format!("catalog paged by 3: expected {expected:?}, got {paged:?}")
        })
    }
}

/// The repository of an upload-session location (`/v2/<name>/blobs/uploads/<id>`).
fn session_repo(location: &str) -> &str {
    let path = location
        .split_once("/v2/")
        .map(|(_, p)| p)
        .unwrap_or(location);
    path.split("/blobs/uploads/").next().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The matrix, in both modes
// ---------------------------------------------------------------------------------------------

/// Every subject x action x namespace with the credentials it would normally use (Basic, or a
/// token requested for the scope the challenge asks), and every subject's catalog.
async fn full_matrix(w: &World) {
    for who in SUBJECTS {
        let r = w.catalog(who).await;
        w.record(format!("{who:?} catalog"), r);
    }
    for who in SUBJECTS {
        for ns in NAMESPACES {
            for action in ACTIONS {
                let want = outcome(who, action, ns);
                let scopes: Vec<String> = touched(who, action, ns)
                    .iter()
                    .map(|repo| challenge_scope(repo, action.needs()))
                    .collect();
                let r = match w.auth(who, &scopes).await {
                    Ok(auth) => w.cell(who, action, ns, auth.as_deref(), want).await,
                    Err(e) => Err(e),
                };
                w.record(
                    format!("{who:?} {action:?} in {} (expect {want:?})", ns.name()),
                    r,
                );
            }
        }
    }
}

// Basic mode: `Authorization: Basic` on every request; anonymous where not allowed -> 401 with
// a Basic challenge; authenticated without the permission -> 403 DENIED; bad password -> 401.
#[tokio::test]
async fn basic_mode_matrix() {
    let w = World::open(AuthMode::Basic).await;

    // `/v2/`: without credentials 401 UNAUTHORIZED with `Basic realm="berth"`; with any valid
    // credentials 200.
    for who in SUBJECTS {
        let want = if who == Subject::Anonymous {
            Outcome::Challenge
        } else {
            Outcome::Allowed
        };
        let step = Step::new(Method::GET, "/v2/", StatusCode::OK, None);
        let r = w.run(w.basic(who).as_deref(), &step, want).await.map(drop);
        w.record(format!("{who:?} GET /v2/ (expect {want:?})"), r);
    }

    // A wrong password (or CI secret) is 401 with a challenge, even where anonymous may pull.
    for who in [Subject::Developer, Subject::ServerAdmin, Subject::CiRead] {
        let bad = basic_header(who.login().unwrap(), &format!("{}x", w.secrets[&who]));
        for path in [
            "/v2/".to_string(),
            format!("/v2/{}/tags/list", Ns::Public.app()),
        ] {
            let step = Step::new(Method::GET, &path, StatusCode::OK, None);
            let r = w.run(Some(&bad), &step, Outcome::Challenge).await.map(drop);
            w.record(format!("{who:?} with a bad password GET {path}"), r);
        }
    }

    full_matrix(&w).await;
    w.finish();
}

// Token mode: every /v2/ request needs a bearer token from /token; tokens grant requested ∩
// allowed; a token short of the needed action -> 401 insufficient_scope when the principal
// could do it, 401 for anonymous, 403 DENIED otherwise.
#[tokio::test]
async fn token_mode_matrix() {
    let w = World::open(AuthMode::Token).await;
    let own = Ns::Own.app();

    // Without a token, every endpoint answers 401 with a Bearer challenge naming the scope
    // it needs: pull for reads, pull,push for uploads and manifest PUT, delete for DELETE,
    // registry:catalog:* for the catalog, none for /v2/. Also public repositories, and also
    // when Basic credentials are sent instead.
    let session = w.s.start_upload(&own).await;
    for ns in NAMESPACES {
        let repo = ns.app();
        let s = &w.seeds[&ns];
        let pull = Some(challenge_scope(&repo, Perm::Pull));
        let push = Some(challenge_scope(&repo, Perm::Push));
        let del = Some(challenge_scope(&repo, Perm::Delete));
        let mut table = vec![
            (
                Method::GET,
                format!("/v2/{repo}/manifests/v1"),
                pull.clone(),
            ),
            (
                Method::HEAD,
                format!("/v2/{repo}/manifests/v1"),
                pull.clone(),
            ),
            (
                Method::GET,
                format!("/v2/{repo}/blobs/{}", s.layer_digest),
                pull.clone(),
            ),
            (
                Method::HEAD,
                format!("/v2/{repo}/blobs/{}", s.layer_digest),
                pull.clone(),
            ),
            (Method::GET, format!("/v2/{repo}/tags/list"), pull.clone()),
            (
                Method::GET,
                format!("/v2/{repo}/referrers/{}", s.digest),
                pull,
            ),
            (
                Method::POST,
                format!("/v2/{repo}/blobs/uploads/"),
                push.clone(),
            ),
            (
                Method::PUT,
                format!("/v2/{repo}/manifests/new"),
                push.clone(),
            ),
            (
                Method::DELETE,
                format!("/v2/{repo}/manifests/v1"),
                del.clone(),
            ),
            (
                Method::DELETE,
                format!("/v2/{repo}/manifests/{}", s.digest),
                del.clone(),
            ),
            (
                Method::DELETE,
                format!("/v2/{repo}/blobs/{}", s.layer_digest),
                del,
            ),
        ];
        if ns == Ns::Own {
            table.push((Method::PATCH, session.clone(), push.clone()));
            table.push((Method::PUT, with_query(&session, "digest=sha256:00"), push));
            table.push((Method::GET, "/v2/".into(), None));
            table.push((
                Method::GET,
                "/v2/_catalog".into(),
                Some(CATALOG_SCOPE.into()),
            ));
        }
        for (method, path, scope) in table {
            let step = Step::new(method.clone(), &path, StatusCode::OK, scope);
            let r = w.run(None, &step, Outcome::Challenge).await.map(drop);
            w.record(format!("no token: {method} {path}"), r);
            let basic = w.basic(Subject::ServerAdmin);
            let r = w
                .run(basic.as_deref(), &step, Outcome::Challenge)
                .await
                .map(drop);
            w.record(format!("Basic instead of a token: {method} {path}"), r);
        }
    }

    // `/v2/` with any valid token, even an anonymous one with no grants: 200. The catalog
    // with a token lacking registry:catalog:* -> 401 insufficient_scope (everyone may have it).
    for who in SUBJECTS {
        let r = async {
            let auth = w.auth(who, &[]).await?;
            let base = Step::new(Method::GET, "/v2/", StatusCode::OK, None);
            w.run(auth.as_deref(), &base, Outcome::Allowed).await?;
            let cat = Step::new(
                Method::GET,
                "/v2/_catalog",
                StatusCode::OK,
                Some(CATALOG_SCOPE.into()),
            );
            w.run(auth.as_deref(), &cat, Outcome::InsufficientScope)
                .await
                .map(drop)
        }
        .await;
        w.record(format!("{who:?} token without scopes: /v2/ and catalog"), r);
    }

    // Bad credentials on /token: 401 UNAUTHORIZED.
    for who in [Subject::Developer, Subject::ServerAdmin, Subject::CiRead] {
        let bad = basic_header(who.login().unwrap(), &format!("{}x", w.secrets[&who]));
        let path = format!("/token?service=berth&scope=repository:{own}:pull");
        let step = Step::new(Method::GET, &path, StatusCode::OK, None);
        let r = async {
            let resp = w.send(Some(&bad), &step).await?;
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            ensure(
                status == StatusCode::UNAUTHORIZED && body.contains("UNAUTHORIZED"),
                || format!("expected 401 UNAUTHORIZED, got {status}: {body}"),
            )
        }
        .await;
        w.record(format!("{who:?} with a bad password GET /token"), r);
    }

    // The issued token's `access` is exactly requested ∩ allowed: repositories with nothing
    // allowed are left out, asking for too much is never refused, repeated scopes merge, and
    // the catalog scope is granted to everyone.
    let requests: Vec<Vec<String>> = vec![
        NAMESPACES
            .iter()
            .map(|ns| format!("repository:{}:pull,push,delete", ns.app()))
            .chain([CATALOG_SCOPE.to_string()])
            .collect(),
        NAMESPACES
            .iter()
            .map(|ns| format!("repository:{}:pull", ns.app()))
            .chain([
                format!("repository:{}:push", Ns::Public.app()),
                format!("repository:{own}:delete"),
                format!("repository:{}:push,delete", Ns::Missing.app()),
            ])
            .collect(),
        vec![],
    ];
    for who in SUBJECTS {
        for scopes in &requests {
            let r = check_grant(&w, who, scopes).await;
            w.record(format!("{who:?} token access for {scopes:?}"), r);
        }
    }

    // Tokens that grant everything the subject may do on the repository except the needed
    // action. This runs before the full matrix, so refused pushes and deletes must leave the
    // repositories exactly as seeded.
    for who in SUBJECTS {
        for ns in NAMESPACES {
            for action in ACTIONS {
                let want = outcome_lacking(who, action, ns);
                let scopes: Vec<String> = touched(who, action, ns)
                    .iter()
                    .map(|repo| scope_without(repo, action.needs()))
                    .collect();
                let r = match w.auth(who, &scopes).await {
                    Ok(auth) => w.cell(who, action, ns, auth.as_deref(), want).await,
                    Err(e) => Err(e),
                };
                w.record(
                    format!(
                        "{who:?} {action:?} in {} with a token lacking {} (expect {want:?})",
                        ns.name(),
                        action.needs().name()
                    ),
                    r,
                );
            }
        }
    }

    full_matrix(&w).await;
    w.finish();
}

/// Requests a token for `scopes` as `who` and compares its `access` claim with requested ∩
/// allowed, computed from the spec.
async fn check_grant(w: &World, who: Subject, scopes: &[String]) -> Check {
    let mut expected: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for s in scopes {
        if s == CATALOG_SCOPE {
            expected
                .entry(("registry".into(), "catalog".into()))
                .or_default()
                .insert("*".into());
            continue;
        }
        let (kind_name, actions) = s.rsplit_once(':').unwrap();
        let (_, name) = kind_name.split_once(':').unwrap();
        let may = allowed(who, Ns::of(name));
        let granted: BTreeSet<String> = actions
            .split(',')
            .filter_map(Perm::parse)
            .filter(|p| may.contains(p))
            .map(|p| p.name().to_string())
            .collect();
        if !granted.is_empty() {
            expected
                .entry(("repository".into(), name.into()))
                .or_default()
                .extend(granted);
        }
    }
    let (_, payload) = w.token(who, scopes).await?;
    let entries = match &payload["access"] {
        Value::Null => Vec::new(),
        Value::Array(a) => a.clone(),
        other => return Err(format!("access claim is not a list: {other}")),
    };
    let mut got: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for e in &entries {
        let key = (
            e["type"].as_str().unwrap_or_default().to_string(),
            e["name"].as_str().unwrap_or_default().to_string(),
        );
        let actions: BTreeSet<String> = e["actions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        ensure(got.insert(key.clone(), actions).is_none(), || {
            format!("access lists {key:?} twice: {payload}")
        })?;
    }
    ensure(got == expected, || {
        format!("access claim: expected {expected:?}, got {got:?}")
    })
}
