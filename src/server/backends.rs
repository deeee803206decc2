//! Opens the configured backends: blob storage (the data dir, or an object store through the
//! `object_store` crate) and metadata (SQLite in the data dir, or PostgreSQL).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::signer::Signer;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use crate::config::database::redact;
use crate::config::storage::secret;
use crate::config::{Config, DatabaseConfig, StorageConfig};
use crate::metadata::postgres::PgMetadata;
use crate::metadata::sqlite::SqliteMetadata;
use crate::metadata::Backend;
use crate::storage::fs::FsStorage;
use crate::storage::object::ObjectStorage;
use crate::storage::Storage;

/// Opens (and migrates) the configured metadata database.
pub async fn open_metadata(cfg: &Config) -> anyhow::Result<Arc<dyn Backend>> {
    Ok(match &cfg.database {
        DatabaseConfig::Embedded => {
            std::fs::create_dir_all(&cfg.data_dir)
                .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
            Arc::new(
                SqliteMetadata::open(&cfg.data_dir.join("berth.db"))
                    .await
                    .context("cannot open the metadata database")?,
            )
        }
        DatabaseConfig::Postgres {
            url,
            max_connections,
        } => Arc::new(
            PgMetadata::open(url, *max_connections)
                .await
                .with_context(|| format!("cannot open the metadata database {}", redact(url)))?,
        ),
    })
}

/// Retries of a failed object-store request: enough to ride out a node restart, short
/// enough that a readiness probe answers.
fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 5,
        retry_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

fn client(endpoint: Option<&str>) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(endpoint.is_some_and(|e| e.starts_with("http://")))
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(300))
}

/// Blobs in `store` under `prefix`, downloads redirected to presigned URLs when `redirect`.
fn object<S: ObjectStore + Signer>(
    store: Arc<S>,
    prefix: &str,
    redirect: bool,
) -> Arc<dyn Storage> {
    let o = ObjectStorage::new(store.clone(), prefix);
    Arc::new(if redirect { o.with_redirects(store) } else { o })
}

pub async fn open_storage(cfg: &Config) -> anyhow::Result<Arc<dyn Storage>> {
    let storage: Arc<dyn Storage> = match &cfg.storage {
        StorageConfig::Filesystem => Arc::new(
            FsStorage::open(&cfg.data_dir)
                .await
                .with_context(|| format!("data dir {} is not usable", cfg.data_dir.display()))?,
        ),
        StorageConfig::S3 { s3 } => {
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(&s3.bucket)
                .with_virtual_hosted_style_request(!s3.path_style)
                .with_client_options(client(s3.endpoint.as_deref()))
                .with_retry(retry());
            if !s3.region.is_empty() {
                b = b.with_region(&s3.region);
            }
            if let Some(e) = &s3.endpoint {
                b = b.with_endpoint(e);
            }
            let id = secret(&s3.access_key_id, &s3.access_key_id_file)
                .context("cannot read storage.s3.access_key_id_file")?;
            let key = secret(&s3.secret_access_key, &s3.secret_access_key_file)
                .context("cannot read storage.s3.secret_access_key_file")?;
            if let Some(id) = id {
                b = b.with_access_key_id(id);
            }
            if let Some(key) = key {
                b = b.with_secret_access_key(key);
            }
            let store = Arc::new(b.build().context("invalid storage.s3 settings")?);
            object(store, &s3.prefix, s3.redirect)
        }
        StorageConfig::Gcs { gcs } => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&gcs.bucket)
                .with_client_options(client(None))
                .with_retry(retry());
            if let Some(f) = &gcs.credentials_file {
                b = b.with_service_account_path(f.to_string_lossy());
            }
            let store = Arc::new(b.build().context("invalid storage.gcs settings")?);
            object(store, &gcs.prefix, gcs.redirect)
        }
        StorageConfig::Azure { azure } => {
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_account(&azure.account)
                .with_container_name(&azure.container)
                .with_client_options(client(azure.endpoint.as_deref()))
                .with_retry(retry());
            if let Some(e) = &azure.endpoint {
                b = b.with_endpoint(e.clone());
            }
            if let Some(k) = secret(&azure.access_key, &azure.access_key_file)
                .context("cannot read storage.azure.access_key_file")?
            {
                b = b.with_access_key(k);
            }
            let store = Arc::new(b.build().context("invalid storage.azure settings")?);
            object(store, &azure.prefix, azure.redirect)
        }
    };
    Ok(storage)
}
