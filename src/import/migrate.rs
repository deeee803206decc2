//! Copies every committed blob from one storage backend to another (the data dir to an
//! object store, or back), each verified against its digest as it is copied, so that a
//! registry can switch `storage:` without re-pushing. The metadata stays where it is.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures::StreamExt;
use serde::Serialize;

use crate::oci::{Digest, UploadId};
use crate::storage::{Committed, Storage};

/// What a copy did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub blobs_copied: usize,
    pub bytes_copied: u64,
    /// Blobs the target held already (an earlier, interrupted or live, run).
    pub blobs_present: usize,
    /// Blobs not copied, and why, one line each (a source blob whose bytes no longer match
    /// its digest is never copied).
    pub failed: Vec<String>,
}

/// Copies each of `blobs` (listed from `from`) that `to` lacks, `parallel` at a time;
/// `progress(n)` after each blob of `n` bytes.
pub async fn copy_blobs(
    from: &dyn Storage,
    to: &dyn Storage,
    blobs: Vec<Digest>,
    parallel: usize,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> anyhow::Result<Report> {
    let copied = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    let present = AtomicUsize::new(0);
    let failed = parking_lot::Mutex::new(Vec::new());
    futures::stream::iter(blobs)
        .for_each_concurrent(parallel.max(1), |d| {
            let (copied, bytes, present, failed) = (&copied, &bytes, &present, &failed);
            async move {
                match copy_one(from, to, &d).await {
                    Ok(None) => {
                        present.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(n)) => {
                        copied.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(n, Ordering::Relaxed);
                        progress(n);
                    }
                    Err(e) => failed.lock().push(format!("{d}: {e:#}")),
                }
            }
        })
        .await;
    Ok(Report {
        blobs_copied: copied.into_inner(),
        bytes_copied: bytes.into_inner(),
        blobs_present: present.into_inner(),
        failed: failed.into_inner(),
    })
}

/// Copies one blob through an upload in the target, hashing as it goes; `None` when the
/// target holds it already.
async fn copy_one(from: &dyn Storage, to: &dyn Storage, d: &Digest) -> anyhow::Result<Option<u64>> {
    if to.stat(d).await?.is_some() {
        return Ok(None);
    }
    let hasher = std::sync::Arc::new(parking_lot::Mutex::new(d.algorithm().hasher()));
    let h2 = hasher.clone();
    let body = from
        .read(d, None)
        .await?
        .map(move |chunk| {
            if let Ok(b) = &chunk {
                h2.lock().update(b);
            }
            chunk
        })
        .boxed();
    let id = UploadId::new_random();
    to.begin(&id).await?;
    let result = async {
        let n = to.append(&id, 0, body).await?;
        let actual = std::mem::replace(&mut *hasher.lock(), d.algorithm().hasher()).finish();
        anyhow::ensure!(
            &actual == d,
            "the source's bytes hash to {actual}: not copied"
        );
        if to.commit(&id, n, d).await? == Committed::Existing {
            to.cancel(&id).await?;
        }
        Ok(n)
    }
    .await;
    if result.is_err() {
        let _ = to.cancel(&id).await;
    }
    result.map(Some)
}
