//! Blob storage: content-addressed committed blobs plus an upload area of resumable writes.
//!
//! Two small traits split by capability: [`BlobStore`] reads, stats, writes whole, deletes and
//! lists committed blobs by digest; [`UploadArea`] holds in-progress uploads that grow by
//! appends and become a blob only through an atomic [`UploadArea::commit`]. Nothing here knows
//! about repositories, HTTP or SQL. Every implementation runs the suite in `testsuite.rs`.

use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::oci::range::ByteRange;
use crate::oci::{Digest, UploadId};

pub mod fs;
pub mod memory;
pub mod object;
pub mod paths;
#[cfg(test)]
mod testsuite;

/// A stream of bytes going into or coming out of storage.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The blob or upload does not exist.
    #[error("not found")]
    NotFound,
    /// The upload holds fewer bytes than the caller says were acknowledged.
    #[error("upload holds {actual} bytes, fewer than the {expected} acknowledged")]
    ShortUpload { expected: u64, actual: u64 },
    /// Reading the incoming stream failed (the client went away): nothing was acknowledged.
    #[error("incoming stream failed: {0}")]
    Source(io::Error),
    /// The backend itself failed.
    #[error("storage I/O: {0}")]
    Io(#[from] io::Error),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Committed, immutable, content-addressed blobs.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The size of a committed blob, or `None`.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>>;

    /// Streams a committed blob, or the inclusive `range` of it.
    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream>;

    /// Stores `data` as blob `digest` durably and atomically; the caller has verified the
    /// digest. Writing a blob that exists already is a no-op.
    async fn put(&self, digest: &Digest, data: Bytes) -> Result<()>;

    /// Removes a committed blob; `false` when it did not exist.
    async fn delete(&self, digest: &Digest) -> Result<bool>;

    /// Removes many committed blobs, `parallel` requests at a time; a missing one counts as
    /// removed. One outcome per digest, in order. Backends with multi-object deletes send
    /// them in batches.
    async fn delete_many(&self, digests: &[Digest], parallel: usize) -> Vec<Result<()>> {
        use futures::StreamExt;
        let deletes: Vec<_> = digests.iter().map(|d| self.delete(d)).collect();
        futures::stream::iter(deletes)
            .buffered(parallel.max(1))
            .map(|r| r.map(|_| ()))
            .collect()
            .await
    }

    /// A URL the client may download the blob from directly (a presigned object-store URL),
    /// when this backend redirects downloads.
    async fn download_url(&self, _digest: &Digest) -> Result<Option<String>> {
        Ok(None)
    }

    /// Every committed blob's digest with when it was stored, in no particular order.
    async fn list(&self) -> Result<Vec<(Digest, SystemTime)>>;

    /// Moves a committed blob out of service, keeping its bytes aside for inspection (scrub
    /// found them corrupt); `false` when it did not exist. Afterwards the blob is absent.
    async fn quarantine(&self, digest: &Digest) -> Result<bool>;

    /// Checks that the store answers and takes writes, without touching any blob (for
    /// `/readyz`).
    async fn probe(&self) -> Result<()>;
}

