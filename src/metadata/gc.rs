//! Garbage collection's queries. A blob goes when no manifest in any repository references
//! it, it is no manifest itself, and it and every link to it have been idle past the cutoff
//! (idle: since it was stored or linked, or since it lost its last reference). It goes in two
//! transactions, each under the write lock every link takes:
//!
//! 1. [`GcStore::gc_claim`] selects such blobs, deletes their links and rows and records
//!    them in `gc_pending`. From then on no repository serves them, and a push that needs
//!    one uploads it again.
//! 2. [`GcStore::gc_finish`] deletes the bytes of pending blobs that still have no row, and
//!    forgets the pending entries. A blob stored and linked again between the two (its row
//!    is back) keeps its bytes.
//!
//! A crash between them leaves pending entries, which the next run finishes. See
//! ARCHITECTURE.md, "Garbage collection".

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::Row;

/// Deletes many blobs' bytes (`parallel` requests at a time): one outcome per digest, in
/// order. Called by [`GcStore::gc_finish`] while no link to them can be made.
pub type DeleteBatch<'a> = &'a (dyn Fn(Vec<Digest>, usize) -> futures::future::BoxFuture<'static, Vec<std::io::Result<()>>>
         + Send
         + Sync);
use super::sqlite::SqliteMetadata;
use super::{now, MetadataError, Result};
use crate::oci::Digest;

/// A blob GC removes (or would remove).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoomedBlob {
    pub digest: Digest,
    pub size: u64,
    /// The blob held a manifest's bytes.
    pub manifest: bool,
}

/// What a dry run predicts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcPlan {
    pub blobs: Vec<DoomedBlob>,
    /// Links to blobs that stay (another repository references them).
    pub links: u64,
}

/// Where a batched scan stopped.
pub type Cursor = Option<String>;

#[async_trait]
pub trait GcStore: Send + Sync + 'static {
    /// What a run with this cutoff (seconds since the epoch) would remove now.
    async fn gc_plan(&self, cutoff: i64) -> Result<GcPlan>;
    /// Claims up to `limit` collectable blobs after `after` (in digest order): their links
    /// and rows go and they become pending. Returns them and where the scan stopped (`None`
    /// when it reached the end).
    async fn gc_claim(
        &self,
        cutoff: i64,
        after: &Cursor,
        limit: u32,
    ) -> Result<(Vec<DoomedBlob>, Cursor)>;
    /// Blobs claimed but whose bytes are not yet deleted (left by a crash, or just claimed).
    async fn gc_pending(&self, limit: u32) -> Result<Vec<DoomedBlob>>;
    /// Deletes the bytes of `batch` (those still without a row) in one call to `delete`
    /// (`parallel` requests at a time), under the write lock, and forgets them. Returns the
    /// ones whose bytes went, and how many pending entries were settled (deleted, or stored
    /// again meanwhile and kept).
    async fn gc_finish(
        &self,
        batch: &[DoomedBlob],
        parallel: usize,
        delete: DeleteBatch<'_>,
    ) -> Result<(Vec<DoomedBlob>, usize)>;
    /// Removes up to `limit` links idle past the cutoff to blobs their repository does not
    /// reference (the blob stays: something else references it). Returns how many went and
    /// where the scan stopped.
    async fn gc_drop_links(
        &self,
        cutoff: i64,
        after: &Option<(i64, String)>,
        limit: u32,
    ) -> Result<(u64, Option<(i64, String)>)>;
    /// Every digest with a blob row or a pending entry.
    async fn known_blobs(&self) -> Result<std::collections::HashSet<String>>;
    /// Makes stored files without a row pending (crash leftovers), unless a row appeared.
    async fn gc_adopt(&self, files: &[(Digest, u64)]) -> Result<u64>;
}

fn doomed(row: &sqlx::sqlite::SqliteRow) -> Result<DoomedBlob> {
    let d: String = row.try_get("digest")?;
    Ok(DoomedBlob {
        digest: Digest::from_str(&d)
            .map_err(|e| MetadataError::Corrupt(format!("digest {d:?}: {e}")))?,
        size: row.try_get::<i64, _>("size")? as u64,
        manifest: row.try_get::<i64, _>("is_manifest")? != 0,
    })
}

/// Blobs nothing references, idle past `?1`, with no link newer than `?1`.
const COLLECTABLE: &str = "MAX(b.created_at, COALESCE(b.idle_since, 0)) <= ?1 \
     AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.ref_digest = b.digest) \
     AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = b.digest) \
     AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest \
                     AND MAX(rb.created_at, COALESCE(rb.idle_since, 0)) > ?1)";

