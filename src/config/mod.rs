//! Configuration: built-in defaults, then a YAML file, then `BERTH_*` environment variables,
//! then command-line flags; validated into one [`Config`] in one step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub mod database;
pub mod lifecycle;
pub mod ops;
pub mod proxy;
pub mod storage;
pub mod units;
pub mod webhooks;

pub use database::DatabaseConfig;
pub use lifecycle::{GcConfig, ImmutableTagRule, RetentionRule, Schedule};
pub use ops::{AuditConfig, MetricsConfig, Rate, RateLimitConfig, RateLimitRule};

/// A fully commented configuration file showing every key with its default, printed by
/// `berth config example`.
pub const EXAMPLE: &str = include_str!("example.yaml");
pub use proxy::{On404, ProxyConfig, PullAccess, UpstreamConfig};
pub use storage::{AzureConfig, GcsConfig, S3Config, StorageConfig};
pub use units::{Bytes, Span};
pub use webhooks::WebhookConfig;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listen address.
    pub addr: SocketAddr,
    /// Root of the embedded storage (blobs, uploads) and the SQLite database.
    pub data_dir: PathBuf,
    pub storage: StorageConfig,
    /// Metadata: the embedded SQLite file (default) or a shared PostgreSQL database.
    pub database: DatabaseConfig,
    pub delete: DeleteConfig,
    pub uploads: UploadsConfig,
    pub manifests: ManifestsConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub proxy: ProxyConfig,
    /// Tags that may not move or go once pushed.
    pub immutable_tags: Vec<ImmutableTagRule>,
    /// Garbage collection: schedule, grace, pace.
    pub gc: GcConfig,
    /// Which tags and untagged manifests are removed, per repository pattern.
    pub retention: Vec<RetentionRule>,
    /// Storage bound per namespace, e.g. `team-a: 10GiB`.
    pub quotas: std::collections::BTreeMap<String, Bytes>,
    /// Where `/metrics` is served.
    pub metrics: MetricsConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// Request rates per client.
    pub rate_limit: RateLimitConfig,
    /// Endpoints notified of pushes, pulls, deletes, quota refusals and GC runs.
    pub webhooks: Vec<WebhookConfig>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `none` (anyone may do anything), `basic` or `token`.
    pub mode: AuthMode,
    pub token: TokenConfig,
    pub throttle: ThrottleConfig,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No access control: every request may pull, push and delete.
    #[default]
    None,
    /// HTTP Basic credentials on every request.
    Basic,
    /// The Docker token flow: Bearer JWTs from the built-in `/token` endpoint.
    Token,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// PEM private key (EC P-256 for ES256, or RSA for RS256) that signs tokens; generated
    /// (P-256) when absent. Default: `<data_dir>/token.key`.
    pub key: Option<PathBuf>,
    /// The `service` clients ask tokens for and tokens are issued to (their audience).
    pub service: String,
    /// The `iss` of issued tokens.
    pub issuer: String,
    /// The token endpoint's absolute URL in challenges. Default: derived from the request's
    /// Host, as `http(s)://<host>/token`.
    pub realm: Option<String>,
    /// Lifetime of access tokens.
    pub ttl_secs: u64,
    /// Lifetime of refresh tokens (docker's "identity token").
    pub refresh_ttl_secs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Failed passwords for one user name from one client address before that pair is
    /// refused. Other users, access tokens and other addresses are not affected.
    pub max_failures: u32,
    /// The first block of a (user, address) pair; it doubles with each further failure.
    pub block_secs: u64,
    /// The longest a (user, address) pair is refused for.
    pub max_block_secs: u64,
    /// Failures from one client address (any user names, and wrong access-token secrets)
    /// within `address_window_secs` before password logins from it are refused.
    pub address_max_failures: u32,
    pub address_window_secs: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; reloaded when the file changes.
    pub cert: Option<PathBuf>,
    /// PEM private key; reloaded when the file changes.
    pub key: Option<PathBuf>,
    /// Serve TLS with a certificate from a CA generated under `<data_dir>/tls/`.
    pub self_signed: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::None,
            token: TokenConfig::default(),
            throttle: ThrottleConfig::default(),
        }
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            key: None,
            service: "berth".into(),
            issuer: "berth".into(),
            realm: None,
            ttl_secs: 300,
            refresh_ttl_secs: 30 * 24 * 3600,
        }
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            max_failures: 10,
            block_secs: 30,
            max_block_secs: 900,
            address_max_failures: 100,
            address_window_secs: 900,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DeleteConfig {
    /// Allow deleting manifests, tags and blobs through the API.
    pub enabled: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UploadsConfig {
    /// Upload sessions idle this many seconds are removed.
    pub max_idle_secs: u64,
    /// Advertised `OCI-Chunk-Min-Length`.
    pub chunk_min_length: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ManifestsConfig {
    /// Largest manifest accepted, in bytes.
    pub max_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `berth=debug`.
    pub level: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: "0.0.0.0:5000".parse().expect("valid address"),
            data_dir: PathBuf::from("./data"),
            storage: StorageConfig::Filesystem,
            database: DatabaseConfig::Embedded,
            delete: DeleteConfig::default(),
            uploads: UploadsConfig::default(),
            manifests: ManifestsConfig::default(),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            proxy: ProxyConfig::default(),
            immutable_tags: Vec::new(),
            gc: GcConfig::default(),
            retention: Vec::new(),
            quotas: Default::default(),
            metrics: MetricsConfig::default(),
            audit: AuditConfig::default(),
            rate_limit: RateLimitConfig::default(),
            webhooks: Vec::new(),
        }
    }
}

