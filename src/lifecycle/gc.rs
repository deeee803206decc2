//! Online garbage collection. A run, under the `gc` lease:
//!
//! 1. finishes blobs a crashed run left pending;
//! 2. claims, in digest order and in batches, blobs no manifest references whose links are
//!    all idle past the grace, and deletes their bytes ([`crate::metadata::gc`]);
//! 3. removes the idle links of repositories that do not reference the blob (it stays);
//! 4. adopts blob files with no row (left by a crash) older than the grace and the
//!    [`FILE_FLOOR`], and deletes them the same way;
//! 5. removes upload sessions idle past `uploads.max_idle_secs` and upload files with no
//!    session older than that.
//!
//! Every step is idempotent and commits per batch, so a killed run loses nothing and the next
//! run finishes its work.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::metadata::{now, rfc3339};

use super::{breathe, Lifecycle, Pace};
use crate::ops::events::{Action, Event};
use crate::ops::metrics::GcTotals;

/// The `lifecycle_state` key of the GC totals.
const TOTALS: &str = "gc.totals";

/// A blob file without a row is never removed before it is this old, whatever the grace:
/// it covers the moment between a commit's rename and the row that links it.
pub const FILE_FLOOR: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Default)]
pub struct GcOptions {
    pub dry_run: bool,
    /// Overrides the configured grace.
    pub grace: Option<Duration>,
}

/// What a run removed (or, dry, would remove).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct GcReport {
    pub dry_run: bool,
    pub grace_secs: u64,
    pub started_at: String,
    /// Blobs whose bytes were deleted, manifests' bytes included.
    pub blobs: u64,
    /// Of those, how many held manifests.
    pub manifests: u64,
    pub bytes: u64,
    /// Links removed from repositories that did not reference the blob (which stays).
    pub links: u64,
    /// Stored files without a record (left by a crash) removed.
    pub orphan_files: u64,
    /// Abandoned upload sessions and upload files removed.
    pub uploads: u64,
    pub seconds: f64,
    /// Dry runs: each blob that would go.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<GcItem>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct GcItem {
    pub digest: String,
    pub size: u64,
    pub manifest: bool,
}

impl Lifecycle {
    /// Runs GC to the end, waiting first for a run in progress elsewhere.
    pub async fn gc(&self, opts: GcOptions) -> anyhow::Result<GcReport> {
        if opts.dry_run {
            return self.gc_plan(&opts).await;
        }
        let lease = self.lease("gc", true).await?.expect("waited for the lease");
        let r = self.gc_counted(&opts).await;
        lease.release().await;
        r
    }

    /// Runs GC unless another process is running one; `None` then.
    pub async fn gc_if_free(&self, opts: GcOptions) -> anyhow::Result<Option<GcReport>> {
        let Some(lease) = self.lease("gc", false).await? else {
            return Ok(None);
        };
        let r = self.gc_counted(&opts).await;
        lease.release().await;
        r.map(Some)
    }

    /// GC runs by every process on this database so far, for `/metrics`.
    pub async fn gc_totals(&self) -> anyhow::Result<GcTotals> {
        Ok(self
            .db
            .state(TOTALS)
            .await?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default())
    }

