//! Registry services: blobs, uploads, manifests and discovery over a [`Storage`] backend and a
//! [`Metadata`] store. This layer owns the write ordering: bytes are durable in storage before
//! any metadata row points at them.

use std::sync::Arc;
use std::time::Duration;

use crate::metadata::Store;
use crate::storage::Storage;

mod blobs;
mod cache;
mod discovery;
pub mod error;
pub mod immutable;
mod manifests;
mod pulls;
pub mod quota;
pub mod rules;
pub mod service;
mod uploads;

pub use discovery::Referrer;
pub use error::{RegistryError, Result};
pub use immutable::ImmutableTags;
pub use manifests::{ManifestPut, StoredManifest};
pub use service::{BlobReply, CacheStatus, ManifestReply, Service};
pub use uploads::AppendRequest;

/// Limits and switches the services enforce.
#[derive(Clone, Debug)]
pub struct Policy {
    pub manifest_max_bytes: u64,
    pub delete_enabled: bool,
    /// Upload sessions untouched this long are removed.
    pub upload_max_age: Duration,
    /// Immutable tags and quotas, which may change while the registry runs.
    pub rules: rules::Live<rules::ContentRules>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            manifest_max_bytes: 4 * 1024 * 1024,
            delete_enabled: true,
            upload_max_age: Duration::from_secs(24 * 3600),
            rules: Default::default(),
        }
    }
}

pub struct Registry {
    storage: Arc<dyn Storage>,
    meta: Arc<dyn Store>,
    policy: Policy,
    uploads: uploads::Sessions,
    manifests: cache::ManifestCache,
    pulls: pulls::Pulls,
}

impl Registry {
    pub fn new(storage: Arc<dyn Storage>, meta: Arc<dyn Store>, policy: Policy) -> Self {
        Registry {
            storage,
            meta,
            policy,
            uploads: Default::default(),
            manifests: cache::ManifestCache::new(64 * 1024 * 1024),
            pulls: Default::default(),
        }
    }

    /// The blob backend, for services layered on this one (the pull-through cache).
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The metadata store, for services layered on this one.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.meta
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn check_delete_enabled(&self) -> Result<()> {
        if self.policy.delete_enabled {
            Ok(())
        } else {
            Err(RegistryError::Unsupported(
                "deletion is disabled on this registry".into(),
            ))
        }
    }
}
