//! What the storage lifecycle keeps in the database besides GC's queries: leases (one GC,
//! retention run or scrub at a time across processes), small named state (the scrub's resume
//! point), namespace usage for quotas, the listings retention decides from, its guarded
//! deletions, and quarantine.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::{Row, Sqlite, Transaction};

use super::proxy::DeleteBytes;
use super::sqlite::{remove_manifest, SqliteMetadata};
use super::{now, MetadataError, Quota, Result};
use crate::oci::{Digest, RepoName, Tag};

/// A tag as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagInfo {
    pub name: String,
    pub digest: Digest,
    /// When the tag last moved to its current manifest.
    pub pushed_at: i64,
    pub pulled_at: Option<i64>,
}

/// A manifest as retention sees it: what keeps it, and what it keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestInfo {
    pub digest: Digest,
    pub created_at: i64,
    /// When it lost its last tag (`None`: never tagged, or tagged now).
    pub untagged_at: Option<i64>,
    pub tagged: bool,
    pub subject: Option<Digest>,
    /// Manifests it references (an index's children).
    pub children: Vec<Digest>,
}

#[async_trait]
pub trait LifecycleStore: Send + Sync + 'static {
    /// The counter every removal moves (see the `content_generation` table).
    async fn content_generation(&self) -> Result<i64>;

    /// Takes lease `name` for `ttl_secs` (or renews it, for the same holder). `Err` names
    /// the other holder when it is held.
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_secs: i64,
    ) -> Result<Result<(), String>>;
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;

    async fn state(&self, key: &str) -> Result<Option<String>>;
    /// Sets (or with `None` removes) a named value.
    async fn set_state(&self, key: &str, value: Option<&str>) -> Result<()>;

    /// Every repository with tags or manifests.
    async fn content_repositories(&self) -> Result<Vec<String>>;
    async fn tag_infos(&self, repo: &RepoName) -> Result<Vec<TagInfo>>;
    async fn manifest_infos(&self, repo: &RepoName) -> Result<Vec<ManifestInfo>>;
    /// Deletes a tag only if it still points where retention saw it; `false` otherwise.
    async fn delete_tag_if(&self, repo: &RepoName, tag: &TagInfo) -> Result<bool>;
    /// Deletes a manifest only while no tag points at it and no manifest in its repository
    /// references it; `false` otherwise.
    async fn delete_untagged_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    /// Upload sessions open now.
    async fn upload_count(&self) -> Result<u64>;
    /// Takes the write lock and lets it go, writing nothing: the database takes writes.
    async fn check_writable(&self) -> Result<()>;
    /// How many blobs (not quarantined) come after `after` in digest order, and their bytes.
    async fn blob_totals(&self, after: Option<&str>) -> Result<(u64, u64)>;
    /// A blob's recorded size, if it has a row (quarantined or not).
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>>;
    /// Blobs after `after` in digest order (not quarantined), at most `limit`.
    async fn blobs_after(&self, after: Option<&str>, limit: u32) -> Result<Vec<(Digest, u64)>>;
    /// Marks a blob quarantined (answered as unknown until stored again) and, under the same
    /// write lock, moves its bytes aside with `set_aside`. A push that stores the blob again
    /// either links before (and then finds the bytes gone and stores its own) or after.
    async fn quarantine_blob(&self, digest: &Digest, set_aside: DeleteBytes<'_>) -> Result<()>;
}

fn parse(d: &str) -> Result<Digest> {
    Digest::from_str(d).map_err(|e| MetadataError::Corrupt(format!("digest {d:?}: {e}")))
}

/// The namespace's content: what its repositories link and their manifests.
const NAMESPACE_CONTENT: &str = "WITH ns AS (SELECT id FROM repositories \
       WHERE name = ?1 OR substr(name, 1, length(?1) + 1) = ?1 || '/'), \
     content AS (SELECT digest FROM repo_blobs WHERE repo_id IN (SELECT id FROM ns) \
       UNION SELECT digest FROM manifests WHERE repo_id IN (SELECT id FROM ns))";

