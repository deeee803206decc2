//! The shared metadata backend on PostgreSQL, for several replicas behind a load balancer.
//!
//! The queries are the SQLite backend's (`sql/`), compiled a second time against sqlx's
//! PostgreSQL driver. What SQLite gives by having one writer, PostgreSQL gets from a
//! transaction-scoped advisory lock that every write transaction takes first: writes from
//! every replica run one at a time, in the order they asked, so the checks made inside them
//! (quota, references, immutable tags, GC's claim) hold across replicas as they do in one
//! process. Reads take no lock and see every committed write at once.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Postgres, Transaction};

use super::Result;
use crate::oci::{RepoName, UploadId};

pub(crate) type Db = Postgres;
pub(crate) type DbRow = sqlx::postgres::PgRow;
/// Whether other processes serving clients share the database. Other replicas share this database.
pub(crate) const SHARED: bool = true;
pub(crate) type Meta = PgMetadata;

/// The rows of a JSON array of strings bound as `$1` or `$2`, as a subquery's body.
pub(crate) const JSON1: &str = "SELECT jsonb_array_elements_text(CAST($1 AS jsonb))";
pub(crate) const JSON2: &str = "SELECT jsonb_array_elements_text(CAST($2 AS jsonb))";

/// The advisory lock key every write transaction takes ("berth" in ASCII).
const WRITE_LOCK: i64 = 0x0062_6572_7468;

/// A JSON array (as text) of `column` over a subquery's rows.
pub(crate) fn json_array_of(column: &str) -> String {
    format!("COALESCE(CAST(json_agg({column}) AS TEXT), '[]')")
}

/// `column` over a subquery's rows, joined by spaces.
pub(crate) fn joined(column: &str) -> String {
    format!("string_agg({column}, ' ')")
}

#[path = "sql/access.rs"]
mod access;
#[path = "sql/audit.rs"]
mod audit;
#[path = "sql/content.rs"]
mod content;
#[path = "sql/gc.rs"]
mod gc;
#[path = "sql/lifecycle.rs"]
mod lifecycle;
#[path = "sql/logins.rs"]
mod logins;
#[path = "sql/policies.rs"]
mod policies;
#[path = "sql/proxy.rs"]
mod proxy;
#[path = "sql/usage.rs"]
mod usage;
#[path = "sql/users.rs"]
mod users;
#[path = "sql/webhooks.rs"]
mod webhooks;

pub struct PgMetadata {
    read: PgPool,
    write: PgPool,
}

impl PgMetadata {
    /// Connects to `url` and applies berth's migrations. sqlx's migrator holds a
    /// session-level advisory lock while it works, so replicas starting together apply each
    /// migration once and the others wait for it.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self> {
        let opts: PgConnectOptions = url.parse::<PgConnectOptions>()?.disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1.min(max_connections))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgMetadata {
            read: pool.clone(),
            write: pool,
        })
    }

    pub(super) fn writer(&self) -> &PgPool {
        &self.write
    }

    /// A write transaction, after every earlier one from any replica has ended.
    pub(super) async fn write_tx(&self) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.write.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Runs one write statement in a write transaction of its own, so that it is ordered with
    /// every other write as on SQLite.
    pub(super) async fn exec<'q>(
        &self,
        q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<sqlx::postgres::PgQueryResult> {
        let mut tx = self.write_tx().await?;
        let r = q.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(r)
    }

    pub(super) fn reader(&self) -> &PgPool {
        &self.read
    }

    /// Records a new, empty upload session.
    pub(crate) async fn insert_upload(&self, id: &UploadId, repo: &RepoName, t: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO uploads (id, repo, size, created_at, updated_at) VALUES ($1, $2, 0, $3, $3)",
        )
        .bind(id.as_str())
        .bind(repo.as_str())
        .bind(t)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.write.close().await;
    }
}
