//! SQL for webhooks, written once for both dialects.

use super::{DbRow, Meta};
use crate::metadata::webhooks::*;
use crate::metadata::{MetadataError, Result};
use async_trait::async_trait;
use sqlx::Row;

const RECORD_COLUMNS: &str = "id, event_id, action, repository, state, attempts, created_at, \
     next_attempt_at, last_attempt_at, last_status, last_error, delivered_at";

fn record(row: &DbRow) -> Result<DeliveryRecord> {
    let state: String = row.try_get("state")?;
    Ok(DeliveryRecord {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        action: row.try_get("action")?,
        repository: row.try_get("repository")?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| MetadataError::Corrupt(format!("delivery state {state:?}")))?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        created_at: row.try_get("created_at")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_attempt_at: row.try_get("last_attempt_at")?,
        last_status: row
            .try_get::<Option<i64>, _>("last_status")?
            .map(|s| s as u16),
        last_error: row.try_get("last_error")?,
        delivered_at: row.try_get("delivered_at")?,
    })
}

#[async_trait]
impl WebhookStore for Meta {
    async fn enqueue(&self, batch: &[NewDelivery]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for d in batch {
            sqlx::query(
                "INSERT INTO webhook_deliveries (event_id, endpoint, action, repository, body, \
                   created_at, retry_since, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (event_id, endpoint) DO NOTHING",
            )
            .bind(&d.event_id)
            .bind(&d.endpoint)
            .bind(&d.action)
            .bind(&d.repository)
            .bind(&d.body)
            .bind(d.created_at)
            .bind(d.created_at)
            .bind(d.created_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn claim(
        &self,
        endpoint: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<Claimed>> {
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $1, \
               last_attempt_at = $2 \
             WHERE id IN (SELECT id FROM webhook_deliveries \
               WHERE endpoint = $3 AND state = 'pending' AND next_attempt_at <= $4 \
               ORDER BY next_attempt_at, id LIMIT $5) \
             RETURNING id, event_id, body, attempts, retry_since",
        )
        .bind(lease_until)
        .bind(now)
        .bind(endpoint)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(Claimed {
                    id: r.try_get("id")?,
                    event_id: r.try_get("event_id")?,
                    body: r.try_get("body")?,
                    attempt: r.try_get::<i64, _>("attempts")? as u32,
                    retry_since: r.try_get("retry_since")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|c| c.id);
        Ok(out)
    }

    async fn release(&self, ids: &[i64], now: i64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for id in ids {
            sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_at = $1 \
                 WHERE id = $2 AND state = 'pending'",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn finish(&self, id: i64, endpoint: &str, now: i64, outcome: &Outcome) -> Result<()> {
        let mut tx = self.write_tx().await?;
        match outcome {
            Outcome::Delivered { status } => {
                sqlx::query(
                    "UPDATE webhook_deliveries SET state = 'delivered', delivered_at = $1, \
                       last_status = $2, last_error = NULL WHERE id = $3",
                )
                .bind(now)
                .bind(*status as i64)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO webhook_endpoints (name, last_success_at) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET last_success_at = excluded.last_success_at",
                )
                .bind(endpoint)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Outcome::Retry { status, error, .. } | Outcome::Failed { status, error } => {
                let (state, next) = match outcome {
                    Outcome::Retry {
                        next_attempt_at, ..
                    } => ("pending", *next_attempt_at),
                    _ => ("failed", now),
                };
                sqlx::query(
                    "UPDATE webhook_deliveries SET state = $1, next_attempt_at = $2, \
                       last_status = $3, last_error = $4 WHERE id = $5 AND state = 'pending'",
                )
                .bind(state)
                .bind(next)
                .bind(status.map(i64::from))
                .bind(error)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO webhook_endpoints (name, last_failure_at, last_status, last_error) \
                       VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (name) DO UPDATE SET last_failure_at = excluded.last_failure_at, \
                       last_status = excluded.last_status, last_error = excluded.last_error",
                )
                .bind(endpoint)
                .bind(now)
                .bind(status.map(i64::from))
                .bind(error)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn next_due(&self, endpoint: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM webhook_deliveries \
             WHERE endpoint = $1 AND state = 'pending'",
        )
        .bind(endpoint)
        .fetch_one(self.reader())
        .await?)
    }

    async fn summary(&self, endpoint: &str) -> Result<EndpointSummary> {
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*) FROM webhook_deliveries WHERE endpoint = $1 GROUP BY state",
        )
        .bind(endpoint)
        .fetch_all(self.reader())
        .await?;
        let mut s = EndpointSummary::default();
        for (state, n) in counts {
            match DeliveryState::parse(&state) {
                Some(DeliveryState::Pending) => s.pending = n as u64,
                Some(DeliveryState::Delivered) => s.delivered = n as u64,
                Some(DeliveryState::Failed) => s.failed = n as u64,
                None => return Err(MetadataError::Corrupt(format!("delivery state {state:?}"))),
            }
        }
        let last: Option<(Option<i64>, Option<i64>, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT last_success_at, last_failure_at, last_status, last_error \
                 FROM webhook_endpoints WHERE name = $1",
        )
        .bind(endpoint)
        .fetch_optional(self.reader())
        .await?;
        if let Some((ok, failed, status, error)) = last {
            s.last_success_at = ok;
            s.last_failure_at = failed;
            s.last_status = status.map(|s| s as u16);
            s.last_error = error;
        }
        Ok(s)
    }

    async fn deliveries(
        &self,
        endpoint: &str,
        state: Option<DeliveryState>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>> {
        let rows = match state {
            Some(st) => {
                sqlx::query(&format!(
                    "SELECT {RECORD_COLUMNS} FROM webhook_deliveries \
                     WHERE endpoint = $1 AND state = $2 ORDER BY id DESC LIMIT $3"
                ))
                .bind(endpoint)
                .bind(st.as_str())
                .bind(limit as i64)
                .fetch_all(self.reader())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {RECORD_COLUMNS} FROM webhook_deliveries \
                     WHERE endpoint = $1 ORDER BY id DESC LIMIT $2"
                ))
                .bind(endpoint)
                .bind(limit as i64)
                .fetch_all(self.reader())
                .await?
            }
        };
        rows.iter().map(record).collect()
    }

    async fn redeliver(&self, endpoint: &str, id: Option<i64>, now: i64) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let r = sqlx::query(
            "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = $1, \
               retry_since = $2 \
             WHERE endpoint = $3 AND state = 'failed' AND ($4 IS NULL OR id = $5)",
        )
        .bind(now)
        .bind(now)
        .bind(endpoint)
        .bind(id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected())
    }

    async fn prune(&self, delivered_before: i64, failed_before: i64) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let r = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE (state = 'delivered' AND delivered_at < $1) \
               OR (state = 'failed' AND last_attempt_at < $2)",
        )
        .bind(delivered_before)
        .bind(failed_before)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected())
    }
}
