//! Command-line interface: raw arguments parsed by clap, turned into a validated [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub mod access;
pub mod audit;
pub mod cache;
pub mod health;
pub mod import;
pub mod lifecycle;
pub mod policy;
pub mod usage;

use crate::config::{
    AuthMode, AuthOverrides, Config, ConfigError, LogFormat, Overrides, Span, TlsOverrides,
};

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
    /// Manage namespaces and their members (works while the server runs).
    Namespace {
        #[command(subcommand)]
        command: NamespaceCommand,
    },
    /// Manage access tokens for CI and robots (works while the server runs).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The pull-through cache: warm, list, statistics, refresh, purge, pin (works while the
    /// server runs).
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Storage used per repository (total, unique to it, shared with others), for one
    /// namespace or all (works while the server runs).
    Du {
        /// Only repositories in this namespace (their first path segment).
        namespace: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Remove blobs no manifest references, once older than the grace period, with stale
    /// uploads and files left by crashes (works while the server runs; waits for a GC in
    /// progress).
    Gc {
        /// Print what would go, and how many bytes, and remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Override gc.grace (e.g. 0s, 30m, 1h).
        #[arg(long, value_name = "DURATION")]
        grace: Option<Span>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Show or change the lifecycle policies: immutable tags, retention rules and quotas
    /// (works while the server runs).
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Apply the retention rules (works while the server runs).
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Show the audit log, newest last: pushes, manifest pulls, deletes, logins, token and
    /// policy changes, quota refusals, GC runs (works while the server runs).
    Audit {
        /// Only entries for this repository.
        #[arg(long)]
        repo: Option<String>,
        /// Only entries by this actor (a user name, `token NS/NAME`, `anonymous`).
        #[arg(long)]
        actor: Option<String>,
        /// Only this action (push, pull, delete, login, token.create, token.revoke, policy,
        /// quota, gc).
        #[arg(long)]
        action: Option<String>,
        /// Only entries this recent (e.g. 24h, 7d).
        #[arg(long, value_name = "DURATION")]
        since: Option<Span>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Import a Distribution (`registry:2`) registry from its filesystem layout: every
    /// repository, manifest, tag and blob, verified as it is copied (works while the server
    /// runs; safe to run again).
    ImportDistribution {
        /// Distribution's storage root (its `rootdirectory`), holding docker/registry/v2.
        dir: std::path::PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Copy every blob to the storage another configuration file sets (the data dir to S3,
    /// GCS or Azure, or back), each verified as it is copied; then switch `storage:` to it.
    /// Run it while the server runs, then again once it is stopped (copying only what is
    /// new). When FILE names a PostgreSQL database, the second run (the server stopped)
    /// also copies the embedded database into it, which must be empty.
    Migrate {
        /// The configuration to move to: its `storage:` and `database:` are the targets (with
        /// the database staying embedded, its data dir must be this one's).
        #[arg(long, value_name = "FILE")]
        to: std::path::PathBuf,
        /// Blobs copied at once.
        #[arg(long, default_value_t = 8)]
        parallel: usize,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Ask the running server whether it is ready (its `/readyz`): exit 0 when it is, 1
    /// when not or when it does not answer. For scripts and container health checks.
    Health {
        /// Ask this URL instead of the configured address's `/readyz`.
        #[arg(long)]
        url: Option<String>,
        /// Give up after this long.
        #[arg(long, default_value = "5s")]
        timeout: crate::config::Span,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Re-hash every stored blob; quarantine and report those whose bytes no longer match
    /// their digest. Exits 1 when it finds any (works while the server runs; resumable).
    Scrub {
        /// Read at most this many MB (10^6 bytes) per second.
        #[arg(long, value_name = "MB/s")]
        rate: Option<f64>,
        /// Start from the first blob even if an earlier scrub was interrupted.
        #[arg(long)]
        restart: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Delete the tags and manifests the rules select, printing each with its reason.
    Run {
        /// Print the plan, one tag per line with its repository and reason, and delete
        /// nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Pull the images listed in FILE into the cache, in parallel; running it again costs
    /// only revalidations. One image per line: `alpine:3.20`, `docker.io/library/redis:7`,
    /// `ghcr.io/org/img@sha256:...`, `hub/library/alpine` (by prefix); `#` starts a comment.
    Warm {
        file: PathBuf,
        /// Images fetched at the same time.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Only this platform of multi-platform images (os/arch, e.g. linux/amd64).
        #[arg(long)]
        platform: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// List the cached images.
    Ls {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Hits, misses, stale serves, bytes and each upstream's rate-limit budget.
    Stats {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Revalidate a cached tag with its upstream now, whatever its TTL.
    Refresh {
        image: String,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Remove an image (or a whole repository, when no tag or digest is given) from the
    /// cache; with --all, everything not pinned.
    Purge {
        image: Option<String>,
        #[arg(long)]
        all: bool,
        /// Print what would go and stop.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Never evict a repository (e.g. hub/library/alpine, or alpine).
    Pin {
        repo: String,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Let eviction consider a repository again.
    Unpin {
        repo: String,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum NamespaceCommand {
    /// Create a namespace (the first segment of repository names).
    Create {
        name: String,
        /// Anyone, even without credentials, may pull from it.
        #[arg(long)]
        public: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Make a namespace public or private.
    SetPublic {
        name: String,
        #[arg(action = clap::ArgAction::Set, value_parser = clap::value_parser!(bool))]
        public: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Delete a namespace with its members and tokens (its repositories stay).
    Delete {
        name: String,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// List namespaces.
    List {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Manage the members of a namespace.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add a member, or change their role: guest, developer, maintainer or admin.
    Add {
        namespace: String,
        user: String,
        role: String,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Remove a member.
    Remove {
        namespace: String,
        user: String,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// List the members of a namespace.
    List {
        namespace: String,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once, alone on the last line.
    Create {
        /// The token's name, which is also the user name clients log in with.
        #[arg(long)]
        name: String,
        #[arg(long)]
        namespace: String,
        /// read, read-write or read-write-delete.
        #[arg(long)]
        access: String,
        /// Lifetime, such as 90d or 12h; without it the token does not expire.
        #[arg(long, value_name = "DURATION")]
        expires: Option<humantime::Duration>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// List tokens, with their last use.
    List {
        #[arg(long)]
        namespace: Option<String>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Revoke a token.
    Revoke {
        #[arg(long)]
        name: String,
        #[arg(long)]
        namespace: String,
        #[command(flatten)]
        common: CommonArgs,
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
    /// Print a fully commented configuration file with every key and its default.
    Example,
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
    /// Access control (overrides auth.mode).
    #[arg(long, value_enum)]
    pub auth: Option<AuthMode>,
    /// PEM certificate chain to serve TLS with (reloaded when it changes).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a certificate from a CA generated under <data-dir>/tls/.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub tls_self_signed: bool,
}

impl ServeArgs {
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut o = self.common.overrides();
        o.auth = self.auth.map(|mode| AuthOverrides { mode });
        if self.tls_cert.is_some() || self.tls_self_signed {
            o.tls = Some(TlsOverrides {
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
                self_signed: self.tls_self_signed,
            });
        }
        Config::load(self.common.config.as_deref(), &o)
    }
}

impl CommonArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            addr: self.addr,
            data_dir: self.data_dir.clone(),
            ..Overrides::default()
        }
    }

    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.config.as_deref(), &self.overrides())
    }

    /// Another configuration file, with the same command-line overrides.
    pub fn load_other(&self, file: &std::path::Path) -> Result<Config, ConfigError> {
        Config::load(Some(file), &self.overrides())
    }
}

/// An error and its causes on one line, as `{:#}` prints them, but without a cause whose
/// text its parent already included (errors such as sqlx's repeat their source).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
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

    #[test]
    fn access_commands_parse() {
        let cli = Cli::parse_from([
            "berth",
            "token",
            "create",
            "--name",
            "ci",
            "--namespace",
            "team-a",
            "--access",
            "read-write",
            "--expires",
            "90d",
        ]);
        let Command::Token {
            command: TokenCommand::Create { expires, .. },
        } = cli.command
        else {
            panic!("token create expected")
        };
        assert_eq!(expires.unwrap().as_secs(), 90 * 86400);
        assert!(
            Cli::try_parse_from(["berth", "namespace", "member", "add", "ns", "u", "guest"])
                .is_ok()
        );
        assert!(Cli::try_parse_from(["berth", "namespace", "create", "ns", "--public"]).is_ok());
        assert!(
            Cli::try_parse_from(["berth", "serve", "--auth", "token", "--tls-self-signed"]).is_ok()
        );
        assert!(Cli::try_parse_from(["berth", "serve", "--tls-cert", "c.pem"]).is_err());
        assert!(Cli::try_parse_from(["berth", "serve", "--auth", "ldap"]).is_err());
    }

    #[test]
    fn error_text_drops_causes_repeated_by_their_parent() {
        #[derive(Debug, thiserror::Error)]
        #[error("database: {0}")]
        struct Db(#[source] std::io::Error);
        let e = anyhow::Error::new(Db(std::io::Error::other("bad certificate")))
            .context("cannot open the database");
        assert_eq!(
            error_text(&e),
            "cannot open the database: database: bad certificate"
        );
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&e), "outer: inner");
    }
}
