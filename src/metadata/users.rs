//! Stored user accounts, behind the [`UserStore`] trait so PostgreSQL can implement it too.

use async_trait::async_trait;
use sqlx::Row;

use super::sqlite::SqliteMetadata;
use super::{now, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    /// A bcrypt hash.
    pub password_hash: String,
    pub admin: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Adds a user; `false` when the name is taken.
    async fn add_user(&self, name: &str, password_hash: &str, admin: bool) -> Result<bool>;
    /// Replaces a user's password hash; `false` when there is no such user.
    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool>;
    /// Grants or removes server administration; `false` when there is no such user.
    async fn set_admin(&self, name: &str, admin: bool) -> Result<bool>;
    async fn delete_user(&self, name: &str) -> Result<bool>;
    async fn user(&self, name: &str) -> Result<Option<UserRecord>>;
    /// Every user, ordered by name.
    async fn users(&self) -> Result<Vec<UserRecord>>;

    /// Drops what a cache in front of the store remembers of `name`, so the next read sees
    /// the database (when a cached answer would refuse a login another process has allowed).
    fn forget_user(&self, _name: &str) {}
}

fn user_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<UserRecord> {
    Ok(UserRecord {
        name: r.try_get("name")?,
        password_hash: r.try_get("password_hash")?,
        admin: r.try_get::<i64, _>("admin")? != 0,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

const USER_COLUMNS: &str = "name, password_hash, admin, created_at, updated_at";

#[async_trait]
impl UserStore for SqliteMetadata {
    async fn add_user(&self, name: &str, password_hash: &str, admin: bool) -> Result<bool> {
        let t = now();
        let r = sqlx::query(
            "INSERT INTO users (name, password_hash, admin, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(password_hash)
        .bind(admin as i64)
        .bind(t)
        .bind(t)
        .execute(self.writer())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE users SET password_hash = ?, updated_at = ? WHERE name = ?")
            .bind(password_hash)
            .bind(now())
            .bind(name)
            .execute(self.writer())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn set_admin(&self, name: &str, admin: bool) -> Result<bool> {
        let r = sqlx::query("UPDATE users SET admin = ?, updated_at = ? WHERE name = ?")
            .bind(admin as i64)
            .bind(now())
            .bind(name)
            .execute(self.writer())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn delete_user(&self, name: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM users WHERE name = ?")
            .bind(name)
            .execute(self.writer())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?"))
            .bind(name)
            .fetch_optional(self.reader())
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn users(&self) -> Result<Vec<UserRecord>> {
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))
            .fetch_all(self.reader())
            .await?;
        rows.iter().map(user_from_row).collect()
    }
}
