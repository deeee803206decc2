//! Assembles the registry from configuration and serves it: [`App::open`] builds storage,
//! metadata and services; [`run`] serves a bound listener until `shutdown` resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::jwt::Signer;
use crate::auth::namespaces::Namespaces;
use crate::auth::throttle::Throttle;
use crate::auth::tokens::AccessTokens;
use crate::auth::{Authenticator, Authorizer, Users};
use crate::config::{AuthMode, Config};
use crate::http::auth::Gate;
use crate::http::{self, AppState, HttpSettings, Peer, PlainListener};
use crate::lifecycle::policies::{Policies, PolicyTexts};
use crate::lifecycle::Lifecycle;
use crate::metadata::cached::CachedMetadata;
use crate::metadata::cached_access::CachedAccess;
use crate::metadata::sqlite::SqliteMetadata;
use crate::ops::audit::AuditLog;
use crate::ops::events::{Events, Sink};
use crate::ops::ratelimit::RateLimits;
use crate::ops::webhooks::Webhooks;
use crate::proxy::Proxy;
use crate::registry::{Policy, Registry, Service};
use crate::tls::Tls;

mod backends;
pub use backends::open_storage;

pub struct App {
    pub registry: Arc<Registry>,
    pub proxy: Option<Proxy>,
    pub lifecycle: Lifecycle,
    /// How often retention and GC run on their own (`None`: only on demand).
    schedule: Option<Duration>,
    /// A listener of its own for `/metrics`, when configured.
    metrics_addr: Option<SocketAddr>,
    state: Arc<AppState>,
    meta: Arc<CachedMetadata<SqliteMetadata>>,
    access: Arc<CachedAccess<SqliteMetadata>>,
    /// The audit log's writer and how long its entries are kept.
    audit: Option<(Arc<AuditLog>, Duration)>,
    webhooks: Arc<Webhooks>,
    /// Held for the server's lifetime: one server per data dir.
    _lock: std::fs::File,
}

/// Takes an exclusive advisory lock on `<data_dir>/berth.lock`, so that two servers never
/// share (and reconcile away each other's) uploads. The lock ends with the process.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join("berth.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("data dir {} is not usable", dir.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        anyhow::bail!(
            "data dir {} is in use by another berth server",
            dir.display()
        );
    }
    Ok(file)
}

/// Access control as configured: authentication with throttling, authorization, and in
/// token mode the signing key (generated on first start when absent).
fn gate(cfg: &Config, access: &Arc<CachedAccess<SqliteMetadata>>) -> anyhow::Result<Gate> {
    let signer = match cfg.auth.mode {
        AuthMode::Token => Some(Arc::new(Signer::open(
            &cfg.token_key_path(),
            &cfg.auth.token.issuer,
            &cfg.auth.token.service,
            Duration::from_secs(cfg.auth.token.ttl_secs),
            Duration::from_secs(cfg.auth.token.refresh_ttl_secs),
        )?)),
        _ => None,
    };
    Ok(Gate {
        mode: cfg.auth.mode,
        authn: Arc::new(Authenticator::new(
            access.clone(),
            access.clone(),
            Throttle::new(cfg.throttle_limits()),
        )),
        authz: Authorizer::new(access.clone()).with_upstreams(
            cfg.proxy
                .upstreams
                .iter()
                .map(|u| (u.name.clone(), u.pull_access().into()))
                .collect(),
        ),
        signer,
        realm: cfg.auth.token.realm.clone(),
        tls: cfg.tls_enabled(),
    })
}

/// The registry services over a data dir: storage, metadata, the hosted registry, the
/// cached view of access settings and, with upstreams configured, the pull-through cache.
/// Commands that work beside a running server open these without the data dir's lock (and
/// never reconcile uploads, which are the server's).
pub struct Services {
    pub registry: Arc<Registry>,
    pub proxy: Option<Proxy>,
    pub access: Arc<CachedAccess<SqliteMetadata>>,
    /// Garbage collection, retention and scrub.
    pub lifecycle: Lifecycle,
    /// Immutable tags, retention and quotas in force (config, or set in the database).
    pub policies: Policies,
    /// Where pushes, pulls, deletes, logins and admin changes are reported.
    pub events: Events,
    /// The audit log's writer, when enabled.
    pub audit: Option<Arc<AuditLog>>,
    /// The webhook sink: events reach its outbox in batches, or at [`Services::flush`].
    pub webhooks: Arc<Webhooks>,
    meta: Arc<CachedMetadata<SqliteMetadata>>,
}

