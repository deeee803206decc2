//! The lifecycle policies in force: immutable tags, retention rules and quotas. Each kind
//! comes from the config file unless one was set in the database (through the admin API or
//! `berth policy set`), which then replaces the config's for that kind until it is reset.
//! A change made by any process applies in every process at its next poll of the
//! database's policy generation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::config::lifecycle::{self as rules, ImmutableTagRule, RetentionRule};
use crate::config::Bytes;
use crate::metadata::policies::{PolicyStore, StoredPolicy};
use crate::metadata::rfc3339;
use crate::registry::rules::{ContentRules, Live};

use super::Retention;

/// How often a process looks for policy changes made elsewhere.
pub const POLL: Duration = Duration::from_millis(250);

/// A kind of policy, named as its config key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    ImmutableTags,
    Retention,
    Quotas,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::ImmutableTags, Kind::Retention, Kind::Quotas];

    pub fn name(self) -> &'static str {
        match self {
            Kind::ImmutableTags => "immutable_tags",
            Kind::Retention => "retention",
            Kind::Quotas => "quotas",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown policy {s:?}: use immutable_tags, retention or quotas"))
    }
}

/// The policies of every kind, in the config keys' shapes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PolicyTexts {
    pub immutable_tags: Vec<ImmutableTagRule>,
    pub retention: Vec<RetentionRule>,
    pub quotas: BTreeMap<String, Bytes>,
}

impl PolicyTexts {
    /// Replaces one kind with `body` (its config key's shape, as JSON), checked as the
    /// config is: a bad glob, regex, size or rule is an error naming its place.
    pub fn set(&mut self, kind: Kind, body: &Value) -> Result<(), String> {
        let bad = |e: serde_json::Error| format!("{}: {e}", kind.name());
        match kind {
            Kind::ImmutableTags => {
                let v: Vec<ImmutableTagRule> = serde_json::from_value(body.clone()).map_err(bad)?;
                rules::immutable_tags(&v).map_err(|e| e.to_string())?;
                self.immutable_tags = v;
            }
            Kind::Retention => {
                let v: Vec<RetentionRule> = serde_json::from_value(body.clone()).map_err(bad)?;
                rules::retention(&v).map_err(|e| e.to_string())?;
                self.retention = v;
            }
            Kind::Quotas => {
                let v: BTreeMap<String, Bytes> =
                    serde_json::from_value(body.clone()).map_err(bad)?;
                rules::quotas(&v).map_err(|e| e.to_string())?;
                self.quotas = v;
            }
        }
        Ok(())
    }

    fn get(&self, kind: Kind) -> Value {
        let v = match kind {
            Kind::ImmutableTags => serde_json::to_value(&self.immutable_tags),
            Kind::Retention => serde_json::to_value(&self.retention),
            Kind::Quotas => serde_json::to_value(&self.quotas),
        };
        v.expect("policies serialize")
    }
}

/// Where a kind in force came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Source {
    /// `config` or `database`.
    pub from: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

struct InForce {
    texts: PolicyTexts,
    sources: BTreeMap<Kind, Source>,
    generation: Option<i64>,
}

/// The policies in force in this process, kept in step with the database.
#[derive(Clone)]
pub struct Policies {
    config: PolicyTexts,
    store: Arc<dyn PolicyStore>,
    content: Live<ContentRules>,
    retention: Live<Vec<Retention>>,
    now: Arc<Mutex<InForce>>,
}

impl Policies {
    /// Starts from the config's policies (already checked) and applies the database's over
    /// them. A stored policy that no longer parses is an error: running without an
    /// immutable-tag rule someone set would let tags be overwritten.
    pub async fn load(
        config: PolicyTexts,
        store: Arc<dyn PolicyStore>,
        content: Live<ContentRules>,
        retention: Live<Vec<Retention>>,
    ) -> anyhow::Result<Policies> {
        let p = Policies {
            now: Arc::new(Mutex::new(InForce {
                texts: config.clone(),
                sources: BTreeMap::new(),
                generation: None,
            })),
            config,
            store,
            content,
            retention,
        };
        p.refresh().await?;
        Ok(p)
    }

