//! Rules over stored content: which tags are immutable.

use serde::{Deserialize, Serialize};

use crate::registry::immutable::{Glob, ImmutableTags, Rule};

use super::ConfigError;

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
