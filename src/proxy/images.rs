//! Images named as people name them, for the cache's commands and admin API: `alpine:3.20`
//! (the default upstream), `docker.io/library/alpine:3.20` or `ghcr.io/org/img@sha256:...`
//! (an upstream by host), or `hub/library/alpine` (by prefix); and the work done on them:
//! warming (fetching an image through the cache), revalidating, purging.

use futures::StreamExt;
use serde::Serialize;

use crate::metadata::proxy::{CachedImage, RateBudget, UpstreamCounters};
use crate::metadata::rfc3339;
use crate::oci::manifest::parse;
use crate::oci::{Reference, RepoName};
use crate::registry::{Result, Service};

use super::Proxy;

/// What warming one image fetched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Warmed {
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
}

/// The cache's statistics, for `berth cache stats` and the admin API.
#[derive(Clone, Debug, Serialize)]
pub struct CacheStats {
    pub bytes: u64,
    /// `0`: unbounded.
    pub max_bytes: u64,
    pub images: usize,
    pub fills_in_flight: usize,
    pub upstreams: Vec<UpstreamStats>,
}

#[derive(Clone, Debug, Serialize)]
pub struct UpstreamStats {
    pub name: String,
    pub url: String,
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
    pub errors: u64,
    pub digest_mismatches: u64,
    pub coalesced: u64,
    pub bytes_fetched: u64,
    pub bytes_served: u64,
    pub rate_limit: Option<Budget>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Budget {
    pub limit: u64,
    pub remaining: u64,
    pub window_secs: Option<u64>,
    pub seen_at: String,
}

impl From<RateBudget> for Budget {
    fn from(b: RateBudget) -> Self {
        Budget {
            limit: b.limit,
            remaining: b.remaining,
            window_secs: b.window,
            seen_at: rfc3339(b.seen_at),
        }
    }
}

impl Proxy {
    /// Counters (as of the last flush), budgets, size and bound.
    pub async fn stats(&self) -> anyhow::Result<CacheStats> {
        let meta = &self.inner.meta;
        let prefixes = self.prefixes();
        let states = meta.upstream_states().await?;
        let upstreams = self
            .upstreams()
            .iter()
            .map(|u| {
                let s = states.iter().find(|s| s.name == u.name);
                let c: UpstreamCounters = s.map(|s| s.counters.clone()).unwrap_or_default();
                UpstreamStats {
                    name: u.name.clone(),
                    url: u.root().to_string(),
                    hits: c.hits,
                    misses: c.misses,
                    stale: c.stale,
                    errors: c.errors,
                    digest_mismatches: c.mismatches,
                    coalesced: c.coalesced,
                    bytes_fetched: c.bytes_fetched,
                    bytes_served: c.bytes_served,
                    rate_limit: u.budget().or(s.and_then(|s| s.budget)).map(Budget::from),
                }
            })
            .collect();
        Ok(CacheStats {
            bytes: meta.cache_usage(&prefixes).await?,
            max_bytes: self.inner.max_bytes,
            images: meta.cached_images(&prefixes).await?.len(),
            fills_in_flight: self.fills_in_flight(),
            upstreams,
        })
    }

    /// What a purge of `image` (an image, or a repository when it names no tag or digest;
    /// `None`: everything not pinned) would remove.
    pub async fn purge_plan(
        &self,
        image: Option<&str>,
    ) -> std::result::Result<Vec<CachedImage>, String> {
        let all = self
            .inner
            .meta
            .cached_images(&self.prefixes())
            .await
            .map_err(|e| e.to_string())?;
        let Some(name) = image else {
            return Ok(all.into_iter().filter(|i| !i.pinned).collect());
        };
        let (repo, reference) = self.image(name)?;
        let explicit =
            name.contains('@') || name.rsplit_once(':').is_some_and(|(_, t)| !t.contains('/'));
        let digest = match (&reference, explicit) {
            (_, false) => None,
            (Reference::Digest(d), true) => Some(d.clone()),
            (Reference::Tag(t), true) => Some(
                self.inner
                    .meta
                    .manifest_by_tag(&repo, t)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("{name} is not cached"))?
                    .digest,
            ),
        };
        let chosen: Vec<CachedImage> = all
            .into_iter()
            .filter(|i| i.repo == repo.as_str() && digest.as_ref().is_none_or(|d| &i.digest == d))
            .collect();
        if chosen.is_empty() {
            return Err(format!("{name} is not cached"));
        }
        Ok(chosen)
    }