/// Links idle past `?1` that their repository does not reference.
const DROPPABLE_LINK: &str = "MAX(rb.created_at, COALESCE(rb.idle_since, 0)) <= ?1 \
     AND NOT EXISTS (SELECT 1 FROM manifest_refs r \
                     WHERE r.ref_digest = rb.digest AND r.repo_id = rb.repo_id) \
     AND NOT EXISTS (SELECT 1 FROM manifests m \
                     WHERE m.digest = rb.digest AND m.repo_id = rb.repo_id)";

fn json_list(blobs: &[DoomedBlob]) -> String {
    serde_json::to_string(
        &blobs
            .iter()
            .map(|b| b.digest.to_string())
            .collect::<Vec<_>>(),
    )
    .expect("strings serialize")
}

#[async_trait]
impl GcStore for SqliteMetadata {
    async fn gc_plan(&self, cutoff: i64) -> Result<GcPlan> {
        let rows = sqlx::query(&format!(
            "SELECT b.digest, b.size, b.is_manifest FROM blobs b WHERE {COLLECTABLE} \
             UNION SELECT digest, size, is_manifest FROM gc_pending"
        ))
        .bind(cutoff)
        .fetch_all(self.reader())
        .await?;
        let blobs = rows.iter().map(doomed).collect::<Result<Vec<_>>>()?;
        let links: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM repo_blobs rb WHERE {DROPPABLE_LINK} \
             AND (EXISTS (SELECT 1 FROM manifest_refs r WHERE r.ref_digest = rb.digest) \
                  OR EXISTS (SELECT 1 FROM manifests m WHERE m.digest = rb.digest) \
                  OR EXISTS (SELECT 1 FROM repo_blobs o WHERE o.digest = rb.digest \
                             AND MAX(o.created_at, COALESCE(o.idle_since, 0)) > ?1))"
        ))
        .bind(cutoff)
        .fetch_one(self.reader())
        .await?;
        Ok(GcPlan {
            blobs,
            links: links as u64,
        })
    }

    async fn gc_claim(
        &self,
        cutoff: i64,
        after: &Cursor,
        limit: u32,
    ) -> Result<(Vec<DoomedBlob>, Cursor)> {
        // The scan window: the next `limit` blobs in digest order, collectable or not, so a
        // store full of referenced blobs is crossed once, not once per batch. It is read
        // without the write lock, which is taken only when there is something to claim, and
        // everything is checked again under it.
        let window: Vec<String> =
            sqlx::query_scalar("SELECT digest FROM blobs WHERE digest > ? ORDER BY digest LIMIT ?")
                .bind(after.as_deref().unwrap_or(""))
                .bind(limit as i64)
                .fetch_all(self.reader())
                .await?;
        let Some(last) = window.last().cloned() else {
            return Ok((Vec::new(), None));
        };
        let next = (window.len() as u32 == limit).then_some(last.clone());
        let candidates: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT b.digest FROM blobs b WHERE b.digest > ?2 AND b.digest <= ?3 AND {COLLECTABLE}"
        ))
        .bind(cutoff)
        .bind(after.as_deref().unwrap_or(""))
        .bind(&last)
        .fetch_all(self.reader())
        .await?;
        if candidates.is_empty() {
            return Ok((Vec::new(), next));
        }
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(&format!(
            "SELECT b.digest, b.size, b.is_manifest FROM blobs b \
             WHERE b.digest IN (SELECT value FROM json_each(?2)) AND {COLLECTABLE}"
        ))
        .bind(cutoff)
        .bind(serde_json::to_string(&candidates).expect("strings serialize"))
        .fetch_all(&mut *tx)
        .await?;
        let claimed = rows.iter().map(doomed).collect::<Result<Vec<_>>>()?;
        if !claimed.is_empty() {
            let list = json_list(&claimed);
            sqlx::query(
                "INSERT INTO gc_pending (digest, size, is_manifest, at) \
                 SELECT digest, size, is_manifest, ?2 FROM blobs \
                 WHERE digest IN (SELECT value FROM json_each(?1)) \
                 ON CONFLICT (digest) DO NOTHING",
            )
            .bind(&list)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            for table in ["repo_blobs", "blobs"] {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE digest IN (SELECT value FROM json_each(?))"
                ))
                .bind(&list)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok((claimed, next))
    }

    async fn gc_pending(&self, limit: u32) -> Result<Vec<DoomedBlob>> {
        let rows =
            sqlx::query("SELECT digest, size, is_manifest FROM gc_pending ORDER BY digest LIMIT ?")
                .bind(limit as i64)
                .fetch_all(self.writer())
                .await?;
        rows.iter().map(doomed).collect()
    }

    async fn gc_finish(
        &self,
        batch: &[DoomedBlob],
        parallel: usize,
        delete: DeleteBatch<'_>,
    ) -> Result<(Vec<DoomedBlob>, usize)> {
        if batch.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let mut tx = self.write_tx().await?;
        let list = json_list(batch);
        // Stored and linked again since the claim: the row is back, the bytes stay.
        let revived: std::collections::HashSet<String> = sqlx::query_scalar(
            "SELECT digest FROM blobs WHERE digest IN (SELECT value FROM json_each(?))",
        )
        .bind(&list)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let doomed: Vec<&DoomedBlob> = batch
            .iter()
            .filter(|b| !revived.contains(&b.digest.to_string()))
            .collect();
        let outcomes = delete(doomed.iter().map(|b| b.digest.clone()).collect(), parallel).await;
        let gone: Vec<DoomedBlob> = doomed
            .into_iter()
            .zip(outcomes)
            .filter_map(|(b, outcome)| match outcome {
                Ok(()) => Some(b.clone()),
                Err(e) => {
                    tracing::warn!(digest = %b.digest, error = %e, "cannot delete blob bytes; GC will try again");
                    None
                }
            })
            .collect();
        let forget: Vec<String> = gone
            .iter()
            .map(|b| b.digest.to_string())
            .chain(revived.iter().cloned())
            .collect();
        sqlx::query("DELETE FROM gc_pending WHERE digest IN (SELECT value FROM json_each(?))")
            .bind(serde_json::to_string(&forget).expect("strings serialize"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((gone, forget.len()))
    }

    async fn gc_drop_links(
        &self,
        cutoff: i64,
        after: &Option<(i64, String)>,
        limit: u32,
    ) -> Result<(u64, Option<(i64, String)>)> {
        let (rid, d) = after.clone().unwrap_or((i64::MIN, String::new()));
        // As in the claim: the window and the candidates are read without the write lock,
        // then each candidate is deleted by its key with the condition checked again under
        // it. (One `DELETE ... WHERE (repo_id, digest) IN (...)` is planned as a scan of the
        // repository's every link.)
        let window: Vec<(i64, String)> = sqlx::query_as(
            "SELECT repo_id, digest FROM repo_blobs WHERE (repo_id, digest) > (?, ?) \
             ORDER BY repo_id, digest LIMIT ?",
        )
        .bind(rid)
        .bind(&d)
        .bind(limit as i64)
        .fetch_all(self.reader())
        .await?;
        let Some(last) = window.last().cloned() else {
            return Ok((0, None));
        };
        let next = (window.len() as u32 == limit).then_some(last.clone());
        let candidates: Vec<(i64, String)> = sqlx::query_as(&format!(
            "SELECT rb.repo_id, rb.digest FROM repo_blobs rb \
             WHERE (rb.repo_id, rb.digest) > (?2, ?3) AND (rb.repo_id, rb.digest) <= (?4, ?5) \
             AND {DROPPABLE_LINK}"
        ))
        .bind(cutoff)
        .bind(rid)
        .bind(&d)
        .bind(last.0)
        .bind(&last.1)
        .fetch_all(self.reader())
        .await?;
        if candidates.is_empty() {
            return Ok((0, next));
        }
        let mut tx = self.write_tx().await?;
        let mut dropped = 0;
        for (repo_id, digest) in &candidates {
            dropped += sqlx::query(&format!(
                "DELETE FROM repo_blobs AS rb WHERE rb.repo_id = ?2 AND rb.digest = ?3 \
                 AND {DROPPABLE_LINK}"
            ))
            .bind(cutoff)
            .bind(repo_id)
            .bind(digest)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok((dropped, next))
    }

    async fn known_blobs(&self) -> Result<std::collections::HashSet<String>> {
        Ok(
            sqlx::query_scalar("SELECT digest FROM blobs UNION SELECT digest FROM gc_pending")
                .fetch_all(self.reader())
                .await?
                .into_iter()
                .collect(),
        )
    }

    async fn gc_adopt(&self, files: &[(Digest, u64)]) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let mut adopted = 0;
        for (d, size) in files {
            let r = sqlx::query(
                "INSERT INTO gc_pending (digest, size, is_manifest, at) \
                 SELECT ?1, ?2, 0, ?3 WHERE NOT EXISTS (SELECT 1 FROM blobs WHERE digest = ?1) \
                 ON CONFLICT (digest) DO NOTHING",
            )
            .bind(d.to_string())
            .bind(*size as i64)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            adopted += r.rows_affected();
        }
        tx.commit().await?;
        Ok(adopted)
    }
}
