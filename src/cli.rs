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
    /// Manage registry users (works while the server runs).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user, reading the password from standard input.
    Add {
        name: String,
        /// Read the password from standard input (required: passwords never go in argv).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Make the user a server administrator.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Change a user's password, reading it from standard input.
    Passwd {
        name: String,
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Delete a user.
    Del {
        name: String,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// List users.
    List {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Import users from an htpasswd file with bcrypt entries (`htpasswd -B`).
    ImportHtpasswd {
        file: PathBuf,
        /// Replace the password of users that already exist.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        common: CommonArgs,
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
    fn user_commands_parse() {
        let cli = Cli::parse_from([
            "berth",
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--admin",
            "--data-dir",
            "/d",
        ]);
        let Command::User {
            command: UserCommand::Add { name, admin, .. },
        } = cli.command
        else {
            panic!("user add expected")
        };
        assert_eq!(name, "alice");
        assert!(admin);
        assert!(Cli::try_parse_from(["berth", "user", "add", "alice"]).is_err());
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
