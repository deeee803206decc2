//! Upload sessions: create, append chunks, report status, complete with digest verification,
//! cancel; reconciliation at start-up and expiry of abandoned sessions.
//!
//! An upload's acknowledged length lives in metadata and is only advanced after the bytes are
//! durable in the upload area, so a session resumes after a crash exactly where the client
//! was last told it stood.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use futures::StreamExt;
use parking_lot::Mutex;

use crate::metadata::{now, MetadataError, UploadRecord};
use crate::oci::range::ByteRange;
use crate::oci::{Algorithm, Digest, Hasher, RepoName, UploadId};
use crate::storage::{ByteStream, Committed};

use super::quota::refused;
use super::{Registry, RegistryError, Result};

/// Per-session in-process state: a lock that serializes requests on one upload, and the
/// running hash of its acknowledged bytes when we have it.
#[derive(Default)]
pub struct SessionState {
    hash: Option<(Hasher, u64)>,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<UploadId, Arc<tokio::sync::Mutex<SessionState>>>>,
}

impl Sessions {
    fn get(&self, id: &UploadId) -> Arc<tokio::sync::Mutex<SessionState>> {
        self.map.lock().entry(id.clone()).or_default().clone()
    }

    pub(super) fn forget(&self, id: &UploadId) {
        self.map.lock().remove(id);
    }
}

/// One chunk of bytes offered to an upload.
pub struct AppendRequest {
    /// The client's `Content-Range`, when it sent one.
    pub range: Option<ByteRange>,
    /// The request's `Content-Length`, when it sent one.
    pub length: Option<u64>,
    pub body: ByteStream,
}

impl Registry {
    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadRecord> {
        let id = UploadId::new_random();
        // Storage first: an upload row never points at a missing file.
        self.storage.begin(&id).await?;
        self.meta.create_upload(&id, repo).await?;
        self.upload_status(repo, &id).await
    }

    /// The session, if it exists and belongs to `repo`.
    pub async fn upload_status(&self, repo: &RepoName, id: &UploadId) -> Result<UploadRecord> {
        match self.meta.upload(id).await? {
            Some(u) if &u.repo == repo => Ok(u),
            _ => Err(RegistryError::UploadUnknown),
        }
    }

