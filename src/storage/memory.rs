//! An in-memory backend: for tests, and the proof that the storage traits assume no
//! filesystem.

use std::collections::HashMap;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;

use super::{BlobStore, ByteStream, Committed, Result, StorageError, UploadArea};
use crate::oci::range::ByteRange;
use crate::oci::{Digest, UploadId};

#[derive(Default)]
pub struct MemoryStorage {
    blobs: Mutex<HashMap<Digest, Bytes>>,
    born: Mutex<HashMap<Digest, SystemTime>>,
    quarantined: Mutex<HashMap<Digest, Bytes>>,
    uploads: Mutex<HashMap<UploadId, Vec<u8>>>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn publish(&self, digest: Digest, data: Bytes) {
        self.born.lock().insert(digest.clone(), SystemTime::now());
        self.blobs.lock().insert(digest, data);
    }
}

fn once(b: Bytes) -> ByteStream {
    futures::stream::once(async move { Ok(b) }).boxed()
}

#[async_trait]
impl BlobStore for MemoryStorage {
    async fn probe(&self) -> Result<()> {
        Ok(())
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self.blobs.lock().get(digest).map(|b| b.len() as u64))
    }

    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream> {
        let b = self
            .blobs
            .lock()
            .get(digest)
            .cloned()
            .ok_or(StorageError::NotFound)?;
        Ok(once(match range {
            None => b,
            Some(r) => b.slice(r.start as usize..=(r.end as usize).min(b.len() - 1)),
        }))
    }

    async fn put(&self, digest: &Digest, data: Bytes) -> Result<()> {
        if !self.blobs.lock().contains_key(digest) {
            self.publish(digest.clone(), data);
        }
        Ok(())
    }

    async fn delete(&self, digest: &Digest) -> Result<bool> {
        Ok(self.blobs.lock().remove(digest).is_some())
    }

    async fn list(&self) -> Result<Vec<(Digest, SystemTime)>> {
        let born = self.born.lock();
        Ok(self
            .blobs
            .lock()
            .keys()
            .map(|d| {
                (
                    d.clone(),
                    born.get(d).copied().unwrap_or_else(SystemTime::now),
                )
            })
            .collect())
    }

    async fn quarantine(&self, digest: &Digest) -> Result<bool> {
        let Some(b) = self.blobs.lock().remove(digest) else {
            return Ok(false);
        };
        self.quarantined.lock().insert(digest.clone(), b);
        Ok(true)
    }
}

#[async_trait]
impl UploadArea for MemoryStorage {
    async fn begin(&self, id: &UploadId) -> Result<()> {
        self.uploads.lock().insert(id.clone(), Vec::new());
        Ok(())
    }

    async fn append(&self, id: &UploadId, offset: u64, mut data: ByteStream) -> Result<u64> {
        // Collect first so that a failed stream acknowledges nothing, like a crash would.
        let mut incoming = Vec::new();
        while let Some(chunk) = data.next().await {
            incoming.extend_from_slice(&chunk.map_err(StorageError::Source)?);
        }
        let mut uploads = self.uploads.lock();
        let buf = uploads.get_mut(id).ok_or(StorageError::NotFound)?;
        if (buf.len() as u64) < offset {
            return Err(StorageError::ShortUpload {
                expected: offset,
                actual: buf.len() as u64,
            });
        }
        buf.truncate(offset as usize);
        buf.extend_from_slice(&incoming);
        Ok(buf.len() as u64)
    }

    async fn read_upload(&self, id: &UploadId, len: u64) -> Result<ByteStream> {
        let uploads = self.uploads.lock();
        let buf = uploads.get(id).ok_or(StorageError::NotFound)?;
        if (buf.len() as u64) < len {
            return Err(StorageError::ShortUpload {
                expected: len,
                actual: buf.len() as u64,
            });
        }
        Ok(once(Bytes::copy_from_slice(&buf[..len as usize])))
    }

    async fn commit(&self, id: &UploadId, len: u64, digest: &Digest) -> Result<Committed> {
        let mut uploads = self.uploads.lock();
        let buf = uploads.get(id).ok_or(StorageError::NotFound)?;
        if (buf.len() as u64) < len {
            return Err(StorageError::ShortUpload {
                expected: len,
                actual: buf.len() as u64,
            });
        }
        if self.blobs.lock().contains_key(digest) {
            return Ok(Committed::Existing);
        }
        let mut buf = uploads.remove(id).expect("checked above");
        buf.truncate(len as usize);
        self.publish(digest.clone(), Bytes::from(buf));
        Ok(Committed::Published)
    }

    async fn cancel(&self, id: &UploadId) -> Result<()> {
        self.uploads.lock().remove(id);
        Ok(())
    }

    async fn list_uploads(&self) -> Result<Vec<UploadId>> {
        Ok(self.uploads.lock().keys().cloned().collect())
    }
}
