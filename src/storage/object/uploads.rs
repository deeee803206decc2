//! Uploads in the object store: a marker object, then one object per appended chunk named by
//! its start offset. A commit with a single chunk that is the whole blob is a server-side
//! copy; any other is streamed once through this replica into one object (a multipart upload
//! when large), since S3 cannot concatenate parts smaller than 5 MiB.

use std::time::SystemTime;

use async_trait::async_trait;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, PutPayload};

use super::{io, is_not_found, ObjectStorage};
use crate::oci::{Digest, UploadId};
use crate::storage::{ByteStream, Committed, Result, StorageError, UploadArea};

const MARKER: &str = "started";

/// How far a followed upload grows between the points readers may read to.
const FOLLOW_STEP: usize = 8 << 20;

/// A chunk object of an upload.
struct Chunk {
    key: Path,
    start: u64,
    size: u64,
}

/// What the store holds of one upload.
struct Listing {
    exists: bool,
    /// Chunks in offset order.
    chunks: Vec<Chunk>,
    last_modified: Option<SystemTime>,
}

impl Listing {
    /// The pieces of chunks that make up the first `len` bytes, as (chunk, from, to) within
    /// each chunk, or the length they do reach. Each position is read from the chunk written
    /// last that covers it: the one with the greatest start (an append drops every chunk at
    /// or past its offset before it writes its own).
    fn covering(&self, len: u64) -> std::result::Result<Vec<(&Chunk, u64, u64)>, u64> {
        let mut out = Vec::new();
        let mut at = 0u64;
        while at < len {
            let Some(c) = self
                .chunks
                .iter()
                .rev()
                .find(|c| c.start <= at && c.start + c.size > at)
            else {
                return Err(at);
            };
            let next = self
                .chunks
                .iter()
                .map(|c| c.start)
                .find(|&s| s > at)
                .unwrap_or(u64::MAX);
            let end = (c.start + c.size).min(next).min(len);
            out.push((c, at - c.start, end - c.start));
            at = end;
        }
        Ok(out)
    }
}

fn short(expected: u64, actual: u64) -> StorageError {
    StorageError::ShortUpload { expected, actual }
}

impl ObjectStorage {
    fn upload_dir(&self, id: &UploadId) -> Path {
        self.key(&["uploads", id.as_str()])
    }

    async fn listing(&self, id: &UploadId) -> Result<Listing> {
        let dir = self.upload_dir(id);
        let objects: Vec<ObjectMeta> = self
            .store
            .list(Some(&dir))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<std::result::Result<_, _>>()
            .map_err(io)?;
        let mut listing = Listing {
            exists: false,
            chunks: Vec::new(),
            last_modified: None,
        };
        for o in objects {
            let modified = SystemTime::from(o.last_modified);
            listing.last_modified = listing.last_modified.max(Some(modified));
            let name = o.location.filename().unwrap_or_default();
            if name == MARKER {
                listing.exists = true;
            } else if let Ok(start) = name.parse::<u64>() {
                listing.chunks.push(Chunk {
                    key: o.location.clone(),
                    start,
                    size: o.size,
                });
            }
        }
        listing.chunks.sort_by_key(|c| c.start);
        Ok(listing)
    }

    /// The upload's listing, or [`StorageError::NotFound`] when it was never begun (or is
    /// gone).
    async fn existing(&self, id: &UploadId) -> Result<Listing> {
        let l = self.listing(id).await?;
        if l.exists {
            Ok(l)
        } else {
            Err(StorageError::NotFound)
        }
    }

