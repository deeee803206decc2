//! Registry metadata: repositories, blob links, manifests, tags, referrers and upload
//! sessions, behind the [`Metadata`] trait so PostgreSQL can implement it beside SQLite.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::oci::{Digest, RepoName, Tag, UploadId};

pub mod access;
pub mod audit;
mod busy;
pub mod cached;
pub mod cached_access;
pub mod copy;
pub mod gc;
pub mod lifecycle;
pub mod logins;
mod memo;
pub mod policies;
pub mod postgres;
pub mod proxy;
pub mod sqlite;
pub mod usage;
pub mod users;
pub mod webhooks;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// A manifest references blobs or manifests the repository does not hold.
    #[error("referenced content unknown to the repository: {0:?}")]
    MissingReferences(Vec<Digest>),
    /// A manifest's descriptor states a size other than the stored blob's.
    #[error("descriptor for {digest} says {stated} bytes but the blob has {actual}")]
    SizeMismatch {
        digest: Digest,
        stated: u64,
        actual: u64,
    },
    /// An immutable tag would move off the manifest it points at (or lose it).
    #[error("tag {tag} is immutable and points at {digest}")]
    TagFixed { tag: String, digest: Digest },
    /// Linking a blob would take a namespace past its quota.
    #[error("namespace {namespace} is over its quota")]
    QuotaExceeded {
        namespace: String,
        limit: u64,
        used: u64,
        size: u64,
    },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
}

pub type Result<T, E = MetadataError> = std::result::Result<T, E>;

/// Whether a tag (by name) must stay: a manifest it points at is not deleted.
pub type KeepTag<'a> = &'a (dyn Fn(&str) -> bool + Send + Sync);

/// A namespace's storage bound: the deduplicated bytes of every blob and manifest linked into
/// its repositories. Checked in the transaction that links a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    pub namespace: String,
    pub limit: u64,
}

/// A manifest as the registry knows it in one repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A reference a manifest makes, checked and recorded when it is put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestRef {
    /// A blob (config or layer) with the size its descriptor states.
    Blob { digest: Digest, size: u64 },
    /// A child manifest of an index.
    Manifest { digest: Digest, size: u64 },
}

#[derive(Clone, Debug)]
pub struct NewManifest {
    pub record: ManifestRecord,
    pub refs: Vec<ManifestRef>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: UploadId,
    pub repo: RepoName,
    /// Bytes acknowledged to the client, all durable in the upload area.
    pub size: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One page of a lexically ordered listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    /// True when items after the last one exist.
    pub more: bool,
}

#[async_trait]
pub trait Metadata: Send + Sync + 'static {
    /// The size of a blob the repository may serve (linked blob or manifest), or `None`.
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>>;

    /// Links a committed blob into a repository, creating both records as needed; refused
    /// with [`MetadataError::QuotaExceeded`] when that takes `quota`'s namespace past it.
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        quota: Option<&Quota>,
    ) -> Result<()>;

    /// Restarts GC's grace for a link its repository does not reference yet: a client that
    /// was just told the blob exists (and so will not upload it) is about to reference it.
    async fn touch_idle_link(&self, repo: &RepoName, digest: &Digest) -> Result<()>;

    /// Removes a repository's link to a blob; `false` when there was none.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    /// Bytes the namespace's repositories hold (blobs linked, manifests), each counted once.
    async fn namespace_usage(&self, namespace: &str) -> Result<u64>;
    /// Whether one of the namespace's repositories holds the blob already.
    async fn namespace_holds(&self, namespace: &str, digest: &Digest) -> Result<bool>;

    async fn create_upload(&self, id: &UploadId, repo: &RepoName) -> Result<()>;
    async fn upload(&self, id: &UploadId) -> Result<Option<UploadRecord>>;
    async fn set_upload_size(&self, id: &UploadId, size: u64) -> Result<()>;
    /// In one transaction: link the committed blob and end the upload session (refused,
    /// leaving both as they were, when `quota` would be exceeded).
    async fn finish_upload(
        &self,
        id: &UploadId,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        quota: Option<&Quota>,
    ) -> Result<()>;
    async fn delete_upload(&self, id: &UploadId) -> Result<bool>;
    /// Every upload session, for expiry and reconciliation.
    async fn uploads(&self) -> Result<Vec<UploadRecord>>;

    /// Records a manifest (whose bytes are already stored) and points `tags` at it, after
    /// checking in the same transaction that everything it references is in the repository,
    /// and that none of `tags` also in `fixed` (immutable) points elsewhere already.
    async fn put_manifest(
        &self,
        repo: &RepoName,
        m: &NewManifest,
        tags: &[Tag],
        fixed: &[Tag],
    ) -> Result<()>;
    async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>>;
    async fn manifest_by_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<ManifestRecord>>;
    /// Deletes a manifest and every tag pointing at it; `false` when it was unknown. Refused
    /// with [`MetadataError::TagFixed`], in the same transaction, when `keep` holds for one
    /// of those tags.
    async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        keep: KeepTag<'_>,
    ) -> Result<bool>;
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool>;

    /// Tags after `last`, at most `limit`; `None` when the repository is unknown.
    async fn tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Option<Page>>;
    /// True when the repository holds any manifest or blob.
    async fn repository_exists(&self, repo: &RepoName) -> Result<bool>;
    /// Repository names after `last`, at most `limit`.
    async fn repositories(&self, last: Option<&str>, limit: u32) -> Result<Page>;
    /// Manifests in `repo` whose subject is `subject`, optionally of one artifact type.
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ManifestRecord>>;
}

/// Everything the registry services keep: content metadata and the cache's state.
pub trait Store: Metadata + proxy::CacheStore {}
impl<T: Metadata + proxy::CacheStore> Store for T {}

/// What garbage collection, retention and scrub read and write.
pub trait LifecycleDb:
    Metadata + proxy::CacheStore + gc::GcStore + lifecycle::LifecycleStore + usage::UsageStore
{
}
impl<T> LifecycleDb for T where
    T: Metadata + proxy::CacheStore + gc::GcStore + lifecycle::LifecycleStore + usage::UsageStore
{
}

/// A whole metadata backend, SQLite or PostgreSQL, chosen by configuration at start.
#[async_trait]
pub trait Backend:
    Store
    + LifecycleDb
    + users::UserStore
    + access::AccessStore
    + audit::AuditStore
    + webhooks::WebhookStore
    + policies::PolicyStore
    + logins::LoginEventStore
{
    /// True when other replicas share this database: nothing read may be cached.
    fn shared(&self) -> bool;
    async fn close(&self);
}

#[async_trait]
impl Backend for sqlite::SqliteMetadata {
    fn shared(&self) -> bool {
        sqlite::SHARED
    }
    async fn close(&self) {
        sqlite::SqliteMetadata::close(self).await
    }
}

#[async_trait]
impl Backend for postgres::PgMetadata {
    fn shared(&self) -> bool {
        postgres::SHARED
    }
    async fn close(&self) {
        postgres::PgMetadata::close(self).await
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch as an RFC 3339 UTC time, for listings and API responses.
pub fn rfc3339(t: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}
