//! Who may do what: the [`Principal`] a request acts as, and the [`Authorizer`] that turns a
//! principal and a repository into [`Perms`] from namespaces, memberships and tokens.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::metadata::access::AccessStore;
use crate::metadata::MetadataError;
use crate::oci::RepoName;

use super::perms::{Perms, Role, TokenAccess};

/// The identity a request acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// No credentials.
    Anonymous,
    /// A registry user; `admin` users may do everything.
    User { name: String, admin: bool },
    /// An access token, confined to its namespace.
    Token {
        namespace: String,
        name: String,
        access: TokenAccess,
    },
}

impl Principal {
    /// The `sub` of tokens issued to this principal: the user name, `<namespace>/<token>` for
    /// access tokens (user names never contain `/`), and empty for anonymous.
    pub fn subject(&self) -> String {
        match self {
            Principal::Anonymous => String::new(),
            Principal::User { name, .. } => name.clone(),
            Principal::Token {
                namespace, name, ..
            } => format!("{namespace}/{name}"),
        }
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self, Principal::Anonymous)
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::User { admin: true, .. })
    }

    /// A name for logs and audit: never a secret.
    pub fn describe(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::User { name, .. } => name.clone(),
            Principal::Token {
                namespace, name, ..
            } => format!("token {namespace}/{name}"),
        }
    }
}

/// The namespace of a repository: its first path segment.
pub fn namespace_of(repo: &RepoName) -> &str {
    repo.as_str().split('/').next().unwrap_or("")
}

/// Checks a namespace name: one path component of the repository-name grammar.
pub fn valid_namespace(name: &str) -> Result<(), String> {
    if !name.contains('/') && name.parse::<RepoName>().is_ok() {
        Ok(())
    } else {
        Err(format!(
            "invalid namespace name {name:?}: use lowercase letters and digits, separated by '.', '_', '__' or '-'"
        ))
    }
}

/// Which repositories a principal may see in the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Visibility {
    All,
    Namespaces(BTreeSet<String>),
}

impl Visibility {
    pub fn shows(&self, repo: &str) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Namespaces(set) => set.contains(repo.split('/').next().unwrap_or_default()),
        }
    }
}

/// Who may pull from the namespace of a mirrored upstream without being a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenPull {
    /// Anyone, without credentials too.
    Anyone,
    /// Anyone who logged in.
    Authenticated,
    /// Nobody but members (and server admins).
    Members,
}

impl OpenPull {
    fn perms(self, p: &Principal) -> Perms {
        match (self, p) {
            (OpenPull::Anyone, _) => Perms::PULL,
            (OpenPull::Authenticated, Principal::Anonymous) => Perms::NONE,
            (OpenPull::Authenticated, _) => Perms::PULL,
            (OpenPull::Members, _) => Perms::NONE,
        }
    }
}

#[derive(Clone)]
pub struct Authorizer {
    store: Arc<dyn AccessStore>,
    /// Namespaces of mirrored upstreams and who may pull there without membership.
    mirrors: Arc<HashMap<String, OpenPull>>,
}

impl Authorizer {
    pub fn new(store: Arc<dyn AccessStore>) -> Self {
        Authorizer {
            store,
            mirrors: Arc::default(),
        }
    }

    /// Adds the namespaces of mirrored upstreams: nobody may push there (the cache refuses
    /// it too), and pulls are open as configured, on top of any members the namespace has.
    pub fn with_upstreams(mut self, mirrors: HashMap<String, OpenPull>) -> Self {
        self.mirrors = Arc::new(mirrors);
        self
    }

    /// What `p` may do to `repo`, by the namespace's current settings.
    pub async fn perms(&self, p: &Principal, repo: &RepoName) -> Result<Perms, MetadataError> {
        self.namespace_perms(p, namespace_of(repo)).await
    }

    pub async fn namespace_perms(
        &self,
        p: &Principal,
        namespace: &str,
    ) -> Result<Perms, MetadataError> {
        let open = self
            .mirrors
            .get(namespace)
            .map_or(Perms::NONE, |o| o.perms(p));
        let user = match p {
            Principal::User { admin: true, .. } => return Ok(Perms::ALL),
            Principal::User { name, .. } => Some(name.as_str()),
            _ => None,
        };
        let Some((ns, role)) = self.store.namespace_and_role(namespace, user).await? else {
            return Ok(open);
        };
        let mut perms = if ns.public { Perms::PULL } else { Perms::NONE };
        if let Some(role) = role.and_then(|r| r.parse::<Role>().ok()) {
            perms = perms.union(role.perms());
        }
        if let Principal::Token {
            namespace: own,
            access,
            ..
        } = p
        {
            if own == namespace {
                perms = perms.union(access.perms());
            }
        }
        if self.mirrors.contains_key(namespace) {
            // A mirror is read-only whatever the role says.
            perms = perms.intersect(Perms::PULL);
        }
        Ok(perms.union(open))
    }

    /// True when `p` may manage the members and tokens of `namespace`.
    pub async fn manages(&self, p: &Principal, namespace: &str) -> Result<bool, MetadataError> {
        match p {
            Principal::User { admin: true, .. } => Ok(true),
            Principal::User { name, .. } => Ok(self
                .store
                .namespace_and_role(namespace, Some(name))
                .await?
                .and_then(|(_, r)| r)
                .is_some_and(|r| r == Role::Admin.as_str())),
            _ => Ok(false),
        }
    }

    /// The namespaces whose repositories `p` may list.
    pub async fn visibility(&self, p: &Principal) -> Result<Visibility, MetadataError> {
        if p.is_admin() {
            return Ok(Visibility::All);
        }
        let mut set: BTreeSet<String> = self
            .store
            .namespaces()
            .await?
            .into_iter()
            .filter(|n| n.public)
            .map(|n| n.name)
            .collect();
        set.extend(
            self.mirrors
                .iter()
                .filter(|(_, o)| o.perms(p).contains(Perms::PULL))
                .map(|(n, _)| n.clone()),
        );
        match p {
            Principal::User { name, .. } => set.extend(
                self.store
                    .memberships(name)
                    .await?
                    .into_iter()
                    .map(|m| m.namespace),
            ),
            Principal::Token { namespace, .. } => {
                set.insert(namespace.clone());
            }
            Principal::Anonymous => {}
        }
        Ok(Visibility::Namespaces(set))
    }
}
