//! Password hashing with bcrypt, and verification that takes the same time whether or not
//! the user exists.

/// bcrypt cost for new hashes: about 0.2 s on these machines, the usual registry setting.
pub const COST: u32 = 10;

/// A hash that matches no password, verified against when a user does not exist so that a
/// failed login costs the same either way.
const DECOY: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password must not be empty")]
    Empty,
    #[error("password is longer than 72 bytes, which bcrypt cannot hash")]
    TooLong,
    #[error("password has the form of an access-token secret (berth_ and 43 characters); choose another")]
    TokenShaped,
    #[error("not a bcrypt hash (htpasswd entries must be made with `htpasswd -B`)")]
    NotBcrypt,
    #[error("hashing failed: {0}")]
    Hash(#[from] bcrypt::BcryptError),
}

pub fn hash(password: &str) -> Result<String, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    if password.len() > 72 {
        return Err(PasswordError::TooLong);
    }
    if super::tokens::is_token_secret(password) {
        return Err(PasswordError::TokenShaped);
    }
    Ok(bcrypt::hash(password, COST)?)
}

/// Checks that `hash` is a bcrypt hash this crate can verify (`$2a$`, `$2b$`, `$2y$`).
pub fn check_hash(hash: &str) -> Result<(), PasswordError> {
    let ok = ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
        && hash.len() == 60
        && bcrypt::verify("", hash).is_ok();
    if ok {
        Ok(())
    } else {
        Err(PasswordError::NotBcrypt)
    }
}

/// Verifies `password` against a stored hash, or against a decoy when there is none.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    match stored {
        Some(h) => bcrypt::verify(password, h).unwrap_or(false),
        None => {
            let _ = bcrypt::verify(password, DECOY);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_reject() {
        let h = hash("s3cret").unwrap();
        check_hash(&h).unwrap();
        assert!(verify("s3cret", Some(&h)));
        assert!(!verify("s3creT", Some(&h)));
        assert!(!verify("s3cret", None));
        assert!(matches!(hash(""), Err(PasswordError::Empty)));
        assert!(matches!(hash(&"x".repeat(73)), Err(PasswordError::TooLong)));
    }

    #[test]
    fn only_bcrypt_hashes_are_accepted() {
        check_hash(DECOY).unwrap();
        for bad in ["{SHA}abc", "$apr1$xyz$abc", "plain", "$2b$10$short"] {
            assert!(check_hash(bad).is_err(), "{bad}");
        }
    }
}
