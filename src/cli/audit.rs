//! `berth audit`: the audit log, read from the data dir's database beside a running server
//! (or without one); and how commands that change access or policy record what they did.

use std::sync::Arc;

use crate::config::{Config, Span};
use crate::metadata::audit::{AuditQuery, AuditStore};
use crate::ops::audit::entry_json;
use crate::ops::events::{now_ms, Action, Event};

use super::CommonArgs;

/// Who ran a command: `cli:USER`.
pub fn actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// Records a change a command made (when the audit log is enabled).
pub async fn record(cfg: &Config, store: &dyn AuditStore, event: Event) -> anyhow::Result<()> {
    if cfg.audit.enabled {
        store.append_audit(&[Arc::new(event)]).await?;
    }
    Ok(())
}

pub struct Filter {
    pub repo: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since: Option<Span>,
    pub limit: u32,
}

pub async fn show(common: &CommonArgs, f: Filter, json: bool) -> anyhow::Result<()> {
    let cfg = common.load()?;
    let action = f
        .action
        .as_deref()
        .map(|a| {
            Action::parse(a).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown action {a:?}: use one of {}",
                    Action::ALL.map(Action::as_str).join(", ")
                )
            })
        })
        .transpose()?;
    let meta = super::access::open_meta(&cfg).await?;
    let rows = meta
        .query_audit(&AuditQuery {
            repo: f.repo,
            actor: f.actor,
            action,
            since_ms: f.since.map(|s| now_ms() - s.0.as_millis() as i64),
            limit: f.limit,
        })
        .await?;
    meta.close().await;
    if json {
        let entries: Vec<_> = rows.iter().map(entry_json).collect();
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<12} {:<24} {:<16} {:<7} {:<40} DETAIL",
        "TIME", "ACTION", "ACTOR", "ADDRESS", "RESULT", "REPOSITORY:REFERENCE"
    );
    for e in rows.iter().rev() {
        let v = entry_json(e);
        let what = match (&e.repo, &e.reference, &e.digest) {
            (Some(r), Some(t), _) => format!("{r}:{t}"),
            (Some(r), None, Some(d)) => format!("{r}@{d}"),
            (Some(r), None, None) => r.clone(),
            (None, _, _) => "-".into(),
        };
        let result = if e.success {
            "ok".to_string()
        } else {
            e.status.to_string()
        };
        println!(
            "{:<24} {:<12} {:<24} {:<16} {:<7} {:<40} {}",
            v["time"].as_str().unwrap_or_default(),
            e.action.as_str(),
            e.actor,
            e.addr,
            result,
            what,
            e.detail
        );
    }
    Ok(())
}
