//! Lifecycle policies stored in the database (set through the admin API or `berth policy`),
//! and the counter that tells every process to apply a change.

use async_trait::async_trait;

use super::sqlite::SqliteMetadata;
use super::{now, Result};

/// One stored policy: a kind's whole body, as JSON in the config key's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPolicy {
    pub kind: String,
    pub body: String,
    pub updated_at: i64,
    pub updated_by: String,
}

#[async_trait]
pub trait PolicyStore: Send + Sync + 'static {
    /// Moves with every change to a stored policy.
    async fn policy_generation(&self) -> Result<i64>;
    async fn stored_policies(&self) -> Result<Vec<StoredPolicy>>;
    /// Replaces a kind's body, or with `None` removes it (the config's applies again).
    /// Returns whether anything changed.
    async fn set_policy(&self, kind: &str, body: Option<&str>, by: &str) -> Result<bool>;
}

#[async_trait]
impl PolicyStore for SqliteMetadata {
    async fn policy_generation(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT value FROM policy_generation WHERE id = 1")
                .fetch_one(self.reader())
                .await?,
        )
    }

    async fn stored_policies(&self) -> Result<Vec<StoredPolicy>> {
        let rows: Vec<(String, String, i64, String)> =
            sqlx::query_as("SELECT kind, body, updated_at, updated_by FROM policies ORDER BY kind")
                .fetch_all(self.reader())
                .await?;
        Ok(rows
            .into_iter()
            .map(|(kind, body, updated_at, updated_by)| StoredPolicy {
                kind,
                body,
                updated_at,
                updated_by,
            })
            .collect())
    }

    async fn set_policy(&self, kind: &str, body: Option<&str>, by: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let r = match body {
            Some(b) => sqlx::query(
                "INSERT INTO policies (kind, body, updated_at, updated_by) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (kind) DO UPDATE SET body = excluded.body, \
                       updated_at = excluded.updated_at, updated_by = excluded.updated_by \
                     WHERE policies.body <> excluded.body",
            )
            .bind(kind)
            .bind(b)
            .bind(now())
            .bind(by)
            .execute(&mut *tx)
            .await?,
            None => {
                sqlx::query("DELETE FROM policies WHERE kind = ?")
                    .bind(kind)
                    .execute(&mut *tx)
                    .await?
            }
        };
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }
}
