//! Blob pulls, deletes and cross-repository mounts. A blob is reachable through a repository
//! only if that repository holds a link to it.

use crate::oci::range::ByteRange;
use crate::oci::{Digest, RepoName, UploadId};
use crate::storage::{ByteStream, StorageError};

use super::{Registry, RegistryError, Result};

impl Registry {
    /// The size of a blob the repository holds.
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        self.meta
            .repo_blob(repo, digest)
            .await?
            .ok_or_else(|| RegistryError::BlobUnknown(digest.clone()))
    }

    /// Streams a blob the repository holds, or the inclusive `range` of it.
    pub async fn read_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        self.stat_blob(repo, digest).await?;
        match self.storage.read(digest, range).await {
            Ok(s) => Ok(s),
            Err(StorageError::NotFound) => {
                tracing::error!(%digest, repo = %repo, "metadata links a blob the store does not have");
                Err(RegistryError::BlobUnknown(digest.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the repository's link to a blob. The bytes stay until garbage collection
    /// finds nothing else referencing them.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.check_delete_enabled()?;
        if self.meta.unlink_blob(repo, digest).await? {
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown(digest.clone()))
        }
    }

    /// Commits a blob fetched from an upstream and spooled in upload `id` (its digest
    /// verified by the caller) and links it into `repo`: bytes durable first, then the link,
    /// then the check that a concurrent deletion did not remove the stored copy.
    pub async fn store_cached_blob(
        &self,
        repo: &RepoName,
        id: &UploadId,
        len: u64,
        digest: &Digest,
    ) -> Result<()> {
        let committed = self.storage.commit(id, len, digest).await?;
        self.meta.link_blob(repo, digest, len, None).await?;
        self.settle(id, len, digest, committed).await
    }

    /// Links a blob `from` holds into `repo`; `None` when `from` does not hold it.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>> {
        let Some(size) = self.meta.repo_blob(from, digest).await? else {
            return Ok(None);
        };
        if self.storage.stat(digest).await?.is_none() {
            return Ok(None);
        }
        let quota = self.quota(repo);
        self.meta
            .link_blob(repo, digest, size, quota.as_ref())
            .await
            .map_err(super::quota::refused)?;
        Ok(Some(size))
    }
}
