//! The embedded metadata backend on SQLite (WAL, `synchronous=FULL`, foreign keys on).
//!
//! Writes go through a pool of one connection so they serialize in-process instead of
//! contending for SQLite's lock; reads use a separate pool and run concurrently under WAL.
//! The queries themselves are in `sql/`, shared with PostgreSQL.

use std::path::Path;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::Result;
use crate::oci::{RepoName, UploadId};

pub(crate) type Db = Sqlite;
pub(crate) type DbRow = sqlx::sqlite::SqliteRow;
/// Whether other processes serving clients share the database. Only the one server that holds the data dir's lock writes here.
pub(crate) const SHARED: bool = false;
pub(crate) type Meta = SqliteMetadata;

/// The rows of a JSON array of strings bound as `$1` or `$2`, as a subquery's body.
pub(crate) const JSON1: &str = "SELECT value FROM json_each($1)";
pub(crate) const JSON2: &str = "SELECT value FROM json_each($2)";

/// A JSON array (as text) of `column` over a subquery's rows.
pub(crate) fn json_array_of(column: &str) -> String {
    format!("json_group_array({column})")
}

/// `column` over a subquery's rows, joined by spaces.
pub(crate) fn joined(column: &str) -> String {
    format!("group_concat({column}, ' ')")
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

pub struct SqliteMetadata {
    read: SqlitePool,
    write: SqlitePool,
}

impl SqliteMetadata {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(super::busy::BUSY_TIMEOUT)
            .pragma("cache_size", "-16000");
        // A local file's connections do not go stale: skip sqlx's ping before each use, one
        // worker-thread round trip per query saved.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .after_connect(|conn, _| Box::pin(super::busy::install(conn)))
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(2)
            .test_before_acquire(false)
            .after_connect(|conn, _| Box::pin(super::busy::install(conn)))
            .connect_with(opts.read_only(true))
            .await?;
        Ok(SqliteMetadata { read, write })
    }

    pub(super) fn writer(&self) -> &SqlitePool {
        &self.write
    }

    /// A write transaction that takes SQLite's write lock at once (`BEGIN IMMEDIATE`). A
    /// deferred one that reads first and then writes fails with `SQLITE_BUSY` at once, without
    /// waiting, when another process (the CLI, a second server) wrote meanwhile; an
    /// immediate one waits its turn for up to the busy timeout.
    pub(super) async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Runs one write statement on its own. The single writer connection orders it with
    /// every transaction.
    pub(super) async fn exec<'q>(
        &self,
        q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> Result<sqlx::sqlite::SqliteQueryResult> {
        Ok(q.execute(&self.write).await?)
    }

    pub(super) fn reader(&self) -> &SqlitePool {
        &self.read
    }

    /// Records a new, empty upload session. It holds nothing acknowledged, so its row is
    /// committed without waiting for the disk (synchronous=NORMAL); the next FULL commit on
    /// the WAL makes it durable too. A session lost to power failure is answered
    /// BLOB_UPLOAD_UNKNOWN and the client starts a new one.
    pub(crate) async fn insert_upload(&self, id: &UploadId, repo: &RepoName, t: i64) -> Result<()> {
        let mut conn = self.write.acquire().await?;
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO uploads (id, repo, size, created_at, updated_at) VALUES ($1, $2, 0, $3, $3)",
        )
        .bind(id.as_str())
        .bind(repo.as_str())
        .bind(t)
        .execute(&mut *conn)
        .await;
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await?;
        inserted?;
        Ok(())
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}
