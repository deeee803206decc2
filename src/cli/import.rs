//! `berth import-distribution DIR`: a Distribution registry's filesystem layout imported into
//! berth's storage and database (works while the server runs; safe to run again).

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use anyhow::Context;

use crate::config::{Bytes, Config, DatabaseConfig};
use crate::import::distribution::{self, Layout};
use crate::server::Services;

use super::CommonArgs;

pub async fn distribution(common: &CommonArgs, dir: &Path, json: bool) -> anyhow::Result<()> {
    let cfg = common.load()?;
    let layout = Layout::open(dir)?;
    let repos = layout.repositories()?;
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(layout.total_bytes(&repos))
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} importing {bytes}/{total_bytes} ({binary_bytes_per_sec}, {eta} left)",
        )
        .expect("valid template"),
    );
    let services = Services::open(&cfg).await?;
    let report = distribution::import(&layout, &services.registry, &|n| bar.inc(n)).await;
    services.close().await;
    bar.finish_and_clear();
    let r = report?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for s in &r.skipped {
            println!("skipped {s}");
        }
        println!(
            "imported {} repositories: {} manifests, {} tags, {} blobs copied ({}), {} linked",
            r.repositories,
            r.manifests,
            r.tags,
            r.blobs_copied,
            Bytes(r.bytes_copied).human(),
            r.blobs_linked
        );
    }
    anyhow::ensure!(
        r.skipped.is_empty() || r.manifests > 0,
        "nothing could be imported"
    );
    Ok(())
}

/// What `berth migrate` did.
#[derive(serde::Serialize)]
struct Migrated {
    /// Blobs copied (zeros when the storage stays).
    #[serde(flatten)]
    blobs: crate::import::migrate::Report,
    /// Rows copied per table, when the metadata moved.
    metadata: Option<crate::metadata::copy::CopyReport>,
    /// The metadata is to move but the server still runs: run again once it is stopped.
    metadata_pending: bool,
}

/// `berth migrate --to FILE`: copies every blob from the configured storage to the storage
/// FILE configures and, when FILE names a PostgreSQL database and the server is stopped, the
/// embedded database's content into it.
pub async fn migrate(
    common: &CommonArgs,
    to: &Path,
    parallel: usize,
    json: bool,
) -> anyhow::Result<()> {
    let cfg = common.load()?;
    let target = common.load_other(to)?;
    let move_storage = target.storage != cfg.storage;
    let move_db = target.database != cfg.database;
    anyhow::ensure!(
        move_storage || move_db,
        "{} configures the storage and database already in use",
        to.display()
    );
    if move_db {
        anyhow::ensure!(
            cfg.database == DatabaseConfig::Embedded && target.database.is_shared(),
            "berth migrate moves metadata from the embedded database to PostgreSQL only"
        );
    } else {
        anyhow::ensure!(
            target.data_dir == cfg.data_dir,
            "{} has data_dir {}, not {}: the database stays where it is, so both must use the same data dir",
            to.display(),
            target.data_dir.display(),
            cfg.data_dir.display()
        );
    }
    let blobs = if move_storage {
        copy_storage(&cfg, &target, parallel, json).await?
    } else {
        Default::default()
    };
    let mut out = Migrated {
        blobs,
        metadata: None,
        metadata_pending: false,
    };
    if move_db {
        // The server holds the data dir's lock while it runs; held here, it cannot start
        // while the metadata is copied.
        match crate::server::lock_data_dir(&cfg.data_dir) {
            Err(_) => out.metadata_pending = true,
            Ok(_lock) => out.metadata = Some(copy_metadata(&cfg, &target).await?),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let r = &out.blobs;
        for f in &r.failed {
            println!("not copied {f}");
        }
        if move_storage {
            println!(
                "copied {} blobs ({}); {} were there already; {} failed",
                r.blobs_copied,
                Bytes(r.bytes_copied).human(),
                r.blobs_present,
                r.failed.len()
            );
        }
        if let Some(m) = &out.metadata {
            let rows: u64 = m.rows.iter().map(|(_, n)| n).sum();
            println!(
                "copied the metadata: {rows} rows in {} tables",
                m.rows.len()
            );
        }
        if out.metadata_pending {
            println!(
                "the server is running: stop it and run berth migrate again to move the metadata"
            );
        }
    }
    anyhow::ensure!(
        out.blobs.failed.is_empty(),
        "{} blobs were not copied",
        out.blobs.failed.len()
    );
    Ok(())
}

/// Copies the blobs `cfg`'s storage holds into `target`'s.
async fn copy_storage(
    cfg: &Config,
    target: &Config,
    parallel: usize,
    json: bool,
) -> anyhow::Result<crate::import::migrate::Report> {
    let from = crate::server::open_storage(cfg).await?;
    let dest = crate::server::open_storage(target).await?;
    dest.probe()
        .await
        .map_err(|e| anyhow::anyhow!("the target storage does not take writes: {e}"))?;
    let blobs: Vec<_> = from.list().await?.into_iter().map(|(d, _)| d).collect();
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(blobs.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} copying blobs {pos}/{len} ({per_sec}, {eta} left)")
            .expect("valid template"),
    );
    let r = crate::import::migrate::copy_blobs(&*from, &*dest, blobs, parallel, &|_| bar.inc(1))
        .await?;
    bar.finish_and_clear();
    Ok(r)
}

/// Copies the embedded database into the (empty) PostgreSQL database `target` names, and
/// the data dir's token-signing key with it, so tokens already issued stay valid.
async fn copy_metadata(
    cfg: &Config,
    target: &Config,
) -> anyhow::Result<crate::metadata::copy::CopyReport> {
    use crate::metadata::lifecycle::LifecycleStore;
    let DatabaseConfig::Postgres {
        url,
        max_connections,
    } = &target.database
    else {
        unreachable!("checked by the caller");
    };
    let from = crate::metadata::sqlite::SqliteMetadata::open(&cfg.data_dir.join("berth.db"))
        .await
        .context("cannot open the embedded database")?;
    let to = crate::metadata::postgres::PgMetadata::open(url, *max_connections)
        .await
        .with_context(|| format!("cannot open {}", crate::config::database::redact(url)))?;
    let report = crate::metadata::copy::sqlite_to_postgres(&from, &to)
        .await
        .context("cannot copy the metadata")?;
    let key = cfg.token_key_path();
    if target.auth.token.key.is_none() && key.exists() {
        let pem = std::fs::read_to_string(&key)
            .with_context(|| format!("cannot read {}", key.display()))?;
        to.state_or_init(crate::server::SHARED_TOKEN_KEY, &pem)
            .await?;
    }
    from.close().await;
    to.close().await;
    Ok(report)
}
