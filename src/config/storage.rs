//! Where blobs live: the data dir (the embedded default), or an object store shared by any
//! number of replicas (S3 and S3-compatible servers, GCS, Azure Blob Storage).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "driver", rename_all = "lowercase", deny_unknown_fields)]
pub enum StorageConfig {
    /// Blobs as files under `data_dir`.
    #[default]
    Filesystem,
    /// Amazon S3 or an S3-compatible server (Garage, MinIO, Ceph).
    S3 { s3: S3Config },
    /// Google Cloud Storage.
    Gcs { gcs: GcsConfig },
    /// Azure Blob Storage.
    Azure { azure: AzureConfig },
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// Every object key starts with it.
    pub prefix: String,
    pub region: String,
    /// The server's URL; AWS's regional endpoint when absent.
    pub endpoint: Option<String>,
    /// Bucket in the path (`endpoint/bucket/key`) rather than in the host name.
    pub path_style: bool,
    /// Credentials; else the `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` environment (or
    /// the instance's role).
    pub access_key_id: Option<String>,
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    /// Answer blob downloads with a redirect to a presigned URL, so bytes skip the replicas.
    pub redirect: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GcsConfig {
    pub bucket: String,
    pub prefix: String,
    /// A service account key file; else `GOOGLE_APPLICATION_CREDENTIALS` or the metadata
    /// server.
    pub credentials_file: Option<PathBuf>,
    pub redirect: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AzureConfig {
    pub account: String,
    pub container: String,
    pub prefix: String,
    /// The account's access key; else `AZURE_STORAGE_ACCESS_KEY`.
    pub access_key: Option<String>,
    pub access_key_file: Option<PathBuf>,
    /// The Blob service URL, for Azurite or sovereign clouds.
    pub endpoint: Option<String>,
    pub redirect: bool,
}

impl StorageConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let missing = |what: &str| Err(ConfigError::Invalid(format!("{what} must be set")));
        match self {
            StorageConfig::Filesystem => Ok(()),
            StorageConfig::S3 { s3 } if s3.bucket.is_empty() => missing("storage.s3.bucket"),
            StorageConfig::S3 { s3 } => {
                if s3.access_key_id.is_some() && s3.access_key_id_file.is_some()
                    || s3.secret_access_key.is_some() && s3.secret_access_key_file.is_some()
                {
                    return Err(ConfigError::Invalid(
                        "storage.s3: give a credential or its _file, not both".into(),
                    ));
                }
                if s3
                    .endpoint
                    .as_ref()
                    .is_some_and(|e| url::Url::parse(e).is_err())
                {
                    return Err(ConfigError::Invalid(
                        "storage.s3.endpoint must be a URL".into(),
                    ));
                }
                Ok(())
            }
            StorageConfig::Gcs { gcs } if gcs.bucket.is_empty() => missing("storage.gcs.bucket"),
            StorageConfig::Gcs { .. } => Ok(()),
            StorageConfig::Azure { azure } if azure.account.is_empty() => {
                missing("storage.azure.account")
            }
            StorageConfig::Azure { azure } if azure.container.is_empty() => {
                missing("storage.azure.container")
            }
            StorageConfig::Azure { .. } => Ok(()),
        }
    }

    /// True when blobs live outside the data dir.
    pub fn is_shared(&self) -> bool {
        !matches!(self, StorageConfig::Filesystem)
    }
}

/// A secret given inline or in a file (trailing whitespace trimmed).
pub fn secret(inline: &Option<String>, file: &Option<PathBuf>) -> std::io::Result<Option<String>> {
    match (inline, file) {
        (Some(s), _) => Ok(Some(s.clone())),
        (None, Some(f)) => Ok(Some(std::fs::read_to_string(f)?.trim_end().to_string())),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented `s3:`, `gcs:` and `azure:` blocks of `berth config example` parse, each
    /// as its driver's settings.
    #[test]
    fn the_examples_drivers_parse() {
        let block = |name: &str| -> String {
            let mut lines = super::super::EXAMPLE.lines();
            lines.by_ref().find(|l| l.trim() == format!("# {name}:"));
            lines
                .map_while(|l| l.strip_prefix("  #   "))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let s3: S3Config = serde_yaml::from_str(&block("s3")).unwrap();
        assert_eq!(s3.bucket, "berth");
        assert!(s3.path_style && s3.secret_access_key_file.is_some());
        let gcs: GcsConfig = serde_yaml::from_str(&block("gcs")).unwrap();
        assert_eq!(gcs.bucket, "berth");
        let azure: AzureConfig = serde_yaml::from_str(&block("azure")).unwrap();
        assert_eq!(azure.container, "berth");
        for cfg in [
            StorageConfig::S3 { s3 },
            StorageConfig::Gcs { gcs },
            StorageConfig::Azure { azure },
        ] {
            cfg.validate().unwrap();
        }
    }

    #[test]
    fn s3_shape_parses() {
        let yaml = "driver: s3\ns3:\n  bucket: berth\n  prefix: reg\n  region: garage\n  endpoint: http://127.0.0.1:3900\n  path_style: true\n";
        let cfg: StorageConfig = serde_yaml::from_str(yaml).unwrap();
        let StorageConfig::S3 { s3 } = &cfg else {
            panic!("{cfg:?}")
        };
        assert_eq!(s3.bucket, "berth");
        assert!(s3.path_style);
        cfg.validate().unwrap();
        let bad: StorageConfig = serde_yaml::from_str("driver: s3\ns3: {prefix: x}\n").unwrap();
        assert!(bad.validate().is_err());
        assert!(
            serde_yaml::from_str::<StorageConfig>("driver: s3\ns3: {bucket: b, nope: 1}\n")
                .is_err()
        );
    }
}