    /// Appends a chunk; returns the new acknowledged length.
    pub async fn append_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        chunk: AppendRequest,
    ) -> Result<u64> {
        let session = self.uploads.get(id);
        let mut state = session.lock().await;
        let rec = self.upload_status(repo, id).await?;
        if let Some(len) = chunk.range.map(|r| r.len()).or(chunk.length) {
            if let Err(e) = self.quota_precheck(repo, None, rec.size + len).await {
                self.discard_session(id).await;
                return Err(e);
            }
        }
        self.append_locked(&rec, &mut state, chunk, true).await
    }

    /// Appends under the session lock. With `record` false the new length is not written to
    /// metadata: the caller completes the upload at once, and if completion fails the next
    /// append truncates back to the recorded length (nothing past it was acknowledged).
    async fn append_locked(
        &self,
        rec: &UploadRecord,
        state: &mut SessionState,
        chunk: AppendRequest,
        record: bool,
    ) -> Result<u64> {
        let expected = match (chunk.range, chunk.length) {
            (Some(r), _) if r.start != rec.size => {
                return Err(RegistryError::RangeNotSatisfiable { size: rec.size })
            }
            (Some(r), Some(len)) if r.len() != len => {
                return Err(RegistryError::SizeInvalid(format!(
                    "Content-Range covers {} bytes but Content-Length is {len}",
                    r.len()
                )))
            }
            (Some(r), _) => Some(r.len()),
            (None, len) => len,
        };
        // Keep hashing incrementally only if the running hash covers exactly what is
        // acknowledged; otherwise the digest is computed from storage at completion.
        let hasher = match state.hash.take() {
            Some((h, n)) if n == rec.size => Some(h),
            None if rec.size == 0 => Some(Algorithm::Sha256.hasher()),
            _ => None,
        };
        let hasher = Arc::new(Mutex::new(hasher));
        let h2 = hasher.clone();
        let mut seen = 0u64;
        let body = chunk
            .body
            .map(move |item| {
                let bytes = item?;
                seen += bytes.len() as u64;
                if expected.is_some_and(|e| seen > e) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "chunk longer than its Content-Range",
                    ));
                }
                if let Some(h) = h2.lock().as_mut() {
                    h.update(&bytes);
                }
                Ok(bytes)
            })
            .boxed();
        let new_size = match self.storage.append(&rec.id, rec.size, body).await {
            Ok(n) => n,
            Err(e) => {
                let e = RegistryError::from(e);
                if let RegistryError::BodyFailed(io) = &e {
                    if io.kind() == io::ErrorKind::InvalidData {
                        return Err(RegistryError::SizeInvalid(io.to_string()));
                    }
                }
                return Err(e);
            }
        };
        let written = new_size - rec.size;
        if expected.is_some_and(|e| e != written) {
            return Err(RegistryError::SizeInvalid(format!(
                "chunk carried {written} bytes, expected {}",
                expected.unwrap_or(0)
            )));
        }
        if written > 0 && record {
            self.meta.set_upload_size(&rec.id, new_size).await?;
        }
        state.hash = hasher.lock().take().map(|h| (h, new_size));
        Ok(new_size)
    }

    /// Completes an upload (appending a final chunk when given) as blob `digest`, verifying
    /// the digest over every acknowledged byte. Returns the blob's size.
    pub async fn complete_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        last_chunk: Option<AppendRequest>,
    ) -> Result<u64> {
        let session = self.uploads.get(id);
        let mut state = session.lock().await;
        let mut rec = self.upload_status(repo, id).await?;
        if let Some(chunk) = last_chunk {
            let more = chunk.range.map(|r| r.len()).or(chunk.length);
            if let Some(len) = more {
                if let Err(e) = self
                    .quota_precheck(repo, Some(digest), rec.size + len)
                    .await
                {
                    self.discard_session(id).await;
                    return Err(e);
                }
            }
            rec.size = self.append_locked(&rec, &mut state, chunk, false).await?;
        }
        if let Err(e) = self.quota_precheck(repo, Some(digest), rec.size).await {
            self.discard_session(id).await;
            return Err(e);
        }
        let committed = self.verify_and_commit(&rec, &mut state, digest).await?;
        let quota = self.quota(repo);
        if let Err(e) = self
            .meta
            .finish_upload(id, repo, digest, rec.size, quota.as_ref())
            .await
        {
            if matches!(e, MetadataError::QuotaExceeded { .. }) {
                if committed == Committed::Published {
                    self.unstore(digest).await;
                }
                self.discard_session(id).await;
            }
            return Err(refused(e));
        }
        self.settle(id, rec.size, digest, committed).await?;
        drop(state);
        self.uploads.forget(id);
        Ok(rec.size)
    }

    /// Finishes a commit once metadata links the blob. A commit that found the blob stored
    /// already kept the upload; the stored copy may have been deleted (as unreferenced)
    /// between that commit and the link, and then these bytes take its place. Either way the
    /// upload is gone afterwards.
    pub(crate) async fn settle(
        &self,
        id: &UploadId,
        len: u64,
        digest: &Digest,
        committed: Committed,
    ) -> Result<()> {
        if committed == Committed::Published {
            return Ok(());
        }
        if self.storage.stat(digest).await?.is_none() {
            tracing::info!(%digest, "a blob deleted while it was linked again: storing it anew");
            if self.storage.commit(id, len, digest).await? == Committed::Published {
                return Ok(());
            }
        }
        self.storage.cancel(id).await?;
        Ok(())
    }

    /// Checks the digest over the upload's first `rec.size` bytes and commits them as a blob.
    async fn verify_and_commit(
        &self,
        rec: &UploadRecord,
        state: &mut SessionState,
        digest: &Digest,
    ) -> Result<Committed> {
        let actual = match state.hash.take() {
            Some((h, n)) if n == rec.size && h.algorithm() == digest.algorithm() => h.finish(),
            _ => {
                self.hash_upload(&rec.id, rec.size, digest.algorithm())
                    .await?
            }
        };
        if &actual != digest {
            return Err(RegistryError::DigestInvalid(format!(
                "uploaded content has digest {actual}, not {digest}"
            )));
        }
        Ok(self.storage.commit(&rec.id, rec.size, digest).await?)
    }

    async fn hash_upload(&self, id: &UploadId, len: u64, alg: Algorithm) -> Result<Digest> {
        let mut s = self.storage.read_upload(id, len).await?;
        let mut h = alg.hasher();
        while let Some(chunk) = s.next().await {
            h.update(&chunk.map_err(|e| RegistryError::Storage(e.into()))?);
        }
        Ok(h.finish())
    }

    /// Uploads a whole blob in one request. No session row is written: the client can
    /// never resume a one-shot upload, and bytes a crash leaves behind are removed by
    /// reconciliation at the next start.
    pub async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        length: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        let rec = UploadRecord {
            id: UploadId::new_random(),
            repo: repo.clone(),
            size: 0,
            created_at: now(),
            updated_at: now(),
        };
        if let Some(len) = length {
            self.quota_precheck(repo, Some(digest), len).await?;
        }
        self.storage.begin(&rec.id).await?;
        let mut state = SessionState::default();
        let chunk = AppendRequest {
            range: None,
            length,
            body,
        };
        let result = async {
            let size = self.append_locked(&rec, &mut state, chunk, false).await?;
            let rec = UploadRecord {
                size,
                ..rec.clone()
            };
            let committed = self.verify_and_commit(&rec, &mut state, digest).await?;
            let quota = self.quota(repo);
            if let Err(e) = self
                .meta
                .link_blob(repo, digest, size, quota.as_ref())
                .await
            {
                if matches!(e, MetadataError::QuotaExceeded { .. })
                    && committed == Committed::Published
                {
                    self.unstore(digest).await;
                }
                return Err(refused(e));
            }
            self.settle(&rec.id, size, digest, committed).await?;
            Ok(size)
        }
        .await;
        if result.is_err() {
            let _ = self.storage.cancel(&rec.id).await;
        }
        result
    }

    pub async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> Result<()> {
        let session = self.uploads.get(id);
        let _state = session.lock().await;
        self.upload_status(repo, id).await?;
        // Metadata first: once the row is gone nobody can resume into the file.
        self.meta.delete_upload(id).await?;
        self.storage.cancel(id).await?;
        self.uploads.forget(id);
        Ok(())
    }

    /// Makes the upload area and the session table agree after a crash: a session whose
    /// bytes are gone is dropped, and bytes with no session are removed. Run before serving.
    pub async fn reconcile_uploads(&self) -> Result<usize> {
        let sessions = self.meta.uploads().await?;
        let stored = self.storage.list_uploads().await?;
        let mut removed = 0;
        for s in sessions.iter().filter(|s| !stored.contains(&s.id)) {
            self.meta.delete_upload(&s.id).await?;
            removed += 1;
        }
        for id in stored
            .iter()
            .filter(|id| !sessions.iter().any(|s| &s.id == *id))
        {
            self.storage.cancel(id).await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Removes sessions idle for longer than the policy allows; returns how many.
    pub async fn expire_uploads(&self) -> Result<usize> {
        let cutoff = now() - self.policy.upload_max_age.as_secs() as i64;
        let mut removed = 0;
        for s in self.meta.uploads().await? {
            if s.updated_at >= cutoff {
                continue;
            }
            // Look without inserting: an idle session has no lock entry to create.
            let session = self.uploads.map.lock().get(&s.id).cloned();
            let _guard = match &session {
                Some(lock) => match lock.try_lock() {
                    Ok(g) => Some(g),
                    Err(_) => continue, // a request is working on it right now
                },
                None => None,
            };
            self.meta.delete_upload(&s.id).await?;
            self.storage.cancel(&s.id).await?;
            self.uploads.forget(&s.id);
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metadata::sqlite::SqliteMetadata;
    use crate::registry::Policy;
    use crate::storage::memory::MemoryStorage;

    #[tokio::test]
    async fn idle_sessions_expire_and_busy_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqliteMetadata::open(&dir.path().join("berth.db"))
            .await
            .unwrap();
        let policy = Policy {
            upload_max_age: Duration::ZERO,
            ..Policy::default()
        };
        let reg = Registry::new(Arc::new(MemoryStorage::new()), Arc::new(meta), policy);
        let repo: RepoName = "team/app".parse().unwrap();
        let idle = reg.start_upload(&repo).await.unwrap();
        let busy = reg.start_upload(&repo).await.unwrap();
        // Sessions are stamped in whole seconds: let both age past the cutoff.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let lock = reg.uploads.get(&busy.id);
        let guard = lock.lock().await;
        assert_eq!(reg.expire_uploads().await.unwrap(), 1);
        drop(guard);
        assert!(matches!(
            reg.upload_status(&repo, &idle.id).await,
            Err(RegistryError::UploadUnknown)
        ));
        assert!(reg.upload_status(&repo, &busy.id).await.is_ok());
        assert!(!reg.uploads.map.lock().contains_key(&idle.id));
        assert_eq!(
            reg.storage.list_uploads().await.unwrap(),
            vec![busy.id.clone()]
        );
    }
}
