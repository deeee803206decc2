//! Blobs through the cache. A blob linked into the mirrored repository is served from the
//! store (a hit). One stored for another repository is linked here only after the upstream
//! confirms it has it under this name (a `HEAD`): content is never lent across repositories
//! on the strength of a digest alone. Anything else is a miss, fetched once (`fill.rs`) and
//! streamed as it arrives; a `HEAD` on a miss asks the upstream's `HEAD`, so chained mirrors
//! work without fetching.

use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use futures::StreamExt;
use parking_lot::Mutex;

use crate::oci::{Digest, RepoName};
use crate::registry::service::range_of;
use crate::registry::{BlobReply, CacheStatus, RegistryError, Result, Service};
use crate::storage::ByteStream;

use super::fill::{Fill, FillError};
use super::stats::Counters;
use super::upstream::UpstreamError;
use super::{upstream_error, Proxy, Target};

fn blob_error(e: FillError, digest: &Digest) -> RegistryError {
    match e {
        FillError::Upstream(UpstreamError::NotFound) => RegistryError::BlobUnknown(digest.clone()),
        FillError::Upstream(e) => upstream_error(e, "blob"),
        other => RegistryError::Unavailable {
            message: format!("blob {digest} could not be fetched: {other}"),
            retry_after: None,
        },
    }
}

/// Counts the bytes of a response body as they go out.
fn counted(s: ByteStream, counter: Arc<Proxy>, slot: usize) -> ByteStream {
    s.map(move |c| {
        if let Ok(b) = &c {
            let n: &AtomicU64 = &counter.inner.upstreams[slot].counters.bytes_served;
            Counters::bump(n, b.len() as u64);
        }
        c
    })
    .boxed()
}

/// How long a fill lease lasts unless renewed (renewed every third of it while fetching).
const FILL_LEASE_SECS: i64 = 30;
/// How often a replica waiting on another's fill looks for the stored blob.
const FILL_POLL: std::time::Duration = std::time::Duration::from_millis(200);
/// How long a replica waits on another's fill before it fetches the blob itself.
const FILL_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

impl Proxy {
    pub(super) async fn cached_blob(
        &self,
        t: &Target<'_>,
        repo: &RepoName,
        digest: &Digest,
        range: Option<&str>,
        body: bool,
    ) -> Result<BlobReply> {
        let hosted = &self.inner.hosted;
        let c = &t.slot.counters;
        match hosted.blob(repo, digest, range, body).await {
            Ok(r) => return Ok(self.served(t, r, CacheStatus::Hit)),
            Err(RegistryError::BlobUnknown(_)) => {}
            Err(e) => return Err(e),
        }
        let digest_s = digest.to_string();
        if let Some(r) = self.stored_elsewhere(t, repo, digest, range, body).await? {
            return Ok(r);
        }
        Counters::bump(&c.misses, 1);
        if !body {
            return match t.slot.head_blob(t.remote, &digest_s).await {
                Ok(Some(size)) => Ok(BlobReply {
                    size,
                    part: None,
                    body: None,
                    cache: Some(CacheStatus::Miss),
                    redirect: None,
                }),
                Ok(None) => Err(RegistryError::Unavailable {
                    message: "the upstream did not say the blob's size".into(),
                    retry_after: None,
                }),
                Err(UpstreamError::NotFound) => Err(RegistryError::BlobUnknown(digest.clone())),
                Err(e) => {
                    Counters::bump(&c.errors, 1);
                    Err(upstream_error(e, "blob"))
                }
            };
        }
        if !self.inner.fills.running(digest) {
            // Another replica fetching the same blob: wait for its copy rather than fetch
            // it a second time.
            if let Some(r) = self.await_other_fill(t, repo, digest, range, body).await? {
                return Ok(r);
            }
        }
        let (fill, joined) = self.inner.fills.join(digest, |fill| {
            let me = self.clone();
            let (slot, remote, repo) = (t.slot.index, t.remote.to_string(), repo.clone());
            tokio::spawn(me.run_fill(fill, slot, remote, repo));
        });
        if joined {
            Counters::bump(&c.coalesced, 1);
            // The fill links the repository that started it; this one is linked when it
            // ends well, even if this client goes away first.
            let (me, fill2, repo2) = (self.clone(), fill.clone(), repo.clone());
            tokio::spawn(async move {
                if let Ok(size) = fill2.done().await {
                    let _ = me
                        .inner
                        .meta
                        .link_blob(&repo2, &fill2.digest, size, None)
                        .await;
                }
            });
        }
        let size = fill.size().await.map_err(|e| blob_error(e, digest))?;
        let part = range_of(range, size)?;
        let stream = fill.follow(hosted.storage().clone(), part, size);
        Ok(BlobReply {
            size,
            part,
            body: Some(counted(stream, Arc::new(self.clone()), t.slot.index)),
            cache: Some(CacheStatus::Miss),
            redirect: None,
        })
    }

    /// A blob stored already (for another repository, or by another replica's fill) is
    /// linked here and served once the upstream confirms this repository has it.
    async fn stored_elsewhere(
        &self,
        t: &Target<'_>,
        repo: &RepoName,
        digest: &Digest,
        range: Option<&str>,
        body: bool,
    ) -> Result<Option<BlobReply>> {
        let hosted = &self.inner.hosted;
        let Some(size) = hosted.storage().stat(digest).await? else {
            return Ok(None);
        };
        match t.slot.head_blob(t.remote, &digest.to_string()).await {
            Ok(_) => {
                hosted.store().link_blob(repo, digest, size, None).await?;
                Ok(hosted
                    .blob(repo, digest, range, body)
                    .await
                    .ok()
                    .map(|r| self.served(t, r, CacheStatus::Hit)))
            }
            Err(UpstreamError::NotFound) => Err(RegistryError::BlobUnknown(digest.clone())),
            Err(e) => {
                Counters::bump(&t.slot.counters.errors, 1);
                Err(upstream_error(e, "blob"))
            }
        }
    }

