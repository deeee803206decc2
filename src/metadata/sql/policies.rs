//! SQL for policies, written once for both dialects.

use super::Meta;
use crate::metadata::policies::*;
use crate::metadata::{now, Result};
use async_trait::async_trait;

#[async_trait]
impl PolicyStore for Meta {
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
                "INSERT INTO policies (kind, body, updated_at, updated_by) VALUES ($1, $2, $3, $4) \
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
                sqlx::query("DELETE FROM policies WHERE kind = $1")
                    .bind(kind)
                    .execute(&mut *tx)
                    .await?
            }
        };
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }
}
