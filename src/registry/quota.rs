//! Storage quotas per namespace (a repository name's first segment). Usage counts the
//! deduplicated bytes of every blob and manifest linked into the namespace's repositories,
//! even blobs no manifest references yet. A blob the namespace holds already costs nothing.
//!
//! A push is refused as early as its size is known: at `POST` or `PATCH` with a length, before
//! any byte is read, and at the latest when the upload completes, inside the transaction that
//! would link the blob, so concurrent pushes cannot overshoot together. The refused session is
//! discarded. The pull-through cache is bounded by its eviction, never by quotas.

use std::collections::BTreeMap;

use crate::metadata::{MetadataError, Quota};
use crate::oci::size::human;
use crate::oci::{Digest, RepoName, UploadId};

use super::{Registry, RegistryError, Result};

/// Quota per namespace, in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quotas(BTreeMap<String, u64>);

impl Quotas {
    pub fn new(limits: BTreeMap<String, u64>) -> Self {
        Quotas(limits)
    }

    pub fn limits(&self) -> &BTreeMap<String, u64> {
        &self.0
    }

    /// The quota covering `repo`, if its namespace has one.
    pub fn for_repo(&self, repo: &RepoName) -> Option<Quota> {
        let ns = namespace(repo);
        self.0.get(ns).map(|&limit| Quota {
            namespace: ns.to_string(),
            limit,
        })
    }
}

pub fn namespace(repo: &RepoName) -> &str {
    repo.as_str().split('/').next().unwrap_or_default()
}

/// What every quota refusal's message says (the audit log tells refusals apart by it).
pub const REFUSAL: &str = "is over its storage quota";

/// The `403 DENIED` a refused push gets.
pub fn refusal(namespace: &str, limit: u64, used: u64, size: u64) -> RegistryError {
    RegistryError::Denied(format!(
        "namespace {namespace} {REFUSAL}: quota {}, used {}, this blob {}",
        human(limit),
        human(used),
        human(size)
    ))
}

/// Turns the metadata store's quota refusal into the registry's.
pub(super) fn refused(e: MetadataError) -> RegistryError {
    match e {
        MetadataError::QuotaExceeded {
            namespace,
            limit,
            used,
            size,
        } => refusal(&namespace, limit, used, size),
        other => other.into(),
    }
}

impl Registry {
    pub(super) fn quota(&self, repo: &RepoName) -> Option<Quota> {
        self.policy.rules.get().quotas.for_repo(repo)
    }

    /// Refuses `size` more bytes (of blob `digest`, when known) for `repo` when the namespace
    /// has no room, before anything is read or stored.
    pub(super) async fn quota_precheck(
        &self,
        repo: &RepoName,
        digest: Option<&Digest>,
        size: u64,
    ) -> Result<()> {
        let Some(q) = self.quota(repo) else {
            return Ok(());
        };
        if let Some(d) = digest {
            if self.meta.namespace_holds(&q.namespace, d).await? {
                return Ok(());
            }
        }
        let used = self.meta.namespace_usage(&q.namespace).await?;
        if used.saturating_add(size) > q.limit {
            return Err(refusal(&q.namespace, q.limit, used, size));
        }
        Ok(())
    }

    /// Ends a session refused for its quota: nothing of it stays.
    pub(super) async fn discard_session(&self, id: &UploadId) {
        let _ = self.meta.delete_upload(id).await;
        let _ = self.storage.cancel(id).await;
        self.uploads.forget(id);
    }

    /// Removes bytes committed for a push that was then refused, unless something else
    /// links or references the blob (checked under the write lock every link takes).
    pub(super) async fn unstore(&self, digest: &Digest) {
        let delete = crate::storage::deleter(self.storage.clone());
        if let Err(e) = self
            .meta
            .delete_unreferenced(std::slice::from_ref(digest), &delete)
            .await
        {
            tracing::warn!(%digest, error = %e, "cannot remove the bytes of a refused push");
        }
    }
}
