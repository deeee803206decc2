//! Storage used per repository: what it links (blobs, manifests), what only it links, and
//! what it shares with other repositories. Each blob is stored once however many
//! repositories link it, so a namespace's total counts each blob once.

use async_trait::async_trait;
use serde::Serialize;

use super::Result;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RepoUsage {
    pub repository: String,
    /// Bytes of every blob and manifest the repository holds.
    pub total: u64,
    /// Of those, bytes no other repository holds (what deleting it could free).
    pub unique: u64,
    /// Of those, bytes other repositories hold too.
    pub shared: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub repositories: Vec<RepoUsage>,
    /// Bytes stored for all of them, each blob counted once.
    pub total: u64,
}

#[async_trait]
pub trait UsageStore: Send + Sync + 'static {
    /// Usage of the repositories in `namespace` (its first path segment), or of all.
    async fn usage(&self, namespace: Option<&str>) -> Result<Usage>;
}
