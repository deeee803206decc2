//! Retention: which tags and untagged manifests go, per repository pattern.
//!
//! Per repository, the first rule whose glob matches decides. Tags matching `keep_tags`, and
//! immutable tags, always stay and do not count toward `keep_last`. Of the others, the
//! `keep_last` most recently pushed stay; each remaining tag goes when it meets a delete
//! condition (`delete_older_than` by push time, `delete_not_pulled_for` by last pull, or push
//! when never pulled), or, when the rule gives none, because it is beyond `keep_last`.
//!
//! A manifest goes when no tag is left on it and either retention just removed its last tag,
//! or it has been untagged longer than `delete_untagged_after`. Never one that something kept
//! needs: the children of a kept index, the referrers of a kept subject, transitively. Tags
//! and manifests are deleted only if they are still as retention saw them (a tag re-pushed
//! meanwhile stays; a manifest tagged or referenced meanwhile stays).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::metadata::lifecycle::{ManifestInfo, TagInfo};
use crate::metadata::{now, rfc3339};
use crate::oci::{Digest, RepoName};
use crate::registry::immutable::Glob;

use super::Lifecycle;

/// One retention rule, compiled.
#[derive(Clone, Debug)]
pub struct Retention {
    /// The repositories glob as written.
    pub text: String,
    pub repositories: Glob,
    pub keep_last: Option<usize>,
    pub keep_tags: Option<regex::Regex>,
    pub delete_older_than: Option<Duration>,
    pub delete_not_pulled_for: Option<Duration>,
    pub delete_untagged_after: Option<Duration>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RetentionReport {
    pub dry_run: bool,
    pub started_at: String,
    pub tags: Vec<TagDeletion>,
    pub manifests: Vec<ManifestDeletion>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TagDeletion {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ManifestDeletion {
    pub repository: String,
    pub digest: String,
    pub reason: String,
}

/// A duration as retention's reasons give it: whole days, else hours, minutes or seconds.
fn days(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 86400 => format!("{}d", s / 86400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl Retention {
    /// The tags of one repository to delete, with why.
    fn tags_to_delete(
        &self,
        tags: &[TagInfo],
        now: i64,
        immutable: &dyn Fn(&str) -> bool,
    ) -> Vec<(TagInfo, String)> {
        let mut others: Vec<&TagInfo> = tags
            .iter()
            .filter(|t| !immutable(&t.name))
            .filter(|t| !self.keep_tags.as_ref().is_some_and(|r| r.is_match(&t.name)))
            .collect();
        others.sort_by(|a, b| b.pushed_at.cmp(&a.pushed_at).then(a.name.cmp(&b.name)));
        let keep = self.keep_last.unwrap_or(0);
        let conditions = self.delete_older_than.is_some() || self.delete_not_pulled_for.is_some();
        let mut out = Vec::new();
        for t in others.into_iter().skip(keep) {
            let reason = if conditions {
                let pushed = now - t.pushed_at;
                let pulled = now - t.pulled_at.unwrap_or(t.pushed_at);
                match (self.delete_older_than, self.delete_not_pulled_for) {
                    (Some(d), _) if pushed >= d.as_secs() as i64 => format!(
                        "pushed {} ago, beyond delete_older_than {}",
                        days(Duration::from_secs(pushed as u64)),
                        days(d)
                    ),
                    (_, Some(d)) if pulled >= d.as_secs() as i64 => match t.pulled_at {
                        Some(_) => format!(
                            "not pulled for {}, beyond delete_not_pulled_for {}",
                            days(Duration::from_secs(pulled as u64)),
                            days(d)
                        ),
                        None => format!(
                            "never pulled, pushed {} ago, beyond delete_not_pulled_for {}",
                            days(Duration::from_secs(pulled as u64)),
                            days(d)
                        ),
                    },
                    _ => continue,
                }
            } else if self.keep_last.is_some() {
                format!("beyond keep_last {keep}")
            } else {
                continue;
            };
            out.push((t.clone(), reason));
        }
        out
    }

    /// The manifests of one repository to delete, parents before children, with why.
    fn manifests_to_delete(
        &self,
        manifests: &[ManifestInfo],
        tags_left: &HashMap<Digest, usize>,
        lost_tag: &HashSet<Digest>,
        now: i64,
    ) -> Vec<(Digest, String)> {
        let mut eligible: HashMap<&Digest, String> = HashMap::new();
        for m in manifests {
            if tags_left.get(&m.digest).copied().unwrap_or(0) > 0 {
                continue;
            }
            if lost_tag.contains(&m.digest) {
                eligible.insert(&m.digest, "its last tag was deleted by retention".into());
                continue;
            }
            if m.tagged {
                continue;
            }
            if let Some(d) = self.delete_untagged_after {
                let age = now - m.untagged_at.unwrap_or(m.created_at);
                if age >= d.as_secs() as i64 {
                    eligible.insert(
                        &m.digest,
                        format!(
                            "untagged for {}, beyond delete_untagged_after {}",
                            days(Duration::from_secs(age as u64)),
                            days(d)
                        ),
                    );
                }
            }
        }
        // What stays, and everything it needs: children of kept indexes, referrers of kept
        // subjects, to a fixpoint.
        let mut kept: HashSet<&Digest> = manifests
            .iter()
            .map(|m| &m.digest)
            .filter(|d| !eligible.contains_key(d))
            .collect();
        loop {
            let mut grew = false;
            for m in manifests {
                let needed = if kept.contains(&m.digest) {
                    m.children.iter().filter(|c| !kept.contains(c)).collect()
                } else if m.subject.as_ref().is_some_and(|s| kept.contains(s)) {
                    vec![&m.digest]
                } else {
                    Vec::new()
                };
                for d in needed {
                    grew |= kept.insert(d);
                }
            }
            if !grew {
                break;
            }
        }
        let mut doomed: Vec<&ManifestInfo> = manifests
            .iter()
            .filter(|m| !kept.contains(&m.digest) && eligible.contains_key(&m.digest))
            .collect();
        // Parents first: a manifest goes once no doomed manifest left references it.
        let mut ordered = Vec::new();
        while !doomed.is_empty() {
            let referenced: HashSet<&Digest> =
                doomed.iter().flat_map(|m| m.children.iter()).collect();
            let (now_free, rest): (Vec<&ManifestInfo>, Vec<&ManifestInfo>) = doomed
                .into_iter()
                .partition(|m| !referenced.contains(&m.digest));
            if now_free.is_empty() {
                break; // a cycle cannot happen with content addressing; stop rather than spin
            }
            ordered.extend(
                now_free
                    .into_iter()
                    .map(|m| (m.digest.clone(), eligible[&m.digest].clone())),
            );
            doomed = rest;
        }
        ordered
    }
}

impl Lifecycle {
    /// Applies the retention rules (or, dry, says what they would delete).
    pub async fn retention(&self, dry_run: bool) -> anyhow::Result<RetentionReport> {
        let lease = if dry_run {
            None
        } else {
            self.lease("retention", true).await?
        };
        let r = self.retention_pass(dry_run).await;
        if let Some(l) = lease {
            l.release().await;
        }
        r
    }

    async fn retention_pass(&self, dry_run: bool) -> anyhow::Result<RetentionReport> {
        let started = Instant::now();
        let mut report = RetentionReport {
            dry_run,
            started_at: rfc3339(now()),
            ..RetentionReport::default()
        };
        // The rules as they are now; a change made meanwhile applies from the next run.
        let rules = self.settings.retention.get();
        if rules.is_empty() {
            return Ok(report);
        }
        let t = now();
        let content = self.registry.policy().rules.get();
        let immutable = &content.immutable;
        for name in self.db.content_repositories().await? {
            let Some(rule) = rules.iter().find(|r| r.repositories.matches(&name)) else {
                continue;
            };
            let Ok(repo) = name.parse::<RepoName>() else {
                continue;
            };
            let tags = self.db.tag_infos(&repo).await?;
            let is_fixed = |tag: &str| immutable.rule(&name, tag).is_some();
            let mut doomed_tags = rule.tags_to_delete(&tags, t, &is_fixed);
            doomed_tags.sort_by(|a, b| a.0.name.cmp(&b.0.name));
            let mut tags_left: HashMap<Digest, usize> = HashMap::new();
            for tag in &tags {
                *tags_left.entry(tag.digest.clone()).or_default() += 1;
            }
            let mut lost_tag = HashSet::new();
            for (tag, reason) in doomed_tags {
                if !dry_run && !self.db.delete_tag_if(&repo, &tag).await? {
                    continue; // moved or deleted meanwhile: not ours to delete
                }
                let left = tags_left.entry(tag.digest.clone()).or_default();
                *left -= 1;
                if *left == 0 {
                    lost_tag.insert(tag.digest.clone());
                }
                report.tags.push(TagDeletion {
                    repository: name.clone(),
                    tag: tag.name.clone(),
                    digest: tag.digest.to_string(),
                    reason,
                });
            }
            let manifests = self.db.manifest_infos(&repo).await?;
            for (digest, reason) in rule.manifests_to_delete(&manifests, &tags_left, &lost_tag, t) {
                if !dry_run && !self.db.delete_untagged_manifest(&repo, &digest).await? {
                    continue;
                }
                report.manifests.push(ManifestDeletion {
                    repository: name.clone(),
                    digest: digest.to_string(),
                    reason,
                });
            }
            let changed = !report.tags.is_empty() || !report.manifests.is_empty();
            if !dry_run && changed {
                (self.invalidate)();
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        if !dry_run {
            use crate::ops::events::{Action, Event};
            for d in &report.tags {
                tracing::info!(repository = %d.repository, tag = %d.tag, digest = %d.digest, reason = %d.reason, "retention deleted a tag");
                self.events.emit(
                    Event::new(Action::Delete, "tag", "retention")
                        .repo(&d.repository)
                        .reference(Some(d.tag.clone()))
                        .digest(Some(d.digest.clone()))
                        .detail(&d.reason),
                );
            }
            for d in &report.manifests {
                tracing::info!(repository = %d.repository, digest = %d.digest, reason = %d.reason, "retention deleted a manifest");
                self.events.emit(
                    Event::new(Action::Delete, "manifest", "retention")
                        .repo(&d.repository)
                        .digest(Some(d.digest.clone()))
                        .detail(&d.reason),
                );
            }
        }
        Ok(report)
    }
}
