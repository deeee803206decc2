//! Namespaces and memberships as a service: validation and existence checks shared by the
//! CLI and the admin API.

use std::sync::Arc;

use crate::metadata::access::{AccessStore, MemberRecord, NamespaceRecord};
use crate::metadata::users::UserStore;
use crate::metadata::MetadataError;

use super::perms::Role;
use super::policy::valid_namespace;

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("{0}")]
    Invalid(String),
    #[error("namespace {0} already exists")]
    Exists(String),
    #[error("no namespace named {0}")]
    Unknown(String),
    #[error("no user named {0}")]
    UnknownUser(String),
    #[error("{user} is not a member of {namespace}")]
    NotMember { namespace: String, user: String },
    #[error(transparent)]
    Store(#[from] MetadataError),
}

pub struct Namespaces {
    store: Arc<dyn AccessStore>,
    users: Arc<dyn UserStore>,
}

impl Namespaces {
    pub fn new(store: Arc<dyn AccessStore>, users: Arc<dyn UserStore>) -> Self {
        Namespaces { store, users }
    }

    pub async fn create(
        &self,
        name: &str,
        public: bool,
    ) -> Result<NamespaceRecord, NamespaceError> {
        valid_namespace(name).map_err(NamespaceError::Invalid)?;
        if !self.store.create_namespace(name, public).await? {
            return Err(NamespaceError::Exists(name.to_string()));
        }
        self.get(name).await
    }

    pub async fn get(&self, name: &str) -> Result<NamespaceRecord, NamespaceError> {
        self.store
            .namespace(name)
            .await?
            .ok_or_else(|| NamespaceError::Unknown(name.to_string()))
    }

    pub async fn list(&self) -> Result<Vec<NamespaceRecord>, NamespaceError> {
        Ok(self.store.namespaces().await?)
    }

    pub async fn set_public(&self, name: &str, public: bool) -> Result<(), NamespaceError> {
        if self.store.set_namespace_public(name, public).await? {
            Ok(())
        } else {
            Err(NamespaceError::Unknown(name.to_string()))
        }
    }

    pub async fn delete(&self, name: &str) -> Result<(), NamespaceError> {
        if self.store.delete_namespace(name).await? {
            Ok(())
        } else {
            Err(NamespaceError::Unknown(name.to_string()))
        }
    }

    /// Adds `user` to `namespace` with `role`, or changes their role.
    pub async fn set_member(
        &self,
        namespace: &str,
        user: &str,
        role: &str,
    ) -> Result<Role, NamespaceError> {
        let role: Role = role.parse().map_err(NamespaceError::Invalid)?;
        self.get(namespace).await?;
        if self.users.user(user).await?.is_none() {
            return Err(NamespaceError::UnknownUser(user.to_string()));
        }
        self.store
            .set_member(namespace, user, role.as_str())
            .await?;
        Ok(role)
    }

    pub async fn remove_member(&self, namespace: &str, user: &str) -> Result<(), NamespaceError> {
        if self.store.remove_member(namespace, user).await? {
            Ok(())
        } else {
            Err(NamespaceError::NotMember {
                namespace: namespace.to_string(),
                user: user.to_string(),
            })
        }
    }

    pub async fn members(&self, namespace: &str) -> Result<Vec<MemberRecord>, NamespaceError> {
        self.get(namespace).await?;
        Ok(self.store.members(namespace).await?)
    }
}
