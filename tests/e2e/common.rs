//! Shared harness for the HTTP API tests: a real berth server on `127.0.0.1:0` with its own
//! temporary data dir and database, a reqwest client, and helpers for pushing content and
//! checking error bodies.
//!
//! Each test file includes this with `mod common;`; not every file uses every helper.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use berth::config::Config;
use reqwest::header::HeaderMap;
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use sha2::Digest as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Polls `check` until it returns true, failing when it has not within `limit`; returns how
/// long that took. A change written behind a server's back (by the CLI, or another process
/// on the same database) must apply within one second.
pub async fn within<F, Fut>(
    limit: std::time::Duration,
    what: &str,
    mut check: F,
) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not applied within {limit:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The value of `var`, naming a service the test command started; `None` (the test is
/// skipped) when it is unset, which fails under CI.
pub fn started(var: &str) -> Option<String> {
    let v = std::env::var(var).ok();
    if v.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{var} is unset: run the suite through scripts/test.sh"
        );
        eprintln!("skipped: {var} unset");
    }
    v
}

/// Storage in the S3 server the test command started (Garage, from `TEST_S3_*`), under
/// a prefix of its own; `None` when there is none, which fails under CI.
pub fn s3_storage() -> Option<berth::config::StorageConfig> {
    let endpoint = started("TEST_S3_ENDPOINT")?;
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is unset"));
    Some(berth::config::StorageConfig::S3 {
        s3: berth::config::S3Config {
            bucket: var("TEST_S3_BUCKET"),
            prefix: format!("e2e-{}", hex::encode(random_bytes(8))),
            region: "garage".into(),
            endpoint: Some(endpoint),
            path_style: true,
            access_key_id: Some(var("TEST_S3_KEY_ID")),
            secret_access_key: Some(var("TEST_S3_SECRET")),
            ..Default::default()
        },
    })
}

/// The PostgreSQL database of each test server's data dir, for `berth_cli` and `sql`.
static DATABASES: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, String>>,
> = std::sync::LazyLock::new(Default::default);

/// The PostgreSQL URL of the server whose data dir is `dir`, if it has one.
pub fn database_of(dir: &std::path::Path) -> Option<String> {
    DATABASES.lock().unwrap().get(dir).cloned()
}

