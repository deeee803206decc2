//! The pull-through cache: a decorator over the registry services. Repositories named
//! `<upstream>/...` are mirrors of that upstream (read-only; what they hold came from it);
//! every other repository goes to the hosted registry untouched.
//!
//! - `route.rs`: the three ways in (prefix, `?ns=`, default upstream) to one cache key;
//! - `upstream.rs`: one upstream: HTTP client, auth, budget, circuit breaker;
//! - `fresh.rs`: manifests: tag TTL, `HEAD` revalidation, stale-if-error;
//! - `blobs.rs` and `fill.rs`: blobs, fetched once and streamed to every waiter, verified;
//! - `evict.rs`: the size bound, least recently pulled first, pins;
//! - `flights.rs`, `stats.rs`: single flight, and counters.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::config::ProxyConfig;
use crate::metadata::access::AccessStore;
use crate::metadata::proxy::UpstreamCounters;
use crate::metadata::{ManifestRecord, Page, Store, UploadRecord};
use crate::oci::{Digest, Reference, RepoName, Tag, UploadId};
use crate::registry::{
    AppendRequest, BlobReply, CacheStatus, ManifestPut, ManifestReply, Policy, Referrer, Registry,
    RegistryError, Result, Service,
};
use crate::storage::ByteStream;

mod blobs;
pub mod evict;
mod fill;
mod flights;
mod fresh;
pub mod images;
pub mod route;
mod stats;
pub mod upstream;

pub use route::{RouteError, Routed};
use stats::Counters;
use upstream::{Upstream, UpstreamError};

/// One configured upstream, as the proxy runs it.
pub struct UpstreamSlot {
    pub index: usize,
    pub upstream: Arc<Upstream>,
    pub counters: Counters,
}

impl std::ops::Deref for UpstreamSlot {
    type Target = Upstream;
    fn deref(&self) -> &Upstream {
        &self.upstream
    }
}

pub struct Inner {
    hosted: Arc<Registry>,
    meta: Arc<dyn Store>,
    access: Arc<dyn AccessStore>,
    upstreams: Vec<UpstreamSlot>,
    default_upstream: Option<usize>,
    max_bytes: u64,
    low_watermark: f64,
    fills: fill::Fills,
    /// This process's name on the fill leases other replicas see.
    holder: String,
    manifests: flights::Flights<(RepoName, String, bool), FlightResult>,
}

/// The outcome of a shared manifest flight (cloneable, unlike `RegistryError`).
type FlightResult = std::result::Result<(ManifestRecord, Option<Bytes>, CacheStatus), Failure>;

#[derive(Clone, Debug)]
pub enum Failure {
    NotFound(String),
    Upstream(UpstreamError),
    Invalid(String),
    Internal(String),
}

impl From<Failure> for RegistryError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::NotFound(m) => RegistryError::ManifestUnknown(m),
            Failure::Upstream(e) => upstream_error(e, "manifest"),
            Failure::Invalid(m) => RegistryError::Unavailable {
                message: m,
                retry_after: None,
            },
            Failure::Internal(m) => {
                RegistryError::Storage(crate::storage::StorageError::Io(std::io::Error::other(m)))
            }
        }
    }
}

/// What a client is told when the upstream cannot help and nothing usable is cached.
pub fn upstream_error(e: UpstreamError, what: &str) -> RegistryError {
    match e {
        UpstreamError::NotFound => {
            RegistryError::ManifestUnknown(format!("{what} not found upstream"))
        }
        UpstreamError::RateLimited { retry_after } => RegistryError::TooManyRequests {
            message: format!("the upstream registry is rate limiting; {what} not cached"),
            retry_after,
        },
        UpstreamError::Unavailable {
            reason,
            retry_after,
        } => RegistryError::Unavailable {
            message: format!("the upstream registry is unavailable ({reason}); {what} not cached"),
            retry_after,
        },
        UpstreamError::Refused { status } => RegistryError::Unavailable {
            message: format!(
                "the upstream registry refused berth's credentials ({status}); {what} not cached"
            ),
            retry_after: None,
        },
        UpstreamError::Protocol(m) => RegistryError::Unavailable {
            message: format!("the upstream registry answered badly ({m}); {what} not cached"),
            retry_after: None,
        },
    }
}

/// The pull-through cache around a hosted registry.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

/// A repository under an upstream prefix: the upstream and its name there.
pub struct Target<'a> {
    pub slot: &'a UpstreamSlot,
    pub remote: &'a str,
}