impl Default for DeleteConfig {
    fn default() -> Self {
        DeleteConfig { enabled: true }
    }
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig {
            max_idle_secs: 24 * 3600,
            chunk_min_length: 5 * 1024 * 1024,
        }
    }
}

impl Default for ManifestsConfig {
    fn default() -> Self {
        ManifestsConfig {
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Values given on the command line, which override every other source.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOverrides>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct AuthOverrides {
    pub mode: AuthMode,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TlsOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub self_signed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Builds the configuration from its sources in precedence order.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError::Missing(f.to_path_buf()));
            }
            fig = fig.merge(Yaml::file(f));
        }
        fig = fig
            .merge(Env::prefixed("BERTH_").split("__"))
            .merge(Serialized::defaults(overrides));
        let cfg: Config = fig
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.storage.validate()?;
        if self.manifests.max_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "manifests.max_bytes must be at least 1024".into(),
            ));
        }
        if self.uploads.max_idle_secs == 0 {
            return Err(ConfigError::Invalid(
                "uploads.max_idle_secs must be positive".into(),
            ));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid(
                "tls.cert and tls.key must be given together".into(),
            ));
        }
        if self.tls.self_signed && self.tls.cert.is_some() {
            return Err(ConfigError::Invalid(
                "tls.self_signed cannot be combined with tls.cert/tls.key".into(),
            ));
        }
        if self.auth.token.ttl_secs == 0 || self.auth.token.refresh_ttl_secs == 0 {
            return Err(ConfigError::Invalid(
                "auth.token.ttl_secs and refresh_ttl_secs must be positive".into(),
            ));
        }
        if self.auth.token.service.is_empty() || self.auth.token.service.contains('"') {
            return Err(ConfigError::Invalid(
                "auth.token.service must be non-empty and contain no '\"'".into(),
            ));
        }
        if let Some(realm) = &self.auth.token.realm {
            if !(realm.starts_with("http://") || realm.starts_with("https://"))
                || realm.contains('"')
            {
                return Err(ConfigError::Invalid(
                    "auth.token.realm must be an absolute http(s) URL".into(),
                ));
            }
        }
        let t = &self.auth.throttle;
        if t.max_failures == 0 || t.address_max_failures == 0 {
            return Err(ConfigError::Invalid(
                "auth.throttle.max_failures and address_max_failures must be positive".into(),
            ));
        }
        if t.block_secs == 0 || t.max_block_secs < t.block_secs || t.address_window_secs == 0 {
            return Err(ConfigError::Invalid(
                "auth.throttle: block_secs and address_window_secs must be positive, and max_block_secs at least block_secs".into(),
            ));
        }
        self.proxy.validate()?;
        lifecycle::immutable_tags(&self.immutable_tags)?;
        lifecycle::retention(&self.retention)?;
        lifecycle::quotas(&self.quotas)?;
        webhooks::validate(&self.webhooks)?;
        if self.gc.batch == 0 || self.gc.parallel == 0 {
            return Err(ConfigError::Invalid(
                "gc.batch and gc.parallel must be positive".into(),
            ));
        }
        if self
            .log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return Err(ConfigError::Invalid(format!(
                "log.level {:?} is not a valid filter",
                self.log.level
            )));
        }
        Ok(())
    }

    pub fn upload_max_idle(&self) -> Duration {
        Duration::from_secs(self.uploads.max_idle_secs)
    }

    /// The token-signing key file.
    pub fn token_key_path(&self) -> PathBuf {
        self.auth
            .token
            .key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("token.key"))
    }

    /// True when the server speaks TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.self_signed || self.tls.cert.is_some()
    }

    /// The login throttle's limits.
    pub fn throttle_limits(&self) -> crate::auth::throttle::Limits {
        let t = &self.auth.throttle;
        crate::auth::throttle::Limits {
            pair_max_failures: t.max_failures,
            first_block: Duration::from_secs(t.block_secs),
            max_block: Duration::from_secs(t.max_block_secs),
            address_max_failures: t.address_max_failures,
            address_window: Duration::from_secs(t.address_window_secs),
        }
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("config serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `berth config example` shows the defaults: loaded, it is the default configuration;
    // and each commented-out block, uncommented, is valid too.
    #[test]
    fn the_example_is_the_defaults_and_its_examples_are_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.yaml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let c = Config::load(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(c, Config::load(None, &Overrides::default()).unwrap());
        // Uncomment the blocks: `# key:` lines at the start of a line and their `#   ` bodies,
        // replacing the `key: []` / `key: {}` line above each.
        // The storage drivers' blocks are alternatives to one another: they stay commented
        // (config::storage's tests parse their shape).
        let mut text = String::new();
        let mut section = "";
        for line in EXAMPLE.lines() {
            if line.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
                section = line.split(':').next().unwrap_or_default();
            }
            if section == "storage" {
                text.push_str(line);
                text.push('\n');
                continue;
            }
            let live = line.strip_prefix("# ").filter(|l| {
                l.starts_with("  ")
                    || [
                        "upstreams:",
                        "immutable_tags:",
                        "retention:",
                        "quotas:",
                        "webhooks:",
                    ]
                    .iter()
                    .any(|k| l.starts_with(k))
            });
            let line = live
                .map(|l| l.to_string())
                .or_else(|| {
                    line.strip_prefix("  # ")
                        .filter(|l| l.starts_with("  "))
                        .map(|l| format!("  {l}"))
                })
                .or_else(|| {
                    line.strip_prefix("  # upstreams:")
                        .map(|_| "  upstreams:".to_string())
                })
                .unwrap_or_else(|| line.to_string());
            if [
                "upstreams: []",
                "immutable_tags: []",
                "retention: []",
                "quotas: {}",
                "webhooks: []",
            ]
            .iter()
            .any(|k| line.trim() == *k)
            {
                continue;
            }
            text.push_str(&line);
            text.push('\n');
        }
        std::fs::write(&path, &text).unwrap();
        let c = Config::load(Some(&path), &Overrides::default())
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(c.proxy.upstreams.len(), 1, "{text}");
        assert_eq!(c.immutable_tags.len(), 1);
        assert_eq!(c.retention.len(), 1);
        assert_eq!(c.quotas.len(), 1);
        assert_eq!(c.webhooks.len(), 1);
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.addr.port(), 5000);
        assert!(c.delete.enabled);
    }

    #[test]
    fn file_then_flags_in_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("berth.yaml");
        std::fs::write(
            &f,
            "addr: 127.0.0.1:6000\ndata_dir: /tmp/x\ndelete:\n  enabled: false\nmanifests:\n  max_bytes: 2048\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), &Overrides::default()).unwrap();
        assert_eq!(c.addr.port(), 6000);
        assert!(!c.delete.enabled);
        assert_eq!(c.manifests.max_bytes, 2048);
        let o = Overrides {
            addr: Some("127.0.0.1:7000".parse().unwrap()),
            auth: Some(AuthOverrides {
                mode: AuthMode::Token,
            }),
            ..Overrides::default()
        };
        let c = Config::load(Some(&f), &o).unwrap();
        assert_eq!(c.addr.port(), 7000);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.auth.mode, AuthMode::Token);
        assert_eq!(c.auth.token.service, "berth", "nested defaults kept");
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.yaml");
        std::fs::write(&f, "adr: 1\n").unwrap();
        assert!(matches!(
            Config::load(Some(&f), &Overrides::default()),
            Err(ConfigError::Invalid(_))
        ));
        std::fs::write(&f, "tls:\n  cert: /x.pem\n").unwrap();
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        std::fs::write(&f, "auth:\n  mode: ldap\n").unwrap();
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        std::fs::write(&f, "manifests:\n  max_bytes: 5\n").unwrap();
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        assert!(matches!(
            Config::load(Some(&dir.path().join("none.yaml")), &Overrides::default()),
            Err(ConfigError::Missing(_))
        ));
    }
}
