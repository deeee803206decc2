//! SQL for usage, written once for both dialects.

use super::Meta;
use crate::metadata::usage::*;
use crate::metadata::Result;
use async_trait::async_trait;

/// What each repository holds: the blobs linked to it and its manifests.
const CONTENT: &str = "WITH content AS ( \
       SELECT repo_id, digest FROM repo_blobs UNION SELECT repo_id, digest FROM manifests), \
     chosen AS ( \
       SELECT id, name FROM repositories \
       WHERE $1 IS NULL OR name = $1 OR substr(name, 1, length($1) + 1) = $1 || '/')";

#[async_trait]
impl UsageStore for Meta {
    async fn usage(&self, namespace: Option<&str>) -> Result<Usage> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(&format!(
            "{CONTENT} \
             SELECT r.name, COALESCE(CAST(SUM(b.size) AS BIGINT), 0), \
               COALESCE(CAST(SUM(CASE WHEN (SELECT COUNT(DISTINCT o.repo_id) FROM content o \
                                       WHERE o.digest = c.digest) = 1 \
                                 THEN b.size ELSE 0 END) AS BIGINT), 0) \
             FROM chosen r JOIN content c ON c.repo_id = r.id \
             JOIN blobs b ON b.digest = c.digest \
             GROUP BY r.name ORDER BY r.name"
        ))
        .bind(namespace)
        .fetch_all(self.reader())
        .await?;
        let total: i64 = sqlx::query_scalar(&format!(
            "{CONTENT} \
             SELECT COALESCE(CAST(SUM(size) AS BIGINT), 0) FROM blobs WHERE digest IN ( \
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
