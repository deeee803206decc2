//! Configuration: built-in defaults, then a YAML file, then `BERTH_*` environment variables,
//! then command-line flags; validated into one [`Config`] in one step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listen address.
    pub addr: SocketAddr,
    /// Root of the embedded storage (blobs, uploads) and the SQLite database.
    pub data_dir: PathBuf,
    pub storage: StorageConfig,
    pub delete: DeleteConfig,
    pub uploads: UploadsConfig,
    pub manifests: ManifestsConfig,
    pub log: LogConfig,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "driver", rename_all = "lowercase", deny_unknown_fields)]
pub enum StorageConfig {
    /// Blobs as files under `data_dir`.
    #[default]
    Filesystem,
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
            delete: DeleteConfig::default(),
            uploads: UploadsConfig::default(),
            manifests: ManifestsConfig::default(),
            log: LogConfig::default(),
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

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("config serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            data_dir: None,
        };
        let c = Config::load(Some(&f), &o).unwrap();
        assert_eq!(c.addr.port(), 7000);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
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
        std::fs::write(&f, "manifests:\n  max_bytes: 5\n").unwrap();
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        assert!(matches!(
            Config::load(Some(&dir.path().join("none.yaml")), &Overrides::default()),
            Err(ConfigError::Missing(_))
        ));
    }
}
