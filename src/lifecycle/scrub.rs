//! Scrub: re-hashes every stored blob and takes out of service any whose bytes no longer
//! match its digest (or are gone). A quarantined blob is answered as unknown: a hosted one is
//! uploaded again by the next push of an image that needs it, a cached one is fetched again
//! by the next pull. Scrub is paced (`--rate`), resumable (its position is saved in the
//! database as it goes, and the next run continues from there), and runs once at a time.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use crate::metadata::{now, rfc3339};
use crate::oci::Digest;
use crate::storage::StorageError;

use super::{Lifecycle, Pace};

const CURSOR: &str = "scrub.cursor";

#[derive(Clone, Debug, Default)]
pub struct ScrubOptions {
    /// Bytes read per second at most (None: as fast as the disk goes).
    pub rate: Option<u64>,
    /// Start from the first blob even if an earlier scrub stopped half-way.
    pub restart: bool,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ScrubReport {
    pub started_at: String,
    /// The digest after which this run started, when it resumed an interrupted one.
    pub resumed_after: Option<String>,
    pub checked: u64,
    pub bytes: u64,
    /// Blobs whose bytes do not hash to their digest: quarantined.
    pub corrupt: Vec<String>,
    /// Blobs recorded but with no bytes: quarantined too, so they are stored again.
    pub missing: Vec<String>,
    pub seconds: f64,
}

impl ScrubReport {
    pub fn clean(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty()
    }
}

/// Where a scrub stands, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct ScrubProgress {
    pub total_bytes: u64,
    pub done_bytes: u64,
}

enum Verdict {
    Sound(u64),
    Corrupt,
    Missing,
}

impl Lifecycle {
    pub async fn scrub(
        &self,
        opts: ScrubOptions,
        progress: &(dyn Fn(ScrubProgress) + Send + Sync),
    ) -> anyhow::Result<ScrubReport> {
        let lease = self
            .lease("scrub", true)
            .await?
            .expect("waited for the lease");
        let r = self.scrub_locked(opts, progress).await;
        lease.release().await;
        r
    }

    async fn scrub_locked(
        &self,
        opts: ScrubOptions,
        progress: &(dyn Fn(ScrubProgress) + Send + Sync),
    ) -> anyhow::Result<ScrubReport> {
        let started = Instant::now();
        let mut cursor = if opts.restart {
            None
        } else {
            self.db.state(CURSOR).await?
        };
        let mut report = ScrubReport {
            started_at: rfc3339(now()),
            resumed_after: cursor.clone(),
            ..ScrubReport::default()
        };
        let (_, total_bytes) = self.db.blob_totals(cursor.as_deref()).await?;
        let mut pace = Pace::new(opts.rate.unwrap_or(0));
        let mut saved = Instant::now();
        loop {
            let page = self.db.blobs_after(cursor.as_deref(), 256).await?;
            let Some((last, _)) = page.last().cloned() else {
                break;
            };
            for (digest, size) in page {
                match self.verify(&digest, &mut pace).await? {
                    Verdict::Sound(n) => report.bytes += n,
                    Verdict::Corrupt => {
                        self.quarantine(&digest).await?;
                        tracing::error!(%digest, size, "scrub: stored bytes do not match the digest; quarantined");
                        report.corrupt.push(digest.to_string());
                    }
                    Verdict::Missing => {
                        // Deleted by GC meanwhile is not damage: only a blob still recorded.
                        if self.db.blob_size(&digest).await?.is_some() {
                            self.quarantine(&digest).await?;
                            tracing::error!(%digest, "scrub: a recorded blob has no bytes; quarantined");
                            report.missing.push(digest.to_string());
                        }
                    }
                }
                report.checked += 1;
                progress(ScrubProgress {
                    total_bytes,
                    done_bytes: report.bytes,
                });
            }
            cursor = Some(last.to_string());
            if saved.elapsed() > Duration::from_secs(2) {
                self.db.set_state(CURSOR, cursor.as_deref()).await?;
                saved = Instant::now();
            }
        }
        self.db.set_state(CURSOR, None).await?;
        report.seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            checked = report.checked,
            bytes = report.bytes,
            corrupt = report.corrupt.len(),
            missing = report.missing.len(),
            "scrub finished"
        );
        Ok(report)
    }

    async fn verify(&self, digest: &Digest, pace: &mut Pace) -> anyhow::Result<Verdict> {
        let mut stream = match self.storage.read(digest, None).await {
            Ok(s) => s,
            Err(StorageError::NotFound) => return Ok(Verdict::Missing),
            Err(e) => return Err(e.into()),
        };
        let mut h = digest.algorithm().hasher();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                // Shorter than when it was opened: truncated on disk.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(Verdict::Corrupt)
                }
                Err(e) => return Err(e.into()),
            };
            h.update(&chunk);
            n += chunk.len() as u64;
            pace.done(chunk.len() as u64).await;
        }
        Ok(if &h.finish() == digest {
            Verdict::Sound(n)
        } else {
            Verdict::Corrupt
        })
    }

    async fn quarantine(&self, digest: &Digest) -> anyhow::Result<()> {
        let set_aside = crate::storage::quarantiner(self.storage.clone());
        self.db.quarantine_blob(digest, &set_aside).await?;
        (self.invalidate)();
        Ok(())
    }
}
