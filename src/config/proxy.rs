//! The `proxy:` section: the upstream registries berth mirrors, and the cache's bounds.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::{Bytes, Span};
use super::ConfigError;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    pub upstreams: Vec<UpstreamConfig>,
    /// Pulls of repositories that exist neither locally nor under an upstream prefix go here
    /// (what Docker's `registry-mirrors` sends). Pushes never do.
    pub default_upstream: Option<String>,
    /// The cache's size bound; `0` is unbounded.
    pub max_bytes: Bytes,
    /// Eviction, once started at `max_bytes`, goes on down to this share of it.
    pub low_watermark: f64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            upstreams: Vec::new(),
            default_upstream: None,
            max_bytes: Bytes(0),
            low_watermark: 0.9,
        }
    }
}

/// Who may pull through an upstream whose namespace has no access settings of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullAccess {
    /// Anyone, even without credentials.
    Anyone,
    /// Any user or access token that logged in.
    Authenticated,
    /// Only members of the upstream's namespace (and server admins).
    Members,
}

/// What an upstream 404 for a tag that is cached means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum On404 {
    /// Keep serving the cached manifest (marked stale): an upstream deleting a tag is rarer
    /// than an upstream misbehaving.
    #[default]
    ServeCached,
    /// Pass the 404 on.
    NotFound,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Also the path prefix (`/v2/<name>/library/alpine/...`) and the namespace whose access
    /// settings apply to what is pulled through it.
    pub name: String,
    /// `https://registry-1.docker.io`; a path, if any, is the API root (as containerd's
    /// `override_path`): `http://eu-mirror:5000/v2/hub` mirrors another berth's `hub`.
    pub url: String,
    /// Hosts matched against containerd's `?ns=` (never dialled: only a key into this list).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Docker Hub's `library/` normalization (`alpine` is `library/alpine`); by default on
    /// when `hosts` has `docker.io`.
    #[serde(default)]
    pub docker_hub: Option<bool>,
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A cached tag is revalidated (with a `HEAD`) this long after its last revalidation.
    #[serde(default = "default_tag_ttl")]
    pub tag_ttl: Span,
    /// An extra CA certificate (PEM) for a private upstream.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default = "yes")]
    pub tls_verify: bool,
    /// Token realms allowed besides the upstream's own host and registrable domain.
    #[serde(default)]
    pub token_realms: Vec<String>,
    /// Who may pull through when the namespace has no access settings; default `anyone`
    /// without upstream credentials, `authenticated` with them.
    #[serde(default)]
    pub pull: Option<PullAccess>,
    #[serde(default)]
    pub on_upstream_404: On404,
    /// Time allowed to connect and get an answer's headers.
    #[serde(default = "default_timeout")]
    pub timeout: Span,
}

fn default_tag_ttl() -> Span {
    Span(Duration::from_secs(3600))
}

fn default_timeout() -> Span {
    Span(Duration::from_secs(30))
}

fn yes() -> bool {
    true
}

impl From<PullAccess> for crate::auth::OpenPull {
    fn from(p: PullAccess) -> Self {
        match p {
            PullAccess::Anyone => crate::auth::OpenPull::Anyone,
            PullAccess::Authenticated => crate::auth::OpenPull::Authenticated,
            PullAccess::Members => crate::auth::OpenPull::Members,
        }
    }
}

impl UpstreamConfig {
    /// A minimal upstream, for tests and examples.
    pub fn new(name: &str, url: &str) -> Self {
        UpstreamConfig {
            name: name.into(),
            url: url.into(),
            hosts: Vec::new(),
            docker_hub: None,
            username: None,
            password_file: None,
            password_env: None,
            tag_ttl: default_tag_ttl(),
            ca: None,
            tls_verify: true,
            token_realms: Vec::new(),
            pull: None,
            on_upstream_404: On404::default(),
            timeout: default_timeout(),
        }
    }

    pub fn is_docker_hub(&self) -> bool {
        self.docker_hub
            .unwrap_or_else(|| self.hosts.iter().any(|h| h == "docker.io"))
    }

    pub fn pull_access(&self) -> PullAccess {
        self.pull.unwrap_or(if self.username.is_some() {
            PullAccess::Authenticated
        } else {
            PullAccess::Anyone
        })
    }

