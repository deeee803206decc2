//! Crash and restart behaviour of the compiled `berth` binary.
//!
//! Each test runs the real binary on a free loopback port with its own temporary data dir:
//! SIGKILL in the middle of a chunked upload and in the middle of a push, then a restart on
//! the same data dir; SIGTERM while idle; start-up errors (port taken, unusable data dir).
//!
//! Requests that must still be in flight when the server dies are written by hand on a raw
//! `TcpStream` (headers plus part of the body), so the kill lands while the server is
//! streaming that body to disk; the tests wait until the partial bytes are visible in
//! `DIR/uploads/` before killing, so the crash really leaves unacknowledged bytes behind.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use sha2::Digest as _;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
/// Generous: a loaded CI machine may be slow to start a process.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const MIB: usize = 1 << 20;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

// ------------------------------------------------------------------------------------------
// Process harness

/// Captured stderr of a child, filled by a reader thread.
#[derive(Clone, Default)]
struct Stderr(Arc<Mutex<String>>);

impl Stderr {
    fn capture(child: &mut Child) -> Stderr {
        let out = Stderr::default();
        let pipe = child.stderr.take().expect("stderr is piped");
        let buf = out.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut b = buf.lock().unwrap();
                b.push_str(&line);
                b.push('\n');
            }
        });
        out
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_berth<I, S>(args: I) -> (Child, Stderr)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = Command::new(BERTH)
        .args(args)
        .env_remove("BERTH_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth");
    let stderr = Stderr::capture(&mut child);
    (child, stderr)
}

/// Waits for `child` to exit, killing it and failing after `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration, stderr: &Stderr) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            // Let the reader thread drain what the process wrote last.
            std::thread::sleep(Duration::from_millis(100));
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "berth did not exit within {timeout:?}; stderr:\n{}",
                stderr.text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `berth serve`. Dropping it SIGKILLs the process.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Stderr,
    data_dir: PathBuf,
}

impl Server {
    /// Starts `berth serve` on a free port and waits until it accepts connections.
    fn start(data_dir: &Path) -> Server {
        let mut last = String::new();
        // The port is free when chosen but another process could take it before berth binds;
        // only that race is retried.
        for _ in 0..3 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let (mut child, stderr) = spawn_berth([
                OsStr::new("serve"),
                OsStr::new("--addr"),
                OsStr::new(&addr.to_string()),
                OsStr::new("--data-dir"),
                data_dir.as_os_str(),
            ]);
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                if stderr.text().contains("berth ready") || TcpStream::connect(addr).is_ok() {
                    return Server {
                        child,
                        addr,
                        stderr,
                        data_dir: data_dir.to_path_buf(),
                    };
                }
                if let Some(status) = child.try_wait().unwrap() {
                    std::thread::sleep(Duration::from_millis(100));
                    last = format!("exited with {status}; stderr:\n{}", stderr.text());
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "berth not ready within {READY_TIMEOUT:?}; stderr:\n{}",
                        stderr.text()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !last.contains("cannot listen") {
                break;
            }
        }
        panic!("berth failed to start: {last}");
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") {
            path.to_string()
        } else {
            format!("http://{}{path}", self.addr)
        }
    }

    fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL berth");
        let status = self.child.wait().expect("reap berth");
        assert!(!status.success(), "a SIGKILLed process cannot exit 0");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> Client {
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .expect("reqwest client")
}

// ------------------------------------------------------------------------------------------
// Content and HTTP helpers

/// Deterministic pseudo-random bytes (xorshift64*), different for each seed.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn header(resp: &Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("response has no {name} header: {resp:?}"))
        .to_str()
        .unwrap()
        .to_string()
}

/// The first error code of a spec error body.
async fn error_code(resp: Response) -> String {
    let body: Value = resp.json().await.expect("error body is JSON");
    body["errors"][0]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
        .to_string()
}

/// `POST .../blobs/uploads/` -> 202; returns the session URL (as given in `Location`).
async fn start_upload(c: &Client, s: &Server, repo: &str) -> String {
    let r = c
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "POST uploads: {r:?}");
    header(&r, "location")
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// The upload id: the last path segment of a session URL.
fn upload_id(location: &str) -> String {
    let path = location.split('?').next().unwrap();
    path.rsplit('/').next().unwrap().to_string()
}

