//! Stored user accounts, behind the [`UserStore`] trait so PostgreSQL can implement it too.

use async_trait::async_trait;

use super::Result;

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
