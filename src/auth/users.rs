//! Registry users: validated names, bcrypt-hashed passwords, server administrators, and the
//! import of an existing htpasswd file (bcrypt entries, as the Docker registry uses).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::metadata::users::{UserRecord, UserStore};
use crate::metadata::MetadataError;

use super::password::{self, PasswordError};

/// A user name: 1 to 64 of `[A-Za-z0-9._@-]`, starting with a letter or digit. Never
/// contains `:`, which separates name and password in Basic credentials.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserName(String);

impl UserName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserName {
    type Err = UserError;
    fn from_str(s: &str) -> Result<Self, UserError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 64
            && b[0].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"._@-".contains(c));
        if ok {
            Ok(UserName(s.to_string()))
        } else {
            Err(UserError::InvalidName(s.to_string()))
        }
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("invalid user name {0:?}: use 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")]
    InvalidName(String),
    #[error("user {0} already exists")]
    Exists(String),
    #[error("no user named {0}")]
    Unknown(String),
    #[error("htpasswd line {line}: {reason}")]
    Htpasswd { line: usize, reason: String },
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error(transparent)]
    Store(#[from] MetadataError),
}

/// What an htpasswd import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub added: usize,
    pub replaced: usize,
    /// Users that existed and were left as they were.
    pub kept: usize,
}

pub struct Users {
    store: Arc<dyn UserStore>,
}

/// bcrypt is CPU-bound for tens of milliseconds: keep it off the async workers.
async fn off_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("password hashing does not panic")
}

impl Users {
    pub fn new(store: Arc<dyn UserStore>) -> Self {
        Users { store }
    }

    pub async fn add(&self, name: &UserName, password: &str, admin: bool) -> Result<(), UserError> {
        let pw = password.to_string();
        let hash = off_thread(move || password::hash(&pw)).await?;
        if self.store.add_user(name.as_str(), &hash, admin).await? {
            Ok(())
        } else {
            Err(UserError::Exists(name.to_string()))
        }
    }

    pub async fn set_password(&self, name: &UserName, password: &str) -> Result<(), UserError> {
        let pw = password.to_string();
        let hash = off_thread(move || password::hash(&pw)).await?;
        if self.store.set_password(name.as_str(), &hash).await? {
            Ok(())
        } else {
            Err(UserError::Unknown(name.to_string()))
        }
    }

    pub async fn delete(&self, name: &UserName) -> Result<(), UserError> {
        if self.store.delete_user(name.as_str()).await? {
            Ok(())
        } else {
            Err(UserError::Unknown(name.to_string()))
        }
    }

    pub async fn list(&self) -> Result<Vec<UserRecord>, UserError> {
        Ok(self.store.users().await?)
    }

    /// The user, if `name` and `password` match one. Costs one bcrypt verification whether
    /// or not the user exists.
    pub async fn verify(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<UserRecord>, UserError> {
        let user = self.store.user(name).await?;
        let pw = password.to_string();
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let ok = off_thread(move || password::verify(&pw, stored.as_deref())).await;
        Ok(user.filter(|_| ok))
    }

    /// Imports `name:bcrypt-hash` lines. Every line is checked before anything is written;
    /// existing users keep their password unless `replace` is set.
    pub async fn import_htpasswd(
        &self,
        text: &str,
        replace: bool,
    ) -> Result<ImportReport, UserError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| UserError::Htpasswd {
                line: i + 1,
                reason,
            };
            let (name, hash) = line
                .split_once(':')
                .ok_or_else(|| bad("expected name:hash".into()))?;
            let name: UserName = name.parse().map_err(|e: UserError| bad(e.to_string()))?;
            password::check_hash(hash).map_err(|e| bad(e.to_string()))?;
            entries.push((name, hash.to_string()));
        }
        let mut report = ImportReport::default();
        for (name, hash) in entries {
            if self.store.add_user(name.as_str(), &hash, false).await? {
                report.added += 1;
            } else if replace {
                self.store.set_password(name.as_str(), &hash).await?;
                report.replaced += 1;
            } else {
                report.kept += 1;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::sqlite::SqliteMetadata;

    async fn users() -> (tempfile::TempDir, Users) {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqliteMetadata::open(&dir.path().join("berth.db"))
            .await
            .unwrap();
        (dir, Users::new(Arc::new(meta)))
    }

    #[test]
    fn user_names_are_validated() {
        for ok in ["alice", "ci-bot", "a.b_c@example.com", "X1"] {
            assert!(ok.parse::<UserName>().is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a:b", "a b", "é", &"a".repeat(65)] {
            assert!(bad.parse::<UserName>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn add_verify_change_delete() {
        let (_d, u) = users().await;
        let alice: UserName = "alice".parse().unwrap();
        u.add(&alice, "pw1", true).await.unwrap();
        assert!(matches!(
            u.add(&alice, "pw2", false).await,
            Err(UserError::Exists(_))
        ));
        let found = u.verify("alice", "pw1").await.unwrap().unwrap();
        assert!(found.admin);
        assert!(u.verify("alice", "wrong").await.unwrap().is_none());
        assert!(u.verify("nobody", "pw1").await.unwrap().is_none());
        u.set_password(&alice, "pw2").await.unwrap();
        assert!(u.verify("alice", "pw1").await.unwrap().is_none());
        assert!(u.verify("alice", "pw2").await.unwrap().is_some());
        u.delete(&alice).await.unwrap();
        assert!(matches!(u.delete(&alice).await, Err(UserError::Unknown(_))));
        assert!(u.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn imports_bcrypt_htpasswd_all_or_nothing() {
        let (_d, u) = users().await;
        let h = password::hash("secret").unwrap();
        let bad = format!("bob:{h}\ncarol:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n");
        let err = u.import_htpasswd(&bad, false).await.unwrap_err();
        assert!(matches!(err, UserError::Htpasswd { line: 2, .. }), "{err}");
        assert!(
            u.list().await.unwrap().is_empty(),
            "nothing written on error"
        );
        let good = format!("# comment\n\nbob:{h}\ncarol:{h}\n");
        let r = u.import_htpasswd(&good, false).await.unwrap();
        assert_eq!(
            r,
            ImportReport {
                added: 2,
                replaced: 0,
                kept: 0
            }
        );
        assert!(u.verify("bob", "secret").await.unwrap().is_some());
        let r = u.import_htpasswd(&good, false).await.unwrap();
        assert_eq!(r.kept, 2);
        let r = u.import_htpasswd(&good, true).await.unwrap();
        assert_eq!(r.replaced, 2);
    }
}