fn upload_file(s: &Server, location: &str) -> PathBuf {
    s.data_dir.join("uploads").join(upload_id(location))
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Monolithic upload in one request (`POST ?digest=`), asserting 201.
async fn push_blob(c: &Client, s: &Server, repo: &str, bytes: &[u8]) -> String {
    let d = digest(bytes);
    let r = c
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "monolithic push: {r:?}");
    assert_eq!(header(&r, "docker-content-digest"), d);
    d
}

/// `PATCH` one chunk with its `Content-Range`, asserting 202 and the new `Range`.
async fn patch_chunk(c: &Client, s: &Server, location: &str, start: usize, chunk: &[u8]) {
    let end = start + chunk.len() - 1;
    let r = c
        .patch(s.url(location))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{start}-{end}"))
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "PATCH {start}-{end}: {r:?}"
    );
    assert_eq!(header(&r, "range"), format!("0-{end}"));
}

/// Closing `PUT ?digest=` with no body, asserting 201.
async fn finish_upload(c: &Client, s: &Server, location: &str, d: &str) {
    let r = c
        .put(s.url(&with_digest(location, d)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "closing PUT: {r:?}");
    assert_eq!(header(&r, "docker-content-digest"), d);
}

/// A `PUT` of the whole blob closing session `location` (no Content-Range).
async fn put_blob(c: &Client, s: &Server, location: &str, d: &str, bytes: &[u8]) -> Response {
    c.put(s.url(&with_digest(location, d)))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

async fn put_manifest(c: &Client, s: &Server, repo: &str, tag: &str, body: &[u8]) -> Response {
    c.put(s.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("content-type", OCI_MANIFEST)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

async fn get_manifest(c: &Client, s: &Server, repo: &str, reference: &str) -> Response {
    c.get(s.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
}

async fn get_blob(c: &Client, s: &Server, repo: &str, d: &str) -> Response {
    c.get(s.url(&format!("/v2/{repo}/blobs/{d}")))
        .send()
        .await
        .unwrap()
}

/// Asserts the repository serves blob `d` with exactly `bytes`.
async fn assert_blob(c: &Client, s: &Server, repo: &str, bytes: &[u8]) {
    let d = digest(bytes);
    let r = get_blob(c, s, repo, &d).await;
    assert_eq!(r.status(), StatusCode::OK, "GET blob {d}: {r:?}");
    assert_eq!(header(&r, "docker-content-digest"), d);
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), bytes.len(), "length of blob {d}");
    assert!(body[..] == bytes[..], "content of blob {d} differs");
}

async fn assert_blob_unknown(c: &Client, s: &Server, repo: &str, d: &str) {
    let r = get_blob(c, s, repo, d).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "GET blob {d}: {r:?}");
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    let r = c
        .head(s.url(&format!("/v2/{repo}/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "HEAD blob {d}: {r:?}");
}

/// Opens a raw HTTP/1.1 request that announces `content_length` body bytes and sends only
/// `first` of them. The returned stream keeps the request open.
fn open_streaming_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    content_length: usize,
    first: &[u8],
) -> TcpStream {
    assert!(first.len() < content_length);
    let mut sock = TcpStream::connect(addr).expect("connect");
    sock.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let target = target
        .strip_prefix(&format!("http://{addr}"))
        .unwrap_or(target);
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {content_length}\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).unwrap();
    sock.write_all(first).unwrap();
    sock.flush().unwrap();
    sock
}

/// Polls `cond` until it holds, failing after a generous timeout.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every file under `DIR/blobs` holds exactly the content its path names.
fn assert_blob_store_consistent(data_dir: &Path) {
    let root = data_dir.join("blobs");
    let mut checked = 0;
    for alg in std::fs::read_dir(&root).unwrap() {
        let alg = alg.unwrap();
        assert_eq!(alg.file_name(), "sha256", "unexpected algorithm dir");
        for prefix in std::fs::read_dir(alg.path()).unwrap() {
            let prefix = prefix.unwrap();
            for f in std::fs::read_dir(prefix.path()).unwrap() {
                let f = f.unwrap();
                let name = f.file_name().into_string().unwrap();
                let bytes = std::fs::read(f.path()).unwrap();
                assert_eq!(
                    digest(&bytes),
                    format!("sha256:{name}"),
                    "blob file {} does not match its name (partial blob?)",
                    f.path().display()
                );
                assert!(name.starts_with(prefix.file_name().to_str().unwrap()));
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no blobs found under {}", root.display());
}

fn assert_tmp_empty(data_dir: &Path) {
    let tmp = data_dir.join("tmp");
    if tmp.exists() {
        let stray: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            stray.is_empty(),
            "stray files in {}: {stray:?}",
            tmp.display()
        );
    }
}

// ------------------------------------------------------------------------------------------
// Tests

/// SIGKILL while a second chunk streams in: after a restart the session reports only the
/// acknowledged first chunk, resumes from there and completes byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_chunk_resumes_from_acknowledged_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let repo = "crash/chunked";
    let blob = data(1, 12 * MIB);
    let first = 3 * MIB + 12_345; // deliberately not a multiple of any buffer size
    let d = digest(&blob);
    let c = client();

    let mut s = Server::start(&data_dir);
    let location = start_upload(&c, &s, repo).await;
    patch_chunk(&c, &s, &location, 0, &blob[..first]).await;

    // Second chunk: announce all the rest, send 4 MiB of it, and keep the request open.
    let rest = blob.len() - first;
    let sent = 4 * MIB;
    let _sock = open_streaming_request(
        s.addr,
        "PATCH",
        &location,
        &[
            ("Content-Type", "application/octet-stream".into()),
            ("Content-Range", format!("{first}-{}", blob.len() - 1)),
        ],
        rest,
        &blob[first..first + sent],
    );
    // Kill only once unacknowledged bytes of the second chunk have reached the upload file.
    let file = upload_file(&s, &location);
    wait_until("the second chunk to reach the upload file", || {
        file_len(&file) > first as u64
    });
    s.kill();
    assert!(
        file_len(&file) > first as u64,
        "the crash should leave unacknowledged bytes in {}",
        file.display()
    );
    drop(s);

    let s = Server::start(&data_dir);
    let r = c.get(s.url(&location)).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "upload status after restart: {r:?}"
    );
    assert_eq!(
        header(&r, "range"),
        format!("0-{}", first - 1),
        "only the acknowledged first chunk counts"
    );
    assert_eq!(header(&r, "docker-upload-uuid"), upload_id(&location));
    let location = header(&r, "location");

    // A chunk that does not start at the acknowledged end (here: where the killed request
    // had got to) is refused with the real state. Small, so it fits in socket buffers.
    let at = first + sent;
    let r = c
        .patch(s.url(&location))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{at}-{}", at + 1023))
        .body(blob[at..at + 1024].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{r:?}");
    assert_eq!(header(&r, "range"), format!("0-{}", first - 1));

    // Resume from the acknowledged end and complete.
    patch_chunk(&c, &s, &location, first, &blob[first..]).await;
    finish_upload(&c, &s, &location, &d).await;
    assert_blob(&c, &s, repo, &blob).await;
    assert!(
        !upload_file(&s, &location).exists(),
        "upload file left after commit"
    );

    let r = c.get(s.url(&location)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    assert_blob_store_consistent(&data_dir);
    assert_tmp_empty(&data_dir);
}

/// SIGKILL while a push is in flight (a session upload, a monolithic upload and a manifest,
/// all mid-body): everything acknowledged before survives byte-exact, nothing partial is
/// visible, and the interrupted session resumes or is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_push_keeps_acknowledged_content() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let repo = "crash/push";
    let c = client();
    let mut s = Server::start(&data_dir);

    // Acknowledged content: three layers pushed three ways, a config and a manifest.
    let layer_a = data(10, 300 * 1024);
    let layer_b = data(11, 2 * MIB + 7);
    let layer_c = data(12, 5 * MIB + 3);
    push_blob(&c, &s, repo, &layer_a).await;
    {
        let loc = start_upload(&c, &s, repo).await;
        let r = put_blob(&c, &s, &loc, &digest(&layer_b), &layer_b).await;
        assert_eq!(r.status(), StatusCode::CREATED, "POST + PUT push: {r:?}");
    }
    {
        let loc = start_upload(&c, &s, repo).await;
        let half = layer_c.len() / 2;
        patch_chunk(&c, &s, &loc, 0, &layer_c[..half]).await;
        patch_chunk(&c, &s, &loc, half, &layer_c[half..]).await;
        finish_upload(&c, &s, &loc, &digest(&layer_c)).await;
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest(b"a"), digest(b"b"), digest(b"c")]},
    }))
    .unwrap();
    push_blob(&c, &s, repo, &config).await;
    let desc = |mt: &str, b: &[u8]| json!({"mediaType": mt, "digest": digest(b), "size": b.len()});
    let manifest = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(OCI_CONFIG, &config),
        "layers": [desc(OCI_LAYER, &layer_a), desc(OCI_LAYER, &layer_b), desc(OCI_LAYER, &layer_c)],
    }))
    .unwrap();
    let manifest_digest = digest(&manifest);
    let r = put_manifest(&c, &s, repo, "v1", &manifest).await;
    assert_eq!(r.status(), StatusCode::CREATED, "manifest push: {r:?}");
    assert_eq!(header(&r, "docker-content-digest"), manifest_digest);

    // In flight at the crash: blob D closing a session with a PUT, blob E as a monolithic
    // POST ?digest=, and a second manifest; each has sent only part of its body.
    let layer_d = data(13, 8 * MIB);
    let layer_e = data(14, 8 * MIB);
    let d_digest = digest(&layer_d);
    let e_digest = digest(&layer_e);
    let d_location = start_upload(&c, &s, repo).await;
    let uploads_before: Vec<_> = std::fs::read_dir(data_dir.join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let octet = ("Content-Type", "application/octet-stream".to_string());
    let _d_sock = open_streaming_request(
        s.addr,
        "PUT",
        &with_digest(&d_location, &d_digest),
        std::slice::from_ref(&octet),
        layer_d.len(),
        &layer_d[..3 * MIB],
    );
    let _e_sock = open_streaming_request(
        s.addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={e_digest}"),
        &[octet],
        layer_e.len(),
        &layer_e[..3 * MIB],
    );
    let manifest2 = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(OCI_CONFIG, &config),
        "layers": [desc(OCI_LAYER, &layer_a)],
        "annotations": {"interrupted": "yes"},
    }))
    .unwrap();
    let manifest2_digest = digest(&manifest2);
    let _m_sock = open_streaming_request(
        s.addr,
        "PUT",
        &format!("/v2/{repo}/manifests/v2"),
        &[("Content-Type", OCI_MANIFEST.to_string())],
        manifest2.len(),
        &manifest2[..manifest2.len() / 2],
    );
    let d_file = upload_file(&s, &d_location);
    let uploads = data_dir.join("uploads");
    wait_until("D's and E's bytes to reach the upload area", || {
        let e_written = std::fs::read_dir(&uploads).unwrap().any(|e| {
            let e = e.unwrap();
            !uploads_before.contains(&e.file_name()) && e.metadata().unwrap().len() > 0
        });
        file_len(&d_file) > 0 && e_written
    });
    s.kill();
    drop(s);

    let s = Server::start(&data_dir);
    assert_tmp_empty(&data_dir);

    // Everything acknowledged is intact and byte-exact.
    for b in [&layer_a, &layer_b, &layer_c, &config] {
        assert_blob(&c, &s, repo, b).await;
    }
    for reference in ["v1", manifest_digest.as_str()] {
        let r = get_manifest(&c, &s, repo, reference).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "GET manifest {reference}: {r:?}"
        );
        assert_eq!(header(&r, "docker-content-digest"), manifest_digest);
        assert_eq!(r.bytes().await.unwrap()[..], manifest[..]);
    }
    let tags: Value = c
        .get(s.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!(["v1"]));

    // Nothing interrupted is visible.
    assert_blob_unknown(&c, &s, repo, &d_digest).await;
    assert_blob_unknown(&c, &s, repo, &e_digest).await;
    for reference in ["v2", manifest2_digest.as_str()] {
        let r = get_manifest(&c, &s, repo, reference).await;
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "GET manifest {reference}: {r:?}"
        );
        assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    }
    assert_blob_store_consistent(&data_dir);

    // The interrupted session either resumes from what was acknowledged (nothing) or is gone.
    let r = c.get(s.url(&d_location)).send().await.unwrap();
    match r.status() {
        StatusCode::NO_CONTENT => {
            assert_eq!(header(&r, "range"), "0-0", "no byte of D was acknowledged");
            let r = put_blob(&c, &s, &d_location, &d_digest, &layer_d).await;
            assert_eq!(r.status(), StatusCode::CREATED, "resumed D: {r:?}");
            assert_blob(&c, &s, repo, &layer_d).await;
        }
        StatusCode::NOT_FOUND => {
            assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
        }
        other => panic!("interrupted upload status: unexpected {other}"),
    }

    // The registry still takes pushes: E again, whole, and the second manifest.
    push_blob(&c, &s, repo, &layer_e).await;
    assert_blob(&c, &s, repo, &layer_e).await;
    let r = put_manifest(&c, &s, repo, "v2", &manifest2).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "manifest v2 after restart: {r:?}"
    );
    assert_tmp_empty(&data_dir);
    assert_blob_store_consistent(&data_dir);
}

