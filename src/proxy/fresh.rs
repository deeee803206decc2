//! Manifests through the cache: digests are immutable (served from the cache once there,
//! verified against the digest when fetched); tags are revalidated with a `HEAD` (free on
//! Docker Hub) once `tag_ttl` has passed since their last revalidation, concurrent requests
//! sharing one. When the upstream cannot answer (down, 5xx, 401/403, 429, budget spent,
//! breaker open), what is cached is served and marked stale; with nothing cached the client
//! gets the upstream's trouble (429 with `Retry-After`, or 503). Manifests are never
//! rewritten: bytes are stored and served exactly as the upstream sent them.

use bytes::Bytes;

use crate::config::On404;
use crate::metadata::{now, ManifestRecord, Page};
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::registry::{CacheStatus, ManifestReply, Referrer, RegistryError, Result};

use super::stats::Counters;
use super::upstream::UpstreamError;
use super::{Failure, FlightResult, Proxy, Target, UpstreamSlot};

/// A record for a manifest known only from the upstream's headers (or bytes berth does not
/// parse, passed through uncached).
fn bare_record(digest: Digest, media_type: String, size: u64) -> ManifestRecord {
    ManifestRecord {
        digest,
        media_type,
        size,
        artifact_type: None,
        subject: None,
        annotations: None,
    }
}

impl Proxy {
    pub(super) async fn cached_manifest(
        &self,
        t: &Target<'_>,
        repo: &RepoName,
        reference: &Reference,
        body: bool,
    ) -> Result<ManifestReply> {
        let r = match reference {
            Reference::Digest(d) => self.manifest_by_digest(t, repo, d, body).await,
            Reference::Tag(tag) => self.manifest_by_tag(t, repo, tag, body).await,
        };
        let c = &t.slot.counters;
        match &r {
            Ok(reply) => {
                Counters::bump(
                    match reply.cache {
                        Some(CacheStatus::Miss) => &c.misses,
                        Some(CacheStatus::Stale) => &c.stale,
                        _ => &c.hits,
                    },
                    1,
                );
                if body {
                    self.inner
                        .hosted
                        .note_pull(repo, &reply.record.digest, reference.tag());
                }
            }
            Err(RegistryError::ManifestUnknown(_)) => {}
            Err(_) => Counters::bump(&c.errors, 1),
        }
        r
    }

