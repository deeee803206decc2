//! The `berth` binary: parses the command line and runs the chosen command.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use berth::auth::namespaces::Namespaces;
use berth::auth::tokens::AccessTokens;
use berth::auth::{UserName, Users};
use berth::cli::{
    Cli, Command, ConfigCommand, MemberCommand, NamespaceCommand, TokenCommand, UserCommand,
};
use berth::config::{Config, LogFormat};
use berth::metadata::rfc3339;
use berth::metadata::sqlite::SqliteMetadata;
use berth::server::{self, App};

/// Logs go to stderr through a background writer, so a slow terminal or pipe never stalls a
/// request. The returned guard flushes what is queued when dropped.
fn init_logging(cfg: &Config) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::new(&cfg.log.level);
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    guard
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

async fn serve(mut cfg: Config, log_format: Option<LogFormat>) -> anyhow::Result<()> {
    if let Some(f) = log_format {
        cfg.log.format = f;
    }
    let _log_guard = init_logging(&cfg);
    let app = App::open(&cfg).await?;
    let listener = TcpListener::bind(cfg.addr)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.addr))?;
    let local = listener.local_addr()?;
    let tls = berth::tls::Tls::from_config(&cfg, local)?;
    tracing::info!(
        addr = %local,
        data_dir = %cfg.data_dir.display(),
        auth = ?cfg.auth.mode,
        tls = tls.is_some(),
        version = env!("CARGO_PKG_VERSION"),
        "berth ready"
    );
    server::run_with(listener, app, tls, shutdown_signal()).await
}

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
async fn open_meta(cfg: &Config) -> anyhow::Result<Arc<SqliteMetadata>> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    let meta = SqliteMetadata::open(&cfg.data_dir.join("berth.db"))
        .await
        .context("cannot open the metadata database")?;
    Ok(Arc::new(meta))
}

async fn open_users(cfg: &Config) -> anyhow::Result<Users> {
    Ok(Users::new(open_meta(cfg).await?))
}

async fn open_namespaces(cfg: &Config) -> anyhow::Result<Namespaces> {
    let meta = open_meta(cfg).await?;
    Ok(Namespaces::new(meta.clone(), meta))
}

async fn namespace_command(command: NamespaceCommand) -> anyhow::Result<()> {
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

async fn token_command(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            name,
            namespace,
            access,
            expires,
            common,
        } => {
            let tokens = AccessTokens::new(open_meta(&common.load()?).await?);
            let (rec, secret) = tokens
                .create(&namespace, &name, &access, expires.map(Into::into))
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
            let now = berth::metadata::now();
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
            let tokens = AccessTokens::new(open_meta(&common.load()?).await?);
            tokens.revoke(&namespace, &name).await?;
            println!("revoked token {name} in {namespace}");
        }
    }
    Ok(())
}

fn run_command<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

async fn user_command(command: UserCommand) -> anyhow::Result<()> {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args.load().map_err(anyhow::Error::from).and_then(|cfg| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(serve(cfg, args.log_format))
        }),
        Command::User { command } => run_command(user_command(command)),
        Command::Namespace { command } => run_command(namespace_command(command)),
        Command::Token { command } => run_command(token_command(command)),
        Command::Config {
            command: ConfigCommand::Check(args),
        } => args.load().map_err(anyhow::Error::from).map(|cfg| {
            print!("{}", cfg.to_yaml());
            eprintln!("configuration is valid");
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}
