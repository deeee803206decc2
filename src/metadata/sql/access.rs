//! SQL for access, written once for both dialects.

use super::{DbRow, Meta};
use crate::metadata::access::*;
use crate::metadata::{now, Result};
use async_trait::async_trait;
use sqlx::Row;

fn namespace_from_row(r: &DbRow) -> Result<NamespaceRecord> {
    Ok(NamespaceRecord {
        name: r.try_get("name")?,
        public: r.try_get::<i64, _>("public")? != 0,
        created_at: r.try_get("created_at")?,
    })
}

fn member_from_row(r: &DbRow) -> Result<MemberRecord> {
    Ok(MemberRecord {
        namespace: r.try_get("namespace")?,
        user: r.try_get("user_name")?,
        role: r.try_get("role")?,
        created_at: r.try_get("created_at")?,
    })
}

fn token_from_row(r: &DbRow) -> Result<TokenRecord> {
    Ok(TokenRecord {
        namespace: r.try_get("namespace")?,
        name: r.try_get("name")?,
        access: r.try_get("access")?,
        secret_hash: r.try_get("secret_hash")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

const TOKEN_COLUMNS: &str =
    "namespace, name, access, secret_hash, created_at, expires_at, last_used_at, revoked_at";

#[async_trait]
impl AccessStore for Meta {
    async fn create_namespace(&self, name: &str, public: bool) -> Result<bool> {
        let r = self
            .exec(
                sqlx::query(
                    "INSERT INTO namespaces (name, public, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(public as i64)
                .bind(now()),
            )
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn set_namespace_public(&self, name: &str, public: bool) -> Result<bool> {
        let r = self
            .exec(
                sqlx::query("UPDATE namespaces SET public = $1 WHERE name = $2")
                    .bind(public as i64)
                    .bind(name),
            )
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn delete_namespace(&self, name: &str) -> Result<bool> {
        let r = self
            .exec(sqlx::query("DELETE FROM namespaces WHERE name = $1").bind(name))
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn namespace(&self, name: &str) -> Result<Option<NamespaceRecord>> {
        let row = sqlx::query("SELECT name, public, created_at FROM namespaces WHERE name = $1")
            .bind(name)
            .fetch_optional(self.reader())
            .await?;
        row.as_ref().map(namespace_from_row).transpose()
    }

    async fn namespaces(&self) -> Result<Vec<NamespaceRecord>> {
        let rows = sqlx::query("SELECT name, public, created_at FROM namespaces ORDER BY name")
            .fetch_all(self.reader())
            .await?;
        rows.iter().map(namespace_from_row).collect()
    }

    async fn set_member(&self, namespace: &str, user: &str, role: &str) -> Result<()> {
        self.exec(sqlx::query(
            "INSERT INTO members (namespace, user_name, role, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (namespace, user_name) DO UPDATE SET role = excluded.role",
        )
        .bind(namespace)
        .bind(user)
        .bind(role)
        .bind(now()))
        .await?;
        Ok(())
    }

    async fn remove_member(&self, namespace: &str, user: &str) -> Result<bool> {
        let r = self
            .exec(
                sqlx::query("DELETE FROM members WHERE namespace = $1 AND user_name = $2")
                    .bind(namespace)
                    .bind(user),
            )
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn members(&self, namespace: &str) -> Result<Vec<MemberRecord>> {
        let rows = sqlx::query(
            "SELECT namespace, user_name, role, created_at FROM members \
             WHERE namespace = $1 ORDER BY user_name",
        )
        .bind(namespace)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(member_from_row).collect()
    }

    async fn namespace_and_role(
        &self,
        namespace: &str,
        user: Option<&str>,
    ) -> Result<Option<(NamespaceRecord, Option<String>)>> {
        let row = sqlx::query(
            "SELECT n.name, n.public, n.created_at, m.role FROM namespaces n \
             LEFT JOIN members m ON m.namespace = n.name AND m.user_name = $1 \
             WHERE n.name = $2",
        )
        .bind(user)
        .bind(namespace)
        .fetch_optional(self.reader())
        .await?;
        row.map(|r| Ok((namespace_from_row(&r)?, r.try_get("role")?)))
            .transpose()
    }

    async fn memberships(&self, user: &str) -> Result<Vec<MemberRecord>> {
        let rows = sqlx::query(
            "SELECT namespace, user_name, role, created_at FROM members \
             WHERE user_name = $1 ORDER BY namespace",
        )
        .bind(user)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(member_from_row).collect()
    }

    async fn create_token(&self, t: &TokenRecord) -> Result<bool> {
        let r = self.exec(sqlx::query(&format!(
            "INSERT INTO access_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL) \
             ON CONFLICT (namespace, name) DO UPDATE SET access = excluded.access, \
               secret_hash = excluded.secret_hash, created_at = excluded.created_at, \
               expires_at = excluded.expires_at, last_used_at = NULL, revoked_at = NULL \
             WHERE access_tokens.revoked_at IS NOT NULL \
                OR (access_tokens.expires_at IS NOT NULL AND access_tokens.expires_at <= $7)"
        ))
        .bind(&t.namespace)
        .bind(&t.name)
        .bind(&t.access)
        .bind(&t.secret_hash)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.created_at))
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE secret_hash = $1"
        ))
        .bind(secret_hash)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn token(&self, namespace: &str, name: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE namespace = $1 AND name = $2"
        ))
        .bind(namespace)
        .bind(name)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn tokens(&self, namespace: Option<&str>) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE $1 IS NULL OR namespace = $1 \
             ORDER BY namespace, name"
        ))
        .bind(namespace)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, namespace: &str, name: &str) -> Result<bool> {
        let r = self
            .exec(
                sqlx::query(
                    "UPDATE access_tokens SET revoked_at = $1 \
             WHERE namespace = $2 AND name = $3 AND revoked_at IS NULL",
                )
                .bind(now())
                .bind(namespace)
                .bind(name),
            )
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn touch_token(&self, namespace: &str, name: &str, t: i64) -> Result<()> {
        self.exec(
            sqlx::query(
                "UPDATE access_tokens SET last_used_at = $1 WHERE namespace = $2 AND name = $3",
            )
            .bind(t)
            .bind(namespace)
            .bind(name),
        )
        .await?;
        Ok(())
    }

    async fn auth_generation(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT value FROM auth_generation WHERE id = 1")
                .fetch_one(self.reader())
                .await?,
        )
    }
}
