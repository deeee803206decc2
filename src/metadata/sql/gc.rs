//! SQL for gc, written once for both dialects.

use super::{DbRow, Meta, JSON1, JSON2};
use crate::metadata::gc::*;
use crate::metadata::{now, MetadataError, Result};
use crate::oci::Digest;
use async_trait::async_trait;
use sqlx::Row;
use std::str::FromStr;

fn doomed(row: &DbRow) -> Result<DoomedBlob> {
    let d: String = row.try_get("digest")?;
    Ok(DoomedBlob {
        digest: Digest::from_str(&d)
            .map_err(|e| MetadataError::Corrupt(format!("digest {d:?}: {e}")))?,
        size: row.try_get::<i64, _>("size")? as u64,
        manifest: row.try_get::<i64, _>("is_manifest")? != 0,
    })
}

/// Blobs nothing references, idle past `?1`, with no link newer than `?1`.
const COLLECTABLE: &str = "CASE WHEN COALESCE(b.idle_since, 0) > b.created_at THEN b.idle_since ELSE b.created_at END <= $1 \
     AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.ref_digest = b.digest) \
     AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = b.digest) \
     AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest \
                     AND CASE WHEN COALESCE(rb.idle_since, 0) > rb.created_at THEN rb.idle_since ELSE rb.created_at END > $1)";

/// Links idle past `?1` that their repository does not reference.
const DROPPABLE_LINK: &str = "CASE WHEN COALESCE(rb.idle_since, 0) > rb.created_at THEN rb.idle_since ELSE rb.created_at END <= $1 \
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
impl GcStore for Meta {
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
                             AND CASE WHEN COALESCE(o.idle_since, 0) > o.created_at THEN o.idle_since ELSE o.created_at END > $1))"
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
        let window: Vec<String> = sqlx::query_scalar(
            "SELECT digest FROM blobs WHERE digest > $1 ORDER BY digest LIMIT $2",
        )
        .bind(after.as_deref().unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(self.reader())
        .await?;
        let Some(last) = window.last().cloned() else {
            return Ok((Vec::new(), None));
        };
        let next = (window.len() as u32 == limit).then_some(last.clone());
        let candidates: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT b.digest FROM blobs b WHERE b.digest > $2 AND b.digest <= $3 AND {COLLECTABLE}"
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
             WHERE b.digest IN ({JSON2}) AND {COLLECTABLE}"
        ))
        .bind(cutoff)
        .bind(serde_json::to_string(&candidates).expect("strings serialize"))
        .fetch_all(&mut *tx)
        .await?;
        let claimed = rows.iter().map(doomed).collect::<Result<Vec<_>>>()?;
        if !claimed.is_empty() {
            let list = json_list(&claimed);
            sqlx::query(&format!(
                "INSERT INTO gc_pending (digest, size, is_manifest, at) \
                 SELECT digest, size, is_manifest, $2 FROM blobs \
                 WHERE digest IN ({JSON1}) \
                 ON CONFLICT (digest) DO NOTHING"
            ))
            .bind(&list)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            for table in ["repo_blobs", "blobs"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE digest IN ({JSON1})"))
                    .bind(&list)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok((claimed, next))
    }

    async fn gc_pending(&self, limit: u32) -> Result<Vec<DoomedBlob>> {
        let rows = sqlx::query(
            "SELECT digest, size, is_manifest FROM gc_pending ORDER BY digest LIMIT $1",
        )
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
        let revived: std::collections::HashSet<String> = sqlx::query_scalar(&format!(
            "SELECT digest FROM blobs WHERE digest IN ({JSON1})"
        ))
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
        sqlx::query(&format!("DELETE FROM gc_pending WHERE digest IN ({JSON1})"))
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
            "SELECT repo_id, digest FROM repo_blobs WHERE (repo_id, digest) > ($1, $2) \
             ORDER BY repo_id, digest LIMIT $3",
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
             WHERE (rb.repo_id, rb.digest) > ($2, $3) AND (rb.repo_id, rb.digest) <= ($4, $5) \
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
                "DELETE FROM repo_blobs AS rb WHERE rb.repo_id = $2 AND rb.digest = $3 \
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
                 SELECT $1, $2, 0, $3 WHERE NOT EXISTS (SELECT 1 FROM blobs WHERE digest = $1) \
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
