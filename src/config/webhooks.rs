//! `webhooks:`: the endpoints berth notifies of pushes, pulls, deletes, quota refusals and
//! GC runs, each with its event filter, signing secret and retry schedule.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::units::Span;
use super::ConfigError;

/// The event names a filter may hold. `login`, `token.*` and `policy` are audit-only and
/// never sent; `scan` is reserved for image scanning.
pub const EVENT_NAMES: [&str; 5] = ["push", "pull", "delete", "quota", "gc"];

/// One `webhooks:` entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique; lowercase letters, digits, `-` and `_`. Deliveries are kept under this name.
    pub name: String,
    /// Where events are `POST`ed (http or https).
    pub url: String,
    /// Which events are sent: any of `push`, `pull`, `delete`, `quota`, `gc`.
    pub events: Vec<String>,
    /// The HMAC-SHA256 key of the `X-Berth-Signature` header (without one, no signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// A file holding the key (its first line), instead of `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Time allowed for one delivery: connecting, sending and the answer.
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    /// Extra headers sent with every delivery (e.g. `Authorization`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Repository globs (`prod/**`); an event about another repository is not sent. Empty:
    /// every repository. Events about no repository (GC runs) are always sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    /// The first retry's delay; each further one doubles it, up to `retry_max`.
    #[serde(default = "default_retry_initial")]
    pub retry_initial: Span,
    #[serde(default = "default_retry_max")]
    pub retry_max: Span,
    /// A delivery still failing this long after it was queued is marked failed.
    #[serde(default = "default_give_up_after")]
    pub give_up_after: Span,
}

/// A signing key written in the config. Shown as `(secret)` by `berth config check` and in
/// debug output, so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(secret)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("(secret)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

fn default_timeout() -> Span {
    Span(Duration::from_secs(5))
}

fn default_retry_initial() -> Span {
    Span(Duration::from_secs(1))
}

fn default_retry_max() -> Span {
    Span(Duration::from_secs(300))
}

fn default_give_up_after() -> Span {
    Span(Duration::from_secs(24 * 3600))
}

impl WebhookConfig {
    /// An endpoint with the default timeout and retry schedule, for tests and examples.
    pub fn new(name: &str, url: &str, events: &[&str]) -> WebhookConfig {
        WebhookConfig {
            name: name.into(),
            url: url.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            secret: None,
            secret_file: None,
            timeout: default_timeout(),
            headers: BTreeMap::new(),
            repositories: Vec::new(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            give_up_after: default_give_up_after(),
        }
    }

    /// The signing key, read from `secret_file` now when given there.
    pub fn key(&self) -> Result<Option<Vec<u8>>, String> {
        if let Some(f) = &self.secret_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read secret_file {}: {e}", f.display()))?;
            let key = text.lines().next().unwrap_or("").to_string();
            if key.is_empty() {
                return Err(format!("secret_file {} is empty", f.display()));
            }
            return Ok(Some(key.into_bytes()));
        }
        Ok(self.secret.as_ref().map(|s| s.0.clone().into_bytes()))
    }
}

