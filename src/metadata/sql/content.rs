//! SQL for content, written once for both dialects.

use super::lifecycle::check_quota;
use super::{Db, DbRow, Meta};
use crate::metadata::{
    now, KeepTag, ManifestRecord, ManifestRef, Metadata, MetadataError, NewManifest, Page, Quota,
    Result, UploadRecord,
};
use crate::oci::{Digest, RepoName, Tag, UploadId};
use async_trait::async_trait;
use sqlx::{Row, Transaction};
use std::str::FromStr;

fn parse_digest(s: &str) -> Result<Digest> {
    Digest::from_str(s).map_err(|e| MetadataError::Corrupt(format!("digest {s:?}: {e}")))
}

fn manifest_from_row(row: &DbRow) -> Result<ManifestRecord> {
    let subject: Option<String> = row.try_get("subject")?;
    let annotations: Option<String> = row.try_get("annotations")?;
    Ok(ManifestRecord {
        digest: parse_digest(row.try_get("digest")?)?,
        media_type: row.try_get("media_type")?,
        size: row.try_get::<i64, _>("size")? as u64,
        artifact_type: row.try_get("artifact_type")?,
        subject: subject.as_deref().map(parse_digest).transpose()?,
        annotations: annotations
            .map(|a| serde_json::from_str(&a))
            .transpose()
            .map_err(|e| MetadataError::Corrupt(format!("annotations: {e}")))?,
    })
}