/// Runs SQL with psql against the database at `url`; its output, trimmed.
pub fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([url, "-qAtc", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A fresh, empty database in the PostgreSQL server the test command started (from
/// `TEST_PG_URL`); `None` when there is none, which fails under CI.
pub fn pg_database() -> Option<berth::config::DatabaseConfig> {
    let admin = started("TEST_PG_URL")?;
    let name = format!("e2e_{}", hex::encode(random_bytes(8)));
    psql(&admin, &format!("CREATE DATABASE {name}"));
    let base = admin.rsplit_once('/').expect("URL with a database").0;
    Some(berth::config::DatabaseConfig::Postgres {
        url: format!("{base}/{name}"),
        max_connections: 8,
    })
}

/// Storage in the Azure Blob Storage emulator the test command started (Azurite, from
/// `TEST_AZURE_*`), under a prefix of its own; `None` when there is none, which fails under CI.
pub fn azure_storage() -> Option<berth::config::StorageConfig> {
    let endpoint = started("TEST_AZURE_ENDPOINT")?;
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is unset"));
    Some(berth::config::StorageConfig::Azure {
        azure: berth::config::AzureConfig {
            account: var("TEST_AZURE_ACCOUNT"),
            container: var("TEST_AZURE_CONTAINER"),
            prefix: format!("e2e-{}", hex::encode(random_bytes(8))),
            access_key: Some(var("TEST_AZURE_KEY")),
            endpoint: Some(endpoint),
            ..Default::default()
        },
    })
}

/// What the server logged in this test process (every server's lines; each test file runs its
/// tests in their own processes under nextest).
static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let capture = LogCapture(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_writer(move || capture.clone())
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .try_init();
        buf
    });
}

/// A running registry. Dropping it signals shutdown; [`TestServer::stop`] also waits for it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub client: Client,
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    /// The pull-through cache, when the configuration has upstreams.
    pub proxy: Option<berth::proxy::Proxy>,
    /// The server's GC, retention and scrub.
    pub lifecycle: berth::lifecycle::Lifecycle,
    // Dropped last: the server must stop using the directory first.
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// A server with the default configuration.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// A server whose configuration `modify` adjusts (delete disabled, small limits, ...).
    pub async fn start_with(modify: impl FnOnce(&mut Config)) -> TestServer {
        capture_logs();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        // The same tests over the object store: scripts/test.sh runs the API suites a second
        // time with TEST_STORAGE=s3.
        if std::env::var("TEST_STORAGE").as_deref() == Ok("s3") {
            config.storage = s3_storage().expect("TEST_STORAGE=s3 needs TEST_S3_*");
        }
        // And with metadata in PostgreSQL: TEST_DB=postgres.
        if std::env::var("TEST_DB").as_deref() == Ok("postgres") {
            config.database = pg_database().expect("TEST_DB=postgres needs TEST_PG_URL");
        }
        modify(&mut config);
        TestServer::open(config, dir).await
    }

    /// Stops the server and starts it again on the same data dir (on another port).
    pub async fn restart(mut self) -> TestServer {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("server task").expect("server ran cleanly");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let old = std::mem::replace(&mut self._dir, dir);
        TestServer::open(self.config.clone(), old).await
    }

    async fn open(config: Config, dir: tempfile::TempDir) -> TestServer {
        if let berth::config::DatabaseConfig::Postgres { url, .. } = &config.database {
            DATABASES
                .lock()
                .unwrap()
                .insert(config.data_dir.clone(), url.clone());
        }
        let app = berth::server::App::open(&config)
            .await
            .expect("the registry opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let proxy = app.proxy.clone();
        let lifecycle = app.lifecycle.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(berth::server::run(listener, app, async move {
            let _ = rx.await;
        }));
        let client = Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("reqwest client");
        TestServer {
            addr,
            base: format!("http://{addr}"),
            client,
            config,
            shutdown: Some(tx),
            handle: Some(handle),
            proxy,
            lifecycle,
            _dir: dir,
        }
    }

    /// The pull-through cache of a server configured with upstreams.
    pub fn proxy(&self) -> &berth::proxy::Proxy {
        self.proxy.as_ref().expect("the server has upstreams")
    }

    /// Everything servers logged in this process so far.
    pub fn log(&self) -> String {
        let buf = LOG.get().expect("logs are captured").lock().unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Stops the server gracefully and waits until it has closed its database.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("server task").expect("server ran cleanly");
        }
    }

    /// An absolute URL for `path` (which starts with `/`); absolute URLs pass through, so a
    /// `Location` header can be followed whether the server made it relative or not.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    pub fn head(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.head(self.url(path))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path))
    }

    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.put(self.url(path))
    }

    pub fn patch(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.patch(self.url(path))
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.delete(self.url(path))
    }

    /// Pushes a blob with a single `POST ?digest=` and checks the 201; returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        self.push_blob_as(repo, data, &digest).await;
        digest
    }

    /// Pushes a blob under an explicit digest (for sha512) and checks the 201.
    pub async fn push_blob_as(&self, repo: &str, data: &[u8], digest: &str) {
        let resp = self
            .post(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
            .header("content-type", "application/octet-stream")
            // Explicit, because hyper omits `Content-Length: 0` for an empty body.
            .header("content-length", data.len().to_string())
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        let resp = expect_status(resp, StatusCode::CREATED).await;
        assert_eq!(header(&resp, "docker-content-digest"), digest);
    }

    /// Starts an upload session; returns its `Location`.
    pub async fn start_upload(&self, repo: &str) -> String {
        let resp = self
            .post(&format!("/v2/{repo}/blobs/uploads/"))
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "start upload");
        header(&resp, "location")
    }

    /// `GET /v2/<repo>/blobs/<digest>`, the raw response.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Response {
        self.get(&format!("/v2/{repo}/blobs/{digest}"))
            .send()
            .await
            .unwrap()
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`, the raw response.
    pub async fn head_blob(&self, repo: &str, digest: &str) -> Response {
        self.head(&format!("/v2/{repo}/blobs/{digest}"))
            .send()
            .await
            .unwrap()
    }

    /// GETs `path` expecting a 404 error body with `code`, then HEADs it expecting a 404;
    /// returns the GET's first error and the HEAD response.
    pub async fn assert_not_found(&self, path: &str, code: &str) -> (Value, Response) {
        let resp = self.get(path).send().await.unwrap();
        let e = assert_error(resp, StatusCode::NOT_FOUND, code).await;
        let resp = self.head(path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "HEAD {path}");
        (e, resp)
    }

    /// GETs the tag list of `repo`, checks the 200 and returns the JSON body.
    pub async fn tags_list(&self, repo: &str) -> Value {
        let resp = self
            .get(&format!("/v2/{repo}/tags/list"))
            .send()
            .await
            .unwrap();
        expect_status(resp, StatusCode::OK)
            .await
            .json()
            .await
            .unwrap()
    }

    /// PUTs manifest bytes to `reference` with a Content-Type, returning the raw response.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        let path = format!("/v2/{repo}/manifests/{reference}");
        self.put_manifest_at(&path, media_type, body).await
    }

    /// Like [`TestServer::put_manifest`] to a whole manifest path, for query parameters
    /// (`/v2/<repo>/manifests/<digest>?tag=...`).
    pub async fn put_manifest_at(&self, path: &str, media_type: &str, body: &[u8]) -> Response {
        self.put(path)
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Pushes a manifest and checks the 201; returns its sha256 digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let resp = self.put_manifest(repo, reference, media_type, body).await;
        let status = resp.status();
        let digest = sha256(body);
        if status != StatusCode::CREATED {
            panic!(
                "push manifest {repo}:{reference}: {status} {}",
                resp.text().await.unwrap_or_default()
            );
        }
        assert_eq!(header(&resp, "docker-content-digest"), digest);
        digest
    }

    /// Pushes a random config and `layers` random layers to `repo`, and returns an OCI image
    /// manifest (not yet pushed) referencing them.
    pub async fn image(&self, repo: &str, layers: usize) -> Image {
        self.image_of(repo, layers, OCI_MANIFEST, OCI_CONFIG, OCI_LAYER)
            .await
    }

    /// Like [`TestServer::image`] with explicit manifest, config and layer media types.
    pub async fn image_of(
        &self,
        repo: &str,
        layers: usize,
        manifest_type: &str,
        config_type: &str,
        layer_type: &str,
    ) -> Image {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","nonce":"{}"}}"#,
            hex::encode(random_bytes(8))
        )
        .into_bytes();
        let config = Desc::new(config_type, &config, self.push_blob(repo, &config).await);
        let mut descs = Vec::new();
        for i in 0..layers {
            let data = random_bytes(64 + i * 17);
            let d = self.push_blob(repo, &data).await;
            descs.push(Desc::new(layer_type, &data, d));
        }
        let json = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config.json(),
            "layers": descs.iter().map(Desc::json).collect::<Vec<_>>(),
        });
        Image {
            config,
            layers: descs,
            manifest: serde_json::to_vec(&json).unwrap(),
            media_type: manifest_type.to_string(),
        }
    }

    /// Pushes a random image to `repo:reference`; returns it and its digest.
    pub async fn push_image(&self, repo: &str, reference: &str, layers: usize) -> (Image, String) {
        let img = self.image(repo, layers).await;
        let d = self
            .push_manifest(repo, reference, &img.media_type, &img.manifest)
            .await;
        (img, d)
    }

    /// Sends raw bytes as one HTTP/1.1 request (include `Connection: close`) and parses the
    /// response. For requests reqwest would normalize (`..` segments, lying lengths). The
    /// socket work runs off the runtime, which also drives the server.
    pub async fn raw(&self, request: Vec<u8>) -> RawResponse {
        let addr = self.addr;
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .unwrap();
            s.write_all(&request).unwrap();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            RawResponse::parse(&buf)
        })
        .await
        .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    fn parse(buf: &[u8]) -> RawResponse {
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
        let head = std::str::from_utf8(&buf[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        RawResponse {
            status,
            headers,
            body: buf[end + 4..].to_vec(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Checks the status and the spec's error body; returns the first error.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let v: Value = serde_json::from_slice(&self.body).expect("error body is JSON");
        check_error_body(&v, code)
    }
}

/// A content descriptor of something pushed.
#[derive(Clone, Debug)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Desc {
    pub fn new(media_type: &str, data: &[u8], digest: String) -> Desc {
        Desc {
            media_type: media_type.to_string(),
            digest,
            size: data.len() as u64,
        }
    }

    pub fn json(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size })
    }
}

/// An image whose blobs are pushed and whose manifest bytes are ready to push.
#[derive(Clone, Debug)]
pub struct Image {
    pub config: Desc,
    pub layers: Vec<Desc>,
    pub manifest: Vec<u8>,
    pub media_type: String,
}

impl Image {
    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }

    /// A descriptor of this image's manifest, for indexes and subjects.
    pub fn desc(&self) -> Desc {
        Desc::new(&self.media_type, &self.manifest, self.digest())
    }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)))
}

/// Pseudo-random bytes, different on every call (xorshift seeded from the process's random
/// hash state and a counter).
pub fn random_bytes(n: usize) -> Vec<u8> {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut x = h.finish() | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A header's value as a string; panics when it is missing.
pub fn header(resp: &Response, name: &str) -> String {
    opt_header(resp.headers(), name).unwrap_or_else(|| panic!("response has no {name} header"))
}

pub fn opt_header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .map(|v| v.to_str().expect("ASCII header").to_string())
}

/// Every value of a repeatable header, split on commas (RFC 9110 list semantics).
pub fn header_list(resp: &Response, name: &str) -> Vec<String> {
    resp.headers()
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn check_error_body(v: &Value, code: &str) -> Value {
    let errors = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("error body has no errors array: {v}"));
    assert!(!errors.is_empty(), "errors array is empty: {v}");
    for e in errors {
        let c = e["code"].as_str().expect("code is a string");
        assert!(
            !c.is_empty() && c.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
            "code {c:?} must be uppercase letters and underscores"
        );
        if let Some(m) = e.get("message") {
            assert!(m.is_string(), "message must be a string: {e}");
        }
    }
    assert_eq!(errors[0]["code"], code, "error body: {v}");
    errors[0].clone()
}

/// Checks the status and the spec's error body (`{"errors":[{"code","message","detail"?}]}`);
/// returns the first error object.
pub async fn assert_error(resp: Response, status: StatusCode, code: &str) -> Value {
    let got = resp.status();
    let ct = opt_header(resp.headers(), "content-type");
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "expected {status} {code}, got {got}: {text}");
    assert_eq!(
        ct.as_deref(),
        Some("application/json"),
        "error Content-Type"
    );
    let v: Value = serde_json::from_str(&text).expect("error body is JSON");
    check_error_body(&v, code)
}

/// Checks a status, printing the body when it is not the expected one.
pub async fn expect_status(resp: Response, status: StatusCode) -> Response {
    if resp.status() != status {
        let got = resp.status();
        panic!(
            "expected {status}, got {got}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    resp
}

/// The `<url>` of a `Link: <url>; rel="next"` header, if present.
pub fn next_link(resp: &Response) -> Option<String> {
    let v = opt_header(resp.headers(), "link")?;
    let (url, params) = v.split_once(';')?;
    assert!(
        params.contains("rel=\"next\""),
        "Link header lacks rel=\"next\": {v}"
    );
    let url = url.trim();
    assert!(
        url.starts_with('<') && url.ends_with('>'),
        "Link URL not in <>: {v}"
    );
    Some(url[1..url.len() - 1].to_string())
}

/// A request body sent with chunked transfer encoding (no `Content-Length`), in these pieces.
pub fn streamed(chunks: Vec<Vec<u8>>) -> reqwest::Body {
    reqwest::Body::wrap_stream(futures::stream::iter(
        chunks.into_iter().map(Ok::<_, std::io::Error>),
    ))
}

/// Appends a query parameter to a (possibly already parameterized) location.
pub fn with_query(location: &str, param: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}{param}")
}

/// Runs the `berth` binary with `args`, feeding `stdin`; returns success, stdout, stderr.
pub fn berth_cli(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    // A command run on a test server's data dir uses that server's database too, as it
    // would with the server's configuration file.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    if let Some(dir) = args
        .iter()
        .position(|a| *a == "--data-dir")
        .and_then(|i| args.get(i + 1))
    {
        if let Some(url) = DATABASES.lock().unwrap().get(std::path::Path::new(dir)) {
            cmd.env("BERTH_DATABASE", url);
        }
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berth runs");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `berth migrate --to FILE --data-dir DIR --json`: whether it succeeded, its JSON report
/// (`null` when it printed none) and its standard error.
pub fn migrate_cli(file: &std::path::Path, data_dir: &str) -> (bool, Value, String) {
    let (ok, out, err) = berth_cli(
        &[
            "migrate",
            "--to",
            file.to_str().unwrap(),
            "--data-dir",
            data_dir,
            "--json",
        ],
        None,
    );
    (ok, serde_json::from_str(&out).unwrap_or(Value::Null), err)
}

/// An `Authorization: Basic` header value.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A client that sends `authorization` (if any) on every request and follows no redirects.
pub fn client_with_auth(authorization: Option<&str>) -> Client {
    let mut headers = HeaderMap::new();
    if let Some(a) = authorization {
        headers.insert("authorization", a.parse().unwrap());
    }
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl TestServer {
    /// A second handle on the server's database (it ran the migrations already), for setting
    /// up users, namespaces and tokens behind the server's back, as the CLI does.
    pub async fn db(&self) -> std::sync::Arc<dyn berth::metadata::Backend> {
        berth::server::open_metadata(&self.config)
            .await
            .expect("open the server's database")
    }
}

/// A `berth serve` child process, killed when dropped (a failing test leaks no server).
pub struct ServeProcess(std::process::Child);

impl std::ops::Deref for ServeProcess {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for ServeProcess {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `berth serve --addr 127.0.0.1:<free port> ARGS...` as a process and returns it with
/// its base URL once it logs "berth ready"; its log is drained so it never blocks on a pipe.
pub fn spawn_serve(args: &[&str]) -> (ServeProcess, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--addr", &addr])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(server.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "server exited before it was ready");
        if line.contains("berth ready") {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (ServeProcess(server), format!("http://{addr}"))
}

/// Sends a request whose answer is JSON (or empty: `null`); returns its status and body.
pub async fn send_json(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    if body.is_empty() {
        return (status, Value::Null);
    }
    (status, serde_json::from_slice(&body).expect("a JSON body"))
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address reaches the server),
/// so that one test can act from several client addresses.
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(Some(ip.parse().unwrap()))
        .build()
        .unwrap()
}