impl Proxy {
    pub fn new(
        cfg: &ProxyConfig,
        hosted: Arc<Registry>,
        access: Arc<dyn AccessStore>,
    ) -> anyhow::Result<Proxy> {
        let limit = hosted.policy().manifest_max_bytes;
        let upstreams = cfg
            .upstreams
            .iter()
            .enumerate()
            .map(|(index, u)| {
                Ok(UpstreamSlot {
                    index,
                    upstream: Arc::new(Upstream::new(u, limit)?),
                    counters: Counters::default(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let default_upstream = cfg
            .default_upstream
            .as_ref()
            .and_then(|d| upstreams.iter().position(|u| &u.name == d));
        Ok(Proxy {
            inner: Arc::new(Inner {
                meta: hosted.store().clone(),
                hosted,
                access,
                upstreams,
                default_upstream,
                max_bytes: cfg.max_bytes.0,
                low_watermark: cfg.low_watermark,
                fills: fill::Fills::default(),
                holder: format!("fill-{}-{}", std::process::id(), UploadId::new_random()),
                manifests: flights::Flights::new(),
            }),
        })
    }

    pub fn upstreams(&self) -> &[UpstreamSlot] {
        &self.inner.upstreams
    }

    pub fn hosted(&self) -> &Arc<Registry> {
        &self.inner.hosted
    }

    /// The size bound (`0`: unbounded).
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// Blob fetches under way now.
    pub fn fills_in_flight(&self) -> usize {
        self.inner.fills.in_flight()
    }

    /// The repository prefixes of the cache (`hub`, `ghcr`, ...).
    pub fn prefixes(&self) -> Vec<String> {
        self.inner
            .upstreams
            .iter()
            .map(|u| u.name.clone())
            .collect()
    }

    fn upstream_named(&self, name: &str) -> Option<&UpstreamSlot> {
        self.inner.upstreams.iter().find(|u| u.name == name)
    }

    fn upstream_for_host(&self, host: &str) -> Option<&UpstreamSlot> {
        self.inner
            .upstreams
            .iter()
            .find(|u| u.config.hosts.iter().any(|h| h == host))
    }

    fn default_upstream(&self) -> Option<&UpstreamSlot> {
        self.inner
            .default_upstream
            .map(|i| &self.inner.upstreams[i])
    }

    /// The upstream a local repository mirrors, if it is under an upstream prefix.
    pub fn target<'a>(&'a self, repo: &'a RepoName) -> Option<Target<'a>> {
        let (prefix, remote) = repo.as_str().split_once('/')?;
        Some(Target {
            slot: self.upstream_named(prefix)?,
            remote,
        })
    }

    fn read_only(&self, t: &Target<'_>) -> RegistryError {
        RegistryError::Denied(format!(
            "{} is a read-only mirror of {} ({}): push to a repository outside it",
            t.slot.name,
            t.slot.root(),
            t.remote
        ))
    }

    /// Seeds the upstreams' budgets from what earlier runs recorded.
    pub async fn restore(&self) -> anyhow::Result<()> {
        for s in self.inner.meta.upstream_states().await? {
            if let (Some(b), Some(u)) = (s.budget, self.upstream_named(&s.name)) {
                u.restore_budget(b);
            }
        }
        Ok(())
    }

    /// Writes counters and budgets to the metadata store.
    pub async fn flush_stats(&self) {
        for u in &self.inner.upstreams {
            let delta = u.counters.take();
            let budget = u.budget();
            if delta == UpstreamCounters::default() && budget.is_none() {
                continue;
            }
            if let Err(e) = self
                .inner
                .meta
                .add_upstream_state(&u.name, &delta, budget.as_ref())
                .await
            {
                u.counters.restore(&delta);
                tracing::warn!(upstream = %u.name, error = %e, "cannot record cache statistics");
            }
        }
    }

    /// Background work until `cancel`: statistics every 5 s, the size bound every 30 s.
    /// On `cancel` (the server has stopped answering), fills still under way get up to
    /// [`FILL_GRACE`] to be stored, so a blob a client just pulled is not lost to a restart.
    pub async fn run(self, cancel: CancellationToken) {
        let mut stats = tokio::time::interval(Duration::from_secs(5));
        let mut bound = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    let deadline = tokio::time::Instant::now() + FILL_GRACE;
                    while self.inner.fills.in_flight() > 0
                        && tokio::time::Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if self.inner.fills.in_flight() > 0 {
                        tracing::warn!(
                            fills = self.inner.fills.in_flight(),
                            "stopping with blob fetches unfinished: they are not cached"
                        );
                    }
                    self.flush_stats().await;
                    return;
                }
                _ = stats.tick() => self.flush_stats().await,
                _ = bound.tick() => {
                    if let Err(e) = self.enforce_bound().await {
                        tracing::warn!(error = %e, "cache eviction failed");
                    }
                }
            }
        }
    }
}

/// How long a stopping server waits for fills under way.
const FILL_GRACE: Duration = Duration::from_secs(10);

#[async_trait]
impl Service for Proxy {
    fn policy(&self) -> &Policy {
        self.inner.hosted.policy()
    }

    async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        body: bool,
    ) -> Result<ManifestReply> {
        match self.target(repo) {
            None => self.inner.hosted.manifest(repo, reference, body).await,
            Some(t) => self.cached_manifest(&t, repo, reference, body).await,
        }
    }

    async fn blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<&str>,
        body: bool,
    ) -> Result<BlobReply> {
        match self.target(repo) {
            None => self.inner.hosted.blob(repo, digest, range, body).await,
            Some(t) => self.cached_blob(&t, repo, digest, range, body).await,
        }
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page> {
        match self.target(repo) {
            None => self.inner.hosted.list_tags(repo, last, limit).await,
            Some(t) => self.cached_tags(&t, repo, last, limit).await,
        }
    }

    async fn catalog(
        &self,
        last: Option<&str>,
        limit: u32,
        visible: &(dyn for<'s> Fn(&'s str) -> bool + Send + Sync),
    ) -> Result<Page> {
        self.inner.hosted.catalog(last, limit, visible).await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        match self.target(repo) {
            None => {
                self.inner
                    .hosted
                    .referrers(repo, subject, artifact_type)
                    .await
            }
            Some(t) => {
                self.cached_referrers(&t, repo, subject, artifact_type)
                    .await
            }
        }
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        extra_tags: Vec<Tag>,
    ) -> Result<ManifestPut> {
        match self.target(repo) {
            None => {
                self.inner
                    .hosted
                    .put_manifest(repo, reference, content_type, body, extra_tags)
                    .await
            }
            Some(t) => Err(self.read_only(&t)),
        }
    }

