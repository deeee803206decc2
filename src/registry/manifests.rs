//! Manifest pulls, pushes and deletes. Manifests are stored byte-exact, as blobs named by
//! their digest, and recorded in metadata only after those bytes are durable.

use bytes::Bytes;

use crate::metadata::{ManifestRecord, ManifestRef, MetadataError, NewManifest};
use crate::oci::manifest::{self, ManifestError};
use crate::oci::{Algorithm, Digest, Reference, RepoName, Tag};
use crate::storage::{read_small, StorageError};

use super::{Registry, RegistryError, Result};

/// Parses and describes a manifest for metadata: its digest (checked against `reference`
/// when that is a digest), record and references, and its subject.
pub(crate) fn describe(
    body: &Bytes,
    content_type: Option<&str>,
    reference: &Reference,
) -> Result<(NewManifest, Option<Digest>)> {
    let parsed = manifest::parse(body, content_type).map_err(invalid)?;
    let digest = match reference {
        Reference::Digest(d) => {
            let actual = d.algorithm().digest(body);
            if &actual != d {
                return Err(RegistryError::DigestInvalid(format!(
                    "manifest content has digest {actual}, not {d}"
                )));
            }
            actual
        }
        Reference::Tag(_) => Algorithm::Sha256.digest(body),
    };
    let refs = parsed
        .blobs
        .iter()
        .map(|d| ManifestRef::Blob {
            digest: d.digest.clone(),
            size: d.size,
        })
        .chain(parsed.children.iter().map(|d| ManifestRef::Manifest {
            digest: d.digest.clone(),
            size: d.size,
        }))
        .collect();
    let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
    Ok((
        NewManifest {
            record: ManifestRecord {
                digest,
                media_type: parsed.media_type,
                size: body.len() as u64,
                artifact_type: parsed.artifact_type,
                subject: subject.clone(),
                annotations: parsed.annotations,
            },
            refs,
        },
        subject,
    ))
}

/// A manifest and its bytes, ready to serve.
pub struct StoredManifest {
    pub record: ManifestRecord,
    pub bytes: Bytes,
}

/// The outcome of a successful manifest push.
pub struct ManifestPut {
    pub digest: Digest,
    pub subject: Option<Digest>,
    /// Every tag now pointing at the manifest.
    pub tags: Vec<Tag>,
}

fn invalid(e: ManifestError) -> RegistryError {
    RegistryError::ManifestInvalid(e.to_string())
}

impl Registry {
    /// Looks a manifest up by tag or digest, without its bytes.
    pub async fn manifest_record(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<ManifestRecord> {
        let rec = match reference {
            Reference::Tag(t) => self.meta.manifest_by_tag(repo, t).await?,
            Reference::Digest(d) => self.meta.manifest_by_digest(repo, d).await?,
        };
        rec.ok_or_else(|| RegistryError::ManifestUnknown(format!("manifest {reference} unknown")))
    }

    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        let record = self.manifest_record(repo, reference).await?;
        let bytes = self.manifest_bytes(&record.digest).await?;
        Ok(StoredManifest { record, bytes })
    }