/// Checks every endpoint; a mistake is named with the endpoint's place and name.
pub(super) fn validate(hooks: &[WebhookConfig]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for (i, h) in hooks.iter().enumerate() {
        let bad = |m: String| {
            Err(ConfigError::Invalid(format!(
                "webhooks[{i}] ({}): {m}",
                h.name
            )))
        };
        let name_ok = !h.name.is_empty()
            && h.name.len() <= 64
            && h.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !name_ok {
            return bad("name must be 1 to 64 of a-z, 0-9, - and _".into());
        }
        if !names.insert(h.name.as_str()) {
            return bad("the name is used twice".into());
        }
        match url::Url::parse(&h.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return bad(format!("url {:?} must be an absolute http(s) URL", h.url)),
        }
        if h.events.is_empty() {
            return bad(format!(
                "events must name at least one of {}",
                EVENT_NAMES.join(", ")
            ));
        }
        for e in &h.events {
            if !EVENT_NAMES.contains(&e.as_str()) {
                let why = match e.as_str() {
                    "login" | "token.create" | "token.revoke" | "policy" => {
                        "is recorded in the audit log only, never sent"
                    }
                    "scan" => "is not available yet",
                    _ => "is not an event",
                };
                return bad(format!(
                    "event {e:?} {why}; events are {}",
                    EVENT_NAMES.join(", ")
                ));
            }
        }
        if h.secret.is_some() && h.secret_file.is_some() {
            return bad("give secret or secret_file, not both".into());
        }
        if h.secret.as_ref().is_some_and(|s| s.0.is_empty()) {
            return bad("secret is empty".into());
        }
        for (k, v) in &h.headers {
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(v).is_err()
            {
                return bad(format!("header {k:?} is not a valid HTTP header"));
            }
        }
        for g in &h.repositories {
            crate::registry::immutable::Glob::parse(g)
                .map_err(|e| ConfigError::Invalid(format!("webhooks[{i}].repositories: {e}")))?;
        }
        if h.timeout.0.is_zero() || h.retry_initial.0.is_zero() {
            return bad("timeout and retry_initial must be positive".into());
        }
        if h.retry_max < h.retry_initial {
            return bad("retry_max must be at least retry_initial".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Vec<WebhookConfig>, String> {
        let h: Vec<WebhookConfig> = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        validate(&h).map_err(|e| e.to_string())?;
        Ok(h)
    }

    #[test]
    fn the_documented_shape_parses_with_defaults() {
        let h = parse(
            "- name: ci\n  url: https://ci.example/hook\n  events: [push, delete]\n  secret: s3\n  \
             headers: {Authorization: Bearer x}\n  repositories: ['prod/**']\n",
        )
        .unwrap();
        assert_eq!(h[0].timeout.0, Duration::from_secs(5));
        assert_eq!(h[0].retry_initial.0, Duration::from_secs(1));
        assert_eq!(h[0].retry_max.0, Duration::from_secs(300));
        assert_eq!(h[0].give_up_after.0, Duration::from_secs(86400));
        assert_eq!(h[0].key().unwrap().unwrap(), b"s3");
        // The secret is never printed.
        let shown = serde_yaml::to_string(&h).unwrap() + &format!("{h:?}");
        assert!(
            !shown.contains("s3\n") && !shown.contains("\"s3\""),
            "{shown}"
        );
    }

    #[test]
    fn secret_file_is_read_at_use() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        std::fs::write(&f, "k3y\nignored\n").unwrap();
        let mut h = WebhookConfig::new("a", "http://x", &["push"]);
        h.secret_file = Some(f);
        assert_eq!(h.key().unwrap().unwrap(), b"k3y");
    }

    #[test]
    fn mistakes_are_named() {
        let base = "url: http://x\n  events: [push]";
        for (yaml, says) in [
            (format!("- name: Ci\n  {base}"), "a-z, 0-9"),
            (
                format!("- name: a\n  {base}\n- name: a\n  {base}"),
                "used twice",
            ),
            (
                "- name: a\n  url: ftp://x\n  events: [push]".into(),
                "absolute http(s)",
            ),
            (
                "- name: a\n  url: http://x\n  events: []".into(),
                "at least one",
            ),
            (
                "- name: a\n  url: http://x\n  events: [login]".into(),
                "audit log only",
            ),
            (
                "- name: a\n  url: http://x\n  events: [pushes]".into(),
                "\"pushes\" is not an event",
            ),
            (
                format!("- name: a\n  {base}\n  secret: x\n  secret_file: /k"),
                "not both",
            ),
            (
                format!("- name: a\n  {base}\n  repositories: ['a/***']"),
                "repositories",
            ),
            (
                format!("- name: a\n  {base}\n  headers: {{'bad header': x}}"),
                "valid HTTP header",
            ),
            (
                format!("- name: a\n  {base}\n  retry_initial: 1m\n  retry_max: 1s"),
                "retry_max",
            ),
            (format!("- name: a\n  {base}\n  timeout: 0s"), "positive"),
        ] {
            let e = parse(&yaml).unwrap_err();
            assert!(e.contains(says), "{yaml}: {e}");
        }
    }
}
