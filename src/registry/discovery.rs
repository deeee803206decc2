//! Content discovery: tag lists, the catalog and the referrers API.

use std::collections::BTreeMap;

use crate::metadata::Page;
use crate::oci::{Digest, RepoName};

use super::{Registry, RegistryError, Result};

/// One descriptor of the referrers index.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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

    pub async fn catalog(
        &self,
        last: Option<&str>,
        limit: u32,
        visible: &(dyn for<'s> Fn(&'s str) -> bool + Send + Sync),
    ) -> Result<Page> {
        let mut items = Vec::new();
        if limit == 0 {
            return Ok(Page { items, more: false });
        }
        // Hidden repositories are skipped by reading on in batches until the page is full.
        let batch = limit.max(100);
        let mut cursor = last.map(str::to_string);
        loop {
            let page = self.meta.repositories(cursor.as_deref(), batch).await?;
            for name in page.items {
                if visible(&name) {
                    if items.len() == limit as usize {
                        return Ok(Page { items, more: true });
                    }
                    items.push(name.clone());
                }
                cursor = Some(name);
            }
            if !page.more {
                return Ok(Page { items, more: false });
            }
        }
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
