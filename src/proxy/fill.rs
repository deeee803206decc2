//! Cold blobs, fetched once however many clients ask at the same time (per process).
//!
//! The first request for a blob starts a fill: one upstream `GET`, spooled into an upload
//! in the blob store's upload area while its digest is computed. Every request for that
//! blob, the first included, follows the spool as it grows, so response headers go out at
//! once and bytes flow as they arrive. The last byte of every response is held back until
//! the whole blob is verified: on a mismatch each response ends short (HTTP/1.1: fewer
//! bytes than `Content-Length`; HTTP/2: the stream is reset), never as a complete-looking
//! 200, and nothing is cached. A fill runs in its own task: a client going away does not
//! stop it.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::oci::range::ByteRange;
use crate::oci::{Digest, UploadId};
use crate::storage::{ByteStream, Storage, StorageError};

use super::upstream::UpstreamError;

/// How much a follower reads from the spool at a time.
const READ_STEP: u64 = 16 << 20;

#[derive(Clone, Debug, thiserror::Error)]
pub enum FillError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the upstream sent bytes whose digest is {actual}, not {expected}")]
    Mismatch { expected: Digest, actual: Digest },
    #[error("the upstream sent {actual} bytes where it announced {announced}")]
    WrongSize { announced: u64, actual: u64 },
    #[error("storage: {0}")]
    Storage(String),
}

impl From<StorageError> for FillError {
    fn from(e: StorageError) -> Self {
        FillError::Storage(e.to_string())
    }
}

#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// The blob's size, once the upstream's answer says it (or once it is complete).
    pub size: Option<u64>,
    /// Bytes readable from the spool.
    pub written: u64,
    /// Every byte arrived and their digest is the one asked for: the last byte may go out,
    /// even before the blob is durable and stored.
    pub verified: bool,
    /// `Ok(size)` once verified and stored; the failure otherwise.
    pub end: Option<Result<u64, FillError>>,
}

pub struct Fill {
    pub digest: Digest,
    pub upload: UploadId,
    state: watch::Sender<Progress>,
}

impl Fill {
    pub fn set_size(&self, size: Option<u64>) {
        self.state.send_modify(|p| p.size = size);
    }

    pub fn set_written(&self, n: u64) {
        self.state.send_modify(|p| p.written = n);
    }

    pub fn set_verified(&self) {
        self.state.send_modify(|p| p.verified = true);
    }

    pub fn finish(&self, end: Result<u64, FillError>) {
        self.state.send_modify(|p| {
            if let Ok(n) = &end {
                p.size = Some(*n);
                p.written = *n;
            }
            p.end = Some(end);
        });
    }

    /// Waits until the size is known (or the fill failed).
    pub async fn size(&self) -> Result<u64, FillError> {
        let mut rx = self.state.subscribe();
        loop {
            {
                let p = rx.borrow_and_update();
                if let Some(Err(e)) = &p.end {
                    return Err(e.clone());
                }
                if let Some(s) = p.size {
                    return Ok(s);
                }
            }
            if rx.changed().await.is_err() {
                return Err(FillError::Storage("fill abandoned".into()));
            }
        }
    }

    /// Waits until the fill ends.
    pub async fn done(&self) -> Result<u64, FillError> {
        let mut rx = self.state.subscribe();
        loop {
            if let Some(end) = rx.borrow_and_update().end.clone() {
                return end;
            }
            if rx.changed().await.is_err() {
                return Err(FillError::Storage("fill abandoned".into()));
            }
        }
    }

    /// The bytes of `part` (or all `size` bytes) as the fill provides them.
    pub fn follow(
        self: &Arc<Self>,
        storage: Arc<dyn Storage>,
        part: Option<ByteRange>,
        size: u64,
    ) -> ByteStream {
        let (start, end) = match part {
            Some(r) => (r.start, r.end + 1),
            None => (0, size),
        };
        let state = Follower {
            fill: self.clone(),
            rx: self.state.subscribe(),
            storage,
            pos: start,
            end,
            reading: None,
            from_spool: false,
        };
        futures::stream::unfold(state, |mut f| async move {
            let item = f.next().await?;
            Some((item, f))
        })
        .boxed()
    }
}

