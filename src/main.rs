//! The `berth` binary: parses the command line and runs the chosen command.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use berth::auth::{UserName, Users};
use berth::cli::{Cli, Command, ConfigCommand, UserCommand};
use berth::config::{Config, LogFormat};
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
    tracing::info!(
        addr = %local,
        data_dir = %cfg.data_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "berth ready"
    );
    server::run(listener, app, shutdown_signal()).await
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

async fn open_users(cfg: &Config) -> anyhow::Result<Users> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    let meta = SqliteMetadata::open(&cfg.data_dir.join("berth.db"))
        .await
        .context("cannot open the metadata database")?;
    Ok(Users::new(std::sync::Arc::new(meta)))
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
        Command::Serve(args) => args
            .common
            .load()
            .map_err(anyhow::Error::from)
            .and_then(|cfg| {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .context("cannot start the async runtime")?
                    .block_on(serve(cfg, args.log_format))
            }),
        Command::User { command } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
            .and_then(|rt| rt.block_on(user_command(command))),
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
