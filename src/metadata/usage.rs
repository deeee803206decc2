//! Storage used per repository: what it links (blobs, manifests), what only it links, and
//! what it shares with other repositories. Each blob is stored once however many
//! repositories link it, so a namespace's total counts each blob once.

use async_trait::async_trait;
use serde::Serialize;

use super::sqlite::SqliteMetadata;
use super::Result;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RepoUsage {
    pub repository: String,
    /// Bytes of every blob and manifest the repository holds.
    pub total: u64,
    /// Of those, bytes no other repository holds (what deleting it could free).
    pub unique: u64,
    /// Of those, bytes other repositories hold too.
    pub shared: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub repositories: Vec<RepoUsage>,
    /// Bytes stored for all of them, each blob counted once.
    pub total: u64,
}

#[async_trait]
pub trait UsageStore: Send + Sync + 'static {
    /// Usage of the repositories in `namespace` (its first path segment), or of all.
    async fn usage(&self, namespace: Option<&str>) -> Result<Usage>;
}

/// What each repository holds: the blobs linked to it and its manifests.
const CONTENT: &str = "WITH content AS ( \
       SELECT repo_id, digest FROM repo_blobs UNION SELECT repo_id, digest FROM manifests), \
     chosen AS ( \
       SELECT id, name FROM repositories \
       WHERE ?1 IS NULL OR name = ?1 OR substr(name, 1, length(?1) + 1) = ?1 || '/')";

#[async_trait]
impl UsageStore for SqliteMetadata {
    async fn usage(&self, namespace: Option<&str>) -> Result<Usage> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(&format!(
            "{CONTENT} \
             SELECT r.name, COALESCE(SUM(b.size), 0), \
               COALESCE(SUM(CASE WHEN (SELECT COUNT(DISTINCT o.repo_id) FROM content o \
                                       WHERE o.digest = c.digest) = 1 \
                                 THEN b.size ELSE 0 END), 0) \
             FROM chosen r JOIN content c ON c.repo_id = r.id \
             JOIN blobs b ON b.digest = c.digest \
             GROUP BY r.name ORDER BY r.name"
        ))
        .bind(namespace)
        .fetch_all(self.reader())
        .await?;
        let total: i64 = sqlx::query_scalar(&format!(
            "{CONTENT} \
             SELECT COALESCE(SUM(size), 0) FROM blobs WHERE digest IN ( \
               SELECT c.digest FROM content c JOIN chosen r ON r.id = c.repo_id)"
        ))
        .bind(namespace)
        .fetch_one(self.reader())
        .await?;
        Ok(Usage {
            repositories: rows
                .into_iter()
                .map(|(repository, total, unique)| RepoUsage {
                    repository,
                    total: total as u64,
                    unique: unique as u64,
                    shared: (total - unique) as u64,
                })
                .collect(),
            total: total as u64,
        })
    }
}