struct Follower {
    fill: Arc<Fill>,
    rx: watch::Receiver<Progress>,
    storage: Arc<dyn Storage>,
    pos: u64,
    /// Exclusive.
    end: u64,
    reading: Option<ByteStream>,
    /// Whether `reading` reads the spool (the upload), not the stored blob.
    from_spool: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<io::Result<bytes::Bytes>> {
        loop {
            if let Some(s) = &mut self.reading {
                match s.next().await {
                    Some(Ok(b)) => {
                        self.pos += b.len() as u64;
                        return Some(Ok(b));
                    }
                    // The spool may go while it is read: it became the blob (an object
                    // store deletes an upload's chunks once committed). Read on from there.
                    Some(Err(_)) if self.from_spool && self.rx.borrow().end.is_none() => {
                        self.reading = None;
                        if self.rx.changed().await.is_err() && self.rx.borrow().end.is_none() {
                            return Some(Err(io::Error::other("fill abandoned")));
                        }
                        continue;
                    }
                    Some(Err(_))
                        if self.from_spool && matches!(self.rx.borrow().end, Some(Ok(_))) =>
                    {
                        self.reading = None;
                        continue;
                    }
                    Some(Err(e)) => return Some(Err(e)),
                    None => self.reading = None,
                }
            }
            if self.pos >= self.end {
                return None;
            }
            let p = self.rx.borrow_and_update().clone();
            let stored = match &p.end {
                Some(Err(e)) => {
                    return Some(Err(io::Error::other(format!(
                        "upstream blob {} not delivered: {e}",
                        self.fill.digest
                    ))))
                }
                Some(Ok(_)) => true,
                None => false,
            };
            // Until the blob is verified, the last byte of this response is held back.
            let limit = if stored {
                self.end
            } else if p.verified {
                p.written.min(self.end)
            } else {
                p.written.min(self.end - 1)
            };
            if self.pos < limit {
                let len = (limit - self.pos).min(READ_STEP);
                let opened = if stored {
                    self.storage
                        .read(
                            &self.fill.digest,
                            Some(ByteRange {
                                start: self.pos,
                                end: self.pos + len - 1,
                            }),
                        )
                        .await
                } else {
                    self.storage
                        .read_upload_at(&self.fill.upload, self.pos, len)
                        .await
                };
                match opened {
                    Ok(s) => {
                        self.reading = Some(s);
                        self.from_spool = !stored;
                    }
                    // The spool became the blob between the look and the read (gone, or, on
                    // an object store, listed half removed while it is committed): wait for
                    // the fill's next step and look again. A fill that fails ends this too.
                    Err(e) if !stored => {
                        if self.rx.changed().await.is_err() && self.rx.borrow().end.is_none() {
                            return Some(Err(io::Error::other(format!("fill abandoned: {e}"))));
                        }
                    }
                    Err(e) => return Some(Err(io::Error::other(e.to_string()))),
                }
                continue;
            }
            if self.rx.changed().await.is_err() && self.rx.borrow().end.is_none() {
                return Some(Err(io::Error::other("fill abandoned")));
            }
        }
    }
}

/// The fills under way, by digest.
#[derive(Default)]
pub struct Fills {
    running: Mutex<HashMap<Digest, Arc<Fill>>>,
}

impl Fills {
    /// The fill of `digest` under way, or a new one handed to `start` (which must spawn its
    /// work); the flag is true when this call joined a fill another request started.
    pub fn join(&self, digest: &Digest, start: impl FnOnce(Arc<Fill>)) -> (Arc<Fill>, bool) {
        let mut running = self.running.lock();
        if let Some(f) = running.get(digest) {
            return (f.clone(), true);
        }
        let (state, _) = watch::channel(Progress::default());
        let fill = Arc::new(Fill {
            digest: digest.clone(),
            upload: UploadId::new_random(),
            state,
        });
        running.insert(digest.clone(), fill.clone());
        drop(running);
        start(fill.clone());
        (fill, false)
    }

    /// Forgets a fill that ended (later requests find the blob stored, or start anew).
    pub fn remove(&self, fill: &Arc<Fill>) {
        let mut running = self.running.lock();
        if running
            .get(&fill.digest)
            .is_some_and(|f| Arc::ptr_eq(f, fill))
        {
            running.remove(&fill.digest);
        }
    }

    /// True while this process fetches `digest`.
    pub fn running(&self, digest: &Digest) -> bool {
        self.running.lock().contains_key(digest)
    }