    /// The password, read from its file or variable now (never stored in the config).
    pub fn password(&self) -> Result<Option<String>, String> {
        if let Some(f) = &self.password_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read password_file {}: {e}", f.display()))?;
            return Ok(Some(text.lines().next().unwrap_or("").to_string()));
        }
        if let Some(v) = &self.password_env {
            return std::env::var(v)
                .map(Some)
                .map_err(|_| format!("password_env {v} is not set"));
        }
        Ok(None)
    }
}

impl ProxyConfig {
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let mut names = HashSet::new();
        let mut hosts = HashSet::new();
        for u in &self.upstreams {
            if crate::auth::valid_namespace(&u.name).is_err() {
                return bad(format!(
                    "proxy upstream name {:?} must be one lowercase path component (it is the path prefix)",
                    u.name
                ));
            }
            if !names.insert(u.name.as_str()) {
                return bad(format!("proxy upstream {:?} is defined twice", u.name));
            }
            match url::Url::parse(&u.url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
                _ => {
                    return bad(format!(
                        "proxy upstream {:?}: url {:?} must be an absolute http(s) URL",
                        u.name, u.url
                    ))
                }
            }
            for h in &u.hosts {
                if h.is_empty() || h.contains('/') || h.to_ascii_lowercase() != *h {
                    return bad(format!(
                        "proxy upstream {:?}: host {h:?} must be a lowercase host name (with an optional :port)",
                        u.name
                    ));
                }
                if !hosts.insert(h.as_str()) {
                    return bad(format!("proxy host {h:?} is listed by two upstreams"));
                }
            }
            if u.password_file.is_some() && u.password_env.is_some() {
                return bad(format!(
                    "proxy upstream {:?}: give password_file or password_env, not both",
                    u.name
                ));
            }
            if u.username.is_some() != (u.password_file.is_some() || u.password_env.is_some()) {
                return bad(format!(
                    "proxy upstream {:?}: username needs password_file or password_env (and they need a username)",
                    u.name
                ));
            }
            if u.tag_ttl.0.is_zero() || u.timeout.0.is_zero() {
                return bad(format!(
                    "proxy upstream {:?}: tag_ttl and timeout must be positive",
                    u.name
                ));
            }
        }
        if let Some(d) = &self.default_upstream {
            if !names.contains(d.as_str()) {
                return bad(format!(
                    "proxy.default_upstream {d:?} is not one of proxy.upstreams"
                ));
            }
        }
        if !(self.low_watermark > 0.0 && self.low_watermark <= 1.0) {
            return bad("proxy.low_watermark must be in (0, 1]".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<ProxyConfig, String> {
        let p: ProxyConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }

    #[test]
    fn the_documented_shape_parses() {
        let p = parse(
            "upstreams:\n\
             - name: hub\n  url: https://registry-1.docker.io\n  hosts: [docker.io, registry-1.docker.io]\n  tag_ttl: 1h\n\
             - name: ghcr\n  url: https://ghcr.io\n  hosts: [ghcr.io]\n\
             default_upstream: hub\nmax_bytes: 200GiB\n",
        )
        .unwrap();
        assert!(p.upstreams[0].is_docker_hub());
        assert!(!p.upstreams[1].is_docker_hub());
        assert_eq!(p.max_bytes.0, 200 << 30);
        assert_eq!(p.upstreams[0].pull_access(), PullAccess::Anyone);
    }

    #[test]
    fn mistakes_are_named() {
        for (yaml, says) in [
            ("upstreams:\n- name: Hub\n  url: https://x\n", "one lowercase path component"),
            ("upstreams:\n- name: a\n  url: https://x\n- name: a\n  url: https://y\n", "twice"),
            ("upstreams:\n- name: a\n  url: ftp://x\n", "absolute http(s)"),
            ("default_upstream: nope\n", "not one of"),
            ("upstreams:\n- name: a\n  url: https://x\n  username: u\n", "needs password_file"),
            (
                "upstreams:\n- name: a\n  url: https://x\n  hosts: [x.io]\n- name: b\n  url: https://y\n  hosts: [x.io]\n",
                "two upstreams",
            ),
        ] {
            let e = parse(yaml).unwrap_err();
            assert!(e.contains(says), "{yaml}: {e}");
        }
    }
}
