//! `berth policy`: the lifecycle policies in force (immutable tags, retention, quotas), and
//! setting one in the database, where it replaces the config's until reset. It works whether
//! or not the server runs: a running server applies a change within a quarter second.

use std::io::Read;
use std::path::PathBuf;

use clap::Subcommand;

use crate::lifecycle::policies::Kind;
use crate::server::Services;

use super::CommonArgs;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the policies in force and where each comes from (config or database).
    Show {
        /// One kind: immutable_tags, retention or quotas.
        kind: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Replace a kind with FILE's content (YAML or JSON, the config key's shape; `-` reads
    /// standard input). Nothing is deleted until retention runs; `berth retention run
    /// --dry-run` shows what it would remove.
    Set {
        /// immutable_tags, retention or quotas.
        kind: String,
        file: PathBuf,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Forget the database's policy of a kind: the config's applies again.
    Reset {
        kind: String,
        #[command(flatten)]
        common: CommonArgs,
    },
}

use crate::ops::events::{Action, Event};

use super::audit::actor;

pub async fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Show { kind, json, common } => {
            let kind = kind
                .map(|k| k.parse::<Kind>())
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let services = Services::open(&common.load()?).await?;
            let view = match kind {
                Some(k) => services.policies.view_kind(k),
                None => services.policies.view(),
            };
            services.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
                return Ok(());
            }
            let views = match kind {
                Some(_) => vec![view],
                None => view
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.values().cloned())
                    .collect(),
            };
            for v in views {
                let src = &v["source"];
                let from = match src["from"].as_str() {
                    Some("database") => format!(
                        "set by {} at {}",
                        src["updated_by"].as_str().unwrap_or("?"),
                        src["updated_at"].as_str().unwrap_or("?")
                    ),
                    _ => "from the config".into(),
                };
                let mut body = serde_yaml::to_string(&serde_json::json!({
                    (v["policy"].as_str().unwrap_or("?")): v["value"],
                }))?;
                if body.ends_with('\n') {
                    body.pop();
                }
                println!("# {from}\n{body}");
            }
            Ok(())
        }
        PolicyCommand::Set { kind, file, common } => {
            let kind: Kind = kind.parse().map_err(anyhow::Error::msg)?;
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
            };
            // YAML is a superset of JSON: one parser reads both.
            let value: serde_json::Value = serde_yaml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{} is not YAML or JSON: {e}", file.display()))?;
            // A file holding the whole key (`retention: [...]`) is taken as its value.
            let value = match value {
                serde_json::Value::Object(mut m) if m.len() == 1 && m.contains_key(kind.name()) => {
                    m.remove(kind.name()).unwrap_or_default()
                }
                v => v,
            };
            let services = Services::open(&common.load()?).await?;
            let r = services.policies.set(kind, &value, &actor()).await;
            if r.is_ok() {
                services.events.emit(
                    Event::new(Action::Policy, "policy", actor())
                        .detail(format!("{} set", kind.name())),
                );
            }
            services.close().await;
            r?;
            println!(
                "{} set; a running server applies it within a second",
                kind.name()
            );
            Ok(())
        }
        PolicyCommand::Reset { kind, common } => {
            let kind: Kind = kind.parse().map_err(anyhow::Error::msg)?;
            let services = Services::open(&common.load()?).await?;
            let r = services.policies.reset(kind, &actor()).await;
            if r.is_ok() {
                services.events.emit(
                    Event::new(Action::Policy, "policy", actor())
                        .detail(format!("{} reset to the config's", kind.name())),
                );
            }
            services.close().await;
            r?;
            println!("{} reset: the config's applies", kind.name());
            Ok(())
        }
    }
}
