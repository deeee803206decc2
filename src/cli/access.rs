//! `berth user|namespace|token ...`: accounts and access settings, written straight to the
//! data dir's database (a running server applies them within its auth generation's poll).

use std::sync::Arc;

use anyhow::Context;

use crate::auth::namespaces::Namespaces;
use crate::auth::tokens::AccessTokens;
use crate::auth::{UserName, Users};
use crate::config::Config;
use crate::metadata::rfc3339;
use crate::metadata::Backend;
use crate::ops::events::{Action, Event};

use super::{MemberCommand, NamespaceCommand, TokenCommand, UserCommand};

/// Reads a password from standard input: everything up to the first line break.
fn read_password() -> anyhow::Result<String> {
    use std::io::Read;
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("cannot read the password from standard input")?;
    let pw = s.lines().next().unwrap_or("").to_string();
    anyhow::ensure!(!pw.is_empty(), "no password on standard input");
    Ok(pw)
}

/// Opens the metadata database of a data dir, for commands that run beside the server.
pub async fn open_meta(cfg: &Config) -> anyhow::Result<Arc<dyn Backend>> {
    crate::server::open_metadata(cfg).await
}

async fn open_users(cfg: &Config) -> anyhow::Result<Users> {
    Ok(Users::new(open_meta(cfg).await?))
}

async fn open_namespaces(cfg: &Config) -> anyhow::Result<Namespaces> {
    let meta = open_meta(cfg).await?;
    Ok(Namespaces::new(meta.clone(), meta))
}

pub async fn namespace_command(command: NamespaceCommand) -> anyhow::Result<()> {
    match command {
        NamespaceCommand::Create {
            name,
            public,
            common,
        } => {
            open_namespaces(&common.load()?)
                .await?
                .create(&name, public)
                .await?;
            println!(
                "created namespace {name} ({})",
                if public { "public" } else { "private" }
            );
        }
        NamespaceCommand::SetPublic {
            name,
            public,
            common,
        } => {
            open_namespaces(&common.load()?)
                .await?
                .set_public(&name, public)
                .await?;
            println!(
                "namespace {name} is now {}",
                if public { "public" } else { "private" }
            );
        }
        NamespaceCommand::Delete { name, common } => {
            open_namespaces(&common.load()?)
                .await?
                .delete(&name)
                .await?;
            println!("deleted namespace {name}");
        }
        NamespaceCommand::List { common } => {
            let all = open_namespaces(&common.load()?).await?.list().await?;
            println!("{:<40} {:<8} CREATED", "NAME", "PUBLIC");
            for n in all {
                println!(
                    "{:<40} {:<8} {}",
                    n.name,
                    if n.public { "yes" } else { "no" },
                    rfc3339(n.created_at)
                );
            }
        }
        NamespaceCommand::Member { command } => match command {
            MemberCommand::Add {
                namespace,
                user,
                role,
                common,
            } => {
                let role = open_namespaces(&common.load()?)
                    .await?
                    .set_member(&namespace, &user, &role)
                    .await?;
                println!("{user} is now {role} in {namespace}");
            }
            MemberCommand::Remove {
                namespace,
                user,
                common,
            } => {
                open_namespaces(&common.load()?)
                    .await?
                    .remove_member(&namespace, &user)
                    .await?;
                println!("removed {user} from {namespace}");
            }
            MemberCommand::List { namespace, common } => {
                let members = open_namespaces(&common.load()?)
                    .await?
                    .members(&namespace)
                    .await?;
                println!("{:<40} {:<11} SINCE", "USER", "ROLE");
                for m in members {
                    println!("{:<40} {:<11} {}", m.user, m.role, rfc3339(m.created_at));
                }
            }
        },
    }
    Ok(())
}

pub async fn token_command(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            name,
            namespace,
            access,
            expires,
            common,
        } => {
            let cfg = common.load()?;
            let meta = open_meta(&cfg).await?;
            let tokens = AccessTokens::new(meta.clone());
            let (rec, secret) = tokens
                .create(&namespace, &name, &access, expires.map(Into::into))
                .await?;
            super::audit::record(
                &cfg,
                meta.as_ref(),
                Event::new(Action::TokenCreate, "token", super::audit::actor())
                    .detail(format!("token {namespace}/{name} with {access} access")),
            )
            .await?;
            println!(
                "created token {name} in {namespace} with {access} access{}",
                rec.expires_at
                    .map(|e| format!(", expiring {}", rfc3339(e)))
                    .unwrap_or_default()
            );
            println!("log in with user name {name:?} and this secret, shown only once:");
            println!("{secret}");
        }
        TokenCommand::List { namespace, common } => {
            let tokens = AccessTokens::new(open_meta(&common.load()?).await?);
            let all = tokens.list(namespace.as_deref()).await?;
            println!(
                "{:<24} {:<24} {:<18} {:<8} {:<21} {:<21} LAST USED",
                "NAMESPACE", "NAME", "ACCESS", "STATE", "CREATED", "EXPIRES"
            );
            let now = crate::metadata::now();
            for t in all {
                let state = t.state_at(now);
                println!(
                    "{:<24} {:<24} {:<18} {:<8} {:<21} {:<21} {}",
                    t.namespace,
                    t.name,
                    t.access,
                    state,
                    rfc3339(t.created_at),
                    t.expires_at.map(rfc3339).unwrap_or_else(|| "never".into()),
                    t.last_used_at
                        .map(rfc3339)
                        .unwrap_or_else(|| "never".into()),
                );
            }
        }
        TokenCommand::Revoke {
            name,
            namespace,
            common,
        } => {
            let cfg = common.load()?;
            let meta = open_meta(&cfg).await?;
            AccessTokens::new(meta.clone())
                .revoke(&namespace, &name)
                .await?;
            super::audit::record(
                &cfg,
                meta.as_ref(),
                Event::new(Action::TokenRevoke, "token", super::audit::actor())
                    .detail(format!("token {namespace}/{name}")),
            )
            .await?;
            println!("revoked token {name} in {namespace}");
        }
    }
    Ok(())
}

pub async fn user_command(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            admin,
            common,
            ..
        } => {
            let name: UserName = name.parse()?;
            let users = open_users(&common.load()?).await?;
            users.add(&name, &read_password()?, admin).await?;
            println!("added user {name}{}", if admin { " (admin)" } else { "" });
        }
        UserCommand::Passwd { name, common, .. } => {
            let name: UserName = name.parse()?;
            let users = open_users(&common.load()?).await?;
            users.set_password(&name, &read_password()?).await?;
            println!("changed the password of {name}");
        }
        UserCommand::Del { name, common } => {
            let name: UserName = name.parse()?;
            open_users(&common.load()?).await?.delete(&name).await?;
            println!("deleted user {name}");
        }
        UserCommand::List { common } => {
            let users = open_users(&common.load()?).await?.list().await?;
            println!("{:<40} {:<6} CREATED", "NAME", "ADMIN");
            for u in users {
                let created = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(u.created_at.max(0) as u64);
                println!(
                    "{:<40} {:<6} {}",
                    u.name,
                    if u.admin { "yes" } else { "no" },
                    humantime::format_rfc3339_seconds(created)
                );
            }
        }
        UserCommand::ImportHtpasswd {
            file,
            replace,
            common,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let r = open_users(&common.load()?)
                .await?
                .import_htpasswd(&text, replace)
                .await?;
            println!(
                "imported {}: {} added, {} replaced, {} kept",
                file.display(),
                r.added,
                r.replaced,
                r.kept
            );
        }
    }
    Ok(())
}
