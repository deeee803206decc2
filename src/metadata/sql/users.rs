//! SQL for users, written once for both dialects.

use super::{DbRow, Meta};
use crate::metadata::users::*;
use crate::metadata::{now, Result};
use async_trait::async_trait;
use sqlx::Row;

fn user_from_row(r: &DbRow) -> Result<UserRecord> {
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
impl UserStore for Meta {
    async fn add_user(&self, name: &str, password_hash: &str, admin: bool) -> Result<bool> {
        let t = now();
        let r = self
            .exec(
                sqlx::query(
                    "INSERT INTO users (name, password_hash, admin, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(password_hash)
                .bind(admin as i64)
                .bind(t)
                .bind(t),
            )
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool> {
        let r = self
            .exec(
                sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE name = $3")
                    .bind(password_hash)
                    .bind(now())
                    .bind(name),
            )
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn set_admin(&self, name: &str, admin: bool) -> Result<bool> {
        let r = self
            .exec(
                sqlx::query("UPDATE users SET admin = $1, updated_at = $2 WHERE name = $3")
                    .bind(admin as i64)
                    .bind(now())
                    .bind(name),
            )
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn delete_user(&self, name: &str) -> Result<bool> {
        let r = self
            .exec(sqlx::query("DELETE FROM users WHERE name = $1").bind(name))
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"))
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
