//! What the pull-through cache keeps besides cached content itself (which lives in the
//! ordinary tables, in repositories named `<upstream>/<repository>`): when each cached tag
//! was last revalidated, when content was last pulled, pins, and per-upstream counters and
//! rate-limit budgets. Behind the [`CacheStore`] trait so PostgreSQL implements it too.

use std::str::FromStr;

use async_trait::async_trait;
use futures::future::BoxFuture;
use sqlx::Row;

use super::sqlite::{ensure_repo, insert_manifest, set_tag, SqliteMetadata};
use super::{now, MetadataError, NewManifest, Result};
use crate::oci::{Digest, RepoName, Tag};

/// One pull to record: of a manifest, by tag or by digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PullRecord {
    pub repo: RepoName,
    pub digest: Digest,
    pub tag: Option<Tag>,
}

/// Counters of one upstream, as deltas to add or as totals read back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamCounters {
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
    pub errors: u64,
    pub mismatches: u64,
    pub coalesced: u64,
    pub bytes_fetched: u64,
    pub bytes_served: u64,
}

impl UpstreamCounters {
    pub fn is_zero(&self) -> bool {
        *self == UpstreamCounters::default()
    }
}

/// The rate-limit budget an upstream last reported (`ratelimit-limit: 100;w=21600`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateBudget {
    pub limit: u64,
    pub remaining: u64,
    /// The window in seconds, when the upstream said.
    pub window: Option<u64>,
    /// When it was reported (seconds since the epoch).
    pub seen_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamState {
    pub name: String,
    pub counters: UpstreamCounters,
    pub budget: Option<RateBudget>,
    pub updated_at: i64,
}

/// A cached manifest, for listings and eviction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedImage {
    pub repo: String,
    pub digest: Digest,
    pub media_type: String,
    /// The manifest and the blobs it references that are stored, each counted once.
    pub bytes: u64,
    pub tags: Vec<String>,
    pub created_at: i64,
    pub pulled_at: Option<i64>,
    pub pinned: bool,
}

/// Deletes the stored bytes of a blob; called by [`CacheStore::delete_unreferenced`] while
/// no link to the blob can be made.
pub type DeleteBytes<'a> =
    &'a (dyn Fn(Digest) -> BoxFuture<'static, std::io::Result<()>> + Send + Sync);

#[async_trait]
pub trait CacheStore: Send + Sync + 'static {
    /// Records a manifest fetched from an upstream (its bytes already stored) without
    /// requiring what it references to be cached, and points `tag` at it as revalidated now.
    async fn cache_manifest(
        &self,
        repo: &RepoName,
        m: &NewManifest,
        tag: Option<&Tag>,
    ) -> Result<()>;
    /// When a tag of `repo` was last revalidated; `None` when it is not cached.
    async fn tag_checked_at(&self, repo: &RepoName, tag: &Tag) -> Result<Option<i64>>;
    async fn mark_tag_checked(&self, repo: &RepoName, tag: &Tag, at: i64) -> Result<()>;
    /// Records pulls (one write for many).
    async fn record_pulls(&self, pulls: &[PullRecord], at: i64) -> Result<()>;

    /// Adds to an upstream's counters and replaces its budget when one is given.
    async fn add_upstream_state(
        &self,
        name: &str,
        delta: &UpstreamCounters,
        budget: Option<&RateBudget>,
    ) -> Result<()>;
    async fn upstream_states(&self) -> Result<Vec<UpstreamState>>;

    /// `false` when nothing changed.
    async fn set_pin(&self, repo: &str, pinned: bool) -> Result<bool>;
    async fn pins(&self) -> Result<Vec<String>>;

    /// Every cached manifest in repositories under these prefixes (`hub/`, ...).
    async fn cached_images(&self, prefixes: &[String]) -> Result<Vec<CachedImage>>;
    /// Bytes stored for repositories under these prefixes, each blob counted once.
    async fn cache_usage(&self, prefixes: &[String]) -> Result<u64>;
    /// Removes a cached manifest with its tags and the repository's links to blobs no other
    /// manifest there references; returns the digests nothing references any more.
    async fn evict_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<Digest>>;
    /// Of `candidates`, forgets each blob that no repository links and no manifest references,
    /// deleting its bytes with `delete` before its record goes, under the write lock that
    /// every link takes: no link can be made to a blob between the check and the deletion.
    /// A writer that found the bytes present before and links after notices they are gone
    /// and stores them again (see ARCHITECTURE.md, "Deleting blobs safely").
    async fn delete_unreferenced(
        &self,
        candidates: &[Digest],
        delete: DeleteBytes<'_>,
    ) -> Result<Vec<Digest>>;
}

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

