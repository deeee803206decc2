//! Rules over stored content: which tags are immutable, what retention removes, each
//! namespace's quota and when garbage collection runs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::lifecycle::retention::Retention;
use crate::registry::immutable::{Glob, ImmutableTags, Rule};
use crate::registry::quota::Quotas;

use super::{Bytes, ConfigError, Span};

/// `immutable_tags:` entry: tags matching `tags` in repositories matching `repositories`
/// may be created (and pushed again with the same digest) but never moved nor deleted.
/// Globs: `*` within one path segment, `**` across segments, `?` one character.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImmutableTagRule {
    pub repositories: String,
    pub tags: String,
}

/// The rules as the registry applies them; a bad glob is named with its place.
pub fn immutable_tags(rules: &[ImmutableTagRule]) -> Result<ImmutableTags, ConfigError> {
    let glob = |i: usize, key: &str, text: &str| {
        Glob::parse(text)
            .map_err(|e| ConfigError::Invalid(format!("immutable_tags[{i}].{key}: {e}")))
    };
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        out.push(Rule {
            repositories: glob(i, "repositories", &r.repositories)?,
            tags: glob(i, "tags", &r.tags)?,
        });
    }
    Ok(ImmutableTags::new(out))
}

/// `gc:`: garbage collection of blobs nothing references.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// How often the server runs retention (when rules exist) and then GC: a duration such
    /// as `6h`, or `off`. `berth gc` works either way.
    pub schedule: Schedule,
    /// Unreferenced content younger than this is kept: measured from a blob's upload (or
    /// link), or from when it lost its last reference.
    pub grace: Span,
    /// Blobs claimed and deleted per transaction.
    pub batch: u32,
    /// Blob files deleted at once within a batch.
    pub parallel: usize,
    /// At most this many blobs deleted per second (0: no limit beyond yielding to requests
    /// between batches).
    pub max_deletes_per_sec: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            schedule: Schedule(Some(Span(Duration::from_secs(6 * 3600)))),
            grace: Span(Duration::from_secs(3600)),
            batch: 128,
            parallel: 32,
            max_deletes_per_sec: 0,
        }
    }
}

/// A period, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule(pub Option<Span>);

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(span) => span.serialize(s),
            None => s.serialize_str("off"),
        }
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Off(bool),
            Span(Span),
        }
        let raw = serde_yaml::Value::deserialize(d)?;
        if matches!(&raw, serde_yaml::Value::String(s) if s.trim() == "off") {
            return Ok(Schedule(None));
        }
        match Raw::deserialize(raw).map_err(serde::de::Error::custom)? {
            Raw::Off(false) => Ok(Schedule(None)),
            Raw::Off(true) => Err(serde::de::Error::custom(
                "gc.schedule: write a period such as 6h, or off",
            )),
            Raw::Span(s) if s.0.is_zero() => Ok(Schedule(None)),
            Raw::Span(s) => Ok(Schedule(Some(s))),
        }
    }
}

/// `retention:` entry. The first rule whose `repositories` glob matches a repository governs
/// it. Tags matching `keep_tags` (a regex) are always kept and do not count toward
/// `keep_last`; of the others the `keep_last` most recently pushed are kept; each remaining
/// tag is deleted when it meets a delete condition, or, when the rule gives none, because it
/// is beyond `keep_last`. A manifest that loses its last tag this way goes with it, unless an
/// index or a kept subject still needs it; `delete_untagged_after` removes manifests left
/// untagged otherwise. Immutable tags are never deleted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    pub repositories: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_tags: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_older_than: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_not_pulled_for: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_untagged_after: Option<Span>,
}

/// The retention rules as the lifecycle applies them; a bad glob or regex names its place.
pub fn retention(rules: &[RetentionRule]) -> Result<Vec<Retention>, ConfigError> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let repositories = Glob::parse(&r.repositories).map_err(|e| {
                ConfigError::Invalid(format!("retention[{i}].repositories: {e}"))
            })?;
            let keep_tags = r
                .keep_tags
                .as_deref()
                .map(regex::Regex::new)
                .transpose()
                .map_err(|e| ConfigError::Invalid(format!("retention[{i}].keep_tags: {e}")))?;
            if r.keep_last.is_none()
                && r.delete_older_than.is_none()
                && r.delete_not_pulled_for.is_none()
                && r.delete_untagged_after.is_none()
            {
                return Err(ConfigError::Invalid(format!(
                    "retention[{i}]: give keep_last, delete_older_than, delete_not_pulled_for or delete_untagged_after"
                )));
            }
            Ok(Retention {
                text: r.repositories.clone(),
                repositories,
                keep_last: r.keep_last,
                keep_tags,
                delete_older_than: r.delete_older_than.map(|s| s.0),
                delete_not_pulled_for: r.delete_not_pulled_for.map(|s| s.0),
                delete_untagged_after: r.delete_untagged_after.map(|s| s.0),
            })
        })
        .collect()
}

/// `quotas:` as bytes per namespace; a namespace is a repository name's first segment.
pub fn quotas(q: &BTreeMap<String, Bytes>) -> Result<Quotas, ConfigError> {
    for ns in q.keys() {
        if ns.is_empty() || ns.contains('/') {
            return Err(ConfigError::Invalid(format!(
                "quotas.{ns}: a namespace is one path segment (the first of repository names)"
            )));
        }
    }
    Ok(Quotas::new(
        q.iter().map(|(k, v)| (k.clone(), v.0)).collect(),
    ))
}