impl Services {
    pub async fn open(cfg: &Config) -> anyhow::Result<Services> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
        let storage = backends::open_storage(cfg).await?;
        let sqlite = Arc::new(
            SqliteMetadata::open(&cfg.data_dir.join("berth.db"))
                .await
                .context("cannot open the metadata database")?,
        );
        let meta = Arc::new(CachedMetadata::new(sqlite.clone()));
        let policy = Policy {
            manifest_max_bytes: cfg.manifests.max_bytes,
            delete_enabled: cfg.delete.enabled,
            upload_max_age: cfg.upload_max_idle(),
            rules: Default::default(),
        };
        let content_rules = policy.rules.clone();
        let registry = Arc::new(Registry::new(storage, meta.clone(), policy));
        // Users and access settings are read through a cache that follows the database's
        // auth generation, so changes from the CLI or elsewhere apply within its poll.
        let access = Arc::new(CachedAccess::new(sqlite.clone()));
        access.refresh().await;
        let proxy = if cfg.proxy.upstreams.is_empty() {
            None
        } else {
            let p = Proxy::new(&cfg.proxy, registry.clone(), access.clone())?;
            // A cache serves what it holds even when no upstream answers: nothing here dials.
            if let Err(e) = p.restore().await {
                tracing::warn!(error = %format!("{e:#}"), "cannot read the cache's upstream state");
            }
            Some(p)
        };
        let settings = crate::lifecycle::Settings {
            grace: cfg.gc.grace.0,
            batch: cfg.gc.batch,
            parallel: cfg.gc.parallel,
            max_deletes_per_sec: cfg.gc.max_deletes_per_sec,
            retention: Default::default(),
            upload_max_age: cfg.upload_max_idle(),
        };
        let policies = Policies::load(
            PolicyTexts {
                immutable_tags: cfg.immutable_tags.clone(),
                retention: cfg.retention.clone(),
                quotas: cfg.quotas.clone(),
            },
            sqlite.clone(),
            content_rules,
            settings.retention.clone(),
        )
        .await
        .context("cannot apply the lifecycle policies")?;
        let audit = cfg.audit.enabled.then(|| AuditLog::new(sqlite.clone()));
        let webhooks = Webhooks::new(
            &cfg.webhooks,
            sqlite.clone(),
            cfg.addr.port(),
            cfg.tls_enabled(),
        )?;
        let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
        if let Some(a) = &audit {
            sinks.push(a.clone());
        }
        if !webhooks.endpoints().is_empty() {
            sinks.push(webhooks.clone());
        }
        let events = Events::new(sinks);
        let cache = meta.clone();
        let lifecycle = Lifecycle::new(
            sqlite.clone(),
            registry.clone(),
            settings,
            Arc::new(move || cache.clear()),
        )
        .with_events(events.clone());
        Ok(Services {
            registry,
            proxy,
            access,
            meta,
            lifecycle,
            policies,
            events,
            audit,
            webhooks,
        })
    }

    /// Writes what is kept in memory for batching (pulls, cache counters).
    pub async fn flush(&self) {
        if let Err(e) = self.registry.flush_pulls().await {
            tracing::warn!(error = %e, "cannot record pulls");
        }
        if let Some(p) = &self.proxy {
            p.flush_stats().await;
        }
        if let Some(a) = &self.audit {
            if let Err(e) = a.flush().await {
                tracing::warn!(error = %e, "cannot write the audit log");
            }
        }
        if let Err(e) = self.webhooks.flush().await {
            tracing::warn!(error = %e, "cannot queue webhook deliveries");
        }
    }

    /// Writes the events still queued, then closes the database.
    pub async fn close(&self) {
        if let Some(a) = &self.audit {
            if let Err(e) = a.flush().await {
                tracing::warn!(error = %e, "cannot write the audit log");
            }
        }
        if let Err(e) = self.webhooks.flush().await {
            tracing::warn!(error = %e, "cannot queue webhook deliveries");
        }
        self.meta.inner().close().await;
    }

    /// Storage used per repository, read from the database.
    pub fn usage(&self) -> &dyn crate::metadata::usage::UsageStore {
        self.meta.inner().as_ref()
    }
}

