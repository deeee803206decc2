//! Command-line interface: raw arguments parsed by clap, turned into a validated [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, LogFormat, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "A container image registry in one binary"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry.
    Serve(ServeArgs),
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print it as it would be used.
    Check(CommonArgs),
}

#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// YAML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Root of the embedded storage and database.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Listen address.
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<SocketAddr>,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Log format (overrides log.format).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

impl CommonArgs {
    pub fn load(&self) -> Result<Config, ConfigError> {
        let overrides = Overrides {
            addr: self.addr,
            data_dir: self.data_dir.clone(),
        };
        Config::load(self.config.as_deref(), &overrides)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_flags_parse() {
        let cli = Cli::parse_from([
            "berth",
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            "/tmp/d",
            "--config",
            "c.yaml",
        ]);
        let Command::Serve(s) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(s.common.addr.unwrap().port(), 0);
        assert_eq!(s.common.data_dir.unwrap(), PathBuf::from("/tmp/d"));
    }
}
