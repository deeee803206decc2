//! Blobs in an object store (S3 and S3-compatible servers, GCS, Azure) through the
//! `object_store` crate, so that any number of replicas share them.
//!
//! ```text
//! <prefix>/
//!   blobs/<algorithm>/<first two hex>/<hex>   one object per committed blob: its raw bytes
//!   uploads/<uuid>/started                    an upload's marker, written by `begin`
//!   uploads/<uuid>/<offset, 20 digits>        one object per appended chunk, from that offset
//!   quarantine/<algorithm>/<hex>              blobs scrub found corrupt, kept for inspection
//!   readiness                                 rewritten by every readiness probe
//! ```
//!
//! Object stores write whole objects atomically: a PUT (or a completed multipart upload)
//! either appears whole or not at all. So a blob object is only ever complete, and an upload
//! grows by adding chunk objects. No chunk needs S3's 5 MiB minimum part size. The
//! acknowledged length of an upload lives in the metadata database; a chunk beyond it was
//! never acknowledged and is dropped by the next append. Any replica can continue any upload,
//! since every chunk is in the shared store.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload};

use super::{BlobStore, ByteStream, Result, StorageError};
use crate::oci::range::ByteRange;
use crate::oci::Digest;

mod uploads;

/// Objects larger than this are written as multipart uploads, in parts of this size.
pub const PART_SIZE: usize = 16 << 20;
/// Multipart parts in flight at once for one write.
const PARTS_IN_FLIGHT: usize = 4;
/// Deletes sent in one request (S3's DeleteObjects takes up to 1000 keys).
const DELETE_BATCH: usize = 1000;

/// A presigned URL's lifetime for redirected blob downloads.
pub const REDIRECT_EXPIRY: std::time::Duration = std::time::Duration::from_secs(20 * 60);

pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// Signs download URLs when blob GETs are redirected to the store.
    signer: Option<Arc<dyn Signer>>,
}

impl ObjectStorage {
    /// A backend over `store`, every key under `prefix` (may be empty).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        ObjectStorage {
            store,
            prefix: Path::from(prefix.trim_matches('/')),
            signer: None,
        }
    }

    /// Answers blob downloads with presigned URLs made by `signer`.
    pub fn with_redirects(mut self, signer: Arc<dyn Signer>) -> Self {
        self.signer = Some(signer);
        self
    }

    fn key(&self, parts: &[&str]) -> Path {
        let mut p = self.prefix.clone();
        for part in parts {
            p = p.child(*part);
        }
        p
    }

    fn blob_key(&self, d: &Digest) -> Path {
        let hex = d.hex();
        self.key(&["blobs", d.algorithm().as_str(), &hex[..2], hex])
    }

    fn quarantine_key(&self, d: &Digest) -> Path {
        self.key(&["quarantine", d.algorithm().as_str(), d.hex()])
    }

    /// Writes `data` as one object: a single PUT when small, a multipart upload when not.
    /// Nothing is visible under `key` unless every byte arrived. A failing `data` stream is
    /// [`StorageError::Source`].
    async fn write_object(&self, key: &Path, mut data: ByteStream) -> Result<u64> {
        let mut first = bytes::BytesMut::new();
        // Buffer up to one part: most chunks and blobs fit, and go in one PUT.
        while first.len() < PART_SIZE {
            match data.next().await {
                Some(chunk) => first.extend_from_slice(&chunk.map_err(StorageError::Source)?),
                None => {
                    let n = first.len() as u64;
                    self.store
                        .put(key, PutPayload::from_bytes(first.freeze()))
                        .await
                        .map_err(io)?;
                    return Ok(n);
                }
            }
        }
        let upload = self.store.put_multipart(key).await.map_err(io)?;
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut n = first.len() as u64;
        w.put(first.freeze());
        let streamed: Result<()> = async {
            while let Some(chunk) = data.next().await {
                let chunk = chunk.map_err(StorageError::Source)?;
                n += chunk.len() as u64;
                w.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(io)?;
                w.put(chunk);
            }
            Ok(())
        }
        .await;
        match streamed {
            Ok(()) => {
                w.finish().await.map_err(io)?;
                Ok(n)
            }
            Err(e) => {
                let _ = w.abort().await;
                Err(e)
            }
        }
    }

    /// Deletes many objects, batched into multi-object deletes; missing ones are fine.
    async fn delete_all(&self, keys: Vec<Path>) -> Result<()> {
        for batch in keys.chunks(DELETE_BATCH) {
            self.delete_keys(batch)
                .await
                .into_iter()
                .collect::<Result<()>>()?;
        }
        Ok(())
    }

    /// Streams `len` bytes of object `key` from `start`, or the whole object.
    async fn read_object(&self, key: &Path, range: Option<(u64, u64)>) -> Result<ByteStream> {
        let opts = GetOptions {
            range: range.map(|(start, end)| GetRange::Bounded(start..end)),
            ..Default::default()
        };
        let got = self.store.get_opts(key, opts).await.map_err(not_found)?;
        Ok(got.into_stream().map_err(io).map_err(into_io).boxed())
    }

    /// One multi-object delete: an outcome per key, in order (a key the store reports
    /// missing counts as deleted).
    async fn delete_keys(&self, keys: &[Path]) -> Vec<Result<()>> {
        let paths = futures::stream::iter(keys.iter().cloned().map(Ok)).boxed();
        let results: Vec<_> = self.store.delete_stream(paths).collect().await;
        let mut failed: Option<String> = None;
        let mut gone = std::collections::HashSet::new();
        for r in results {
            match r {
                Ok(p) => {
                    gone.insert(p);
                }
                Err(object_store::Error::NotFound { path, .. }) => {
                    gone.insert(Path::from(path));
                }
                Err(e) => failed = Some(e.to_string()),
            }
        }
        keys.iter()
            .map(|k| match (&failed, gone.contains(k)) {
                (_, true) | (None, false) => Ok(()),
                (Some(e), false) => Err(StorageError::Io(std::io::Error::other(e.clone()))),
            })
            .collect::<Vec<_>>()
    }
}

