//! SQL for the login throttle's shared log, written once for both dialects.

use super::Meta;
use crate::metadata::logins::*;
use crate::metadata::Result;
use async_trait::async_trait;

#[async_trait]
impl LoginEventStore for Meta {
    async fn add_login_event(&self, e: &LoginEvent) -> Result<()> {
        // Through the write lock: an id is taken only after every earlier insert committed,
        // so a reader that saw id N has seen every id below it.
        self.exec(
            sqlx::query(
                "INSERT INTO login_events (replica, client, user_name, failed, at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&e.replica)
            .bind(&e.client)
            .bind(e.user.as_deref())
            .bind(i64::from(e.failed))
            .bind(e.at_ms),
        )
        .await?;
        Ok(())
    }

    async fn login_events_after(&self, after: i64, limit: u32) -> Result<Vec<(i64, LoginEvent)>> {
        let rows: Vec<(i64, String, String, Option<String>, i64, i64)> = sqlx::query_as(
            "SELECT id, replica, client, user_name, failed, at FROM login_events \
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, replica, client, user, failed, at_ms)| {
                (
                    id,
                    LoginEvent {
                        replica,
                        client,
                        user,
                        failed: failed != 0,
                        at_ms,
                    },
                )
            })
            .collect())
    }

    async fn prune_login_events(&self, before_ms: i64) -> Result<u64> {
        let r = self
            .exec(sqlx::query("DELETE FROM login_events WHERE at < $1").bind(before_ms))
            .await?;
        Ok(r.rows_affected())
    }
}
