//! Namespaces, their members, and access tokens, behind the [`AccessStore`] trait so
//! PostgreSQL can implement it too. Roles and access levels are stored by name; the auth
//! layer gives them meaning.

use async_trait::async_trait;

use super::Result;

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
