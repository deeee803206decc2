//! A read-through cache in front of the user and access stores, so that checking a request's
//! credentials and permissions costs no database round trip.
//!
//! Correctness across processes rests on the store's auth generation (a counter the database
//! moves on every change to users, namespaces, members or tokens, whoever makes it):
//! [`CachedAccess::watch`] polls it every [`POLL`] and drops everything cached when it moves,
//! so a revoke made by the CLI or another replica applies here within that interval. Writes
//! made through this process drop the cache at once. Only answers that found something are
//! cached, so a user, namespace or token created elsewhere is usable at once; what changes
//! or disappears is noticed within the poll.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::access::{AccessStore, MemberRecord, NamespaceRecord, TokenRecord};
use super::memo::{Generation, Map};
use super::users::{UserRecord, UserStore};
use super::Result;

/// How often the database's auth generation is read.
pub const POLL: Duration = Duration::from_millis(100);

pub struct CachedAccess<S: ?Sized> {
    inner: Arc<S>,
    generation: Generation,
    /// The database generation the cache reflects; `None` until first read.
    seen_db: Mutex<Option<i64>>,
    users: Map<String, UserRecord>,
    namespace_roles: Map<(String, Option<String>), (NamespaceRecord, Option<String>)>,
    namespaces: Map<(), Vec<NamespaceRecord>>,
    memberships: Map<String, Vec<MemberRecord>>,
    tokens_by_hash: Map<String, TokenRecord>,
    tokens: Map<(String, String), TokenRecord>,
}

impl<S: ?Sized + UserStore + AccessStore> CachedAccess<S> {
    pub fn new(inner: Arc<S>) -> Self {
        CachedAccess {
            inner,
            generation: Generation::default(),
            seen_db: Mutex::new(None),
            users: Map::new(),
            namespace_roles: Map::new(),
            namespaces: Map::new(),
            memberships: Map::new(),
            tokens_by_hash: Map::new(),
            tokens: Map::new(),
        }
    }

    /// The undecorated store.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// Drops everything cached.
    pub fn invalidate(&self) {
        self.generation.bump();
        self.users.clear();
        self.namespace_roles.clear();
        self.namespaces.clear();
        self.memberships.clear();
        self.tokens_by_hash.clear();
        self.tokens.clear();
    }

    /// Reads the database's generation once, dropping the cache when it moved (or could not
    /// be read: better a miss than a stale grant).
    pub async fn refresh(&self) {
        let current = self.inner.auth_generation().await;
        let mut seen = self.seen_db.lock();
        match current {
            Ok(g) if *seen == Some(g) => {}
            Ok(g) => {
                if seen.is_some() {
                    self.invalidate();
                }
                *seen = Some(g);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the auth generation; dropping cached access");
                self.invalidate();
                *seen = None;
            }
        }
    }

    /// Polls the database's generation until `cancel`.
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => self.refresh().await,
            }
        }
    }

    /// Runs a write, dropping the cache before (readers stop being served what it changes)
    /// and after (no reader that raced it keeps what it read before it committed).
    async fn write<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        self.invalidate();
        let r = f.await;
        self.invalidate();
        r
    }

    /// A cached answer, or the backend's, stored when it found something and no write
    /// happened meanwhile.
    async fn read<K, V, F>(&self, map: &Map<K, V>, key: K, f: F) -> Result<Option<V>>
    where
        K: Eq + std::hash::Hash + Clone,
        V: Clone,
        F: std::future::Future<Output = Result<Option<V>>>,
    {
        if let Some(v) = map.get(&key) {
            return Ok(Some(v));
        }
        let seen = self.generation.current();
        let v = f.await?;
        if let Some(v) = &v {
            self.generation.fill(map, seen, key, v.clone());
        }
        Ok(v)
    }

    /// [`Self::read`] for lists, which are always worth keeping.
    async fn read_list<K, V, F>(&self, map: &Map<K, Vec<V>>, key: K, f: F) -> Result<Vec<V>>
    where
        K: Eq + std::hash::Hash + Clone,
        V: Clone,
        F: std::future::Future<Output = Result<Vec<V>>>,
    {
        let found = self.read(map, key, async { f.await.map(Some) }).await?;
        Ok(found.unwrap_or_default())
    }
}

#[async_trait]
impl<S: ?Sized + UserStore + AccessStore> UserStore for CachedAccess<S> {
    async fn add_user(&self, name: &str, password_hash: &str, admin: bool) -> Result<bool> {
        self.write(self.inner.add_user(name, password_hash, admin))
            .await
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool> {
        self.write(self.inner.set_password(name, password_hash))
            .await
    }

    async fn set_admin(&self, name: &str, admin: bool) -> Result<bool> {
        self.write(self.inner.set_admin(name, admin)).await
    }

    async fn delete_user(&self, name: &str) -> Result<bool> {
        self.write(self.inner.delete_user(name)).await
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        if let Some(v) = self.users.get(name) {
            return Ok(Some(v));
        }
        self.read(&self.users, name.to_string(), self.inner.user(name))
            .await
    }

    async fn users(&self) -> Result<Vec<UserRecord>> {
        self.inner.users().await
    }

    fn forget_user(&self, name: &str) {
        self.users.remove(&name.to_string());
    }
}

#[async_trait]
impl<S: ?Sized + UserStore + AccessStore> AccessStore for CachedAccess<S> {
    async fn create_namespace(&self, name: &str, public: bool) -> Result<bool> {
        self.write(self.inner.create_namespace(name, public)).await
    }