    pub fn in_flight(&self) -> usize {
        self.running.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;
    use crate::storage::memory::MemoryStorage;

    async fn collect(s: ByteStream) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn followers_get_everything_only_once_verified() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let data = b"0123456789".to_vec();
        let digest = Algorithm::Sha256.digest(&data);
        let fills = Fills::default();
        let (fill, joined) = fills.join(&digest, |_| {});
        assert!(!joined);
        assert!(fills.join(&digest, |_| panic!("second start")).1);
        storage.begin(&fill.upload).await.unwrap();
        fill.set_size(Some(10));
        let whole = tokio::spawn(collect(fill.follow(storage.clone(), None, 10)));
        let part = tokio::spawn(collect(fill.follow(
            storage.clone(),
            Some(ByteRange { start: 2, end: 4 }),
            10,
        )));
        let chunk = futures::stream::iter(vec![Ok(bytes::Bytes::from(data.clone()))]).boxed();
        let n = storage
            .append_following(&fill.upload, 0, chunk, &|n| fill.set_written(n))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!whole.is_finished(), "the last byte waits for verification");
        storage.commit(&fill.upload, n, &digest).await.unwrap();
        fill.finish(Ok(n));
        assert_eq!(whole.await.unwrap().unwrap(), data);
        assert_eq!(part.await.unwrap().unwrap(), b"234");
    }

    #[tokio::test]
    async fn the_last_byte_goes_out_once_verified_before_the_blob_is_stored() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let data = b"abcdef".to_vec();
        let digest = Algorithm::Sha256.digest(&data);
        let fills = Fills::default();
        let (fill, _) = fills.join(&digest, |_| {});
        storage.begin(&fill.upload).await.unwrap();
        fill.set_size(Some(6));
        let whole = tokio::spawn(collect(fill.follow(storage.clone(), None, 6)));
        let chunk = futures::stream::iter(vec![Ok(bytes::Bytes::from(data.clone()))]).boxed();
        storage
            .append_following(&fill.upload, 0, chunk, &|n| fill.set_written(n))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!whole.is_finished());
        fill.set_verified();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), whole)
            .await
            .expect("released without a commit")
            .unwrap()
            .unwrap();
        assert_eq!(got, data);
        assert_eq!(storage.stat(&digest).await.unwrap(), None, "not stored yet");
    }

    /// A spool read that fails for another reason than its absence (an object store lists
    /// an upload half removed while the fill commits it) waits for the fill, then reads on
    /// from the stored blob: the response is never cut short.
    #[tokio::test]
    async fn a_spool_read_failing_mid_commit_reads_on_from_the_blob() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let data = b"0123456789".to_vec();
        let digest = Algorithm::Sha256.digest(&data);
        let fills = Fills::default();
        let (fill, _) = fills.join(&digest, |_| {});
        storage.begin(&fill.upload).await.unwrap();
        fill.set_size(Some(10));
        let half = futures::stream::iter(vec![Ok(bytes::Bytes::from_static(b"01234"))]).boxed();
        storage.append(&fill.upload, 0, half).await.unwrap();
        // Announced past what the spool shows now, so reading it fails as short.
        fill.set_verified();
        fill.set_written(10);
        let follower = tokio::spawn(collect(fill.follow(storage.clone(), None, 10)));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !follower.is_finished(),
            "a failed spool read waits for the fill"
        );
        let rest = futures::stream::iter(vec![Ok(bytes::Bytes::from_static(b"56789"))]).boxed();
        storage.append(&fill.upload, 5, rest).await.unwrap();
        storage.commit(&fill.upload, 10, &digest).await.unwrap();
        fill.finish(Ok(10));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), follower)
            .await
            .expect("the follower ends")
            .unwrap();
        assert_eq!(got.unwrap(), data);
    }

    #[tokio::test]
    async fn a_failed_fill_ends_every_follower_with_an_error() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let digest = Algorithm::Sha256.digest(b"x");
        let fills = Fills::default();
        let (fill, _) = fills.join(&digest, |_| {});
        storage.begin(&fill.upload).await.unwrap();
        fill.set_size(Some(3));
        let follower = tokio::spawn(collect(fill.follow(storage.clone(), None, 3)));
        let chunk = futures::stream::iter(vec![Ok(bytes::Bytes::from_static(b"abc"))]).boxed();
        storage
            .append_following(&fill.upload, 0, chunk, &|n| fill.set_written(n))
            .await
            .unwrap();
        fill.finish(Err(FillError::Mismatch {
            expected: digest.clone(),
            actual: Algorithm::Sha256.digest(b"abc"),
        }));
        assert!(follower.await.unwrap().is_err());
        fills.remove(&fill);
        assert_eq!(fills.in_flight(), 0);
    }
}