    /// Deletes an upload's chunks, then its marker: a half-done removal still lists as an
    /// upload and is retried by reconciliation.
    async fn remove(&self, id: &UploadId, listing: Listing) -> Result<()> {
        self.delete_all(listing.chunks.into_iter().map(|c| c.key).collect())
            .await?;
        match self.store.delete(&self.upload_dir(id).child(MARKER)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    /// Streams the first `len` bytes of an upload, chunk after chunk.
    async fn stream_upload(&self, listing: &Listing, len: u64) -> Result<ByteStream> {
        let parts = listing.covering(len).map_err(|actual| short(len, actual))?;
        let parts: Vec<(Path, u64, u64)> = parts
            .into_iter()
            .map(|(c, from, to)| (c.key.clone(), from, to))
            .collect();
        let store = self.store.clone();
        let s = futures::stream::iter(parts)
            .then(move |(key, from, to)| {
                let store = store.clone();
                async move {
                    let opts = object_store::GetOptions {
                        range: Some(object_store::GetRange::Bounded(from..to)),
                        ..Default::default()
                    };
                    store
                        .get_opts(&key, opts)
                        .await
                        .map(|got| got.into_stream())
                        .map_err(std::io::Error::other)
                }
            })
            .map(|r| match r {
                Ok(s) => s.map(|b| b.map_err(std::io::Error::other)).boxed(),
                Err(e) => futures::stream::once(async { Err(e) }).boxed(),
            })
            .flatten()
            .boxed();
        Ok(s)
    }
}

#[async_trait]
impl UploadArea for ObjectStorage {
    async fn begin(&self, id: &UploadId) -> Result<()> {
        let key = self.upload_dir(id).child(MARKER);
        self.store
            .put(&key, PutPayload::default())
            .await
            .map_err(io)?;
        Ok(())
    }

    async fn append(&self, id: &UploadId, offset: u64, data: ByteStream) -> Result<u64> {
        let listing = self.existing(id).await?;
        if let Err(actual) = listing.covering(offset) {
            return Err(short(offset, actual));
        }
        // Chunks from `offset` on were never acknowledged: they go before the new one lands,
        // so that a later listing never mixes the two.
        let stale: Vec<Path> = listing
            .chunks
            .iter()
            .filter(|c| c.start >= offset)
            .map(|c| c.key.clone())
            .collect();
        self.delete_all(stale).await?;
        let key = self.upload_dir(id).child(format!("{offset:020}"));
        let mut data = data.peekable();
        if std::pin::Pin::new(&mut data).peek().await.is_none() {
            return Ok(offset);
        }
        let n = self.write_object(&key, data.boxed()).await?;
        if n == 0 {
            // An empty chunk adds nothing; it must not shadow the next real one.
            let _ = self.store.delete(&key).await;
        }
        Ok(offset + n)
    }

    /// Written as a chunk object every [`FOLLOW_STEP`] bytes, each announced once stored,
    /// so readers stream a growing upload (a cache fill) a step behind the writer.
    async fn append_following(
        &self,
        id: &UploadId,
        offset: u64,
        mut data: ByteStream,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64> {
        let mut at = self
            .append(id, offset, futures::stream::empty().boxed())
            .await?;
        let mut pending = bytes::BytesMut::new();
        loop {
            let next = data.next().await;
            if let Some(chunk) = &next {
                let chunk = chunk.as_ref().map_err(|e| {
                    StorageError::Source(std::io::Error::new(e.kind(), e.to_string()))
                })?;
                pending.extend_from_slice(chunk);
                if pending.len() < FOLLOW_STEP {
                    continue;
                }
            }
            if !pending.is_empty() {
                let piece = pending.split().freeze();
                let key = self.upload_dir(id).child(format!("{at:020}"));
                self.store
                    .put(&key, PutPayload::from_bytes(piece.clone()))
                    .await
                    .map_err(io)?;
                at += piece.len() as u64;
                progress(at);
            }
            if next.is_none() {
                progress(at);
                return Ok(at);
            }
        }
    }

    async fn read_upload(&self, id: &UploadId, len: u64) -> Result<ByteStream> {
        let listing = self.existing(id).await?;
        self.stream_upload(&listing, len).await
    }

    async fn commit(&self, id: &UploadId, len: u64, digest: &Digest) -> Result<Committed> {
        let listing = self.existing(id).await?;
        let parts = listing.covering(len).map_err(|actual| short(len, actual))?;
        let target = self.blob_key(digest);
        match self.store.head(&target).await {
            Ok(_) => return Ok(Committed::Existing),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(io(e)),
        }
        match parts.as_slice() {
            [(chunk, 0, n)] if *n == chunk.size => {
                self.store.copy(&chunk.key, &target).await.map_err(io)?;
            }
            _ => {
                let bytes = self.stream_upload(&listing, len).await?;
                let written = self
                    .write_object(&target, bytes)
                    .await
                    .map_err(|e| match e {
                        StorageError::Source(e) => StorageError::Io(e),
                        e => e,
                    })?;
                if written != len {
                    let _ = self.store.delete(&target).await;
                    return Err(StorageError::ShortUpload {
                        expected: len,
                        actual: written,
                    });
                }
            }
        }
        self.remove(id, listing).await?;
        Ok(Committed::Published)
    }

    async fn cancel(&self, id: &UploadId) -> Result<()> {
        let listing = self.listing(id).await?;
        self.remove(id, listing).await
    }

    async fn list_uploads(&self) -> Result<Vec<UploadId>> {
        let root = self.key(&["uploads"]);
        let listed = self
            .store
            .list_with_delimiter(Some(&root))
            .await
            .map_err(io)?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename()?.parse().ok())
            .collect())
    }

    async fn upload_modified(&self, id: &UploadId) -> Result<Option<SystemTime>> {
        let listing = self.listing(id).await?;
        Ok(listing.last_modified.filter(|_| listing.exists))
    }
}
