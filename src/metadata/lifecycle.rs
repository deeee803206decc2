//! What the storage lifecycle keeps in the database besides GC's queries: leases (one GC,
//! retention run or scrub at a time across processes), small named state (the scrub's resume
//! point), namespace usage for quotas, the listings retention decides from, its guarded
//! deletions, and quarantine.

use async_trait::async_trait;

use super::proxy::DeleteBytes;
use super::Result;
use crate::oci::{Digest, RepoName};

/// A tag as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagInfo {
    pub name: String,
    pub digest: Digest,
    /// When the tag last moved to its current manifest.
    pub pushed_at: i64,
    pub pulled_at: Option<i64>,
}

/// A manifest as retention sees it: what keeps it, and what it keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestInfo {
    pub digest: Digest,
    pub created_at: i64,
    /// When it lost its last tag (`None`: never tagged, or tagged now).
    pub untagged_at: Option<i64>,
    pub tagged: bool,
    pub subject: Option<Digest>,
    /// Manifests it references (an index's children).
    pub children: Vec<Digest>,
}

#[async_trait]
pub trait LifecycleStore: Send + Sync + 'static {
    /// The counter every removal moves (see the `content_generation` table).
    async fn content_generation(&self) -> Result<i64>;

    /// Takes lease `name` for `ttl_secs` (or renews it, for the same holder). `Err` names
    /// the other holder when it is held.
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_secs: i64,
    ) -> Result<Result<(), String>>;
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;

    async fn state(&self, key: &str) -> Result<Option<String>>;
    /// Sets (or with `None` removes) a named value.
    async fn set_state(&self, key: &str, value: Option<&str>) -> Result<()>;
    /// The named value, set to `value` first if it had none: of several processes racing
    /// to set it, every one reads back the first one's.
    async fn state_or_init(&self, key: &str, value: &str) -> Result<String>;

    /// Every repository with tags or manifests.
    async fn content_repositories(&self) -> Result<Vec<String>>;
    async fn tag_infos(&self, repo: &RepoName) -> Result<Vec<TagInfo>>;
    async fn manifest_infos(&self, repo: &RepoName) -> Result<Vec<ManifestInfo>>;
    /// Deletes a tag only if it still points where retention saw it; `false` otherwise.
    async fn delete_tag_if(&self, repo: &RepoName, tag: &TagInfo) -> Result<bool>;
    /// Deletes a manifest only while no tag points at it and no manifest in its repository
    /// references it; `false` otherwise.
    async fn delete_untagged_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    /// Upload sessions open now.
    async fn upload_count(&self) -> Result<u64>;
    /// Takes the write lock and lets it go, writing nothing: the database takes writes.
    async fn check_writable(&self) -> Result<()>;
    /// How many blobs (not quarantined) come after `after` in digest order, and their bytes.
    async fn blob_totals(&self, after: Option<&str>) -> Result<(u64, u64)>;
    /// A blob's recorded size, if it has a row (quarantined or not).
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>>;
    /// Blobs after `after` in digest order (not quarantined), at most `limit`.
    async fn blobs_after(&self, after: Option<&str>, limit: u32) -> Result<Vec<(Digest, u64)>>;
    /// Marks a blob quarantined (answered as unknown until stored again) and, under the same
    /// write lock, moves its bytes aside with `set_aside`. A push that stores the blob again
    /// either links before (and then finds the bytes gone and stores its own) or after.
    async fn quarantine_blob(&self, digest: &Digest, set_aside: DeleteBytes<'_>) -> Result<()>;
}
