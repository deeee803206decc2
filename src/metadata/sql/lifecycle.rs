//! SQL for lifecycle, written once for both dialects.

use super::content::remove_manifest;
use super::{Db, Meta};
use crate::metadata::lifecycle::*;
use crate::metadata::proxy::DeleteBytes;
use crate::metadata::{now, MetadataError, Quota, Result};
use crate::oci::{Digest, RepoName, Tag};
use async_trait::async_trait;
use sqlx::{Row, Transaction};
use std::str::FromStr;

fn parse(d: &str) -> Result<Digest> {
    Digest::from_str(d).map_err(|e| MetadataError::Corrupt(format!("digest {d:?}: {e}")))
}

/// The namespace's content: what its repositories link and their manifests.
const NAMESPACE_CONTENT: &str = "WITH ns AS (SELECT id FROM repositories \
       WHERE name = $1 OR substr(name, 1, length($1) + 1) = $1 || '/'), \
     content AS (SELECT digest FROM repo_blobs WHERE repo_id IN (SELECT id FROM ns) \
       UNION SELECT digest FROM manifests WHERE repo_id IN (SELECT id FROM ns))";

/// Refuses, inside the linking transaction, a blob that would take the namespace past its
/// quota. A blob the namespace holds already costs nothing.
pub(super) async fn check_quota(
    tx: &mut Transaction<'_, Db>,
    q: &Quota,
    digest: &Digest,
    size: u64,
) -> Result<()> {
    let row = sqlx::query(&format!(
        "{NAMESPACE_CONTENT} SELECT COALESCE(CAST(SUM(b.size) AS BIGINT), 0) AS used, \
           CAST(COALESCE(MAX(CASE WHEN b.digest = $2 THEN 1 ELSE 0 END), 0) AS BIGINT) AS held \
         FROM blobs b WHERE b.digest IN (SELECT digest FROM content)"
    ))
    .bind(&q.namespace)
    .bind(digest.to_string())
    .fetch_one(&mut **tx)
    .await?;
    let used = row.try_get::<i64, _>("used")? as u64;
    let held = row.try_get::<i64, _>("held")? != 0;
    if !held && used.saturating_add(size) > q.limit {
        return Err(MetadataError::QuotaExceeded {
            namespace: q.namespace.clone(),
            limit: q.limit,
            used,
            size,
        });
    }
    Ok(())
}

/// Bytes the namespace's repositories hold, each blob counted once.
pub(super) async fn namespace_usage(pool: &sqlx::Pool<Db>, namespace: &str) -> Result<u64> {
    let used: i64 = sqlx::query_scalar(&format!(
        "{NAMESPACE_CONTENT} SELECT COALESCE(CAST(SUM(size) AS BIGINT), 0) FROM blobs \
         WHERE digest IN (SELECT digest FROM content)"
    ))
    .bind(namespace)
    .fetch_one(pool)
    .await?;
    Ok(used as u64)
}

/// Whether one of the namespace's repositories holds the blob already.
pub(super) async fn namespace_holds(
    pool: &sqlx::Pool<Db>,
    namespace: &str,
    digest: &Digest,
) -> Result<bool> {
    Ok(sqlx::query_scalar(&format!(
        "{NAMESPACE_CONTENT} SELECT EXISTS (SELECT 1 FROM content WHERE digest = $2)"
    ))
    .bind(namespace)
    .bind(digest.to_string())
    .fetch_one(pool)
    .await?)
}

/// Restarts the grace of a link its repository does not reference (looked up on the reader
/// first, so links that need nothing cost no write).
pub(super) async fn touch_idle_link(meta: &Meta, repo: &RepoName, digest: &Digest) -> Result<()> {
    const IDLE: &str = "rb.repo_id = (SELECT id FROM repositories WHERE name = $1) \
         AND rb.digest = $2 AND NOT EXISTS (SELECT 1 FROM manifest_refs x \
           WHERE x.repo_id = rb.repo_id AND x.ref_digest = rb.digest)";
    let idle: bool = sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM repo_blobs rb WHERE {IDLE})"
    ))
    .bind(repo.as_str())
    .bind(digest.to_string())
    .fetch_one(meta.reader())
    .await?;
    if idle {
        meta.exec(
            sqlx::query(&format!(
                "UPDATE repo_blobs AS rb SET idle_since = $3 WHERE {IDLE}"
            ))
            .bind(repo.as_str())
            .bind(digest.to_string())
            .bind(now()),
        )
        .await?;
    }
    Ok(())
}

