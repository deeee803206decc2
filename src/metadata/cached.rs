//! A read-through cache in front of any [`Metadata`]: the hot lookups of pulls (tag ->
//! manifest, digest -> manifest, repository blob link) are answered from memory.
//!
//! Every write through this decorator invalidates what it touches and bumps a generation
//! counter; a lookup only stores its result if no write happened while it read the backend,
//! so a racing reader can never re-insert a stale row. Only positive answers are cached.
//! Removals by other processes (the CLI's GC, retention, scrub, cache purge) move the
//! database's content generation, and [`CachedMetadata::watch`] drops everything cached when
//! it sees that, within [`POLL`]. Additions need nothing: only positive answers are cached.

use std::sync::Arc;

use async_trait::async_trait;

use super::lifecycle::LifecycleStore;
use super::memo::{Generation, Map};
use super::proxy::{
    CacheStore, CachedImage, DeleteBytes, PullRecord, RateBudget, UpstreamCounters, UpstreamState,
};
use super::{KeepTag, ManifestRecord, Metadata, NewManifest, Page, Quota, Result, UploadRecord};
use crate::oci::{Digest, RepoName, Tag, UploadId};

pub struct CachedMetadata<M: ?Sized> {
    inner: Arc<M>,
    /// False over a database other replicas share: their writes are not seen here, so
    /// every lookup goes to the database.
    caching: bool,
    generation: Generation,
    by_tag: Map<(RepoName, Tag), ManifestRecord>,
    by_digest: Map<(RepoName, Digest), ManifestRecord>,
    blobs: Map<(RepoName, Digest), u64>,
}

impl<M: ?Sized + Metadata> CachedMetadata<M> {
    pub fn new(inner: Arc<M>) -> Self {
        Self::with_caching(inner, true)
    }

    /// A decorator that caches only when `caching` is true (and otherwise only passes
    /// lookups and writes through).
    pub fn with_caching(inner: Arc<M>, caching: bool) -> Self {
        CachedMetadata {
            inner,
            caching,
            generation: Generation::default(),
            by_tag: Map::new(),
            by_digest: Map::new(),
            blobs: Map::new(),
        }
    }

    /// The undecorated backend, which also stores users and access settings.
    pub fn inner(&self) -> &Arc<M> {
        &self.inner
    }

    fn begin_read(&self) -> u64 {
        self.generation.current()
    }

    /// Caches a positive answer read while the generation was `seen`.
    fn fill<K: Eq + std::hash::Hash + Clone, V: Clone>(
        &self,
        map: &Map<K, V>,
        seen: u64,
        k: K,
        v: &Option<V>,
    ) {
        if let (true, Some(v)) = (self.caching, v) {
            self.generation.fill(map, seen, k, v.clone());
        }
    }

    /// Called after every write, before it returns.
    fn invalidated(&self) {
        self.generation.bump();
    }

    /// Drops every cached lookup: content was removed behind this cache's back.
    pub fn clear(&self) {
        self.invalidated();
        self.by_tag.clear();
        self.by_digest.clear();
        self.blobs.clear();
        self.invalidated();
    }
}

/// How often a server reads the database's content generation.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(100);

impl<M: ?Sized + Metadata + LifecycleStore> CachedMetadata<M> {
    /// Follows the database's content generation until `cancel`, dropping every cached
    /// lookup when it moves: a tag moved or deleted, a manifest deleted, a link removed or a
    /// blob quarantined by another process (the CLI's GC, retention or scrub) is never
    /// answered from memory for longer than [`POLL`].
    pub async fn watch(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        let mut seen = None;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.inner.content_generation().await {
                Ok(g) if seen == Some(g) => {}
                Ok(g) => {
                    if seen.is_some() {
                        self.clear();
                    }
                    seen = Some(g);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the content generation; dropping cached lookups");
                    self.clear();
                    seen = None;
                }
            }
        }
    }
}