    async fn set_namespace_public(&self, name: &str, public: bool) -> Result<bool> {
        self.write(self.inner.set_namespace_public(name, public))
            .await
    }

    async fn delete_namespace(&self, name: &str) -> Result<bool> {
        self.write(self.inner.delete_namespace(name)).await
    }

    async fn namespace(&self, name: &str) -> Result<Option<NamespaceRecord>> {
        self.inner.namespace(name).await
    }

    async fn namespaces(&self) -> Result<Vec<NamespaceRecord>> {
        self.read_list(&self.namespaces, (), self.inner.namespaces())
            .await
    }

    async fn set_member(&self, namespace: &str, user: &str, role: &str) -> Result<()> {
        self.write(self.inner.set_member(namespace, user, role))
            .await
    }

    async fn remove_member(&self, namespace: &str, user: &str) -> Result<bool> {
        self.write(self.inner.remove_member(namespace, user)).await
    }

    async fn members(&self, namespace: &str) -> Result<Vec<MemberRecord>> {
        self.inner.members(namespace).await
    }

    async fn namespace_and_role(
        &self,
        namespace: &str,
        user: Option<&str>,
    ) -> Result<Option<(NamespaceRecord, Option<String>)>> {
        let key = (namespace.to_string(), user.map(str::to_string));
        self.read(
            &self.namespace_roles,
            key,
            self.inner.namespace_and_role(namespace, user),
        )
        .await
    }

    async fn memberships(&self, user: &str) -> Result<Vec<MemberRecord>> {
        self.read_list(
            &self.memberships,
            user.to_string(),
            self.inner.memberships(user),
        )
        .await
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<bool> {
        self.write(self.inner.create_token(token)).await
    }

    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<TokenRecord>> {
        if let Some(t) = self.tokens_by_hash.get(secret_hash) {
            return Ok(Some(t));
        }
        self.read(
            &self.tokens_by_hash,
            secret_hash.to_string(),
            self.inner.token_by_hash(secret_hash),
        )
        .await
    }

    async fn token(&self, namespace: &str, name: &str) -> Result<Option<TokenRecord>> {
        let key = (namespace.to_string(), name.to_string());
        self.read(&self.tokens, key, self.inner.token(namespace, name))
            .await
    }

    async fn tokens(&self, namespace: Option<&str>) -> Result<Vec<TokenRecord>> {
        self.inner.tokens(namespace).await
    }

    async fn revoke_token(&self, namespace: &str, name: &str) -> Result<bool> {
        self.write(self.inner.revoke_token(namespace, name)).await
    }

    /// A token's last use decides nothing about access: the cache stays.
    async fn touch_token(&self, namespace: &str, name: &str, t: i64) -> Result<()> {
        self.inner.touch_token(namespace, name, t).await
    }

    async fn auth_generation(&self) -> Result<i64> {
        self.inner.auth_generation().await
    }

    fn forget_token(&self, namespace: &str, name: &str) {
        self.tokens
            .remove(&(namespace.to_string(), name.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::sqlite::SqliteMetadata;

    // A change written by another process (here: another connection to the same file)
    // reaches the cache at the next refresh; one written through the cache at once.
    #[tokio::test]
    async fn outside_changes_apply_at_the_next_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.db");
        let db = Arc::new(SqliteMetadata::open(&path).await.unwrap());
        let other = SqliteMetadata::open(&path).await.unwrap();
        let cache = CachedAccess::new(db.clone());
        cache.refresh().await;
        cache.add_user("alice", "h1", false).await.unwrap();
        cache.create_namespace("team", false).await.unwrap();
        assert_eq!(
            cache.user("alice").await.unwrap().unwrap().password_hash,
            "h1"
        );
        assert!(
            !cache
                .namespace_and_role("team", None)
                .await
                .unwrap()
                .unwrap()
                .0
                .public
        );

        other.set_password("alice", "h2").await.unwrap();
        other.set_namespace_public("team", true).await.unwrap();
        assert_eq!(
            cache.user("alice").await.unwrap().unwrap().password_hash,
            "h1",
            "served from the cache until the generation is read"
        );
        cache.refresh().await;
        assert_eq!(
            cache.user("alice").await.unwrap().unwrap().password_hash,
            "h2"
        );
        assert!(
            cache
                .namespace_and_role("team", None)
                .await
                .unwrap()
                .unwrap()
                .0
                .public
        );

        // A token's use does not move the generation; its revocation does.
        let token = TokenRecord {
            namespace: "team".into(),
            name: "ci".into(),
            access: "read".into(),
            secret_hash: "ab".repeat(32),
            created_at: 1,
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
        };
        cache.create_token(&token).await.unwrap();
        let before = db.auth_generation().await.unwrap();
        other.touch_token("team", "ci", 5).await.unwrap();
        assert_eq!(db.auth_generation().await.unwrap(), before);
        assert!(cache
            .token_by_hash(&token.secret_hash)
            .await
            .unwrap()
            .is_some());
        other.revoke_token("team", "ci").await.unwrap();
        assert!(db.auth_generation().await.unwrap() > before);
        cache.refresh().await;
        let t = cache
            .token_by_hash(&token.secret_hash)
            .await
            .unwrap()
            .unwrap();
        assert!(t.revoked_at.is_some());
        assert!(cache
            .token("team", "ci")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some());
        other.delete_user("alice").await.unwrap();
        cache.refresh().await;
        assert!(cache.user("alice").await.unwrap().is_none());
    }
}