    /// Reads the database's policies and applies them (with the config's for the kinds it
    /// has none of).
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let generation = self.store.policy_generation().await?;
        let stored = self.store.stored_policies().await?;
        let mut texts = self.config.clone();
        let mut sources: BTreeMap<Kind, Source> = Kind::ALL
            .into_iter()
            .map(|k| {
                let s = Source {
                    from: "config",
                    updated_at: None,
                    updated_by: None,
                };
                (k, s)
            })
            .collect();
        for StoredPolicy {
            kind,
            body,
            updated_at,
            updated_by,
        } in stored
        {
            let Ok(k) = kind.parse::<Kind>() else {
                tracing::warn!(kind, "ignoring a stored policy of an unknown kind");
                continue;
            };
            let value: Value = serde_json::from_str(&body)
                .map_err(|e| anyhow::anyhow!("the stored {kind} policy is not JSON: {e}"))?;
            texts
                .set(k, &value)
                .map_err(|e| anyhow::anyhow!("the stored {kind} policy is invalid: {e}"))?;
            sources.insert(
                k,
                Source {
                    from: "database",
                    updated_at: Some(rfc3339(updated_at)),
                    updated_by: Some(updated_by),
                },
            );
        }
        // Checked when set; compiled again here for this process.
        self.content.set(ContentRules {
            immutable: rules::immutable_tags(&texts.immutable_tags)?,
            quotas: rules::quotas(&texts.quotas)?,
        });
        self.retention.set(rules::retention(&texts.retention)?);
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now = InForce {
            texts,
            sources,
            generation: Some(generation),
        };
        Ok(())
    }

    /// Sets a kind in the database (checked first) and applies it here at once; other
    /// processes follow within [`POLL`]. Returns the policy in force afterwards.
    pub async fn set(&self, kind: Kind, body: &Value, by: &str) -> Result<Value, PolicyError> {
        let mut check = PolicyTexts::default();
        check.set(kind, body).map_err(PolicyError::Invalid)?;
        let canonical = check.get(kind).to_string();
        self.store
            .set_policy(kind.name(), Some(&canonical), by)
            .await?;
        self.refresh().await?;
        Ok(self.view_kind(kind))
    }

    /// Removes a kind from the database: the config's applies again.
    pub async fn reset(&self, kind: Kind, by: &str) -> Result<Value, PolicyError> {
        self.store.set_policy(kind.name(), None, by).await?;
        self.refresh().await?;
        Ok(self.view_kind(kind))
    }

    /// One kind in force: `{"rules": ..., "source": {...}}`.
    pub fn view_kind(&self, kind: Kind) -> Value {
        let now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        json!({
            "policy": kind.name(),
            "value": now.texts.get(kind),
            "source": now.sources.get(&kind),
        })
    }

    /// Every kind in force, keyed by name.
    pub fn view(&self) -> Value {
        let mut out = serde_json::Map::new();
        for k in Kind::ALL {
            out.insert(k.name().into(), self.view_kind(k));
        }
        Value::Object(out)
    }

    /// The policies in force, in the config keys' shapes.
    pub fn texts(&self) -> PolicyTexts {
        self.now
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .texts
            .clone()
    }

    /// Applies changes made by other processes until `cancel`.
    pub async fn watch(self, cancel: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let seen = self
                .now
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .generation;
            match self.store.policy_generation().await {
                Ok(g) if Some(g) == seen => {}
                Ok(_) => match self.refresh().await {
                    Ok(()) => tracing::info!("lifecycle policies changed; applied"),
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "cannot apply the changed lifecycle policies; keeping the ones in force")
                    }
                },
                Err(e) => tracing::warn!(error = %e, "cannot read the policy generation"),
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] crate::metadata::MetadataError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}
