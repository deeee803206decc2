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
use super::shared_throttle::SharedThrottle;
use super::throttle::Throttle;
use super::tokens::{is_token_secret, secret_hash};

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
    /// The throttle's counts shared with other replicas over the database, if any.
    shared: Option<SharedThrottle>,
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
            shared: None,
            cache_key,
            verified: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// Shares the throttle's counts with the other replicas on the same database.
    pub fn with_shared_throttle(mut self, shared: SharedThrottle) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Checks a user name and password (or token name and secret) from `addr`.
    ///
    /// A password with the form of an access-token secret is checked as one, and only as
    /// one: a valid token logs in even while its address is blocked, and a wrong secret
    /// counts toward the address's limit, never toward a user.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        addr: IpAddr,
    ) -> Result<Identity, AuthError> {
        if is_token_secret(password) {
            if let Some(id) = self.check_token(user, password).await? {
                return Ok(id);
            }
            self.throttle
                .check_address(addr)
                .map_err(AuthError::Throttled)?;
            self.throttle.failed_address(addr);
            self.share(None, addr, true).await;
            tracing::info!(user, client = %addr, "failed login with an access-token secret");
            return Err(AuthError::BadCredentials);
        }
        self.throttle
            .check(user, addr)
            .map_err(AuthError::Throttled)?;
        match self.check_password(user, password).await? {
            Some(id) => {
                if self.throttle.succeeded(user, addr) {
                    self.share(Some(user), addr, false).await;
                }
                Ok(id)
            }
            None => {
                self.throttle.failed(user, addr);
                self.share(Some(user), addr, true).await;
                tracing::info!(user, client = %addr, "failed login");
                Err(AuthError::BadCredentials)
            }
        }
    }

    /// Forgets blocks that ended; run periodically.
    pub fn sweep_throttle(&self) {
        self.throttle.sweep();
    }

    async fn share(&self, user: Option<&str>, addr: IpAddr, failed: bool) {
        if let Some(s) = &self.shared {
            s.record(user, addr, failed).await;
        }
    }

    /// The shared throttle, when replicas share one.
    pub fn shared_throttle(&self) -> Option<&SharedThrottle> {
        self.shared.as_ref()
    }

    /// Applies the other replicas' failed logins (no-op without a shared throttle).
    pub async fn pull_throttle(&self) -> crate::metadata::Result<usize> {
        match &self.shared {
            Some(s) => s.pull(&self.throttle).await,
            None => Ok(0),
        }
    }

    async fn check_token(
        &self,
        user: &str,
        secret: &str,
    ) -> Result<Option<Identity>, MetadataError> {
        let Some(t) = self.access.token_by_hash(&secret_hash(secret)).await? else {
            return Ok(None);
        };
        if ct_eq(t.name.as_bytes(), user.as_bytes()) && t.live_at(now()) {
            self.touch(&t).await;
            return Ok(token_identity(&t));
        }
        Ok(None)
    }

    async fn check_password(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Option<Identity>, MetadataError> {
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
        let mut ok = verify_off_thread(password, record.as_ref()).await;
        let mut record = record;
        if !ok && record.is_some() {
            // The cached record may predate a password change made by another process: look
            // again, and verify again only if the stored hash did change.
            self.users.forget_user(user);
            let fresh = self.users.user(user).await?;
            if fresh.as_ref().map(|r| &r.password_hash) != record.as_ref().map(|r| &r.password_hash)
            {
                ok = verify_off_thread(password, fresh.as_ref()).await;
                record = fresh;
            }
        }
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

    /// The identity behind a token subject, if it still proves the credential `binding`
    /// fingerprints. A cached answer that would refuse is checked against the database once:
    /// what another process allowed (a re-created user or token) applies at once, what it
    /// took away within the cache's poll.
    pub async fn bound_identity(
        &self,
        subject: &str,
        binding: &str,
    ) -> Result<Option<Identity>, MetadataError> {
        let found = self.identity_of(subject).await?;
        if found.as_ref().is_some_and(|id| id.binding == binding) {
            return Ok(found);
        }
        match subject.split_once('/') {
            Some((ns, name)) => self.access.forget_token(ns, name),
            None => self.users.forget_user(subject),
        }
        Ok(self
            .identity_of(subject)
            .await?
            .filter(|id| id.binding == binding))
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

/// bcrypt is CPU-bound for tens of milliseconds: keep it off the async workers.
async fn verify_off_thread(
    password: &str,
    record: Option<&crate::metadata::users::UserRecord>,
) -> bool {
    let stored = record.map(|r| r.password_hash.clone());
    let pw = password.to_string();
    tokio::task::spawn_blocking(move || password::verify(&pw, stored.as_deref()))
        .await
        .expect("password verification does not panic")
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
            Throttle::new(crate::auth::throttle::Limits {
                pair_max_failures: 3,
                address_max_failures: 7,
                ..Default::default()
            }),
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

        // Three wrong passwords block mallory from this address, not alice.
        for _ in 0..3 {
            let _ = a.login("mallory", "guess", LOCAL).await;
        }
        assert!(matches!(
            a.login("mallory", "guess", LOCAL).await,
            Err(AuthError::Throttled(_))
        ));
        a.login("alice", "pw2", LOCAL).await.unwrap();
        // Wrong token secrets count toward the address (with alice's old password, the
        // secret sent under another name and mallory's: 7 failures, blocked for passwords),
        // yet a valid token still logs in.
        for _ in 0..2 {
            let wrong = crate::auth::tokens::new_secret();
            assert!(matches!(
                a.login("ci", &wrong, LOCAL).await,
                Err(AuthError::BadCredentials)
            ));
        }
        assert!(matches!(
            a.login("alice", "pw2", LOCAL).await,
            Err(AuthError::Throttled(_))
        ));
        a.login("ci", &secret, LOCAL).await.unwrap();
    }
}
