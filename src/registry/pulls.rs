//! Last pulls, recorded without making a pull wait: each manifest `GET` notes what it
//! served, and a background task writes the notes in one transaction every few seconds.

use std::collections::HashSet;

use parking_lot::Mutex;

use crate::metadata::proxy::PullRecord;
use crate::metadata::{now, MetadataError};
use crate::oci::{Digest, RepoName, Tag};

use super::Registry;

#[derive(Default)]
pub struct Pulls {
    pending: Mutex<HashSet<PullRecord>>,
}

impl Registry {
    /// Notes a manifest pull (by `tag`, or by digest when `None`).
    pub fn note_pull(&self, repo: &RepoName, digest: &Digest, tag: Option<&Tag>) {
        let mut p = self.pulls.pending.lock();
        if p.len() < 1_000_000 {
            p.insert(PullRecord {
                repo: repo.clone(),
                digest: digest.clone(),
                tag: tag.cloned(),
            });
        }
    }

    /// Writes the pulls noted since the last call.
    pub async fn flush_pulls(&self) -> Result<usize, MetadataError> {
        let batch: Vec<PullRecord> = std::mem::take(&mut *self.pulls.pending.lock())
            .into_iter()
            .collect();
        if batch.is_empty() {
            return Ok(0);
        }
        self.meta.record_pulls(&batch, now()).await?;
        Ok(batch.len())
    }
}
