//! Authentication: user name and password (or access-token name and secret) to an
//! [`Identity`], with failed-login throttling, constant-time comparisons, and a cache that
//! spares a bcrypt verification on every request of a push.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::metadata::access::{AccessStore, TokenRecord};
use crate::metadata::users::UserStore;
use crate::metadata::{now, MetadataError};

use super::password;
use super::perms::TokenAccess;
use super::policy::Principal;
use super::throttle::Throttle;
use super::tokens::{secret_hash, SECRET_PREFIX};

/// An authenticated principal and a fingerprint of the credential it proved: tokens issued
/// to it carry the fingerprint, so changing a password or revoking an access token
/// invalidates them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub principal: Principal,
    pub binding: String,
}

impl Identity {
    pub fn anonymous() -> Identity {
        Identity {
            principal: Principal::Anonymous,
            binding: String::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid user name or password")]
    BadCredentials,
    #[error("too many failed logins; retry in {} s", (.0.as_secs() + u64::from(.0.subsec_nanos() > 0)).max(1))]
    Throttled(Duration),
    #[error(transparent)]
    Store(#[from] MetadataError),
}

/// A password this process has verified against a given stored hash.
struct Verified {
    password_mac: [u8; 32],
    stored_hash: String,
}

/// How often a token's last-used time is written at most.
const TOUCH_EVERY: i64 = 60;

pub struct Authenticator {
    users: Arc<dyn UserStore>,
    access: Arc<dyn AccessStore>,
    throttle: Throttle,
    /// Per-process random key, so the cache holds no plain hash of any password.
    cache_key: [u8; 32],
    verified: Mutex<HashMap<String, Verified>>,
    touched: Mutex<HashMap<(String, String), i64>>,
}

fn fingerprint(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..8])
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

impl Authenticator {
    pub fn new(
        users: Arc<dyn UserStore>,
        access: Arc<dyn AccessStore>,
        throttle: Throttle,
    ) -> Self {
        let mut cache_key = [0u8; 32];
        getrandom::fill(&mut cache_key).expect("the OS provides randomness");
        Authenticator {
            users,
            access,
            throttle,
            cache_key,
            verified: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// Checks a user name and password (or token name and secret) from `addr`.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        addr: IpAddr,
    ) -> Result<Identity, AuthError> {
        self.throttle
            .check(user, addr)
            .map_err(AuthError::Throttled)?;
        match self.check(user, password).await? {
            Some(id) => {
                self.throttle.succeeded(user);
                Ok(id)
            }
            None => {
                self.throttle.failed(user, addr);
                tracing::info!(user, client = %addr, "failed login");
                Err(AuthError::BadCredentials)
            }
        }
    }

    async fn check(&self, user: &str, password: &str) -> Result<Option<Identity>, MetadataError> {
        if password.starts_with(SECRET_PREFIX) {
            if let Some(t) = self.access.token_by_hash(&secret_hash(password)).await? {
                if ct_eq(t.name.as_bytes(), user.as_bytes()) && t.live_at(now()) {
                    self.touch(&t).await;
                    return Ok(token_identity(&t));
                }
            }
        }
        let record = self.users.user(user).await?;
        let mac = self.mac(password);
        if let Some(r) = &record {
            let cached =
                self.verified.lock().get(user).is_some_and(|v| {
                    v.stored_hash == r.password_hash && ct_eq(&v.password_mac, &mac)
                });
            if cached {
                return Ok(Some(user_identity(&r.name, r.admin, &r.password_hash)));
            }
        }
        let stored = record.as_ref().map(|r| r.password_hash.clone());
        let pw = password.to_string();
        let ok = tokio::task::spawn_blocking(move || password::verify(&pw, stored.as_deref()))
            .await
            .expect("password verification does not panic");
        match record {
            Some(r) if ok => {
                self.verified.lock().insert(
                    r.name.clone(),
                    Verified {
                        password_mac: mac,
                        stored_hash: r.password_hash.clone(),
                    },
                );
                Ok(Some(user_identity(&r.name, r.admin, &r.password_hash)))
            }
            _ => Ok(None),
        }
    }

    fn mac(&self, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Records a token's use, at most once a minute per token.
    async fn touch(&self, t: &TokenRecord) {
        let now = now();
        let key = (t.namespace.clone(), t.name.clone());
        {
            let mut touched = self.touched.lock();
            if touched
                .get(&key)
                .is_some_and(|&last| now - last < TOUCH_EVERY)
            {
                return;
            }
            touched.insert(key, now);
        }
        if let Err(e) = self.access.touch_token(&t.namespace, &t.name, now).await {
            tracing::warn!(error = %e, "cannot record token use");
        }
    }

    /// The current identity behind a token subject (see [`Principal::subject`]), or `None`
    /// when the user or access token no longer exists or is no longer live.
    pub async fn identity_of(&self, subject: &str) -> Result<Option<Identity>, MetadataError> {
        if subject.is_empty() {
            return Ok(Some(Identity::anonymous()));
        }
        if let Some((ns, name)) = subject.split_once('/') {
            return Ok(match self.access.token(ns, name).await? {
                Some(t) if t.live_at(now()) => {
                    self.touch(&t).await;
                    token_identity(&t)
                }
                _ => None,
            });
        }
        Ok(self
            .users
            .user(subject)
            .await?
            .map(|r| user_identity(&r.name, r.admin, &r.password_hash)))
    }
}

fn user_identity(name: &str, admin: bool, password_hash: &str) -> Identity {
    Identity {
        principal: Principal::User {
            name: name.to_string(),
            admin,
        },
        binding: fingerprint(password_hash),
    }
}

fn token_identity(t: &TokenRecord) -> Option<Identity> {
    let access: TokenAccess = t.access.parse().ok()?;
    Some(Identity {
        principal: Principal::Token {
            namespace: t.namespace.clone(),
            name: t.name.clone(),
            access,
        },
        binding: t.secret_hash[..16].to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokens::AccessTokens;
    use crate::metadata::sqlite::SqliteMetadata;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn users_tokens_cache_and_throttle() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(
            SqliteMetadata::open(&dir.path().join("berth.db"))
                .await
                .unwrap(),
        );
        meta.add_user("alice", &password::hash("pw").unwrap(), false)
            .await
            .unwrap();
        meta.create_namespace("team-a", false).await.unwrap();
        let (_, secret) = AccessTokens::new(meta.clone())
            .create("team-a", "ci", "read", None)
            .await
            .unwrap();
        let a = Authenticator::new(
            meta.clone(),
            meta.clone(),
            Throttle::new(3, Duration::from_secs(60)),
        );

        let id = a.login("alice", "pw", LOCAL).await.unwrap();
        assert_eq!(id.principal.subject(), "alice");
        // Cached now; a changed password invalidates the cache and the binding.
        assert_eq!(a.login("alice", "pw", LOCAL).await.unwrap(), id);
        meta.set_password("alice", &password::hash("pw2").unwrap())
            .await
            .unwrap();
        assert!(matches!(
            a.login("alice", "pw", LOCAL).await,
            Err(AuthError::BadCredentials)
        ));
        let id2 = a.login("alice", "pw2", LOCAL).await.unwrap();
        assert_ne!(id2.binding, id.binding);

        let t = a.login("ci", &secret, LOCAL).await.unwrap();
        assert_eq!(t.principal.subject(), "team-a/ci");
        assert!(matches!(
            a.login("other", &secret, LOCAL).await,
            Err(AuthError::BadCredentials)
        ));
        assert_eq!(
            a.identity_of("team-a/ci").await.unwrap().unwrap().binding,
            t.binding
        );
        assert!(meta
            .token("team-a", "ci")
            .await
            .unwrap()
            .unwrap()
            .last_used_at
            .is_some());

        for _ in 0..3 {
            let _ = a.login("mallory", "guess", LOCAL).await;
        }
        assert!(matches!(
            a.login("alice", "pw2", LOCAL).await,
            Err(AuthError::Throttled(_))
        ));
    }
}