#[async_trait]
impl LifecycleStore for Meta {
    async fn content_generation(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT value FROM content_generation WHERE id = 1")
                .fetch_one(self.reader())
                .await?,
        )
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_secs: i64,
    ) -> Result<Result<(), String>> {
        let t = now();
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
               expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(t + ttl_secs)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        let current: String = sqlx::query_scalar("SELECT holder FROM leases WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(if current == holder {
            Ok(())
        } else {
            Err(current)
        })
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.exec(
            sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder),
        )
        .await?;
        Ok(())
    }

    async fn check_writable(&self) -> Result<()> {
        self.write_tx().await?.rollback().await?;
        Ok(())
    }

    async fn upload_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM uploads")
            .fetch_one(self.reader())
            .await?;
        Ok(n as u64)
    }

    async fn state(&self, key: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM lifecycle_state WHERE key = $1")
                .bind(key)
                .fetch_optional(self.writer())
                .await?,
        )
    }

    async fn state_or_init(&self, key: &str, value: &str) -> Result<String> {
        self.exec(
            sqlx::query(
                "INSERT INTO lifecycle_state (key, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(value)
            .bind(now()),
        )
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM lifecycle_state WHERE key = $1")
                .bind(key)
                .fetch_one(self.writer())
                .await?,
        )
    }

    async fn set_state(&self, key: &str, value: Option<&str>) -> Result<()> {
        match value {
            Some(v) => {
                self.exec(
                    sqlx::query(
                        "INSERT INTO lifecycle_state (key, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                   updated_at = excluded.updated_at",
                    )
                    .bind(key)
                    .bind(v)
                    .bind(now()),
                )
                .await?
            }
            None => {
                self.exec(sqlx::query("DELETE FROM lifecycle_state WHERE key = $1").bind(key))
                    .await?
            }
        };
        Ok(())
    }

    async fn content_repositories(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT name FROM repositories r \
             WHERE EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id) ORDER BY name",
        )
        .fetch_all(self.reader())
        .await?)
    }

    async fn tag_infos(&self, repo: &RepoName) -> Result<Vec<TagInfo>> {
        let rows = sqlx::query(
            "SELECT t.name, t.digest, t.updated_at, t.pulled_at FROM tags t \
             JOIN repositories r ON r.id = t.repo_id WHERE r.name = $1 ORDER BY t.name",
        )
        .bind(repo.as_str())
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TagInfo {
                    name: r.try_get("name")?,
                    digest: parse(r.try_get("digest")?)?,
                    pushed_at: r.try_get("updated_at")?,
                    pulled_at: r.try_get("pulled_at")?,
                })
            })
            .collect()
    }

    async fn manifest_infos(&self, repo: &RepoName) -> Result<Vec<ManifestInfo>> {
        let rows = sqlx::query(&format!(
            "SELECT m.digest, m.created_at, m.untagged_at, m.subject, \
               CAST(CASE WHEN EXISTS (SELECT 1 FROM tags t \
                 WHERE t.repo_id = m.repo_id AND t.digest = m.digest) THEN 1 ELSE 0 END \
                 AS BIGINT) AS tagged, \
               (SELECT {} FROM manifest_refs x \
                WHERE x.repo_id = m.repo_id AND x.manifest_digest = m.digest \
                  AND x.kind = 'manifest') AS children \
             FROM manifests m JOIN repositories r ON r.id = m.repo_id WHERE r.name = $1 \
             ORDER BY m.digest",
            super::json_array_of("x.ref_digest")
        ))
        .bind(repo.as_str())
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| {
                let subject: Option<String> = r.try_get("subject")?;
                let children: String = r.try_get("children")?;
                let children: Vec<String> = serde_json::from_str(&children)
                    .map_err(|e| MetadataError::Corrupt(format!("children: {e}")))?;
                Ok(ManifestInfo {
                    digest: parse(r.try_get("digest")?)?,
                    created_at: r.try_get("created_at")?,
                    untagged_at: r.try_get("untagged_at")?,
                    tagged: r.try_get::<i64, _>("tagged")? != 0,
                    subject: subject.as_deref().map(parse).transpose()?,
                    children: children.iter().map(|c| parse(c)).collect::<Result<_>>()?,
                })
            })
            .collect()
    }

    async fn delete_tag_if(&self, repo: &RepoName, tag: &TagInfo) -> Result<bool> {
        let name: Tag = tag
            .name
            .parse()
            .map_err(|e| MetadataError::Corrupt(format!("tag {:?}: {e}", tag.name)))?;
        let r = self
            .exec(
                sqlx::query(
                    "DELETE FROM tags WHERE name = $1 AND digest = $2 AND updated_at = $3 \
             AND repo_id = (SELECT id FROM repositories WHERE name = $4)",
                )
                .bind(name.as_str())
                .bind(tag.digest.to_string())
                .bind(tag.pushed_at)
                .bind(repo.as_str()),
            )
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_untagged_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let Some(rid): Option<i64> =
            sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
                .bind(repo.as_str())
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(false);
        };
        let needed: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tags WHERE repo_id = $1 AND digest = $2) \
               OR EXISTS (SELECT 1 FROM manifest_refs WHERE repo_id = $1 AND ref_digest = $2)",
        )
        .bind(rid)
        .bind(digest.to_string())
        .fetch_one(&mut *tx)
        .await?;
        if needed {
            return Ok(false);
        }
        let gone = remove_manifest(&mut tx, rid, digest).await?;
        tx.commit().await?;
        Ok(gone)
    }

    async fn blob_totals(&self, after: Option<&str>) -> Result<(u64, u64)> {
        let (n, bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(CAST(SUM(size) AS BIGINT), 0) FROM blobs \
             WHERE digest > $1 AND quarantined_at IS NULL",
        )
        .bind(after.unwrap_or(""))
        .fetch_one(self.reader())
        .await?;
        Ok((n as u64, bytes as u64))
    }

    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let s: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = $1")
            .bind(digest.to_string())
            .fetch_optional(self.writer())
            .await?;
        Ok(s.map(|s| s as u64))
    }

    async fn blobs_after(&self, after: Option<&str>, limit: u32) -> Result<Vec<(Digest, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT digest, size FROM blobs WHERE digest > $1 AND quarantined_at IS NULL \
             ORDER BY digest LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(self.reader())
        .await?;
        rows.into_iter()
            .map(|(d, s)| Ok((parse(&d)?, s as u64)))
            .collect()
    }

    async fn quarantine_blob(&self, digest: &Digest, set_aside: DeleteBytes<'_>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE blobs SET quarantined_at = $1 WHERE digest = $2")
            .bind(now())
            .bind(digest.to_string())
            .execute(&mut *tx)
            .await?;
        set_aside(digest.clone())
            .await
            .map_err(|e| MetadataError::Corrupt(format!("cannot quarantine {digest}: {e}")))?;
        tx.commit().await?;
        Ok(())
    }
}
