//! TLS with rustls: the certificate and key come from PEM files and are reloaded, without a
//! restart, when either file changes; or, for development, from a CA generated under
//! `<data_dir>/tls/` whose certificate the user hands to docker. Handshakes run in their own
//! tasks so a slow client never holds up the accept loop.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::auth::jwt::write_private;
use crate::config::Config;
use crate::http::Lingering;

/// How often the certificate files are checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a certificate chain and its private key.
fn load(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("invalid PEM in {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
    let der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a private key from {}", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .with_context(|| format!("unsupported private key in {}", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .with_context(|| format!("{} does not belong to {}", key.display(), cert.display()))?;
    Ok(ck)
}

/// Serves the current certificate; [`Tls::watch`] swaps in new ones.
#[derive(Debug)]
struct Resolver(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

/// TLS as configured: the acceptor and what is needed to reload it.
pub struct Tls {
    acceptor: TlsAcceptor,
    resolver: Arc<Resolver>,
    cert: PathBuf,
    key: PathBuf,
}

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Tls {
    /// TLS from the configuration, or `None` when the server speaks plain HTTP. `local` is
    /// the bound address, named in a self-signed certificate and in the advice logged.
    pub fn from_config(cfg: &Config, local: SocketAddr) -> anyhow::Result<Option<Tls>> {
        let (cert, key) = match (&cfg.tls.cert, &cfg.tls.key) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ if cfg.tls.self_signed => self_signed(&cfg.data_dir.join("tls"), local)?,
            _ => return Ok(None),
        };
        let resolver = Arc::new(Resolver(RwLock::new(Arc::new(load(&cert, &key)?))));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut sc = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Tls {
            acceptor: TlsAcceptor::from(Arc::new(sc)),
            resolver,
            cert,
            key,
        }))
    }

    /// Reloads the certificate whenever its files change, until `cancel`. A pair that does
    /// not load (say, the certificate is replaced before the key) keeps the old one serving.
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        let mut seen = (stamp(&self.cert), stamp(&self.key));
        let mut tick = tokio::time::interval(RELOAD_POLL);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = (stamp(&self.cert), stamp(&self.key));
            if now == seen {
                continue;
            }
            match load(&self.cert, &self.key) {
                Ok(ck) => {
                    *self.resolver.0.write() = Arc::new(ck);
                    seen = now;
                    tracing::info!(cert = %self.cert.display(), "reloaded the TLS certificate");
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "TLS certificate changed but does not load; still serving the previous one")
                }
            }
        }
    }

    /// Wraps `tcp` so that it yields established TLS connections.
    pub fn listener(self: &Arc<Self>, tcp: TcpListener) -> anyhow::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = self.acceptor.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let handshake = async {
                        if speaks_plain_http(&stream).await {
                            refuse_plain_http(stream, peer).await;
                            return None;
                        }
                        Some(acceptor.accept(Lingering::new(stream)).await)
                    };
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Some(Ok(tls))) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Some(Err(e))) => {
                            tracing::debug!(client = %peer, error = %e, "TLS handshake failed")
                        }
                        Ok(None) => {}
                        Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local, task })
    }
}

/// True when the client's first byte is not a TLS handshake record but a letter, as the
/// method of an HTTP request is.
async fn speaks_plain_http(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if first[0].is_ascii_uppercase())
}

/// Answers a plain HTTP request sent to the TLS port as Go's and nginx's servers do, so a
/// misconfigured client (say, docker with the registry among its insecure registries) shows
/// the real problem instead of a TLS alert it cannot parse.
async fn refuse_plain_http(stream: TcpStream, peer: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BODY: &str = "Client sent an HTTP request to an HTTPS server.\n";
    let mut conn = Lingering::new(stream);
    // Read the request head first, so the answer is not racing a half-sent request.
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while head.len() < 64 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let answer = format!(
        "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    tracing::info!(client = %peer, "plain HTTP request on the TLS port; answered 400");
    if conn.write_all(answer.as_bytes()).await.is_ok() {
        let _ = conn.shutdown().await;
    }
}

/// A listener of TLS connections whose handshakes are done.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<Lingering<TcpStream>>, SocketAddr)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<Lingering<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

fn hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim();
    (!h.is_empty()).then(|| h.to_string())
}

/// The certificate and key of the development CA under `dir`, made on first use: a CA
/// certificate `ca.crt` (its key is never stored) and a server certificate for localhost,
/// the loopback addresses, this host's name and the listen address.
fn self_signed(dir: &Path, local: SocketAddr) -> anyhow::Result<(PathBuf, PathBuf)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let (ca_path, cert, key) = (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    );
    if !(ca_path.exists() && cert.exists() && key.exists()) {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        names.extend(hostname());
        if !local.ip().is_unspecified() && !names.contains(&local.ip().to_string()) {
            names.push(local.ip().to_string());
        }
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "berth development CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(names)?;
        leaf.distinguished_name.push(DnType::CommonName, "berth");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.use_authority_key_identifier_extension = true;
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // The key first and the CA last: a crash in between leaves ca.crt absent, so the
        // next start makes a fresh set.
        write_private(&key, leaf_key.serialize_pem().as_bytes())?;
        write_private(&cert, leaf_cert.pem().as_bytes())?;
        write_private(&ca_path, ca_cert.pem().as_bytes())?;
    }
    let host = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => "localhost".to_string(),
        IpAddr::V6(ip) if ip.is_unspecified() => "localhost".to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let certs_d = dir.join("certs.d").join(format!("{host}:{}", local.port()));
    std::fs::create_dir_all(&certs_d)?;
    std::fs::copy(&ca_path, certs_d.join("ca.crt"))?;
    tracing::warn!(
        ca = %ca_path.display(),
        "serving TLS with a self-signed development CA; trust it with: \
         sudo mkdir -p /etc/docker/certs.d/{host}:{port} && sudo cp {ca} /etc/docker/certs.d/{host}:{port}/ca.crt \
         (podman and skopeo: /etc/containers/certs.d/{host}:{port}/ca.crt, or --cert-dir {dir})",
        port = local.port(),
        ca = ca_path.display(),
        dir = certs_d.display(),
    );
    Ok((cert, key))
}