/// In-progress uploads: invisible to [`BlobStore`] until committed.
#[async_trait]
pub trait UploadArea: Send + Sync + 'static {
    /// Creates an empty upload.
    async fn begin(&self, id: &UploadId) -> Result<()>;

    /// Drops anything past `offset` (bytes never acknowledged), appends `data`, and makes the
    /// result durable before returning the new length. On error nothing new is acknowledged
    /// and the next call with the same `offset` starts over from it.
    async fn append(&self, id: &UploadId, offset: u64, data: ByteStream) -> Result<u64>;

    /// Streams the first `len` bytes of an upload.
    async fn read_upload(&self, id: &UploadId, len: u64) -> Result<ByteStream>;

    /// Like [`UploadArea::append`], for an upload that others read while it grows (the
    /// pull-through cache streams a blob to its clients as it arrives): `progress(n)` is
    /// called whenever the first `n` bytes can be read with [`UploadArea::read_upload_at`].
    /// Durable, like `append`, only when it returns.
    async fn append_following(
        &self,
        id: &UploadId,
        offset: u64,
        data: ByteStream,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64> {
        let n = self.append(id, offset, data).await?;
        progress(n);
        Ok(n)
    }

    /// Streams `len` bytes of an upload from `start`.
    async fn read_upload_at(&self, id: &UploadId, start: u64, len: u64) -> Result<ByteStream> {
        use futures::StreamExt;
        let mut skip = start;
        let s = self.read_upload(id, start + len).await?;
        Ok(s.map(move |chunk| {
            let mut b = chunk?;
            let cut = skip.min(b.len() as u64) as usize;
            skip -= cut as u64;
            Ok(b.split_off(cut))
        })
        .filter(|c| futures::future::ready(!matches!(c, Ok(b) if b.is_empty())))
        .boxed())
    }

    /// Atomically turns the first `len` bytes of an upload into blob `digest` (which the
    /// caller has verified) and removes the upload. Durable when it returns. When the blob is
    /// stored already, the upload is kept ([`Committed::Existing`]): the caller links the blob
    /// in metadata, then cancels the upload, or commits it again if the stored copy was
    /// deleted meanwhile (see ARCHITECTURE.md, "Deleting blobs safely").
    async fn commit(&self, id: &UploadId, len: u64, digest: &Digest) -> Result<Committed>;

    /// Removes an upload; a missing one is not an error.
    async fn cancel(&self, id: &UploadId) -> Result<()>;

    /// Every upload present, for reconciliation at start-up.
    async fn list_uploads(&self) -> Result<Vec<UploadId>>;

    /// When an upload was last written to, if the backend knows; `None` when it does not
    /// exist (or its age is unknown, and then it is never treated as abandoned).
    async fn upload_modified(&self, _id: &UploadId) -> Result<Option<SystemTime>> {
        Ok(None)
    }
}

/// What a commit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Committed {
    /// The upload became the blob.
    Published,
    /// The blob was stored already; the upload is still there.
    Existing,
}

/// A complete backend: committed blobs and an upload area.
pub trait Storage: BlobStore + UploadArea {}
impl<T: BlobStore + UploadArea> Storage for T {}

/// A blob's bytes deleted, as a closure for the metadata store's guarded removals (which
/// call it under the write lock, once they know nothing links the blob).
pub fn deleter(
    storage: std::sync::Arc<dyn Storage>,
) -> impl Fn(Digest) -> futures::future::BoxFuture<'static, io::Result<()>> + Send + Sync {
    blob_op(storage, |s, d| Box::pin(async move { s.delete(&d).await }))
}

/// Many blobs' bytes deleted at once, as a closure for GC's guarded removals: one outcome
/// per digest, in order.
pub fn batch_deleter(
    storage: std::sync::Arc<dyn Storage>,
) -> impl Fn(Vec<Digest>, usize) -> futures::future::BoxFuture<'static, Vec<io::Result<()>>> + Send + Sync
{
    move |digests: Vec<Digest>, parallel: usize| {
        let storage = storage.clone();
        Box::pin(async move {
            storage
                .delete_many(&digests, parallel)
                .await
                .into_iter()
                .map(|r| r.map_err(|e| io::Error::other(e.to_string())))
                .collect()
        })
    }
}

/// A blob's bytes moved out of service (scrub found them corrupt), as a closure like
/// [`deleter`]'s.
pub fn quarantiner(
    storage: std::sync::Arc<dyn Storage>,
) -> impl Fn(Digest) -> futures::future::BoxFuture<'static, io::Result<()>> + Send + Sync {
    blob_op(storage, |s, d| {
        Box::pin(async move { s.quarantine(&d).await })
    })
}

type BlobOp =
    fn(std::sync::Arc<dyn Storage>, Digest) -> futures::future::BoxFuture<'static, Result<bool>>;

fn blob_op(
    storage: std::sync::Arc<dyn Storage>,
    op: BlobOp,
) -> impl Fn(Digest) -> futures::future::BoxFuture<'static, io::Result<()>> + Send + Sync {
    move |d: Digest| {
        let pending = op(storage.clone(), d);
        Box::pin(async move {
            pending
                .await
                .map(|_| ())
                .map_err(|e| io::Error::other(e.to_string()))
        })
    }
}

/// Reads a whole blob into memory, refusing any larger than `max` bytes. For manifests only.
pub async fn read_small(store: &dyn Storage, digest: &Digest, max: u64) -> Result<Bytes> {
    use futures::TryStreamExt;
    let size = store.stat(digest).await?.ok_or(StorageError::NotFound)?;
    if size > max {
        return Err(StorageError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("blob {digest} is {size} bytes, over the {max} byte limit"),
        )));
    }
    let mut out = Vec::with_capacity(size as usize);
    let mut s = store.read(digest, None).await?;
    while let Some(chunk) = s.try_next().await? {
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}