    async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        match self.target(repo) {
            None => self.inner.hosted.delete_manifest(repo, reference).await,
            Some(t) => Err(self.read_only(&t)),
        }
    }

    async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        match self.target(repo) {
            None => self.inner.hosted.delete_blob(repo, digest).await,
            Some(t) => Err(self.read_only(&t)),
        }
    }

    async fn mount_blob(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>> {
        match self.target(repo) {
            None => self.inner.hosted.mount_blob(repo, from, digest).await,
            Some(t) => Err(self.read_only(&t)),
        }
    }

    async fn start_upload(&self, repo: &RepoName) -> Result<UploadRecord> {
        match self.target(repo) {
            None => self.inner.hosted.start_upload(repo).await,
            Some(t) => Err(self.read_only(&t)),
        }
    }

    async fn upload_status(&self, repo: &RepoName, id: &UploadId) -> Result<UploadRecord> {
        match self.target(repo) {
            None => self.inner.hosted.upload_status(repo, id).await,
            Some(t) => Err(self.read_only(&t)),
        }
    }

    async fn append_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        chunk: AppendRequest,
    ) -> Result<u64> {
        match self.target(repo) {
            None => self.inner.hosted.append_upload(repo, id, chunk).await,
            Some(t) => Err(self.read_only(&t)),
        }
    }

    async fn complete_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        last_chunk: Option<AppendRequest>,
    ) -> Result<u64> {
        match self.target(repo) {
            None => {
                self.inner
                    .hosted
                    .complete_upload(repo, id, digest, last_chunk)
                    .await
            }
            Some(t) => Err(self.read_only(&t)),
        }
    }

    async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        length: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        match self.target(repo) {
            None => self.inner.hosted.put_blob(repo, digest, length, body).await,
            Some(t) => Err(self.read_only(&t)),
        }
    }

    async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> Result<()> {
        match self.target(repo) {
            None => self.inner.hosted.cancel_upload(repo, id).await,
            Some(t) => Err(self.read_only(&t)),
        }
    }
}
