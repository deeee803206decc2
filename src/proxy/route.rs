//! Three ways in, one cache key. A pull through the cache names its upstream in one of three
//! ways, and all of them land on the same local repository, `<upstream>/<repository>`, with
//! Docker Hub's `library/` normalization:
//! - the path prefix: `/v2/hub/alpine/...` is `hub/library/alpine`;
//! - containerd's `?ns=docker.io` on an unprefixed path: `/v2/alpine/...?ns=docker.io`;
//! - the default upstream, for Docker's `registry-mirrors`: `/v2/alpine/...` when nothing
//!   named `alpine` (nor its namespace) exists locally.
//!
//! A prefix wins over `ns`; `ns` is only a key into the configured hosts, never a host to
//! dial; pushes never go to the default upstream.

use crate::metadata::MetadataError;
use crate::oci::RepoName;

use super::Proxy;

/// Where a request goes, after routing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    /// The local repository: hosted, or `<upstream>/<repository>` in the cache.
    pub repo: RepoName,
    /// The `ns` that chose the upstream, echoed back as `OCI-Namespace`.
    pub ns: Option<String>,
}

/// A repository name as an upstream knows it, normalized (`alpine` is `library/alpine` on
/// Docker Hub).
pub fn normalize(remote: &str, docker_hub: bool) -> String {
    if docker_hub && !remote.contains('/') {
        format!("library/{remote}")
    } else {
        remote.to_string()
    }
}

impl Proxy {
    /// The local repository a request for `repo` addresses (`pull`: it only reads). A name
    /// that becomes too long for the grammar is `NAME_INVALID` to the caller.
    pub async fn route(
        &self,
        repo: &RepoName,
        ns: Option<&str>,
        pull: bool,
    ) -> Result<Routed, RouteError> {
        let hosted = || Routed {
            repo: repo.clone(),
            ns: None,
        };
        let name = repo.as_str();
        if let Some((prefix, rest)) = name.split_once('/') {
            if let Some(up) = self.upstream_named(prefix) {
                let local = self.local_name(up.index, rest)?;
                return Ok(Routed {
                    repo: local,
                    ns: None,
                });
            }
        }
        if let Some(ns) = ns.map(|n| n.trim().to_ascii_lowercase()) {
            if let Some(up) = self.upstream_for_host(&ns) {
                let local = self.local_name(up.index, name)?;
                return Ok(Routed {
                    repo: local,
                    ns: Some(ns),
                });
            }
            // An unknown ns is served locally (or not found): never dialled.
            return Ok(hosted());
        }
        if let (true, Some(up)) = (pull, self.default_upstream()) {
            if !self.exists_locally(repo).await? {
                return Ok(Routed {
                    repo: self.local_name(up.index, name)?,
                    ns: None,
                });
            }
        }
        Ok(hosted())
    }

    pub(super) fn local_name(&self, upstream: usize, remote: &str) -> Result<RepoName, RouteError> {
        let up = &self.inner.upstreams[upstream];
        let remote = normalize(remote, up.config.is_docker_hub());
        format!("{}/{remote}", up.name)
            .parse()
            .map_err(|_| RouteError::NameTooLong)
    }

    /// True when the repository, or its namespace, exists here.
    async fn exists_locally(&self, repo: &RepoName) -> Result<bool, RouteError> {
        if self.inner.meta.repository_exists(repo).await? {
            return Ok(true);
        }
        Ok(self
            .inner
            .access
            .namespace_and_role(repo.namespace(), None)
            .await?
            .is_some())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("the repository name is too long once its upstream prefix is added")]
    NameTooLong,
    #[error(transparent)]
    Store(#[from] MetadataError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_names_normalize() {
        assert_eq!(normalize("alpine", true), "library/alpine");
        assert_eq!(normalize("bitnami/redis", true), "bitnami/redis");
        assert_eq!(normalize("alpine", false), "alpine");
    }
}
