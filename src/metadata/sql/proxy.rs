//! SQL for proxy, written once for both dialects.

use super::content::{ensure_repo, insert_manifest, set_tag};
use super::Meta;
use crate::metadata::proxy::*;
use crate::metadata::{now, MetadataError, NewManifest, Result};
use crate::oci::{Digest, RepoName, Tag};
use async_trait::async_trait;
use sqlx::Row;
use std::str::FromStr;

fn digest(s: &str) -> Result<Digest> {
    Digest::from_str(s).map_err(|e| MetadataError::Corrupt(format!("digest {s:?}: {e}")))
}

/// `repo LIKE 'hub/%' OR ...` for the given prefixes, binding nothing (names are validated).
fn under(prefixes: &[String], column: &str) -> String {
    if prefixes.is_empty() {
        return "0".into();
    }
    prefixes
        .iter()
        .map(|p| format!("{column} LIKE '{}/%'", p.replace('\'', "")))
        .collect::<Vec<_>>()
        .join(" OR ")
}

const UNREFERENCED: &str = "NOT EXISTS (SELECT 1 FROM repo_blobs WHERE digest = $1) \
     AND NOT EXISTS (SELECT 1 FROM manifest_refs WHERE ref_digest = $1) \
     AND NOT EXISTS (SELECT 1 FROM manifests WHERE digest = $1)";

#[async_trait]
impl CacheStore for Meta {
    async fn take_fill_lease(&self, digest: &Digest, holder: &str, ttl_secs: i64) -> Result<bool> {
        use crate::metadata::lifecycle::LifecycleStore;
        if !super::SHARED {
            // One process serves this database: its in-memory single flight is enough.
            return Ok(true);
        }
        Ok(self
            .take_lease(&format!("fill:{digest}"), holder, ttl_secs)
            .await?
            .is_ok())
    }

    async fn release_fill_lease(&self, digest: &Digest, holder: &str) -> Result<()> {
        use crate::metadata::lifecycle::LifecycleStore;
        if !super::SHARED {
            return Ok(());
        }
        self.release_lease(&format!("fill:{digest}"), holder).await
    }