/// Refuses, inside the linking transaction, a blob that would take the namespace past its
/// quota. A blob the namespace holds already costs nothing.
pub(super) async fn check_quota(
    tx: &mut Transaction<'_, Sqlite>,
    q: &Quota,
    digest: &Digest,
    size: u64,
) -> Result<()> {
    let row = sqlx::query(&format!(
        "{NAMESPACE_CONTENT} SELECT COALESCE(SUM(b.size), 0) AS used, \
           COALESCE(MAX(b.digest = ?2), 0) AS held \
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
pub(super) async fn namespace_usage(pool: &sqlx::SqlitePool, namespace: &str) -> Result<u64> {
    let used: i64 = sqlx::query_scalar(&format!(
        "{NAMESPACE_CONTENT} SELECT COALESCE(SUM(size), 0) FROM blobs \
         WHERE digest IN (SELECT digest FROM content)"
    ))
    .bind(namespace)
    .fetch_one(pool)
    .await?;
    Ok(used as u64)
}

/// Whether one of the namespace's repositories holds the blob already.
pub(super) async fn namespace_holds(
    pool: &sqlx::SqlitePool,
    namespace: &str,
    digest: &Digest,
) -> Result<bool> {
    Ok(sqlx::query_scalar(&format!(
        "{NAMESPACE_CONTENT} SELECT EXISTS (SELECT 1 FROM content WHERE digest = ?2)"
    ))
    .bind(namespace)
    .bind(digest.to_string())
    .fetch_one(pool)
    .await?)
}

/// Restarts the grace of a link its repository does not reference (looked up on the reader
/// first, so links that need nothing cost no write).
pub(super) async fn touch_idle_link(
    read: &sqlx::SqlitePool,
    write: &sqlx::SqlitePool,
    repo: &RepoName,
    digest: &Digest,
) -> Result<()> {
    const IDLE: &str = "rb.repo_id = (SELECT id FROM repositories WHERE name = ?1) \
         AND rb.digest = ?2 AND NOT EXISTS (SELECT 1 FROM manifest_refs x \
           WHERE x.repo_id = rb.repo_id AND x.ref_digest = rb.digest)";
    let idle: bool = sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM repo_blobs rb WHERE {IDLE})"
    ))
    .bind(repo.as_str())
    .bind(digest.to_string())
    .fetch_one(read)
    .await?;
    if idle {
        sqlx::query(&format!(
            "UPDATE repo_blobs AS rb SET idle_since = ?3 WHERE {IDLE}"
        ))
        .bind(repo.as_str())
        .bind(digest.to_string())
        .bind(now())
        .execute(write)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl LifecycleStore for SqliteMetadata {
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
            "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
               expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < ?4",
        )
        .bind(name)
        .bind(holder)
        .bind(t + ttl_secs)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        let current: String = sqlx::query_scalar("SELECT holder FROM leases WHERE name = ?")
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
        sqlx::query("DELETE FROM leases WHERE name = ? AND holder = ?")
            .bind(name)
            .bind(holder)
            .execute(self.writer())
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
            sqlx::query_scalar("SELECT value FROM lifecycle_state WHERE key = ?")
                .bind(key)
                .fetch_optional(self.writer())
                .await?,
        )
    }

    async fn set_state(&self, key: &str, value: Option<&str>) -> Result<()> {
        match value {
            Some(v) => {
                sqlx::query(
                    "INSERT INTO lifecycle_state (key, value, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                   updated_at = excluded.updated_at",
                )
                .bind(key)
                .bind(v)
                .bind(now())
                .execute(self.writer())
                .await?
            }
            None => {
                sqlx::query("DELETE FROM lifecycle_state WHERE key = ?")
                    .bind(key)
                    .execute(self.writer())
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
             JOIN repositories r ON r.id = t.repo_id WHERE r.name = ? ORDER BY t.name",
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
        let rows = sqlx::query(
            "SELECT m.digest, m.created_at, m.untagged_at, m.subject, \
               EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest) \
                 AS tagged, \
               (SELECT json_group_array(x.ref_digest) FROM manifest_refs x \
                WHERE x.repo_id = m.repo_id AND x.manifest_digest = m.digest \
                  AND x.kind = 'manifest') AS children \
             FROM manifests m JOIN repositories r ON r.id = m.repo_id WHERE r.name = ? \
             ORDER BY m.digest",
        )
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
        let r = sqlx::query(
            "DELETE FROM tags WHERE name = ? AND digest = ? AND updated_at = ? \
             AND repo_id = (SELECT id FROM repositories WHERE name = ?)",
        )
        .bind(name.as_str())
        .bind(tag.digest.to_string())
        .bind(tag.pushed_at)
        .bind(repo.as_str())
        .execute(self.writer())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_untagged_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let Some(rid): Option<i64> =
            sqlx::query_scalar("SELECT id FROM repositories WHERE name = ?")
                .bind(repo.as_str())
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(false);
        };
        let needed: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tags WHERE repo_id = ?1 AND digest = ?2) \
               OR EXISTS (SELECT 1 FROM manifest_refs WHERE repo_id = ?1 AND ref_digest = ?2)",
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
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blobs \
             WHERE digest > ? AND quarantined_at IS NULL",
        )
        .bind(after.unwrap_or(""))
        .fetch_one(self.reader())
        .await?;
        Ok((n as u64, bytes as u64))
    }

    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let s: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = ?")
            .bind(digest.to_string())
            .fetch_optional(self.writer())
            .await?;
        Ok(s.map(|s| s as u64))
    }

    async fn blobs_after(&self, after: Option<&str>, limit: u32) -> Result<Vec<(Digest, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT digest, size FROM blobs WHERE digest > ? AND quarantined_at IS NULL \
             ORDER BY digest LIMIT ?",
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
        sqlx::query("UPDATE blobs SET quarantined_at = ? WHERE digest = ?")
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