pub(super) async fn ensure_repo(tx: &mut Transaction<'_, Db>, repo: &RepoName) -> Result<i64> {
    sqlx::query(
        "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(repo.as_str())
    .bind(now())
    .execute(&mut **tx)
    .await?;
    let id = sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
        .bind(repo.as_str())
        .fetch_one(&mut **tx)
        .await?;
    Ok(id)
}

pub(super) async fn record_blob(
    tx: &mut Transaction<'_, Db>,
    digest: &Digest,
    size: u64,
) -> Result<()> {
    // Bytes stored again (durably, before this row) end a quarantine.
    sqlx::query(
        "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (digest) DO UPDATE SET quarantined_at = NULL \
         WHERE blobs.quarantined_at IS NOT NULL",
    )
    .bind(digest.to_string())
    .bind(size as i64)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn link(
    tx: &mut Transaction<'_, Db>,
    repo_id: i64,
    digest: &Digest,
    size: u64,
) -> Result<()> {
    record_blob(tx, digest, size).await?;
    // Linking again (another upload or mount of the same blob) restarts GC's grace.
    sqlx::query(
        "INSERT INTO repo_blobs (repo_id, digest, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (repo_id, digest) DO UPDATE SET created_at = excluded.created_at, \
           idle_since = NULL",
    )
    .bind(repo_id)
    .bind(digest.to_string())
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records a manifest (its bytes already stored) with the references it makes.
pub(super) async fn insert_manifest(
    tx: &mut Transaction<'_, Db>,
    rid: i64,
    m: &NewManifest,
    t: i64,
) -> Result<()> {
    let rec = &m.record;
    let digest = rec.digest.to_string();
    record_blob(tx, &rec.digest, rec.size).await?;
    sqlx::query("UPDATE blobs SET is_manifest = 1 WHERE digest = $1 AND is_manifest = 0")
        .bind(&digest)
        .execute(&mut **tx)
        .await?;
    let annotations = rec
        .annotations
        .as_ref()
        .map(|a| serde_json::to_string(a).expect("string maps serialize"));
    sqlx::query(
        "INSERT INTO manifests (repo_id, digest, media_type, size, artifact_type, subject, annotations, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (repo_id, digest) DO NOTHING",
    )
    .bind(rid)
    .bind(&digest)
    .bind(&rec.media_type)
    .bind(rec.size as i64)
    .bind(&rec.artifact_type)
    .bind(rec.subject.as_ref().map(|s| s.to_string()))
    .bind(annotations)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    for r in &m.refs {
        let (d, kind) = match r {
            ManifestRef::Blob { digest, .. } => (digest, "blob"),
            ManifestRef::Manifest { digest, .. } => (digest, "manifest"),
        };
        sqlx::query("INSERT INTO manifest_refs (repo_id, manifest_digest, ref_digest, kind) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
            .bind(rid)
            .bind(&digest)
            .bind(d.to_string())
            .bind(kind)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Points a tag at a manifest; `checked_at` is set for tags the cache revalidated.
pub(super) async fn set_tag(
    tx: &mut Transaction<'_, Db>,
    rid: i64,
    tag: &Tag,
    digest: &Digest,
    t: i64,
    checked_at: Option<i64>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO tags (repo_id, name, digest, updated_at, checked_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (repo_id, name) DO UPDATE SET \
           updated_at = CASE WHEN tags.digest = excluded.digest THEN tags.updated_at ELSE excluded.updated_at END, \
           digest = excluded.digest, checked_at = excluded.checked_at",
    )
    .bind(rid)
    .bind(tag.as_str())
    .bind(digest.to_string())
    .bind(t)
    .bind(checked_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes a manifest (its tags and references go with it, ON DELETE CASCADE). What it
/// referenced, and its own bytes, lose a reference now: GC's grace for them starts again.
pub(super) async fn remove_manifest(
    tx: &mut Transaction<'_, Db>,
    rid: i64,
    digest: &Digest,
) -> Result<bool> {
    let d = digest.to_string();
    let t = now();
    sqlx::query(
        "UPDATE repo_blobs SET idle_since = $3 WHERE repo_id = $1 AND digest IN \
           (SELECT ref_digest FROM manifest_refs WHERE repo_id = $1 AND manifest_digest = $2)",
    )
    .bind(rid)
    .bind(&d)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE blobs SET idle_since = $3 WHERE digest = $2 OR digest IN \
           (SELECT ref_digest FROM manifest_refs WHERE repo_id = $1 AND manifest_digest = $2)",
    )
    .bind(rid)
    .bind(&d)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    let r = sqlx::query("DELETE FROM manifests WHERE repo_id = $1 AND digest = $2")
        .bind(rid)
        .bind(&d)
        .execute(&mut **tx)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Checks one reference of a manifest being put; returns the digest when it is missing.
async fn check_ref(
    tx: &mut Transaction<'_, Db>,
    repo_id: i64,
    r: &ManifestRef,
) -> Result<Option<Digest>> {
    let (digest, stated, sql) = match r {
        ManifestRef::Blob { digest, size } => (
            digest,
            *size,
            "SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest \
             WHERE rb.repo_id = $1 AND rb.digest = $2 AND b.quarantined_at IS NULL",
        ),
        ManifestRef::Manifest { digest, size } => (
            digest,
            *size,
            "SELECT size FROM manifests WHERE repo_id = $1 AND digest = $2",
        ),
    };
    let actual: Option<i64> = sqlx::query_scalar(sql)
        .bind(repo_id)
        .bind(digest.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    match actual {
        None => Ok(Some(digest.clone())),
        Some(a) if a as u64 != stated => Err(MetadataError::SizeMismatch {
            digest: digest.clone(),
            stated,
            actual: a as u64,
        }),
        Some(_) => Ok(None),
    }
}

async fn repo_id(pool: &sqlx::Pool<Db>, repo: &RepoName) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .fetch_optional(pool)
            .await?,
    )
}

fn page(mut items: Vec<String>, limit: Option<u32>) -> Page {
    let more = limit.is_some_and(|l| items.len() > l as usize);
    if let Some(l) = limit {
        items.truncate(l as usize);
    }
    Page { items, more }
}

const MANIFEST_COLUMNS: &str =
    "m.digest, m.media_type, m.size, m.artifact_type, m.subject, m.annotations";

#[async_trait]
impl Metadata for Meta {
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM repositories r \
             JOIN repo_blobs rb ON rb.repo_id = r.id JOIN blobs b ON b.digest = rb.digest \
             WHERE r.name = $1 AND rb.digest = $2 AND b.quarantined_at IS NULL \
             UNION ALL SELECT m.size FROM repositories r JOIN manifests m ON m.repo_id = r.id \
             WHERE r.name = $1 AND m.digest = $2 AND NOT EXISTS \
               (SELECT 1 FROM blobs q WHERE q.digest = $2 AND q.quarantined_at IS NOT NULL) \
             LIMIT 1",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&self.read)
        .await?;
        Ok(size.map(|s| s as u64))
    }

    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        quota: Option<&Quota>,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        if let Some(q) = quota {
            check_quota(&mut tx, q, digest, size).await?;
        }
        let id = ensure_repo(&mut tx, repo).await?;
        link(&mut tx, id, digest, size).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn touch_idle_link(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        super::lifecycle::touch_idle_link(self, repo, digest).await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let r = self
            .exec(
                sqlx::query(
                    "DELETE FROM repo_blobs WHERE digest = $1 \
             AND repo_id = (SELECT id FROM repositories WHERE name = $2)",
                )
                .bind(digest.to_string())
                .bind(repo.as_str()),
            )
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn namespace_usage(&self, namespace: &str) -> Result<u64> {
        super::lifecycle::namespace_usage(&self.read, namespace).await
    }

    async fn namespace_holds(&self, namespace: &str, digest: &Digest) -> Result<bool> {
        super::lifecycle::namespace_holds(&self.read, namespace, digest).await
    }

    async fn create_upload(&self, id: &UploadId, repo: &RepoName) -> Result<()> {
        self.insert_upload(id, repo, now()).await
    }

    async fn upload(&self, id: &UploadId) -> Result<Option<UploadRecord>> {
        // Read through the writer: an upload's size must reflect the last acknowledged write.
        let row =
            sqlx::query("SELECT repo, size, created_at, updated_at FROM uploads WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&self.write)
                .await?;
        row.map(|r| {
            let repo: String = r.try_get("repo")?;
            Ok(UploadRecord {
                id: id.clone(),
                repo: repo
                    .parse()
                    .map_err(|e| MetadataError::Corrupt(format!("upload repo: {e}")))?,
                size: r.try_get::<i64, _>("size")? as u64,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .transpose()
    }

    async fn set_upload_size(&self, id: &UploadId, size: u64) -> Result<()> {
        sqlx::query("UPDATE uploads SET size = $1, updated_at = $2 WHERE id = $3")
            .bind(size as i64)
            .bind(now())
            .bind(id.as_str())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn finish_upload(
        &self,
        id: &UploadId,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        quota: Option<&Quota>,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        if let Some(q) = quota {
            check_quota(&mut tx, q, digest, size).await?;
        }
        let rid = ensure_repo(&mut tx, repo).await?;
        link(&mut tx, rid, digest, size).await?;
        sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool> {
        let r = self
            .exec(sqlx::query("DELETE FROM uploads WHERE id = $1").bind(id.as_str()))
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn uploads(&self) -> Result<Vec<UploadRecord>> {
        let rows = sqlx::query("SELECT id FROM uploads")
            .fetch_all(&self.write)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.try_get("id")?;
            let id: UploadId = id
                .parse()
                .map_err(|e| MetadataError::Corrupt(format!("upload id: {e}")))?;
            if let Some(u) = self.upload(&id).await? {
                out.push(u);
            }
        }
        Ok(out)
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        m: &NewManifest,
        tags: &[Tag],
        fixed: &[Tag],
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let rid = ensure_repo(&mut tx, repo).await?;
        for tag in tags.iter().filter(|t| fixed.contains(t)) {
            let current: Option<String> =
                sqlx::query_scalar("SELECT digest FROM tags WHERE repo_id = $1 AND name = $2")
                    .bind(rid)
                    .bind(tag.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(d) = current.filter(|d| *d != m.record.digest.to_string()) {
                return Err(MetadataError::TagFixed {
                    tag: tag.to_string(),
                    digest: d
                        .parse()
                        .map_err(|e| MetadataError::Corrupt(format!("tag digest {d:?}: {e}")))?,
                });
            }
        }
        let mut missing = Vec::new();
        for r in &m.refs {
            if let Some(d) = check_ref(&mut tx, rid, r).await? {
                missing.push(d);
            }
        }
        if !missing.is_empty() {
            return Err(MetadataError::MissingReferences(missing));
        }
        let t = now();
        insert_manifest(&mut tx, rid, m, t).await?;
        for tag in tags {
            set_tag(&mut tx, rid, tag, &m.record.digest, t, None).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {MANIFEST_COLUMNS} FROM manifests m JOIN repositories r ON r.id = m.repo_id \
             WHERE r.name = $1 AND m.digest = $2"
        ))
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(manifest_from_row).transpose()
    }

    async fn manifest_by_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<ManifestRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {MANIFEST_COLUMNS} FROM repositories r \
             JOIN tags t ON t.repo_id = r.id \
             JOIN manifests m ON m.repo_id = r.id AND m.digest = t.digest \
             WHERE r.name = $1 AND t.name = $2"
        ))
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(manifest_from_row).transpose()
    }

    async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        keep: KeepTag<'_>,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let tags: Vec<String> = sqlx::query_scalar(
            "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repo_id \
             WHERE r.name = $1 AND t.digest = $2 ORDER BY t.name",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_all(&mut *tx)
        .await?;
        if let Some(tag) = tags.into_iter().find(|t| keep(t)) {
            return Err(MetadataError::TagFixed {
                tag,
                digest: digest.clone(),
            });
        }
        let Some(rid) = sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(false);
        };
        let gone = remove_manifest(&mut tx, rid, digest).await?;
        tx.commit().await?;
        Ok(gone)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let r = self
            .exec(
                sqlx::query(
                    "DELETE FROM tags WHERE name = $1 \
             AND repo_id = (SELECT id FROM repositories WHERE name = $2)",
                )
                .bind(tag.as_str())
                .bind(repo.as_str()),
            )
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Option<Page>> {
        let Some(rid) = repo_id(&self.read, repo).await? else {
            return Ok(None);
        };
        let items: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM tags WHERE repo_id = $1 AND name > $2 ORDER BY name LIMIT $3",
        )
        .bind(rid)
        .bind(last.unwrap_or(""))
        .bind(limit.map_or(i64::MAX, |l| l as i64 + 1))
        .fetch_all(&self.read)
        .await?;
        Ok(Some(page(items, limit)))
    }

    async fn repository_exists(&self, repo: &RepoName) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM repositories r WHERE r.name = $1 \
               AND (EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id) \
                    OR EXISTS (SELECT 1 FROM repo_blobs b WHERE b.repo_id = r.id)))",
        )
        .bind(repo.as_str())
        .fetch_one(&self.read)
        .await?)
    }

    async fn repositories(&self, last: Option<&str>, limit: u32) -> Result<Page> {
        let items: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM repositories r WHERE name > $1 \
             AND (EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id) \
                  OR EXISTS (SELECT 1 FROM repo_blobs b WHERE b.repo_id = r.id)) \
             ORDER BY name LIMIT $2",
        )
        .bind(last.unwrap_or(""))
        .bind(limit as i64 + 1)
        .fetch_all(&self.read)
        .await?;
        Ok(page(items, Some(limit)))
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ManifestRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {MANIFEST_COLUMNS} FROM manifests m JOIN repositories r ON r.id = m.repo_id \
             WHERE r.name = $1 AND m.subject = $2 AND ($3 IS NULL OR m.artifact_type = $3) \
             ORDER BY m.created_at, m.digest"
        ))
        .bind(repo.as_str())
        .bind(subject.to_string())
        .bind(artifact_type)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(manifest_from_row).collect()
    }
}