    /// The cached manifest as stored, with its bytes when asked for.
    async fn stored(
        &self,
        repo: &RepoName,
        reference: &Reference,
        body: bool,
    ) -> Result<Option<ManifestReply>> {
        use crate::registry::Service;
        match self.inner.hosted.manifest(repo, reference, body).await {
            Ok(r) => Ok(Some(r)),
            Err(RegistryError::ManifestUnknown(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn manifest_by_digest(
        &self,
        t: &Target<'_>,
        repo: &RepoName,
        d: &Digest,
        body: bool,
    ) -> Result<ManifestReply> {
        let reference = Reference::Digest(d.clone());
        if let Some(mut r) = self.stored(repo, &reference, body).await? {
            r.cache = Some(CacheStatus::Hit);
            return Ok(r);
        }
        if !body {
            // A HEAD on a miss is answered from the upstream's HEAD: never a counted pull.
            if let Ok(head) = t.slot.head_manifest(t.remote, &d.to_string()).await {
                if let (Some(mt), Some(size)) = (head.media_type, head.size) {
                    return Ok(ManifestReply {
                        record: bare_record(d.clone(), mt, size),
                        bytes: None,
                        cache: Some(CacheStatus::Miss),
                    });
                }
            }
        }
        let key = (repo.clone(), d.to_string(), true);
        let (me, slot, remote, repo2, d2) = (
            self.clone(),
            t.slot.index,
            t.remote.to_string(),
            repo.clone(),
            d.clone(),
        );
        let (res, _) = self
            .inner
            .manifests
            .run(key, move || async move {
                let s = &me.inner.upstreams[slot];
                me.fetch(s, &remote, &repo2, Reference::Digest(d2), None)
                    .await
                    .map(|(rec, bytes)| (rec, Some(bytes), CacheStatus::Miss))
            })
            .await;
        self.reply(repo, res?, body).await
    }

    async fn manifest_by_tag(
        &self,
        t: &Target<'_>,
        repo: &RepoName,
        tag: &Tag,
        body: bool,
    ) -> Result<ManifestReply> {
        let reference = Reference::Tag(tag.clone());
        let cached = self
            .stored(repo, &reference, false)
            .await?
            .map(|r| r.record);
        if cached.is_some() {
            let checked = self.inner.meta.tag_checked_at(repo, tag).await?;
            let ttl = t.slot.config.tag_ttl.0.as_secs() as i64;
            if checked.is_some_and(|at| now() - at < ttl) {
                let mut r = self.stored(repo, &reference, body).await?.ok_or_else(|| {
                    RegistryError::ManifestUnknown(format!("manifest {tag} unknown"))
                })?;
                r.cache = Some(CacheStatus::Hit);
                return Ok(r);
            }
        }
        // One revalidation (or first fetch) per tag at a time; a HEAD on a miss is its own
        // flight, as it only asks the upstream's HEAD.
        let key = (repo.clone(), tag.to_string(), body || cached.is_some());
        let (me, slot, remote, repo2, tag2) = (
            self.clone(),
            t.slot.index,
            t.remote.to_string(),
            repo.clone(),
            tag.clone(),
        );
        let (res, _) = self
            .inner
            .manifests
            .run(key, move || async move {
                me.revalidate(slot, remote, repo2, tag2, cached, body).await
            })
            .await;
        self.reply(repo, res?, body).await
    }

    /// A flight's outcome as an answer, with the stored bytes when they were not carried.
    async fn reply(
        &self,
        repo: &RepoName,
        (record, bytes, cache): (ManifestRecord, Option<Bytes>, CacheStatus),
        body: bool,
    ) -> Result<ManifestReply> {
        let bytes = match (body, bytes) {
            (false, _) => None,
            (true, Some(b)) => Some(b),
            (true, None) => {
                let stored = self
                    .stored(repo, &Reference::Digest(record.digest.clone()), true)
                    .await?;
                Some(
                    stored
                        .and_then(|r| r.bytes)
                        .ok_or_else(|| RegistryError::ManifestUnknown("manifest unknown".into()))?,
                )
            }
        };
        Ok(ManifestReply {
            record,
            bytes,
            cache: Some(cache),
        })
    }

    async fn revalidate(
        self,
        slot: usize,
        remote: String,
        repo: RepoName,
        tag: Tag,
        cached: Option<ManifestRecord>,
        want_body: bool,
    ) -> FlightResult {
        let s = &self.inner.upstreams[slot];
        let stale = |why: &dyn std::fmt::Display, rec: ManifestRecord| {
            tracing::info!(upstream = %s.name, repository = %repo, tag = %tag, reason = %why, "serving a stale cached manifest");
            Ok((rec, None, CacheStatus::Stale))
        };
        let head = match s.head_manifest(&remote, tag.as_str()).await {
            Ok(h) => h,
            Err(UpstreamError::NotFound) => {
                return match cached {
                    Some(rec) if s.config.on_upstream_404 == On404::ServeCached => {
                        stale(&"the upstream no longer has the tag", rec)
                    }
                    _ => Err(Failure::NotFound(format!(
                        "manifest {tag} unknown upstream"
                    ))),
                }
            }
            Err(e) => {
                return match cached {
                    Some(rec) => stale(&e, rec),
                    None => Err(Failure::Upstream(e)),
                }
            }
        };
        let digest = head
            .digest
            .as_deref()
            .and_then(|d| d.parse::<Digest>().ok());
        if let (Some(d), Some(rec)) = (&digest, &cached) {
            if *d == rec.digest {
                self.inner
                    .meta
                    .mark_tag_checked(&repo, &tag, now())
                    .await
                    .map_err(|e| Failure::Internal(e.to_string()))?;
                return Ok((rec.clone(), None, CacheStatus::Hit));
            }
        }
        if let (Some(d), None, false) = (&digest, &cached, want_body) {
            if let (Some(mt), Some(size)) = (head.media_type.clone(), head.size) {
                return Ok((bare_record(d.clone(), mt, size), None, CacheStatus::Miss));
            }
        }
        // New or moved: fetched by digest when the HEAD told it (verified against it), by
        // tag otherwise.
        let by = match digest {
            Some(d) => Reference::Digest(d),
            None => Reference::Tag(tag.clone()),
        };
        match self.fetch(s, &remote, &repo, by, Some(&tag)).await {
            Ok((rec, bytes)) => Ok((rec, Some(bytes), CacheStatus::Miss)),
            Err(e) => match cached {
                Some(rec) => stale(&format!("{e:?}"), rec),
                None => Err(e),
            },
        }
    }

    /// Fetches a manifest, verifies it against a digest reference, and stores it byte-exact
    /// (with `tag` pointing at it). Bytes berth cannot parse are passed through uncached.
    async fn fetch(
        &self,
        s: &UpstreamSlot,
        remote: &str,
        repo: &RepoName,
        by: Reference,
        tag: Option<&Tag>,
    ) -> std::result::Result<(ManifestRecord, Bytes), Failure> {
        let (bytes, content_type) =
            s.get_manifest(remote, &by.to_string())
                .await
                .map_err(|e| match e {
                    UpstreamError::NotFound => {
                        Failure::NotFound(format!("manifest {by} unknown upstream"))
                    }
                    e => Failure::Upstream(e),
                })?;
        let digest = match &by {
            Reference::Digest(d) => {
                let actual = d.algorithm().digest(&bytes);
                if &actual != d {
                    Counters::bump(&s.counters.mismatches, 1);
                    tracing::warn!(upstream = %s.name, repository = %repo, expected = %d, actual = %actual, "upstream manifest does not match its digest; not cached");
                    return Err(Failure::Invalid(format!(
                        "the upstream sent a manifest whose digest is {actual}, not {d}"
                    )));
                }
                actual
            }
            Reference::Tag(_) => crate::oci::Algorithm::Sha256.digest(&bytes),
        };
        Counters::bump(&s.counters.bytes_fetched, bytes.len() as u64);
        match self
            .inner
            .hosted
            .store_cached_manifest(repo, &by, content_type.as_deref(), bytes.clone(), tag)
            .await
        {
            Ok(rec) => Ok((rec, bytes)),
            Err(RegistryError::ManifestInvalid(why)) => {
                tracing::info!(upstream = %s.name, repository = %repo, reason = %why, "passing through a manifest berth does not parse, uncached");
                let mt = content_type.unwrap_or_else(|| "application/octet-stream".into());
                let size = bytes.len() as u64;
                Ok((bare_record(digest, mt, size), bytes))
            }
            Err(e) => Err(Failure::Internal(e.to_string())),
        }
    }

    /// The upstream's tag list (pagination passed through); the cached tags when it cannot
    /// answer.
    pub(super) async fn cached_tags(
        &self,
        t: &Target<'_>,
        repo: &RepoName,
        last: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page> {
        let query = {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            if let Some(n) = limit {
                q.append_pair("n", &n.to_string());
            }
            if let Some(l) = last {
                q.append_pair("last", l);
            }
            q.finish()
        };
        let path = format!("{}/tags/list?{query}", t.remote);
        match t.slot.get_small(t.remote, &path).await {
            Ok((headers, bytes)) => {
                #[derive(serde::Deserialize)]
                struct TagList {
                    tags: Option<Vec<String>>,
                }
                let list: TagList =
                    serde_json::from_slice(&bytes).map_err(|e| RegistryError::Unavailable {
                        message: format!("the upstream's tag list is not JSON: {e}"),
                        retry_after: None,
                    })?;
                Ok(Page {
                    items: list.tags.unwrap_or_default(),
                    more: headers.contains_key(reqwest::header::LINK),
                })
            }
            Err(UpstreamError::NotFound) => Err(RegistryError::NameUnknown(repo.clone())),
            Err(_) => self.inner.hosted.list_tags(repo, last, limit).await,
        }
    }

    /// The upstream's referrers (an upstream without the API has none); the cached ones
    /// when it cannot answer.
    pub(super) async fn cached_referrers(
        &self,
        t: &Target<'_>,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let mut path = format!("{}/referrers/{subject}", t.remote);
        if let Some(a) = artifact_type {
            path.push_str("?artifactType=");
            path.push_str(&url::form_urlencoded::byte_serialize(a.as_bytes()).collect::<String>());
        }
        match t.slot.get_small(t.remote, &path).await {
            Ok((_, bytes)) => {
                #[derive(serde::Deserialize)]
                struct Index {
                    #[serde(default)]
                    manifests: Vec<Referrer>,
                }
                let index: Index =
                    serde_json::from_slice(&bytes).map_err(|e| RegistryError::Unavailable {
                        message: format!("the upstream's referrers are not an index: {e}"),
                        retry_after: None,
                    })?;
                Ok(index
                    .manifests
                    .into_iter()
                    .filter(|r| artifact_type.is_none_or(|a| r.artifact_type.as_deref() == Some(a)))
                    .collect())
            }
            Err(UpstreamError::NotFound) => Ok(Vec::new()),
            Err(_) => {
                self.inner
                    .hosted
                    .referrers(repo, subject, artifact_type)
                    .await
            }
        }
    }
}
