//! The `berth` binary: parses the command line and runs the chosen command.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use berth::cli::{
    access, audit, cache, health, import, lifecycle, policy, usage, Cli, Command, ConfigCommand,
    RetentionCommand,
};
use berth::config::{Config, LogFormat};
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

fn run_command<T, F: std::future::Future<Output = anyhow::Result<T>>>(f: F) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
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
        Command::User { command } => run_command(access::user_command(command)),
        Command::Namespace { command } => run_command(access::namespace_command(command)),
        Command::Token { command } => run_command(access::token_command(command)),
        Command::Cache { command } => run_command(cache::run(command)),
        Command::Du {
            namespace,
            json,
            common,
        } => run_command(usage::du(&common, namespace.as_deref(), json)),
        Command::Gc {
            dry_run,
            grace,
            json,
            common,
        } => {
            lifecycle::lower_priority();
            run_command(lifecycle::gc(&common, dry_run, grace, json))
        }
        Command::Retention {
            command:
                RetentionCommand::Run {
                    dry_run,
                    json,
                    common,
                },
        } => {
            lifecycle::lower_priority();
            run_command(lifecycle::retention(&common, dry_run, json))
        }
        Command::ImportDistribution { dir, json, common } => {
            run_command(import::distribution(&common, &dir, json))
        }
        Command::Migrate {
            to,
            parallel,
            json,
            common,
        } => run_command(import::migrate(&common, &to, parallel, json)),
        Command::Policy { command } => run_command(policy::run(command)),
        Command::Audit {
            repo,
            actor,
            action,
            since,
            limit,
            json,
            common,
        } => run_command(audit::show(
            &common,
            audit::Filter {
                repo,
                actor,
                action,
                since,
                limit,
            },
            json,
        )),
        Command::Health {
            url,
            timeout,
            common,
        } => match common
            .load()
            .map_err(anyhow::Error::from)
            .and_then(|cfg| run_command(health::health(&cfg, url, timeout.0)))
        {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Scrub {
            rate,
            restart,
            json,
            common,
        } => match run_command({
            lifecycle::lower_priority();
            lifecycle::scrub(&common, rate, restart, json)
        }) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Config {
            command: ConfigCommand::Check(args),
        } => args.load().map_err(anyhow::Error::from).map(|cfg| {
            print!("{}", cfg.to_yaml());
            eprintln!("configuration is valid");
        }),
        Command::Config {
            command: ConfigCommand::Example,
        } => {
            print!("{}", berth::config::EXAMPLE);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {}", berth::cli::error_text(&e));
            ExitCode::FAILURE
        }
    }
}