    /// Runs GC (holding the lease) and adds the run to the totals.
    async fn gc_counted(&self, opts: &GcOptions) -> anyhow::Result<GcReport> {
        let started = Instant::now();
        let r = self.gc_locked(opts).await;
        let recorded = async {
            let mut t = self.gc_totals().await?;
            t.seconds += started.elapsed().as_secs_f64();
            match &r {
                Ok(report) => {
                    t.runs += 1;
                    t.freed_bytes += report.bytes;
                    t.blobs += report.blobs + report.orphan_files;
                    t.last_success = now();
                }
                Err(_) => {
                    t.failures += 1;
                    t.last_failure = now();
                }
            }
            self.db
                .set_state(TOTALS, Some(&serde_json::to_string(&t)?))
                .await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = recorded {
            tracing::warn!(error = %format!("{e:#}"), "cannot record the GC run in the totals");
        }
        let event = Event::new(Action::Gc, "registry", "gc");
        self.events.emit(match &r {
            Ok(g) => event.detail(format!(
                "removed {} blobs ({} manifests, {} bytes), {} links, {} orphan files, {} uploads",
                g.blobs, g.manifests, g.bytes, g.links, g.orphan_files, g.uploads
            )),
            Err(e) => event.failed(format!("{e:#}")),
        });
        r
    }

    fn cutoff(&self, opts: &GcOptions) -> (Duration, i64) {
        let grace = opts.grace.unwrap_or(self.settings.grace);
        (grace, now() - grace.as_secs() as i64)
    }

    async fn gc_plan(&self, opts: &GcOptions) -> anyhow::Result<GcReport> {
        let started = Instant::now();
        let (grace, cutoff) = self.cutoff(opts);
        let plan = self.db.gc_plan(cutoff).await?;
        let mut r = GcReport {
            dry_run: true,
            grace_secs: grace.as_secs(),
            started_at: rfc3339(now()),
            links: plan.links,
            ..GcReport::default()
        };
        for b in plan.blobs {
            r.blobs += 1;
            r.manifests += b.manifest as u64;
            r.bytes += b.size;
            r.items.push(GcItem {
                digest: b.digest.to_string(),
                size: b.size,
                manifest: b.manifest,
            });
        }
        for (d, size) in self.orphan_files(grace).await? {
            r.orphan_files += 1;
            r.bytes += size;
            r.items.push(GcItem {
                digest: d.to_string(),
                size,
                manifest: false,
            });
        }
        r.uploads = self.abandoned_uploads().await?.len() as u64;
        r.seconds = started.elapsed().as_secs_f64();
        Ok(r)
    }

    async fn gc_locked(&self, opts: &GcOptions) -> anyhow::Result<GcReport> {
        let started = Instant::now();
        let (grace, cutoff) = self.cutoff(opts);
        let mut r = GcReport {
            grace_secs: grace.as_secs(),
            started_at: rfc3339(now()),
            ..GcReport::default()
        };
        let mut pace = Pace::new(self.settings.max_deletes_per_sec);
        let (batch, parallel) = (self.settings.batch, self.settings.parallel);
        let delete = self.deleter();
        // 1. Whatever a killed run left claimed but not deleted.
        self.finish_pending(&mut r, &mut pace).await?;
        // 2. Blobs nothing references.
        let mut cursor = None;
        loop {
            let (claimed, next) = self.db.gc_claim(cutoff, &cursor, batch).await?;
            if claimed.is_empty() {
                tokio::task::yield_now().await;
            } else {
                (self.invalidate)();
                breathe().await;
                let (gone, _) = self.db.gc_finish(&claimed, parallel, &delete).await?;
                count(&mut r, &gone);
                pace.done(gone.len() as u64).await;
                breathe().await;
            }
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        // 3. Idle links to blobs that stay.
        let mut cursor = None;
        loop {
            let (dropped, next) = self.db.gc_drop_links(cutoff, &cursor, batch).await?;
            r.links += dropped;
            if dropped > 0 {
                (self.invalidate)();
                breathe().await;
            } else {
                tokio::task::yield_now().await;
            }
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        // 4. Files no row knows.
        let orphans = self.orphan_files(grace).await?;
        for chunk in orphans.chunks(batch as usize) {
            self.db.gc_adopt(chunk).await?;
        }
        let before = r.blobs;
        self.finish_pending(&mut r, &mut pace).await?;
        r.orphan_files = r.blobs - before;
        r.blobs = before;
        // 5. Abandoned uploads.
        r.uploads = self.remove_abandoned_uploads().await?;
        r.seconds = started.elapsed().as_secs_f64();
        if let Ok(json) = serde_json::to_string(&r) {
            let _ = self.db.set_state("gc.last", Some(&json)).await;
        }
        tracing::info!(
            blobs = r.blobs,
            manifests = r.manifests,
            bytes = r.bytes,
            links = r.links,
            orphan_files = r.orphan_files,
            uploads = r.uploads,
            seconds = r.seconds,
            "garbage collection finished"
        );
        Ok(r)
    }

    async fn finish_pending(&self, r: &mut GcReport, pace: &mut Pace) -> anyhow::Result<()> {
        let delete = self.deleter();
        loop {
            let pending = self.db.gc_pending(self.settings.batch).await?;
            if pending.is_empty() {
                return Ok(());
            }
            let (gone, settled) = self
                .db
                .gc_finish(&pending, self.settings.parallel, &delete)
                .await?;
            count(r, &gone);
            pace.done(gone.len() as u64).await;
            breathe().await;
            if settled == 0 {
                // What is left could not be deleted now (the errors were logged): next run.
                return Ok(());
            }
        }
    }

    /// Stored blob files with no row, old enough to be crash leftovers.
    async fn orphan_files(
        &self,
        grace: Duration,
    ) -> anyhow::Result<Vec<(crate::oci::Digest, u64)>> {
        let horizon = SystemTime::now() - grace.max(FILE_FLOOR);
        let files = self.storage.list().await?;
        let known = self.db.known_blobs().await?;
        let mut out = Vec::new();
        for (d, modified) in files {
            if modified > horizon || known.contains(&d.to_string()) {
                continue;
            }
            if let Some(size) = self.storage.stat(&d).await? {
                out.push((d, size));
            }
        }
        Ok(out)
    }

    /// Upload sessions idle past the limit, and upload files with no session that old.
    async fn abandoned_uploads(&self) -> anyhow::Result<Vec<crate::oci::UploadId>> {
        let max = self.settings.upload_max_age;
        let cutoff = now() - max.as_secs() as i64;
        let sessions = self.db.uploads().await?;
        let mut out: Vec<_> = sessions
            .iter()
            .filter(|s| s.updated_at < cutoff)
            .map(|s| s.id.clone())
            .collect();
        let horizon = SystemTime::now() - max;
        for id in self.storage.list_uploads().await? {
            if sessions.iter().any(|s| s.id == id) {
                continue;
            }
            if let Some(m) = self.storage.upload_modified(&id).await? {
                if m < horizon {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }

    async fn remove_abandoned_uploads(&self) -> anyhow::Result<u64> {
        let mut n = self.registry.expire_uploads().await? as u64;
        let sessions = self.db.uploads().await?;
        for id in self.abandoned_uploads().await? {
            if sessions.iter().any(|s| s.id == id) {
                continue; // a session: expire_uploads decides, under its lock
            }
            self.storage.cancel(&id).await?;
            n += 1;
        }
        Ok(n)
    }
}

fn count(r: &mut GcReport, gone: &[crate::metadata::gc::DoomedBlob]) {
    for b in gone {
        r.blobs += 1;
        r.manifests += b.manifest as u64;
        r.bytes += b.size;
    }
}