    /// Takes the database's lease on fetching `digest`, waiting while another replica holds
    /// it: `Some` when that replica's copy was stored meanwhile (served from it), `None` when
    /// this process is to fetch. A holder that dies stops renewing, and its lease lapses
    /// within [`FILL_LEASE_SECS`]; after [`FILL_WAIT`] this process fetches regardless. A
    /// database error is not worth failing a pull for: the blob is fetched.
    async fn await_other_fill(
        &self,
        t: &Target<'_>,
        repo: &RepoName,
        digest: &Digest,
        range: Option<&str>,
        body: bool,
    ) -> Result<Option<BlobReply>> {
        let meta = &self.inner.meta;
        let deadline = tokio::time::Instant::now() + FILL_WAIT;
        let mut counted = false;
        loop {
            match meta
                .take_fill_lease(digest, &self.inner.holder, FILL_LEASE_SECS)
                .await
            {
                Ok(false) if tokio::time::Instant::now() < deadline => {}
                _ => return Ok(None),
            }
            if !counted {
                Counters::bump(&t.slot.counters.coalesced, 1);
                counted = true;
            }
            tokio::time::sleep(FILL_POLL).await;
            if let Some(r) = self.stored_elsewhere(t, repo, digest, range, body).await? {
                return Ok(Some(r));
            }
        }
    }

    fn served(&self, t: &Target<'_>, mut r: BlobReply, cache: CacheStatus) -> BlobReply {
        Counters::bump(&t.slot.counters.hits, 1);
        r.cache = Some(cache);
        r.body = r
            .body
            .map(|b| counted(b, Arc::new(self.clone()), t.slot.index));
        r
    }

    /// One upstream `GET`, spooled and verified, then stored and linked into `repo`.
    async fn run_fill(self, fill: Arc<Fill>, slot: usize, remote: String, repo: RepoName) {
        let s = &self.inner.upstreams[slot];
        let storage = self.inner.hosted.storage().clone();
        // Renew the fill lease while this fetch runs, so other replicas keep waiting.
        let renew = {
            let (meta, holder, digest) = (
                self.inner.meta.clone(),
                self.inner.holder.clone(),
                fill.digest.clone(),
            );
            tokio::spawn(async move {
                let every = std::time::Duration::from_secs(FILL_LEASE_SECS as u64 / 3);
                loop {
                    let _ = meta
                        .take_fill_lease(&digest, &holder, FILL_LEASE_SECS)
                        .await;
                    tokio::time::sleep(every).await;
                }
            })
        };
        let result: std::result::Result<u64, FillError> = async {
            let resp = s.get_blob(&remote, &fill.digest.to_string()).await?;
            let announced = resp.content_length();
            fill.set_size(announced);
            storage.begin(&fill.upload).await?;
            let hasher = Arc::new(Mutex::new(fill.digest.algorithm().hasher()));
            let h = hasher.clone();
            let me = self.clone();
            // The digest of everything the upstream sent, taken the moment its body ends, so
            // the held-back last byte goes out before the spool is made durable (a matching
            // digest fixes the length too).
            let seen: Arc<Mutex<Option<Digest>>> = Arc::default();
            let (seen2, fill2) = (seen.clone(), fill.clone());
            let stream = resp
                .bytes_stream()
                .map(move |c| {
                    let b = c.map_err(io::Error::other)?;
                    h.lock().update(&b);
                    Counters::bump(
                        &me.inner.upstreams[slot].counters.bytes_fetched,
                        b.len() as u64,
                    );
                    Ok(b)
                })
                .chain(futures::stream::once(async move {
                    let algorithm = fill2.digest.algorithm();
                    let actual =
                        std::mem::replace(&mut *hasher.lock(), algorithm.hasher()).finish();
                    if actual == fill2.digest {
                        fill2.set_verified();
                    }
                    *seen2.lock() = Some(actual);
                    Ok(bytes::Bytes::new())
                }))
                .boxed();
            let n = storage
                .append_following(&fill.upload, 0, stream, &|n| fill.set_written(n))
                .await?;
            let actual = seen
                .lock()
                .clone()
                .ok_or_else(|| FillError::Storage("the upstream body did not end".into()))?;
            if let Some(a) = announced.filter(|a| *a != n) {
                return Err(FillError::WrongSize {
                    announced: a,
                    actual: n,
                });
            }
            if actual != fill.digest {
                return Err(FillError::Mismatch {
                    expected: fill.digest.clone(),
                    actual,
                });
            }
            self.inner
                .hosted
                .store_cached_blob(&repo, &fill.upload, n, &fill.digest)
                .await
                .map_err(|e| FillError::Storage(e.to_string()))?;
            Ok(n)
        }
        .await;
        if let Err(e) = &result {
            let _ = storage.cancel(&fill.upload).await;
            let counter = match e {
                FillError::Mismatch { .. } | FillError::WrongSize { .. } => &s.counters.mismatches,
                _ => &s.counters.errors,
            };
            Counters::bump(counter, 1);
            tracing::warn!(upstream = %s.name, repository = %repo, digest = %fill.digest, error = %e, "blob not cached");
        }
        renew.abort();
        fill.finish(result);
        self.inner.fills.remove(&fill);
        let _ = self
            .inner
            .meta
            .release_fill_lease(&fill.digest, &self.inner.holder)
            .await;
    }
}