    async fn manifest_bytes(&self, digest: &Digest) -> Result<Bytes> {
        if let Some(b) = self.manifests.get(digest) {
            return Ok(b);
        }
        let limit = self.policy.manifest_max_bytes.max(4 << 20);
        match read_small(&*self.storage, digest, limit).await {
            // Small enough to verify on every read from disk: bytes altered there are never
            // served (nor cached); scrub will quarantine them.
            Ok(b) if &digest.algorithm().digest(&b) != digest => {
                tracing::error!(%digest, "stored manifest bytes do not match their digest");
                Err(RegistryError::ManifestUnknown(format!(
                    "manifest {digest} unknown"
                )))
            }
            Ok(b) => {
                self.manifests.insert(digest.clone(), b.clone());
                Ok(b)
            }
            Err(StorageError::NotFound) => {
                tracing::error!(%digest, "metadata records a manifest the store does not have");
                Err(RegistryError::ManifestUnknown(format!(
                    "manifest {digest} unknown"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Validates and stores a manifest pushed to `reference`, also pointing `extra_tags` at it.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        extra_tags: Vec<Tag>,
    ) -> Result<ManifestPut> {
        let limit = self.policy.manifest_max_bytes;
        if body.len() as u64 > limit {
            return Err(RegistryError::ManifestTooLarge { limit });
        }
        let (new, subject) = describe(&body, content_type, reference)?;
        let digest = new.record.digest.clone();
        let mut tags = extra_tags;
        if let Reference::Tag(t) = reference {
            tags.insert(0, t.clone());
        }
        tags.dedup();
        let rules = self.policy.rules.get();
        let fixed: Vec<Tag> = tags
            .iter()
            .filter(|t| rules.immutable.rule(repo.as_str(), t.as_str()).is_some())
            .cloned()
            .collect();
        // Bytes durable first, then the metadata that points at them.
        self.storage.put(&digest, body.clone()).await?;
        match self.meta.put_manifest(repo, &new, &tags, &fixed).await {
            Ok(()) => {}
            Err(MetadataError::TagFixed { tag, digest: at }) => {
                return Err(self.immutable_refusal(repo, &tag, &at, "moved to another digest"))
            }
            Err(MetadataError::MissingReferences(missing)) => {
                return Err(RegistryError::ManifestBlobUnknown(missing))
            }
            Err(MetadataError::SizeMismatch {
                digest,
                stated,
                actual,
            }) => {
                return Err(RegistryError::ManifestInvalid(format!(
                    "descriptor for {digest} states size {stated} but the content is {actual} bytes"
                )))
            }
            Err(e) => return Err(e.into()),
        }
        // A manifest blob that was unreferenced may have been deleted between the put (which
        // found it stored) and the transaction that references it again: store it anew.
        if self.storage.stat(&digest).await?.is_none() {
            self.storage.put(&digest, body.clone()).await?;
        }
        self.manifests.insert(digest.clone(), body);
        Ok(ManifestPut {
            digest,
            subject,
            tags,
        })
    }

    /// Stores a manifest fetched from an upstream, byte-exact, under `repo` (and `tag`, as
    /// revalidated now), without requiring what it references to be here: a mirror fetches
    /// only what clients pull. `reference` is what it was fetched by; a digest is verified.
    pub async fn store_cached_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        tag: Option<&Tag>,
    ) -> Result<ManifestRecord> {
        let (new, _) = describe(&body, content_type, reference)?;
        let digest = new.record.digest.clone();
        // Bytes durable first, then the metadata that points at them; then the check that a
        // concurrent deletion of the same (unreferenced) bytes did not win the race.
        self.storage.put(&digest, body.clone()).await?;
        self.meta.cache_manifest(repo, &new, tag).await?;
        if self.storage.stat(&digest).await?.is_none() {
            self.storage.put(&digest, body.clone()).await?;
        }
        self.manifests.insert(digest, body);
        Ok(new.record)
    }

    /// The `403 DENIED` for an immutable tag, naming the rule.
    fn immutable_refusal(
        &self,
        repo: &RepoName,
        tag: &str,
        at: &Digest,
        what: &str,
    ) -> RegistryError {
        let rule = self
            .policy
            .rules
            .get()
            .immutable
            .rule(repo.as_str(), tag)
            .map(|r| r.to_string())
            .unwrap_or_else(|| "an immutable_tags rule".into());
        RegistryError::Denied(format!(
            "tag {tag} of {repo} is immutable ({rule}): it points at {at} and cannot be {what}"
        ))
    }

    /// Deletes a manifest by digest (with every tag pointing at it), or untags by tag.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        self.check_delete_enabled()?;
        let rules = self.policy.rules.get();
        let rules = &rules.immutable;
        let found = match reference {
            Reference::Digest(d) => {
                let keep = |tag: &str| rules.rule(repo.as_str(), tag).is_some();
                match self.meta.delete_manifest(repo, d, &keep).await {
                    Err(MetadataError::TagFixed { tag, digest }) => {
                        return Err(self.immutable_refusal(
                            repo,
                            &tag,
                            &digest,
                            "left without its manifest",
                        ))
                    }
                    r => r?,
                }
            }
            Reference::Tag(t) => {
                if rules.rule(repo.as_str(), t.as_str()).is_some() {
                    let at = self.meta.manifest_by_tag(repo, t).await?;
                    if let Some(m) = at {
                        return Err(self.immutable_refusal(repo, t.as_str(), &m.digest, "deleted"));
                    }
                }
                self.meta.delete_tag(repo, t).await?
            }
        };
        if found {
            Ok(())
        } else {
            Err(RegistryError::ManifestUnknown(format!(
                "manifest {reference} unknown"
            )))
        }
    }
}
