//! Access tokens for CI and robots: a name, a namespace, an access level and a random
//! secret shown once. Only the secret's SHA-256 is stored; clients log in with the token's
//! name as user name and the secret as password.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest as _, Sha256};

use crate::metadata::access::{AccessStore, TokenRecord};
use crate::metadata::{now, MetadataError};

use super::perms::TokenAccess;
use super::policy::valid_namespace;
use super::users::UserName;

/// Every secret starts with this, so a password can be told from a token secret at a glance.
pub const SECRET_PREFIX: &str = "berth_";

/// A new secret: the prefix and 256 random bits, URL-safe base64.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Length of a secret after the prefix: 256 bits in unpadded base64.
const SECRET_BODY_LEN: usize = 43;

/// True when `s` has the form of a secret: the prefix and 43 URL-safe base64 characters.
/// Passwords of that form are refused, so a login can tell the two apart without a lookup.
pub fn is_token_secret(s: &str) -> bool {
    s.strip_prefix(SECRET_PREFIX).is_some_and(|b| {
        b.len() == SECRET_BODY_LEN
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    })
}

/// The stored form of a secret.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token name {0:?}: use 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")]
    InvalidName(String),
    #[error("{0}")]
    InvalidNamespace(String),
    #[error("{0}")]
    InvalidAccess(String),
    #[error("no namespace named {0}")]
    NoNamespace(String),
    #[error("a live token named {name} already exists in {namespace}; revoke it first")]
    Exists { namespace: String, name: String },
    #[error("no live token named {name} in {namespace}")]
    Unknown { namespace: String, name: String },
    #[error(transparent)]
    Store(#[from] MetadataError),
}

pub struct AccessTokens {
    store: Arc<dyn AccessStore>,
}

impl AccessTokens {
    pub fn new(store: Arc<dyn AccessStore>) -> Self {
        AccessTokens { store }
    }

    /// Creates a token and returns it with its secret, which exists nowhere else.
    pub async fn create(
        &self,
        namespace: &str,
        name: &str,
        access: &str,
        lifetime: Option<Duration>,
    ) -> Result<(TokenRecord, String), TokenError> {
        name.parse::<UserName>()
            .map_err(|_| TokenError::InvalidName(name.to_string()))?;
        valid_namespace(namespace).map_err(TokenError::InvalidNamespace)?;
        let access: TokenAccess = access.parse().map_err(TokenError::InvalidAccess)?;
        if self.store.namespace(namespace).await?.is_none() {
            return Err(TokenError::NoNamespace(namespace.to_string()));
        }
        let secret = new_secret();
        let created = now();
        let record = TokenRecord {
            namespace: namespace.to_string(),
            name: name.to_string(),
            access: access.as_str().to_string(),
            secret_hash: secret_hash(&secret),
            created_at: created,
            expires_at: lifetime.map(|d| created.saturating_add(d.as_secs() as i64)),
            last_used_at: None,
            revoked_at: None,
        };
        if !self.store.create_token(&record).await? {
            return Err(TokenError::Exists {
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        }
        Ok((record, secret))
    }

    pub async fn list(&self, namespace: Option<&str>) -> Result<Vec<TokenRecord>, TokenError> {
        Ok(self.store.tokens(namespace).await?)
    }

    pub async fn revoke(&self, namespace: &str, name: &str) -> Result<(), TokenError> {
        if self.store.revoke_token(namespace, name).await? {
            Ok(())
        } else {
            Err(TokenError::Unknown {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::sqlite::SqliteMetadata;

    #[test]
    fn secrets_are_random_and_prefixed() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX));
        assert_eq!(a.len(), SECRET_PREFIX.len() + 43);
        assert!(is_token_secret(&a));
        assert!(!is_token_secret("berth_short"));
        assert!(!is_token_secret(&a.replace("berth_", "other_")));
        assert_eq!(secret_hash(&a).len(), 64);
    }

    #[tokio::test]
    async fn create_list_revoke_and_recreate() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(
            SqliteMetadata::open(&dir.path().join("berth.db"))
                .await
                .unwrap(),
        );
        let t = AccessTokens::new(meta.clone());
        assert!(matches!(
            t.create("team-a", "ci", "read", None).await,
            Err(TokenError::NoNamespace(_))
        ));
        meta.create_namespace("team-a", false).await.unwrap();
        assert!(matches!(
            t.create("team-a", "ci", "write", None).await,
            Err(TokenError::InvalidAccess(_))
        ));
        let (rec, secret) = t
            .create("team-a", "ci", "read-write", Some(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(rec.expires_at, Some(rec.created_at + 60));
        let stored = meta
            .token_by_hash(&secret_hash(&secret))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.name, "ci");
        assert!(!stored.secret_hash.contains(&secret[SECRET_PREFIX.len()..]));
        assert!(matches!(
            t.create("team-a", "ci", "read", None).await,
            Err(TokenError::Exists { .. })
        ));
        t.revoke("team-a", "ci").await.unwrap();
        assert!(matches!(
            t.revoke("team-a", "ci").await,
            Err(TokenError::Unknown { .. })
        ));
        let listed = t.list(Some("team-a")).await.unwrap();
        assert!(listed[0].revoked_at.is_some());
        let (_, again) = t.create("team-a", "ci", "read", None).await.unwrap();
        assert_ne!(
            again, secret,
            "a revoked name can be reused with a new secret"
        );
        assert!(meta
            .token_by_hash(&secret_hash(&secret))
            .await
            .unwrap()
            .is_none());
    }
}
