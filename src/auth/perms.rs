//! Permissions on a repository, the roles members hold in a namespace, and the access levels
//! of CI tokens, with their names as they appear in scopes, the CLI and the admin API.

use std::fmt;
use std::str::FromStr;

/// A set of repository permissions: `pull`, `push`, `delete`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Perms(u8);

impl Perms {
    pub const NONE: Perms = Perms(0);
    pub const PULL: Perms = Perms(1);
    pub const PUSH: Perms = Perms(2);
    pub const DELETE: Perms = Perms(4);
    pub const ALL: Perms = Perms(7);

    pub fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Perms) -> Perms {
        Perms(self.0 | other.0)
    }

    pub fn intersect(self, other: Perms) -> Perms {
        Perms(self.0 & other.0)
    }

    /// What `self` lacks of `needed`.
    pub fn missing(self, needed: Perms) -> Perms {
        Perms(needed.0 & !self.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Action names in scope order (`pull`, `push`, `delete`).
    pub fn actions(self) -> Vec<&'static str> {
        [
            (Perms::PULL, "pull"),
            (Perms::PUSH, "push"),
            (Perms::DELETE, "delete"),
        ]
        .into_iter()
        .filter(|(p, _)| self.contains(*p))
        .map(|(_, n)| n)
        .collect()
    }

    /// Parses one scope action; `*` means all. Unknown actions grant nothing.
    pub fn from_action(action: &str) -> Perms {
        match action {
            "pull" => Perms::PULL,
            "push" => Perms::PUSH,
            "delete" => Perms::DELETE,
            "*" => Perms::ALL,
            _ => Perms::NONE,
        }
    }
}

impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.actions().join(","))
    }
}

/// A member's role in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Pull.
    Guest,
    /// Pull and push.
    Developer,
    /// Pull, push, delete (manifests, tags, blobs).
    Maintainer,
    /// Everything, and managing members and tokens of the namespace.
    Admin,
}

impl Role {
    pub fn perms(self) -> Perms {
        match self {
            Role::Guest => Perms::PULL,
            Role::Developer => Perms::PULL.union(Perms::PUSH),
            Role::Maintainer | Role::Admin => Perms::ALL,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Guest => "guest",
            Role::Developer => "developer",
            Role::Maintainer => "maintainer",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "guest" => Ok(Role::Guest),
            "developer" => Ok(Role::Developer),
            "maintainer" => Ok(Role::Maintainer),
            "admin" => Ok(Role::Admin),
            _ => Err(format!(
                "unknown role {s:?}: use guest, developer, maintainer or admin"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an access token may do in its namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenAccess {
    Read,
    ReadWrite,
    ReadWriteDelete,
}

impl TokenAccess {
    pub fn perms(self) -> Perms {
        match self {
            TokenAccess::Read => Perms::PULL,
            TokenAccess::ReadWrite => Perms::PULL.union(Perms::PUSH),
            TokenAccess::ReadWriteDelete => Perms::ALL,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenAccess::Read => "read",
            TokenAccess::ReadWrite => "read-write",
            TokenAccess::ReadWriteDelete => "read-write-delete",
        }
    }
}

impl FromStr for TokenAccess {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(TokenAccess::Read),
            "read-write" => Ok(TokenAccess::ReadWrite),
            "read-write-delete" => Ok(TokenAccess::ReadWriteDelete),
            _ => Err(format!(
                "unknown access {s:?}: use read, read-write or read-write-delete"
            )),
        }
    }
}

impl fmt::Display for TokenAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grow_monotonically() {
        let roles = [Role::Guest, Role::Developer, Role::Maintainer, Role::Admin];
        for w in roles.windows(2) {
            assert!(w[1].perms().contains(w[0].perms()));
        }
        assert_eq!(Role::Guest.perms().to_string(), "pull");
        assert_eq!(Role::Developer.perms().to_string(), "pull,push");
        assert_eq!(Role::Maintainer.perms().to_string(), "pull,push,delete");
        for r in roles {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("owner".parse::<Role>().is_err());
    }

    #[test]
    fn perms_set_algebra() {
        let rw = Perms::PULL.union(Perms::PUSH);
        assert!(rw.contains(Perms::PULL));
        assert!(!rw.contains(Perms::DELETE));
        assert_eq!(rw.missing(Perms::ALL), Perms::DELETE);
        assert_eq!(rw.intersect(Perms::from_action("*")), rw);
        assert!(Perms::from_action("PULL").is_empty());
        assert_eq!("read-write".parse::<TokenAccess>().unwrap().perms(), rw);
    }
}
