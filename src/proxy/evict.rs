//! The cache's size bound. When what the cache stores exceeds `max_bytes`, whole manifests
//! are evicted, least recently pulled first, until it is back under `low_watermark` of the
//! bound; pinned repositories are never touched. A blob goes only when nothing references
//! it any more (another cached image, a hosted repository): `CacheStore::delete_unreferenced`
//! checks that and deletes the bytes under the lock every link takes. A pull reading a blob
//! being deleted keeps reading (the file stays open until it is done); a pull that looks it
//! up afterwards finds it missing and fetches it again. A full cache evicts; it never
//! refuses a pull.

use crate::metadata::proxy::CachedImage;
use crate::oci::{Digest, RepoName};

use super::Proxy;

/// What an eviction pass removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    pub manifests: usize,
    pub blobs: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Proxy {
    /// Evicts down to the low watermark when the cache is over its bound.
    pub async fn enforce_bound(&self) -> anyhow::Result<Evicted> {
        let max = self.inner.max_bytes;
        if max == 0 {
            return Ok(Evicted::default());
        }
        let usage = self.inner.meta.cache_usage(&self.prefixes()).await?;
        if usage <= max {
            return Ok(Evicted {
                bytes_before: usage,
                bytes_after: usage,
                ..Evicted::default()
            });
        }
        let target = (max as f64 * self.inner.low_watermark) as u64;
        let report = self.evict_where(target, |_| true).await?;
        tracing::info!(
            manifests = report.manifests,
            blobs = report.blobs,
            before = report.bytes_before,
            after = report.bytes_after,
            bound = max,
            "evicted least recently pulled images from the cache"
        );
        Ok(report)
    }

    /// Evicts images that `pick` selects, least recently pulled first, until the cache
    /// holds at most `target` bytes (0: every selected image). Pinned ones stay.
    pub async fn evict_where(
        &self,
        target: u64,
        pick: impl Fn(&CachedImage) -> bool,
    ) -> anyhow::Result<Evicted> {
        let prefixes = self.prefixes();
        let meta = &self.inner.meta;
        let mut usage = meta.cache_usage(&prefixes).await?;
        let mut report = Evicted {
            bytes_before: usage,
            ..Evicted::default()
        };
        let mut images: Vec<CachedImage> = meta
            .cached_images(&prefixes)
            .await?
            .into_iter()
            .filter(|i| !i.pinned && pick(i))
            .collect();
        images.sort_by_key(|i| i.pulled_at.unwrap_or(i.created_at));
        for img in images {
            if target > 0 && usage <= target {
                break;
            }
            let Ok(repo) = img.repo.parse::<RepoName>() else {
                continue;
            };
            report.blobs += self.evict(&repo, &img.digest).await?;
            report.manifests += 1;
            usage = meta.cache_usage(&prefixes).await?;
        }
        report.bytes_after = usage;
        Ok(report)
    }

    /// Evicts one cached manifest; returns how many blobs were deleted with it.
    pub async fn evict(&self, repo: &RepoName, digest: &Digest) -> anyhow::Result<usize> {
        let meta = &self.inner.meta;
        let gone = meta.evict_manifest(repo, digest).await?;
        let delete = crate::storage::deleter(self.inner.hosted.storage().clone());
        Ok(meta.delete_unreferenced(&gone, &delete).await?.len())
    }
}