    /// The cache key and reference of an image name.
    pub fn image(&self, name: &str) -> std::result::Result<(RepoName, Reference), String> {
        let name = name.trim();
        let (path, reference) = match name.split_once('@') {
            Some((p, d)) => (p, Some(d.to_string())),
            None => match name.rsplit_once(':') {
                Some((p, t)) if !t.contains('/') => (p, Some(t.to_string())),
                _ => (name, None),
            },
        };
        let reference: Reference = reference
            .as_deref()
            .unwrap_or("latest")
            .parse()
            .map_err(|e| format!("{name}: {e}"))?;
        let (first, rest) = path.split_once('/').unwrap_or((path, ""));
        let (upstream, remote) = if first.contains('.')
            || first.contains(':')
            || first == "localhost"
        {
            let up = self
                .upstream_for_host(&first.to_ascii_lowercase())
                .ok_or_else(|| format!("{name}: no upstream is configured for host {first}"))?;
            (up, rest)
        } else if let (Some(up), false) = (self.upstream_named(first), rest.is_empty()) {
            (up, rest)
        } else {
            let up = self.default_upstream().ok_or_else(|| {
                format!("{name}: name a host or an upstream prefix (no default upstream is set)")
            })?;
            (up, path)
        };
        let repo = self
            .local_name(upstream.index, remote)
            .map_err(|e| format!("{name}: {e}"))?;
        Ok((repo, reference))
    }

    /// Fetches an image through the cache, as a pull would: its manifest, the children of
    /// an index (those of `platform`, `os/arch`, when given), and every blob they reference.
    /// Idempotent: what is cached is a hit. `progress` hears of every byte fetched.
    pub async fn warm(
        &self,
        repo: &RepoName,
        reference: &Reference,
        platform: Option<&str>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Warmed> {
        let mut done = Warmed::default();
        let mut todo = vec![reference.clone()];
        while let Some(r) = todo.pop() {
            let reply = self.manifest(repo, &r, true).await?;
            done.manifests += 1;
            let bytes = reply.bytes.unwrap_or_default();
            let Ok(m) = parse(&bytes, Some(&reply.record.media_type)) else {
                continue;
            };
            for child in m.children {
                let wanted = match (platform, &child.platform) {
                    (None, _) => true,
                    (Some(p), Some(c)) => c == p || c.starts_with(&format!("{p}/")),
                    (Some(_), None) => false,
                };
                if wanted {
                    todo.push(Reference::Digest(child.digest));
                }
            }
            for blob in m.blobs {
                let reply = self.blob(repo, &blob.digest, None, true).await?;
                if let Some(mut body) = reply.body {
                    while let Some(chunk) = body.next().await {
                        let n = chunk
                            .map_err(crate::registry::RegistryError::BodyFailed)?
                            .len() as u64;
                        done.bytes += n;
                        progress(n);
                    }
                }
                done.blobs += 1;
            }
        }
        Ok(done)
    }

    /// Revalidates a cached tag with its upstream now, whatever its TTL says; returns the
    /// digest before and after.
    pub async fn refresh(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(Option<crate::oci::Digest>, crate::oci::Digest)> {
        let before = match reference {
            Reference::Tag(t) => {
                let old = self
                    .inner
                    .meta
                    .manifest_by_tag(repo, t)
                    .await?
                    .map(|m| m.digest);
                if old.is_some() {
                    self.inner.meta.mark_tag_checked(repo, t, 0).await?;
                }
                old
            }
            Reference::Digest(d) => Some(d.clone()),
        };
        let reply = self.manifest(repo, reference, true).await?;
        Ok((before, reply.record.digest))
    }
}