#[async_trait]
impl<M: ?Sized + Metadata> Metadata for CachedMetadata<M> {
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let key = (repo.clone(), digest.clone());
        if let Some(s) = self.blobs.get(&key) {
            return Ok(Some(s));
        }
        let seen = self.begin_read();
        let r = self.inner.repo_blob(repo, digest).await?;
        self.fill(&self.blobs, seen, key, &r);
        Ok(r)
    }

    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        quota: Option<&Quota>,
    ) -> Result<()> {
        self.inner.link_blob(repo, digest, size, quota).await
    }

    async fn touch_idle_link(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.inner.touch_idle_link(repo, digest).await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.invalidated();
        self.blobs.remove(&(repo.clone(), digest.clone()));
        let r = self.inner.unlink_blob(repo, digest).await;
        self.invalidated();
        self.blobs.remove(&(repo.clone(), digest.clone()));
        r
    }

    async fn namespace_usage(&self, namespace: &str) -> Result<u64> {
        self.inner.namespace_usage(namespace).await
    }

    async fn namespace_holds(&self, namespace: &str, digest: &Digest) -> Result<bool> {
        self.inner.namespace_holds(namespace, digest).await
    }

    async fn create_upload(&self, id: &UploadId, repo: &RepoName) -> Result<()> {
        self.inner.create_upload(id, repo).await
    }

    async fn upload(&self, id: &UploadId) -> Result<Option<UploadRecord>> {
        self.inner.upload(id).await
    }

    async fn set_upload_size(&self, id: &UploadId, size: u64) -> Result<()> {
        self.inner.set_upload_size(id, size).await
    }

    async fn finish_upload(
        &self,
        id: &UploadId,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        quota: Option<&Quota>,
    ) -> Result<()> {
        self.inner
            .finish_upload(id, repo, digest, size, quota)
            .await
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool> {
        self.inner.delete_upload(id).await
    }

    async fn uploads(&self) -> Result<Vec<UploadRecord>> {
        self.inner.uploads().await
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        m: &NewManifest,
        tags: &[Tag],
        fixed: &[Tag],
    ) -> Result<()> {
        let r = self.inner.put_manifest(repo, m, tags, fixed).await;
        self.invalidated();
        for t in tags {
            self.by_tag.remove(&(repo.clone(), t.clone()));
        }
        r
    }

    async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>> {
        let key = (repo.clone(), digest.clone());
        if let Some(m) = self.by_digest.get(&key) {
            return Ok(Some(m));
        }
        let seen = self.begin_read();
        let r = self.inner.manifest_by_digest(repo, digest).await?;
        self.fill(&self.by_digest, seen, key, &r);
        Ok(r)
    }

    async fn manifest_by_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<ManifestRecord>> {
        let key = (repo.clone(), tag.clone());
        if let Some(m) = self.by_tag.get(&key) {
            return Ok(Some(m));
        }
        let seen = self.begin_read();
        let r = self.inner.manifest_by_tag(repo, tag).await?;
        self.fill(&self.by_tag, seen, key, &r);
        Ok(r)
    }

    async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        keep: KeepTag<'_>,
    ) -> Result<bool> {
        let forget = || {
            self.invalidated();
            self.by_digest.remove(&(repo.clone(), digest.clone()));
            self.blobs.remove(&(repo.clone(), digest.clone()));
            self.by_tag
                .retain(|(r, _), m| !(r == repo && &m.digest == digest));
        };
        // Before: readers stop being served the row; after: no reader that raced the delete
        // keeps a copy it read before the delete committed.
        forget();
        let r = self.inner.delete_manifest(repo, digest, keep).await;
        forget();
        r
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let key = (repo.clone(), tag.clone());
        self.invalidated();
        self.by_tag.remove(&key);
        let r = self.inner.delete_tag(repo, tag).await;
        self.invalidated();
        self.by_tag.remove(&key);
        r
    }

    async fn tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Option<Page>> {
        self.inner.tags(repo, last, limit).await
    }

    async fn repository_exists(&self, repo: &RepoName) -> Result<bool> {
        self.inner.repository_exists(repo).await
    }

    async fn repositories(&self, last: Option<&str>, limit: u32) -> Result<Page> {
        self.inner.repositories(last, limit).await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ManifestRecord>> {
        self.inner.referrers(repo, subject, artifact_type).await
    }
}

#[async_trait]
impl<M: ?Sized + Metadata + CacheStore> CacheStore for CachedMetadata<M> {
    async fn cache_manifest(
        &self,
        repo: &RepoName,
        m: &NewManifest,
        tag: Option<&Tag>,
    ) -> Result<()> {
        let r = self.inner.cache_manifest(repo, m, tag).await;
        self.invalidated();
        if let Some(t) = tag {
            self.by_tag.remove(&(repo.clone(), t.clone()));
        }
        r
    }

    async fn tag_checked_at(&self, repo: &RepoName, tag: &Tag) -> Result<Option<i64>> {
        self.inner.tag_checked_at(repo, tag).await
    }

    async fn mark_tag_checked(&self, repo: &RepoName, tag: &Tag, at: i64) -> Result<()> {
        self.inner.mark_tag_checked(repo, tag, at).await
    }

    async fn record_pulls(&self, pulls: &[PullRecord], at: i64) -> Result<()> {
        self.inner.record_pulls(pulls, at).await
    }

    async fn add_upstream_state(
        &self,
        name: &str,
        delta: &UpstreamCounters,
        budget: Option<&RateBudget>,
    ) -> Result<()> {
        self.inner.add_upstream_state(name, delta, budget).await
    }

    async fn upstream_states(&self) -> Result<Vec<UpstreamState>> {
        self.inner.upstream_states().await
    }

    async fn set_pin(&self, repo: &str, pinned: bool) -> Result<bool> {
        self.inner.set_pin(repo, pinned).await
    }

    async fn take_fill_lease(&self, digest: &Digest, holder: &str, ttl_secs: i64) -> Result<bool> {
        self.inner.take_fill_lease(digest, holder, ttl_secs).await
    }

    async fn release_fill_lease(&self, digest: &Digest, holder: &str) -> Result<()> {
        self.inner.release_fill_lease(digest, holder).await
    }

    async fn pins(&self) -> Result<Vec<String>> {
        self.inner.pins().await
    }

    async fn cached_images(&self, prefixes: &[String]) -> Result<Vec<CachedImage>> {
        self.inner.cached_images(prefixes).await
    }

    async fn cache_usage(&self, prefixes: &[String]) -> Result<u64> {
        self.inner.cache_usage(prefixes).await
    }

    async fn evict_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<Digest>> {
        let forget = || {
            self.invalidated();
            self.by_digest.remove(&(repo.clone(), digest.clone()));
            self.by_tag
                .retain(|(r, _), m| !(r == repo && &m.digest == digest));
            self.blobs.retain(|(r, _), _| r != repo);
        };
        forget();
        let r = self.inner.evict_manifest(repo, digest).await;
        forget();
        r
    }

    async fn delete_unreferenced(
        &self,
        candidates: &[Digest],
        delete: DeleteBytes<'_>,
    ) -> Result<Vec<Digest>> {
        let forget = || {
            self.invalidated();
            self.blobs.retain(|(_, d), _| !candidates.contains(d));
        };
        forget();
        let r = self.inner.delete_unreferenced(candidates, delete).await;
        forget();
        r
    }
}
