//! What the pull-through cache keeps besides cached content itself (which lives in the
//! ordinary tables, in repositories named `<upstream>/<repository>`): when each cached tag
//! was last revalidated, when content was last pulled, pins, and per-upstream counters and
//! rate-limit budgets. Behind the [`CacheStore`] trait so PostgreSQL implements it too.

use async_trait::async_trait;
use futures::future::BoxFuture;

use super::{NewManifest, Result};
use crate::oci::{Digest, RepoName, Tag};

/// One pull to record: of a manifest, by tag or by digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PullRecord {
    pub repo: RepoName,
    pub digest: Digest,
    pub tag: Option<Tag>,
}

/// Counters of one upstream, as deltas to add or as totals read back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamCounters {
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
    pub errors: u64,
    pub mismatches: u64,
    pub coalesced: u64,
    pub bytes_fetched: u64,
    pub bytes_served: u64,
}

impl UpstreamCounters {
    pub fn is_zero(&self) -> bool {
        *self == UpstreamCounters::default()
    }
}

/// The rate-limit budget an upstream last reported (`ratelimit-limit: 100;w=21600`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateBudget {
    pub limit: u64,
    pub remaining: u64,
    /// The window in seconds, when the upstream said.
    pub window: Option<u64>,
    /// When it was reported (seconds since the epoch).
    pub seen_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamState {
    pub name: String,
    pub counters: UpstreamCounters,
    pub budget: Option<RateBudget>,
    pub updated_at: i64,
}

/// A cached manifest, for listings and eviction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedImage {
    pub repo: String,
    pub digest: Digest,
    pub media_type: String,
    /// The manifest and the blobs it references that are stored, each counted once.
    pub bytes: u64,
    pub tags: Vec<String>,
    pub created_at: i64,
    pub pulled_at: Option<i64>,
    pub pinned: bool,
}

/// Deletes the stored bytes of a blob; called by [`CacheStore::delete_unreferenced`] while
/// no link to the blob can be made.
pub type DeleteBytes<'a> =
    &'a (dyn Fn(Digest) -> BoxFuture<'static, std::io::Result<()>> + Send + Sync);

#[async_trait]
pub trait CacheStore: Send + Sync + 'static {
    /// Records a manifest fetched from an upstream (its bytes already stored) without
    /// requiring what it references to be cached, and points `tag` at it as revalidated now.
    async fn cache_manifest(
        &self,
        repo: &RepoName,
        m: &NewManifest,
        tag: Option<&Tag>,
    ) -> Result<()>;
    /// When a tag of `repo` was last revalidated; `None` when it is not cached.
    async fn tag_checked_at(&self, repo: &RepoName, tag: &Tag) -> Result<Option<i64>>;
    async fn mark_tag_checked(&self, repo: &RepoName, tag: &Tag, at: i64) -> Result<()>;
    /// Records pulls (one write for many).
    async fn record_pulls(&self, pulls: &[PullRecord], at: i64) -> Result<()>;

    /// Adds to an upstream's counters and replaces its budget when one is given.
    async fn add_upstream_state(
        &self,
        name: &str,
        delta: &UpstreamCounters,
        budget: Option<&RateBudget>,
    ) -> Result<()>;
    async fn upstream_states(&self) -> Result<Vec<UpstreamState>>;

    /// Takes (or renews) the lease on fetching `digest` from an upstream for `ttl_secs`:
    /// `false` when another holder (another replica) has it unexpired.
    async fn take_fill_lease(&self, digest: &Digest, holder: &str, ttl_secs: i64) -> Result<bool>;
    async fn release_fill_lease(&self, digest: &Digest, holder: &str) -> Result<()>;

    /// `false` when nothing changed.
    async fn set_pin(&self, repo: &str, pinned: bool) -> Result<bool>;
    async fn pins(&self) -> Result<Vec<String>>;

    /// Every cached manifest in repositories under these prefixes (`hub/`, ...).
    async fn cached_images(&self, prefixes: &[String]) -> Result<Vec<CachedImage>>;
    /// Bytes stored for repositories under these prefixes, each blob counted once.
    async fn cache_usage(&self, prefixes: &[String]) -> Result<u64>;
    /// Removes a cached manifest with its tags and the repository's links to blobs no other
    /// manifest there references; returns the digests nothing references any more.
    async fn evict_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<Digest>>;
    /// Of `candidates`, forgets each blob that no repository links and no manifest references,
    /// deleting its bytes with `delete` before its record goes, under the write lock that
    /// every link takes: no link can be made to a blob between the check and the deletion.
    /// A writer that found the bytes present before and links after notices they are gone
    /// and stores them again (see ARCHITECTURE.md, "Deleting blobs safely").
    async fn delete_unreferenced(
        &self,
        candidates: &[Digest],
        delete: DeleteBytes<'_>,
    ) -> Result<Vec<Digest>>;
}
