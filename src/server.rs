//! Assembles the registry from configuration and serves it: [`App::open`] builds storage,
//! metadata and services; [`run`] serves a bound listener until `shutdown` resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, StorageConfig};
use crate::http::{self, AppState, HttpSettings};
use crate::metadata::cached::CachedMetadata;
use crate::metadata::sqlite::SqliteMetadata;
use crate::registry::{Policy, Registry};
use crate::storage::fs::FsStorage;
use crate::storage::Storage;

pub struct App {
    pub registry: Arc<Registry>,
    state: Arc<AppState>,
    meta: Arc<CachedMetadata<SqliteMetadata>>,
}

impl App {
    /// Opens storage and metadata under the configured data dir and reconciles any upload
    /// interrupted by a crash.
    pub async fn open(cfg: &Config) -> anyhow::Result<App> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
        let storage: Arc<dyn Storage> = match cfg.storage {
            StorageConfig::Filesystem => {
                Arc::new(FsStorage::open(&cfg.data_dir).await.with_context(|| {
                    format!("data dir {} is not usable", cfg.data_dir.display())
                })?)
            }
        };
        let meta = Arc::new(CachedMetadata::new(
            SqliteMetadata::open(&cfg.data_dir.join("berth.db"))
                .await
                .context("cannot open the metadata database")?,
        ));
        let policy = Policy {
            manifest_max_bytes: cfg.manifests.max_bytes,
            delete_enabled: cfg.delete.enabled,
            upload_max_age: cfg.upload_max_idle(),
        };
        let registry = Arc::new(Registry::new(storage, meta.clone(), policy));
        let fixed = registry
            .reconcile_uploads()
            .await
            .context("cannot reconcile upload sessions")?;
        if fixed > 0 {
            tracing::info!(fixed, "reconciled upload sessions left by an unclean stop");
        }
        let state = Arc::new(AppState {
            registry: registry.clone(),
            settings: HttpSettings {
                chunk_min_length: cfg.uploads.chunk_min_length,
            },
        });
        Ok(App {
            registry,
            state,
            meta,
        })
    }

    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let sweeper = tokio::spawn(expire_uploads(app.registry.clone(), cancel.clone()));
    let router = app.router();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("server failed")?;
    cancel.cancel();
    let _ = sweeper.await;
    app.meta.inner().close().await;
    Ok(())
}

/// Periodically removes upload sessions idle past the configured age.
async fn expire_uploads(registry: Arc<Registry>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => match registry.expire_uploads().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "expired idle upload sessions"),
                Err(e) => tracing::warn!(error = %e, "upload expiry failed"),
            },
        }
    }
}
