//! Namespaces, their members, and access tokens, behind the [`AccessStore`] trait so
//! PostgreSQL can implement it too. Roles and access levels are stored by name; the auth
//! layer gives them meaning.

use async_trait::async_trait;
use sqlx::Row;

use super::sqlite::SqliteMetadata;
use super::{now, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceRecord {
    pub name: String,
    /// Anyone, even without credentials, may pull.
    pub public: bool,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRecord {
    pub namespace: String,
    pub user: String,
    pub role: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub namespace: String,
    pub name: String,
    pub access: String,
    /// Hex SHA-256 of the secret.
    pub secret_hash: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl TokenRecord {
    /// Usable at time `t`: neither revoked nor expired.
    pub fn live_at(&self, t: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| t < e)
    }

    /// `active`, `expired` or `revoked` at time `t`.
    pub fn state_at(&self, t: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.live_at(t) {
            "active"
        } else {
            "expired"
        }
    }
}

#[async_trait]
pub trait AccessStore: Send + Sync + 'static {
    /// `false` when the namespace exists already.
    async fn create_namespace(&self, name: &str, public: bool) -> Result<bool>;
    async fn set_namespace_public(&self, name: &str, public: bool) -> Result<bool>;
    /// Deletes a namespace with its members and tokens (not its repositories).
    async fn delete_namespace(&self, name: &str) -> Result<bool>;
    async fn namespace(&self, name: &str) -> Result<Option<NamespaceRecord>>;
    /// Every namespace, ordered by name.
    async fn namespaces(&self) -> Result<Vec<NamespaceRecord>>;

    /// Adds a member or changes their role. The namespace and user must exist.
    async fn set_member(&self, namespace: &str, user: &str, role: &str) -> Result<()>;
    async fn remove_member(&self, namespace: &str, user: &str) -> Result<bool>;
    async fn members(&self, namespace: &str) -> Result<Vec<MemberRecord>>;
    /// The namespace (if it exists) and the user's role in it (if a member), in one read.
    async fn namespace_and_role(
        &self,
        namespace: &str,
        user: Option<&str>,
    ) -> Result<Option<(NamespaceRecord, Option<String>)>>;
    /// The namespaces `user` is a member of, with roles.
    async fn memberships(&self, user: &str) -> Result<Vec<MemberRecord>>;

    /// Stores a new token; `false` when a live token of that name exists in the namespace (a
    /// revoked or expired one is replaced).
    async fn create_token(&self, token: &TokenRecord) -> Result<bool>;
    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenRecord>>;
    async fn token(&self, namespace: &str, name: &str) -> Result<Option<TokenRecord>>;
    /// Tokens of one namespace, or of all, ordered by namespace and name.
    async fn tokens(&self, namespace: Option<&str>) -> Result<Vec<TokenRecord>>;
    /// Marks a live token revoked; `false` when there is no such live token.
    async fn revoke_token(&self, namespace: &str, name: &str) -> Result<bool>;
    /// Records a use of the token at time `t`.
    async fn touch_token(&self, namespace: &str, name: &str, t: i64) -> Result<()>;

    /// A counter that moves whenever users, namespaces, members or tokens change, whoever
    /// changed them (see `0004_auth_generation.sql`).
    async fn auth_generation(&self) -> Result<i64>;

    /// Drops what a cache in front of the store remembers of the token, so the next read
    /// sees the database.
    fn forget_token(&self, _namespace: &str, _name: &str) {}
}

fn namespace_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<NamespaceRecord> {
    Ok(NamespaceRecord {
        name: r.try_get("name")?,
        public: r.try_get::<i64, _>("public")? != 0,
        created_at: r.try_get("created_at")?,
    })
}

fn member_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<MemberRecord> {
    Ok(MemberRecord {
        namespace: r.try_get("namespace")?,
        user: r.try_get("user_name")?,
        role: r.try_get("role")?,
        created_at: r.try_get("created_at")?,
    })
}

fn token_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<TokenRecord> {
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
impl AccessStore for SqliteMetadata {
    async fn create_namespace(&self, name: &str, public: bool) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO namespaces (name, public, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(public as i64)
        .bind(now())
        .execute(self.writer())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn set_namespace_public(&self, name: &str, public: bool) -> Result<bool> {
        let r = sqlx::query("UPDATE namespaces SET public = ? WHERE name = ?")
            .bind(public as i64)
            .bind(name)
            .execute(self.writer())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn delete_namespace(&self, name: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM namespaces WHERE name = ?")
            .bind(name)
            .execute(self.writer())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn namespace(&self, name: &str) -> Result<Option<NamespaceRecord>> {
        let row = sqlx::query("SELECT name, public, created_at FROM namespaces WHERE name = ?")
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
        sqlx::query(
            "INSERT INTO members (namespace, user_name, role, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (namespace, user_name) DO UPDATE SET role = excluded.role",
        )
        .bind(namespace)
        .bind(user)
        .bind(role)
        .bind(now())
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn remove_member(&self, namespace: &str, user: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM members WHERE namespace = ? AND user_name = ?")
            .bind(namespace)
            .bind(user)
            .execute(self.writer())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn members(&self, namespace: &str) -> Result<Vec<MemberRecord>> {
        let rows = sqlx::query(
            "SELECT namespace, user_name, role, created_at FROM members \
             WHERE namespace = ? ORDER BY user_name",
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
             LEFT JOIN members m ON m.namespace = n.name AND m.user_name = ? \
             WHERE n.name = ?",
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
             WHERE user_name = ? ORDER BY namespace",
        )
        .bind(user)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(member_from_row).collect()
    }

    async fn create_token(&self, t: &TokenRecord) -> Result<bool> {
        let r = sqlx::query(&format!(
            "INSERT INTO access_tokens ({TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL) \
             ON CONFLICT (namespace, name) DO UPDATE SET access = excluded.access, \
               secret_hash = excluded.secret_hash, created_at = excluded.created_at, \
               expires_at = excluded.expires_at, last_used_at = NULL, revoked_at = NULL \
             WHERE access_tokens.revoked_at IS NOT NULL \
                OR (access_tokens.expires_at IS NOT NULL AND access_tokens.expires_at <= ?)"
        ))
        .bind(&t.namespace)
        .bind(&t.name)
        .bind(&t.access)
        .bind(&t.secret_hash)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.created_at)
        .execute(self.writer())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE secret_hash = ?"
        ))
        .bind(secret_hash)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn token(&self, namespace: &str, name: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE namespace = ? AND name = ?"
        ))
        .bind(namespace)
        .bind(name)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn tokens(&self, namespace: Option<&str>) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE ?1 IS NULL OR namespace = ?1 \
             ORDER BY namespace, name"
        ))
        .bind(namespace)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, namespace: &str, name: &str) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE access_tokens SET revoked_at = ? \
             WHERE namespace = ? AND name = ? AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(namespace)
        .bind(name)
        .execute(self.writer())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn touch_token(&self, namespace: &str, name: &str, t: i64) -> Result<()> {
        sqlx::query("UPDATE access_tokens SET last_used_at = ? WHERE namespace = ? AND name = ?")
            .bind(t)
            .bind(namespace)
            .bind(name)
            .execute(self.writer())
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