/// An object store error as an I/O error.
fn io(e: object_store::Error) -> StorageError {
    StorageError::Io(std::io::Error::other(e))
}

fn not_found(e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        e => io(e),
    }
}

fn into_io(e: StorageError) -> std::io::Error {
    match e {
        StorageError::Io(e) | StorageError::Source(e) => e,
        e => std::io::Error::other(e.to_string()),
    }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

#[async_trait]
impl BlobStore for ObjectStorage {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.store.head(&self.blob_key(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream> {
        let key = self.blob_key(digest);
        self.read_object(&key, range.map(|r| (r.start, r.end + 1)))
            .await
    }

    async fn put(&self, digest: &Digest, data: Bytes) -> Result<()> {
        let key = self.blob_key(digest);
        if self.stat(digest).await?.is_some() {
            return Ok(());
        }
        self.write_object(&key, futures::stream::once(async { Ok(data) }).boxed())
            .await?;
        Ok(())
    }

    async fn delete(&self, digest: &Digest) -> Result<bool> {
        if self.stat(digest).await?.is_none() {
            return Ok(false);
        }
        match self.store.delete(&self.blob_key(digest)).await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(io(e)),
        }
    }

    async fn delete_many(&self, digests: &[Digest], parallel: usize) -> Vec<Result<()>> {
        // Multi-object deletes of up to DELETE_BATCH keys, `parallel` requests at a time.
        let batches: Vec<futures::future::BoxFuture<'_, Vec<Result<()>>>> = digests
            .chunks(DELETE_BATCH)
            .map(|batch| {
                let keys: Vec<Path> = batch.iter().map(|d| self.blob_key(d)).collect();
                futures::FutureExt::boxed(async move { self.delete_keys(&keys).await })
            })
            .collect();
        futures::stream::iter(batches)
            .buffered(parallel.max(1))
            .flat_map(futures::stream::iter)
            .collect()
            .await
    }

    async fn list(&self) -> Result<Vec<(Digest, SystemTime)>> {
        let root = self.key(&["blobs"]);
        let mut listing = self.store.list(Some(&root));
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(io)?;
            let mut parts: Vec<_> = meta.location.parts().collect();
            let (Some(hex), Some(_fan), Some(alg)) = (parts.pop(), parts.pop(), parts.pop()) else {
                continue;
            };
            let Ok(d) = format!("{}:{}", alg.as_ref(), hex.as_ref()).parse::<Digest>() else {
                continue;
            };
            out.push((d, SystemTime::from(meta.last_modified)));
        }
        Ok(out)
    }

    async fn quarantine(&self, digest: &Digest) -> Result<bool> {
        let (from, to) = (self.blob_key(digest), self.quarantine_key(digest));
        match self.store.copy(&from, &to).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(io(e)),
        }
        match self.store.delete(&from).await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(io(e)),
        }
    }

    async fn probe(&self) -> Result<()> {
        let key = self.key(&["readiness"]);
        let at = crate::metadata::rfc3339(crate::metadata::now());
        self.store
            .put(&key, PutPayload::from(at.into_bytes()))
            .await
            .map_err(io)?;
        self.store.head(&key).await.map_err(io)?;
        Ok(())
    }

    async fn download_url(&self, digest: &Digest) -> Result<Option<String>> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let url = signer
            .signed_url(
                reqwest::Method::GET,
                &self.blob_key(digest),
                REDIRECT_EXPIRY,
            )
            .await
            .map_err(io)?;
        Ok(Some(url.to_string()))
    }
}