const UNREFERENCED: &str = "NOT EXISTS (SELECT 1 FROM repo_blobs WHERE digest = ?1) \
     AND NOT EXISTS (SELECT 1 FROM manifest_refs WHERE ref_digest = ?1) \
     AND NOT EXISTS (SELECT 1 FROM manifests WHERE digest = ?1)";

#[async_trait]
impl CacheStore for SqliteMetadata {
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
             WHERE r.name = ? AND t.name = ?",
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
        sqlx::query(
            "UPDATE tags SET checked_at = ? WHERE name = ? \
             AND repo_id = (SELECT id FROM repositories WHERE name = ?)",
        )
        .bind(at)
        .bind(tag.as_str())
        .bind(repo.as_str())
        .execute(self.writer())
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
                "UPDATE manifests SET pulled_at = ?1 WHERE digest = ?2 \
                 AND repo_id = (SELECT id FROM repositories WHERE name = ?3)",
            )
            .bind(at)
            .bind(p.digest.to_string())
            .bind(p.repo.as_str())
            .execute(&mut *tx)
            .await?;
            if let Some(tag) = &p.tag {
                sqlx::query(
                    "UPDATE tags SET pulled_at = ?1 WHERE name = ?2 \
                     AND repo_id = (SELECT id FROM repositories WHERE name = ?3)",
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
        sqlx::query(
            "INSERT INTO proxy_upstreams (name, updated_at) VALUES (?1, ?2) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now())
        .execute(self.writer())
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
        sqlx::query(
            "UPDATE proxy_upstreams SET hits = hits + ?2, misses = misses + ?3, \
               stale = stale + ?4, errors = errors + ?5, mismatches = mismatches + ?6, \
               coalesced = coalesced + ?7, bytes_fetched = bytes_fetched + ?8, \
               bytes_served = bytes_served + ?9, updated_at = ?10, \
               rl_limit = COALESCE(?11, rl_limit), rl_remaining = COALESCE(?12, rl_remaining), \
               rl_window = CASE WHEN ?11 IS NULL THEN rl_window ELSE ?13 END, \
               rl_seen_at = COALESCE(?14, rl_seen_at) \
             WHERE name = ?1",
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
        .bind(seen)
        .execute(self.writer())
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
            sqlx::query(
                "INSERT INTO proxy_pins (repo, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(repo)
            .bind(now())
            .execute(self.writer())
            .await?
        } else {
            sqlx::query("DELETE FROM proxy_pins WHERE repo = ?")
                .bind(repo)
                .execute(self.writer())
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
               m.size + COALESCE((SELECT SUM(b.size) FROM blobs b WHERE b.digest IN \
                 (SELECT ref_digest FROM manifest_refs mr WHERE mr.repo_id = m.repo_id \
                    AND mr.manifest_digest = m.digest AND mr.kind = 'blob')), 0) AS bytes, \
               (SELECT group_concat(t.name, ' ') FROM tags t \
                  WHERE t.repo_id = m.repo_id AND t.digest = m.digest) AS tags, \
               EXISTS (SELECT 1 FROM proxy_pins p WHERE p.repo = r.name) AS pinned \
             FROM manifests m JOIN repositories r ON r.id = m.repo_id \
             WHERE {} ORDER BY r.name, m.created_at",
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
            "SELECT COALESCE(SUM(size), 0) FROM blobs WHERE digest IN ( \
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
            sqlx::query_scalar("SELECT id FROM repositories WHERE name = ?")
                .bind(repo.as_str())
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(Vec::new());
        };
        let refs: Vec<String> = sqlx::query_scalar(
            "SELECT ref_digest FROM manifest_refs WHERE repo_id = ? AND manifest_digest = ?",
        )
        .bind(rid)
        .bind(d.to_string())
        .fetch_all(&mut *tx)
        .await?;
        // Tags and references go with the manifest (ON DELETE CASCADE).
        sqlx::query("DELETE FROM manifests WHERE repo_id = ? AND digest = ?")
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
                "DELETE FROM repo_blobs WHERE repo_id = ?1 AND digest = ?2 \
                 AND NOT EXISTS (SELECT 1 FROM manifest_refs \
                   WHERE repo_id = ?1 AND ref_digest = ?2)",
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
            sqlx::query("DELETE FROM blobs WHERE digest = ?")
                .bind(d.to_string())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            deleted.push(d.clone());
        }
        Ok(deleted)
    }
}