impl App {
    /// Opens storage and metadata under the configured data dir and reconciles any upload
    /// interrupted by a crash.
    pub async fn open(cfg: &Config) -> anyhow::Result<App> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
        let lock = lock_data_dir(&cfg.data_dir)?;
        let Services {
            registry,
            proxy,
            access,
            meta,
            lifecycle,
            policies,
            events,
            audit,
            webhooks,
        } = Services::open(cfg).await?;
        webhooks.check_keys()?;
        let fixed = registry
            .reconcile_uploads()
            .await
            .context("cannot reconcile upload sessions")?;
        if fixed > 0 {
            tracing::info!(fixed, "reconciled upload sessions left by an unclean stop");
        }
        if let Some(p) = &proxy {
            for u in p.upstreams() {
                tracing::info!(upstream = %u.name, url = %u.root(), "mirroring");
            }
        }
        let service: Arc<dyn Service> = match &proxy {
            Some(p) => Arc::new(p.clone()),
            None => registry.clone(),
        };
        let state = Arc::new(AppState {
            registry: service,
            proxy: proxy.clone(),
            settings: HttpSettings {
                chunk_min_length: cfg.uploads.chunk_min_length,
            },
            gate: gate(cfg, &access)?,
            users: Users::new(access.clone()),
            namespaces: Namespaces::new(access.clone(), access.clone()),
            tokens: AccessTokens::new(access.clone()),
            lifecycle: lifecycle.clone(),
            gc_settings: serde_json::json!(cfg.gc),
            policies: policies.clone(),
            ops: http::Ops {
                metrics: Arc::new(crate::ops::metrics::Metrics::new()),
                recording: cfg.metrics.enabled,
                metrics_on_main_port: cfg.metrics.enabled && cfg.metrics.addr.is_none(),
                data_dir: cfg.data_dir.clone(),
                probing: Default::default(),
            },
            events,
            audit: meta.inner().clone(),
            rate_limits: Some(Arc::new(RateLimits::from_config(&cfg.rate_limit)?))
                .filter(|l| l.enabled()),
            webhooks: webhooks.clone(),
        });
        Ok(App {
            registry,
            proxy,
            lifecycle,
            schedule: cfg.gc.schedule.0.map(|s| s.0),
            metrics_addr: cfg.metrics.addr.filter(|_| cfg.metrics.enabled),
            state,
            meta,
            access,
            audit: audit.map(|a| (a, cfg.audit.keep.0)),
            webhooks,
            _lock: lock,
        })
    }

    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }
}

/// How long in-flight requests may run after shutdown begins before they are cut off. A
/// client stalled mid-upload loses only bytes it was never acknowledged for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `app` over plain HTTP on `listener` until `shutdown` resolves, then drains
/// in-flight requests for at most [`SHUTDOWN_GRACE`].
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with(listener, app, None, shutdown).await
}