    async fn cache_manifest(
        &self,
        repo: &RepoName,
        m: &NewManifest,
        tag: Option<&Tag>,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let rid = ensure_repo(&mut tx, repo).await?;
        let t = now();
        insert_manifest(&mut tx, rid, m, t).await?;
        if let Some(tag) = tag {
            set_tag(&mut tx, rid, tag, &m.record.digest, t, Some(t)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn tag_checked_at(&self, repo: &RepoName, tag: &Tag) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT t.checked_at FROM tags t JOIN repositories r ON r.id = t.repo_id \
             WHERE r.name = $1 AND t.name = $2",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_optional(self.reader())
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get::<Option<i64>, _>("checked_at")?.unwrap_or(0)),
            None => None,
        })
    }

    async fn mark_tag_checked(&self, repo: &RepoName, tag: &Tag, at: i64) -> Result<()> {
        self.exec(
            sqlx::query(
                "UPDATE tags SET checked_at = $1 WHERE name = $2 \
             AND repo_id = (SELECT id FROM repositories WHERE name = $3)",
            )
            .bind(at)
            .bind(tag.as_str())
            .bind(repo.as_str()),
        )
        .await?;
        Ok(())
    }

    async fn record_pulls(&self, pulls: &[PullRecord], at: i64) -> Result<()> {
        if pulls.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for p in pulls {
            sqlx::query(
                "UPDATE manifests SET pulled_at = $1 WHERE digest = $2 \
                 AND repo_id = (SELECT id FROM repositories WHERE name = $3)",
            )
            .bind(at)
            .bind(p.digest.to_string())
            .bind(p.repo.as_str())
            .execute(&mut *tx)
            .await?;
            if let Some(tag) = &p.tag {
                sqlx::query(
                    "UPDATE tags SET pulled_at = $1 WHERE name = $2 \
                     AND repo_id = (SELECT id FROM repositories WHERE name = $3)",
                )
                .bind(at)
                .bind(tag.as_str())
                .bind(p.repo.as_str())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn add_upstream_state(
        &self,
        name: &str,
        d: &UpstreamCounters,
        budget: Option<&RateBudget>,
    ) -> Result<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO proxy_upstreams (name, updated_at) VALUES ($1, $2) \
             ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(now()),
        )
        .await?;
        let (limit, remaining, window, seen) = match budget {
            Some(b) => (
                Some(b.limit as i64),
                Some(b.remaining as i64),
                b.window.map(|w| w as i64),
                Some(b.seen_at),
            ),
            None => (None, None, None, None),
        };
        self.exec(
            sqlx::query(
                "UPDATE proxy_upstreams SET hits = hits + $2, misses = misses + $3, \
               stale = stale + $4, errors = errors + $5, mismatches = mismatches + $6, \
               coalesced = coalesced + $7, bytes_fetched = bytes_fetched + $8, \
               bytes_served = bytes_served + $9, updated_at = $10, \
               rl_limit = COALESCE($11, rl_limit), rl_remaining = COALESCE($12, rl_remaining), \
               rl_window = CASE WHEN $11 IS NULL THEN rl_window ELSE $13 END, \
               rl_seen_at = COALESCE($14, rl_seen_at) \
             WHERE name = $1",
            )
            .bind(name)
            .bind(d.hits as i64)
            .bind(d.misses as i64)
            .bind(d.stale as i64)
            .bind(d.errors as i64)
            .bind(d.mismatches as i64)
            .bind(d.coalesced as i64)
            .bind(d.bytes_fetched as i64)
            .bind(d.bytes_served as i64)
            .bind(now())
            .bind(limit)
            .bind(remaining)
            .bind(window)
            .bind(seen),
        )
        .await?;
        Ok(())
    }

    async fn upstream_states(&self) -> Result<Vec<UpstreamState>> {
        let rows = sqlx::query("SELECT * FROM proxy_upstreams ORDER BY name")
            .fetch_all(self.reader())
            .await?;
        rows.iter()
            .map(|r| {
                let n = |c: &str| -> Result<u64> { Ok(r.try_get::<i64, _>(c)? as u64) };
                let limit: Option<i64> = r.try_get("rl_limit")?;
                let remaining: Option<i64> = r.try_get("rl_remaining")?;
                let seen: Option<i64> = r.try_get("rl_seen_at")?;
                let window: Option<i64> = r.try_get("rl_window")?;
                Ok(UpstreamState {
                    name: r.try_get("name")?,
                    counters: UpstreamCounters {
                        hits: n("hits")?,
                        misses: n("misses")?,
                        stale: n("stale")?,
                        errors: n("errors")?,
                        mismatches: n("mismatches")?,
                        coalesced: n("coalesced")?,
                        bytes_fetched: n("bytes_fetched")?,
                        bytes_served: n("bytes_served")?,
                    },
                    budget: match (limit, remaining, seen) {
                        (Some(l), Some(rem), Some(s)) => Some(RateBudget {
                            limit: l as u64,
                            remaining: rem as u64,
                            window: window.map(|w| w as u64),
                            seen_at: s,
                        }),
                        _ => None,
                    },
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn set_pin(&self, repo: &str, pinned: bool) -> Result<bool> {
        let r = if pinned {
            self.exec(sqlx::query(
                "INSERT INTO proxy_pins (repo, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(repo)
            .bind(now()))
            .await?
        } else {
            self.exec(sqlx::query("DELETE FROM proxy_pins WHERE repo = $1").bind(repo))
                .await?
        };
        Ok(r.rows_affected() > 0)
    }

    async fn pins(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT repo FROM proxy_pins ORDER BY repo")
                .fetch_all(self.reader())
                .await?,
        )
    }

    async fn cached_images(&self, prefixes: &[String]) -> Result<Vec<CachedImage>> {
        let rows = sqlx::query(&format!(
            "SELECT r.name AS repo, m.digest, m.media_type, m.created_at, m.pulled_at, \
               m.size + COALESCE((SELECT CAST(SUM(b.size) AS BIGINT) FROM blobs b WHERE b.digest IN \
                 (SELECT ref_digest FROM manifest_refs mr WHERE mr.repo_id = m.repo_id \
                    AND mr.manifest_digest = m.digest AND mr.kind = 'blob')), 0) AS bytes, \
               (SELECT {} FROM tags t \
                  WHERE t.repo_id = m.repo_id AND t.digest = m.digest) AS tags, \
               CAST(CASE WHEN EXISTS (SELECT 1 FROM proxy_pins p WHERE p.repo = r.name) \
                 THEN 1 ELSE 0 END AS BIGINT) AS pinned \
             FROM manifests m JOIN repositories r ON r.id = m.repo_id \
             WHERE {} ORDER BY r.name, m.created_at",
            super::joined("t.name"),
            under(prefixes, "r.name")
        ))
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| {
                let tags: Option<String> = r.try_get("tags")?;
                Ok(CachedImage {
                    repo: r.try_get("repo")?,
                    digest: digest(r.try_get("digest")?)?,
                    media_type: r.try_get("media_type")?,
                    bytes: r.try_get::<i64, _>("bytes")? as u64,
                    tags: tags
                        .map(|t| t.split(' ').map(str::to_string).collect())
                        .unwrap_or_default(),
                    created_at: r.try_get("created_at")?,
                    pulled_at: r.try_get("pulled_at")?,
                    pinned: r.try_get::<i64, _>("pinned")? != 0,
                })
            })
            .collect()
    }

    async fn cache_usage(&self, prefixes: &[String]) -> Result<u64> {
        let total: i64 = sqlx::query_scalar(&format!(
            "SELECT COALESCE(CAST(SUM(size) AS BIGINT), 0) FROM blobs WHERE digest IN ( \
               SELECT rb.digest FROM repo_blobs rb JOIN repositories r ON r.id = rb.repo_id \
                 WHERE {c} \
               UNION SELECT m.digest FROM manifests m JOIN repositories r ON r.id = m.repo_id \
                 WHERE {c})",
            c = under(prefixes, "r.name")
        ))
        .fetch_one(self.reader())
        .await?;
        Ok(total as u64)
    }

    async fn evict_manifest(&self, repo: &RepoName, d: &Digest) -> Result<Vec<Digest>> {
        let mut tx = self.write_tx().await?;
        let Some(rid): Option<i64> =
            sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
                .bind(repo.as_str())
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(Vec::new());
        };
        let refs: Vec<String> = sqlx::query_scalar(
            "SELECT ref_digest FROM manifest_refs WHERE repo_id = $1 AND manifest_digest = $2",
        )
        .bind(rid)
        .bind(d.to_string())
        .fetch_all(&mut *tx)
        .await?;
        // Tags and references go with the manifest (ON DELETE CASCADE).
        sqlx::query("DELETE FROM manifests WHERE repo_id = $1 AND digest = $2")
            .bind(rid)
            .bind(d.to_string())
            .execute(&mut *tx)
            .await?;
        let mut gone = Vec::new();
        let mut candidates = refs;
        candidates.push(d.to_string());
        for r in &candidates {
            // The repository keeps a blob only while another of its manifests uses it.
            sqlx::query(
                "DELETE FROM repo_blobs WHERE repo_id = $1 AND digest = $2 \
                 AND NOT EXISTS (SELECT 1 FROM manifest_refs \
                   WHERE repo_id = $1 AND ref_digest = $2)",
            )
            .bind(rid)
            .bind(r)
            .execute(&mut *tx)
            .await?;
            let unreferenced: bool = sqlx::query_scalar(&format!("SELECT {UNREFERENCED}"))
                .bind(r)
                .fetch_one(&mut *tx)
                .await?;
            if unreferenced {
                gone.push(digest(r)?);
            }
        }
        tx.commit().await?;
        Ok(gone)
    }

    async fn delete_unreferenced(
        &self,
        candidates: &[Digest],
        delete: DeleteBytes<'_>,
    ) -> Result<Vec<Digest>> {
        let mut deleted = Vec::new();
        for d in candidates {
            // One short write transaction per blob: the writer connection is the lock every
            // link takes, so holding it across the check and the deletion closes the race.
            let mut tx = self.write_tx().await?;
            let unreferenced: bool = sqlx::query_scalar(&format!("SELECT {UNREFERENCED}"))
                .bind(d.to_string())
                .fetch_one(&mut *tx)
                .await?;
            if !unreferenced {
                continue;
            }
            if let Err(e) = delete(d.clone()).await {
                tracing::warn!(digest = %d, error = %e, "cannot delete blob bytes; keeping its record");
                continue;
            }
            sqlx::query("DELETE FROM blobs WHERE digest = $1")
                .bind(d.to_string())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            deleted.push(d.clone());
        }
        Ok(deleted)
    }
}
