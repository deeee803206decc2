//! Content discovery: tag lists, the catalog and the referrers API.

use std::collections::BTreeMap;

use crate::metadata::Page;
use crate::oci::{Digest, RepoName};

use super::{Registry, RegistryError, Result};

/// One descriptor of the referrers index.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Referrer {
    pub media_type: String,
    pub size: u64,
    pub digest: Digest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Registry {
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page> {
        let page = self
            .meta
            .tags(repo, last, limit)
            .await?
            .ok_or_else(|| RegistryError::NameUnknown(repo.clone()))?;
        if limit == Some(0) {
            // n=0: an empty list and never a Link header.
            return Ok(Page {
                items: Vec::new(),
                more: false,
            });
        }
        Ok(page)
    }

    pub async fn catalog(&self, last: Option<&str>, limit: u32) -> Result<Page> {
        if limit == 0 {
            return Ok(Page {
                items: Vec::new(),
                more: false,
            });
        }
        Ok(self.meta.repositories(last, limit).await?)
    }

    /// Manifests in `repo` whose `subject` is `subject`, optionally filtered by artifact type.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let records = self.meta.referrers(repo, subject, artifact_type).await?;
        Ok(records
            .into_iter()
            .map(|r| Referrer {
                media_type: r.media_type,
                size: r.size,
                digest: r.digest,
                artifact_type: r.artifact_type,
                annotations: r.annotations,
            })
            .collect())
    }
}
