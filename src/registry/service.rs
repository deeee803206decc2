//! The registry's API as the HTTP layer calls it: one trait, implemented by the hosted
//! [`Registry`] and by decorators over it (the pull-through cache), so that handlers never
//! care where content comes from.

use async_trait::async_trait;
use bytes::Bytes;

use crate::metadata::{ManifestRecord, Page, UploadRecord};
use crate::oci::range::{evaluate_range, ByteRange, RangeRequest};
use crate::oci::{Digest, Reference, RepoName, Tag, UploadId};
use crate::storage::ByteStream;

use super::{AppendRequest, ManifestPut, Policy, Referrer, Registry, RegistryError, Result};

/// Where a proxied answer came from (the `X-Berth-Cache` header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache, fresh.
    Hit,
    /// Fetched from the upstream for this request.
    Miss,
    /// Served from the cache because the upstream could not be asked (down, refusing,
    /// rate limited, out of budget).
    Stale,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
        }
    }
}

/// A manifest as answered to `GET` (with bytes) or `HEAD` (without).
pub struct ManifestReply {
    pub record: ManifestRecord,
    pub bytes: Option<Bytes>,
    /// `None` for hosted content.
    pub cache: Option<CacheStatus>,
}

/// A blob as answered to `GET` (with a body) or `HEAD` (without).
pub struct BlobReply {
    pub size: u64,
    /// The part served when a satisfiable range was asked for.
    pub part: Option<ByteRange>,
    pub body: Option<ByteStream>,
    pub cache: Option<CacheStatus>,
    /// Where the client downloads the bytes instead (a presigned object-store URL), when
    /// the storage redirects downloads; then there is no body.
    pub redirect: Option<String>,
}

/// The range a `GET` asks for, from its `Range` header, against a blob of `size` bytes.
pub fn range_of(header: Option<&str>, size: u64) -> Result<Option<ByteRange>> {
    match header.map(|h| evaluate_range(h, size)) {
        None | Some(RangeRequest::Full) => Ok(None),
        Some(RangeRequest::Partial(r)) => Ok(Some(r)),
        Some(RangeRequest::Unsatisfiable) => Err(RegistryError::RangeUnsatisfiable { size }),
    }
}

#[async_trait]
pub trait Service: Send + Sync + 'static {
    fn policy(&self) -> &Policy;

    async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        body: bool,
    ) -> Result<ManifestReply>;
    /// `range` is the request's `Range` header, if any (ignored without a body).
    async fn blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<&str>,
        body: bool,
    ) -> Result<BlobReply>;
    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page>;
    async fn catalog(
        &self,
        last: Option<&str>,
        limit: u32,
        visible: &(dyn for<'s> Fn(&'s str) -> bool + Send + Sync),
    ) -> Result<Page>;
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>>;

    async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        extra_tags: Vec<Tag>,
    ) -> Result<ManifestPut>;
    async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()>;
    async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()>;
    /// Links a blob `from` holds into `repo`; `None` when `from` does not hold it.
    async fn mount_blob(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>>;

    async fn start_upload(&self, repo: &RepoName) -> Result<UploadRecord>;
    async fn upload_status(&self, repo: &RepoName, id: &UploadId) -> Result<UploadRecord>;
    async fn append_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        chunk: AppendRequest,
    ) -> Result<u64>;
    async fn complete_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        last_chunk: Option<AppendRequest>,
    ) -> Result<u64>;
    async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        length: Option<u64>,
        body: ByteStream,
    ) -> Result<u64>;
    async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> Result<()>;
}

#[async_trait]
impl Service for Registry {
    fn policy(&self) -> &Policy {
        Registry::policy(self)
    }

    async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        body: bool,
    ) -> Result<ManifestReply> {
        let (record, bytes) = if body {
            let m = self.get_manifest(repo, reference).await?;
            self.note_pull(repo, &m.record.digest, reference.tag());
            (m.record, Some(m.bytes))
        } else {
            (self.manifest_record(repo, reference).await?, None)
        };
        Ok(ManifestReply {
            record,
            bytes,
            cache: None,
        })
    }

    async fn blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<&str>,
        body: bool,
    ) -> Result<BlobReply> {
        if !body {
            // A HEAD is how pushers ask whether to upload: a blob they are told exists must
            // outlive GC's grace from now on, until their manifest references it.
            self.meta.touch_idle_link(repo, digest).await?;
        }
        let size = self.stat_blob(repo, digest).await?;
        if body && size > 0 {
            if let Some(url) = self.storage.download_url(digest).await? {
                return Ok(BlobReply {
                    size,
                    part: None,
                    body: None,
                    cache: None,
                    redirect: Some(url),
                });
            }
        }
        let part = if body { range_of(range, size)? } else { None };
        let len = part.map_or(size, |r| r.len());
        let body = if body && len > 0 {
            Some(self.read_blob(repo, digest, part).await?)
        } else {
            None
        };
        Ok(BlobReply {
            size,
            part,
            body,
            cache: None,
            redirect: None,
        })
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page> {
        Registry::list_tags(self, repo, last, limit).await
    }

    async fn catalog(
        &self,
        last: Option<&str>,
        limit: u32,
        visible: &(dyn for<'s> Fn(&'s str) -> bool + Send + Sync),
    ) -> Result<Page> {
        Registry::catalog(self, last, limit, visible).await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        Registry::referrers(self, repo, subject, artifact_type).await
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        extra_tags: Vec<Tag>,
    ) -> Result<ManifestPut> {
        Registry::put_manifest(self, repo, reference, content_type, body, extra_tags).await
    }

    async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        Registry::delete_manifest(self, repo, reference).await
    }

    async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        Registry::delete_blob(self, repo, digest).await
    }

    async fn mount_blob(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>> {
        Registry::mount_blob(self, repo, from, digest).await
    }

    async fn start_upload(&self, repo: &RepoName) -> Result<UploadRecord> {
        Registry::start_upload(self, repo).await
    }

    async fn upload_status(&self, repo: &RepoName, id: &UploadId) -> Result<UploadRecord> {
        Registry::upload_status(self, repo, id).await
    }

    async fn append_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        chunk: AppendRequest,
    ) -> Result<u64> {
        Registry::append_upload(self, repo, id, chunk).await
    }

    async fn complete_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        last_chunk: Option<AppendRequest>,
    ) -> Result<u64> {
        Registry::complete_upload(self, repo, id, digest, last_chunk).await
    }

    async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        length: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        Registry::put_blob(self, repo, digest, length, body).await
    }

    async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> Result<()> {
        Registry::cancel_upload(self, repo, id).await
    }
}
