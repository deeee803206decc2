//! Copies the embedded SQLite database into an empty PostgreSQL one, for `berth migrate`:
//! every table berth keeps, row by row and column by column (each an integer or text, as the
//! schemas declare), in one PostgreSQL transaction, so a failed or interrupted copy leaves
//! the target as empty as it was.

use futures::TryStreamExt;
use serde::Serialize;
use sqlx::{QueryBuilder, Row};

use super::postgres::PgMetadata;
use super::sqlite::SqliteMetadata;
use super::{MetadataError, Result};

/// Tables in an order that satisfies their foreign keys. Upload sessions, leases and the
/// generation counters are not copied: sessions and leases belong to the server that is
/// stopped, and the target has counters of its own.
const TABLES: &[&str] = &[
    "repositories",
    "blobs",
    "repo_blobs",
    "manifests",
    "manifest_refs",
    "tags",
    "users",
    "namespaces",
    "members",
    "access_tokens",
    "proxy_pins",
    "proxy_upstreams",
    "lifecycle_state",
    "gc_pending",
    "policies",
    "audit_log",
    "webhook_deliveries",
    "webhook_endpoints",
];

/// Identity columns whose sequences must continue past the copied rows.
const IDENTITIES: &[(&str, &str)] = &[
    ("repositories", "id"),
    ("audit_log", "seq"),
    ("webhook_deliveries", "id"),
];

/// Rows per INSERT (PostgreSQL takes at most 65535 parameters a statement).
const BATCH: usize = 500;

#[derive(Debug, Default, Serialize)]
pub struct CopyReport {
    /// Rows copied, per table.
    pub rows: Vec<(String, u64)>,
}

enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

/// Copies every table of `from` into `to`, which must hold no repository, blob or user.
pub async fn sqlite_to_postgres(from: &SqliteMetadata, to: &PgMetadata) -> Result<CopyReport> {
    let mut tx = to.write_tx().await?;
    for t in ["repositories", "blobs", "users"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {t}"))
            .fetch_one(&mut *tx)
            .await?;
        if n > 0 {
            return Err(MetadataError::Corrupt(format!(
                "the target database is not empty ({n} rows in {t})"
            )));
        }
    }
    let mut report = CopyReport::default();
    for table in TABLES {
        // Column names and whether each is an integer, as SQLite declares them.
        let columns: Vec<(String, bool)> = sqlx::query(&format!(
            "SELECT name, type FROM pragma_table_info('{table}')"
        ))
        .fetch_all(from.reader())
        .await?
        .iter()
        .map(|r| {
            let ty: String = r.get("type");
            (r.get("name"), ty.eq_ignore_ascii_case("INTEGER"))
        })
        .collect();
        let names = columns
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let select = format!("SELECT {names} FROM {table}");
        let mut rows = sqlx::query(&select).fetch(from.reader());
        let mut batch: Vec<Vec<Value>> = Vec::with_capacity(BATCH);
        let mut copied = 0u64;
        loop {
            let row = rows.try_next().await?;
            if let Some(row) = &row {
                let mut values = Vec::with_capacity(columns.len());
                for (i, (_, int)) in columns.iter().enumerate() {
                    values.push(if *int {
                        Value::Int(row.try_get(i)?)
                    } else {
                        Value::Text(row.try_get(i)?)
                    });
                }
                batch.push(values);
            }
            if batch.len() == BATCH || (row.is_none() && !batch.is_empty()) {
                copied += batch.len() as u64;
                let mut q = QueryBuilder::new(format!("INSERT INTO {table} ({names}) "));
                q.push_values(batch.drain(..), |mut b, values| {
                    for v in values {
                        match v {
                            Value::Int(i) => b.push_bind(i),
                            Value::Text(s) => b.push_bind(s),
                        };
                    }
                });
                q.build().execute(&mut *tx).await?;
            }
            if row.is_none() {
                break;
            }
        }
        report.rows.push((table.to_string(), copied));
    }
    for (table, column) in IDENTITIES {
        sqlx::query(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
             COALESCE(MAX({column}), 0) + 1, false) FROM {table}"
        ))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(report)
}