/// Like [`run`], speaking TLS when `tls` is given (and reloading its certificate).
pub async fn run_with(
    listener: TcpListener,
    app: App,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    // Writers of what requests queue stop only after the last request.
    let writers = CancellationToken::new();
    let mut writer_tasks = Vec::new();
    if let Some((audit, _)) = &app.audit {
        writer_tasks.push(tokio::spawn(audit.clone().run(writers.clone())));
    }
    if !app.webhooks.endpoints().is_empty() {
        writer_tasks.push(tokio::spawn(
            app.webhooks.clone().run_writer(writers.clone()),
        ));
    }
    let mut background = vec![
        tokio::spawn(expire_uploads(app.registry.clone(), cancel.clone())),
        tokio::spawn(app.access.clone().watch(cancel.clone())),
        tokio::spawn(sweep_throttle(app.state.clone(), cancel.clone())),
        tokio::spawn(record_pulls(app.registry.clone(), cancel.clone())),
        tokio::spawn(app.meta.clone().watch(cancel.clone())),
        tokio::spawn(app.state.policies.clone().watch(cancel.clone())),
    ];
    if let Some(every) = app.schedule {
        background.push(tokio::spawn(scheduled_lifecycle(
            app.lifecycle.clone(),
            every,
            cancel.clone(),
        )));
    }
    if let Some(p) = &app.proxy {
        background.push(tokio::spawn(p.clone().run(cancel.clone())));
    }
    if let Some((audit, keep)) = &app.audit {
        background.push(tokio::spawn(audit.clone().prune(*keep, cancel.clone())));
    }
    if !app.webhooks.endpoints().is_empty() {
        background.push(tokio::spawn(
            app.webhooks.clone().run_delivery(cancel.clone()),
        ));
    }
    let stopping = CancellationToken::new();
    let trigger = stopping.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    let router = app.router();
    if let Some(addr) = app.metrics_addr {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        tracing::info!(addr = %l.local_addr()?, "serving /metrics");
        let metrics = http::metrics_router(app.state.clone());
        let stop = stopping.clone();
        background.push(tokio::spawn(async move {
            if let Err(e) = serve_until(PlainListener(l), metrics, stop).await {
                tracing::error!(error = %format!("{e:#}"), "the metrics listener stopped");
            }
        }));
    }
    let served = match tls {
        None => serve_until(PlainListener(listener), router, stopping).await,
        Some(tls) => {
            let tls = Arc::new(tls);
            let watcher = tokio::spawn(tls.clone().watch(cancel.clone()));
            let r = serve_until(tls.listener(listener)?, router, stopping).await;
            cancel.cancel();
            let _ = watcher.await;
            r
        }
    };
    cancel.cancel();
    for task in background {
        let _ = task.await;
    }
    // Requests have finished: write the audit entries and webhook events they queued.
    writers.cancel();
    for task in writer_tasks {
        let _ = task.await;
    }
    app.meta.inner().close().await;
    served
}

async fn serve_until<L>(
    listener: L,
    router: axum::Router,
    stopping: CancellationToken,
) -> anyhow::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    Peer: for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let graceful = stopping.clone();
    let serve = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(async move { graceful.cancelled().await });
    let deadline = async {
        stopping.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = serve => r.context("server failed")?,
        _ = deadline => tracing::warn!(
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "requests still running after the shutdown grace period; closing them"
        ),
    }
    Ok(())
}

/// Writes the pulls noted on the request path, every 5 s and once more at shutdown.
async fn record_pulls(registry: Arc<Registry>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        let stop = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = tick.tick() => false,
        };
        if let Err(e) = registry.flush_pulls().await {
            tracing::warn!(error = %e, "cannot record pulls");
        }
        if stop {
            return;
        }
    }
}

/// Runs retention (when rules exist) and then GC every `every`, skipping a round while
/// another process runs them. The first round comes one period after start.
async fn scheduled_lifecycle(lifecycle: Lifecycle, every: Duration, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let round = async {
            if !lifecycle.settings().retention.get().is_empty() {
                lifecycle.retention(false).await?;
            }
            match lifecycle.gc_if_free(Default::default()).await? {
                Some(_) => {}
                None => tracing::info!("scheduled GC skipped: another process is running one"),
            }
            anyhow::Ok(())
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = round => if let Err(e) = r {
                tracing::error!(error = %format!("{e:#}"), "scheduled retention or GC failed");
            },
        }
    }
}

/// Logs login blocks that ended and forgets quiet throttle entries and full rate-limit
/// buckets.
async fn sweep_throttle(state: Arc<AppState>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                state.gate.authn.sweep_throttle();
                if let Some(l) = &state.rate_limits {
                    l.sweep();
                }
            }
        }
    }
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