/// SIGTERM while idle: the process exits 0 promptly, and the data dir serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_when_idle_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let c = client();
    let mut s = Server::start(&data_dir);
    let r = c.get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let blob = data(20, 64 * 1024);
    push_blob(&c, &s, "graceful/repo", &blob).await;
    drop(c); // no idle keep-alive connection from this client

    assert_eq!(
        unsafe { libc::kill(s.pid(), libc::SIGTERM) },
        0,
        "kill(SIGTERM)"
    );
    let status = wait_exit(&mut s.child, EXIT_TIMEOUT, &s.stderr);
    assert!(
        status.success(),
        "SIGTERM should exit 0, got {status}; stderr:\n{}",
        s.stderr.text()
    );
    drop(s);

    let s = Server::start(&data_dir);
    let c = client();
    assert_blob(&c, &s, "graceful/repo", &blob).await;
}

/// The listen address is taken: berth exits non-zero and says which address.
#[test]
fn port_in_use_fails_with_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (mut child, stderr) = spawn_berth([
        OsStr::new("serve"),
        OsStr::new("--addr"),
        OsStr::new(&addr),
        OsStr::new("--data-dir"),
        dir.path().join("data").as_os_str(),
    ]);
    let status = wait_exit(&mut child, EXIT_TIMEOUT, &stderr);
    let text = stderr.text();
    assert!(!status.success(), "berth should fail; stderr:\n{text}");
    assert!(
        text.contains(&addr),
        "the error should name {addr}; stderr:\n{text}"
    );
    assert!(
        !text.contains("berth ready"),
        "berth must not claim readiness; stderr:\n{text}"
    );
    drop(taken);
}

/// The data dir cannot be created or used: berth exits non-zero with a clear message.
#[test]
fn unusable_data_dir_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-regular-file");
    std::fs::write(&file, b"not a directory").unwrap();
    // Under a regular file, and the regular file itself.
    for data_dir in [file.join("data"), file.clone()] {
        let (mut child, stderr) = spawn_berth([
            OsStr::new("serve"),
            OsStr::new("--addr"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--data-dir"),
            data_dir.as_os_str(),
        ]);
        let status = wait_exit(&mut child, EXIT_TIMEOUT, &stderr);
        let text = stderr.text();
        assert!(
            !status.success(),
            "berth should fail for {}; stderr:\n{text}",
            data_dir.display()
        );
        assert!(
            text.contains("data dir") && text.contains(&*data_dir.to_string_lossy()),
            "the error should name the data dir {}; stderr:\n{text}",
            data_dir.display()
        );
        assert!(!text.contains("berth ready"), "stderr:\n{text}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}
