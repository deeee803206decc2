//! SQL for audit, written once for both dialects.

use super::Meta;
use crate::metadata::audit::*;
use crate::metadata::Result;
use crate::ops::events::{Action, Event, RequestInfo};
use async_trait::async_trait;

type Row = (
    String,
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
    String,
    Option<String>,
);

#[async_trait]
impl AuditStore for Meta {
    async fn append_audit(&self, events: &[std::sync::Arc<Event>]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        // Many rows per statement, in chunks of 200, 50, 10 and 1 rows: at most four
        // statements, prepared once and kept.
        let mut rest = events;
        while !rest.is_empty() {
            let n = [200, 50, 10, 1]
                .into_iter()
                .find(|&n| rest.len() >= n)
                .unwrap_or(1);
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let mut b = sqlx::QueryBuilder::new(
                "INSERT INTO audit_log (id, time_ms, action, target, actor, addr, repo, \
                 reference, digest, success, status, detail, request_id) ",
            );
            b.push_values(chunk, |mut row, e| {
                row.push_bind(e.id.as_str())
                    .push_bind(e.time_ms)
                    .push_bind(e.action.as_str())
                    .push_bind(e.target.as_str())
                    .push_bind(e.actor.as_str())
                    .push_bind(e.addr.as_str())
                    .push_bind(e.repo.as_deref())
                    .push_bind(e.reference.as_deref())
                    .push_bind(e.digest.as_deref())
                    .push_bind(i64::from(e.success))
                    .push_bind(i64::from(e.status))
                    .push_bind(e.detail.as_str())
                    .push_bind(e.request.as_ref().map(|r| r.id.as_str()));
            });
            b.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<Event>> {
        let mut b = sqlx::QueryBuilder::new(
            "SELECT id, time_ms, action, target, actor, addr, repo, reference, digest, \
             success, status, detail, request_id FROM audit_log WHERE 1 = 1",
        );
        if let Some(r) = &q.repo {
            b.push(" AND repo = ").push_bind(r.clone());
        }
        if let Some(a) = &q.actor {
            b.push(" AND actor = ").push_bind(a.clone());
        }
        if let Some(a) = q.action {
            b.push(" AND action = ").push_bind(a.as_str());
        }
        if let Some(t) = q.since_ms {
            b.push(" AND time_ms >= ").push_bind(t);
        }
        b.push(" ORDER BY time_ms DESC, seq DESC LIMIT ")
            .push_bind(i64::from(q.limit));
        let rows: Vec<Row> = b.build_query_as().fetch_all(self.reader()).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(Event {
                    id: r.0,
                    time_ms: r.1,
                    action: Action::parse(&r.2)?,
                    target: r.3,
                    actor: r.4,
                    addr: r.5,
                    repo: r.6,
                    reference: r.7,
                    digest: r.8,
                    media_type: None,
                    size: None,
                    success: r.9 != 0,
                    status: r.10 as u16,
                    detail: r.11,
                    request: r.12.map(|id| RequestInfo {
                        id,
                        ..Default::default()
                    }),
                })
            })
            .collect())
    }

    async fn prune_audit(&self, before_ms: i64, max: u32) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let r = sqlx::query(
            "DELETE FROM audit_log WHERE seq IN \
             (SELECT seq FROM audit_log WHERE time_ms < $1 ORDER BY seq LIMIT $2)",
        )
        .bind(before_ms)
        .bind(i64::from(max))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected())
    }
}
