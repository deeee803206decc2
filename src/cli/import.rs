//! `berth import-distribution DIR`: a Distribution registry's filesystem layout imported into
//! berth's storage and database (works while the server runs; safe to run again).

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Bytes;
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

/// `berth migrate --to FILE`: copies every blob from the configured storage to the storage
/// FILE configures. The database is not moved: FILE must use the same data dir.
pub async fn migrate(
    common: &CommonArgs,
    to: &Path,
    parallel: usize,
    json: bool,
) -> anyhow::Result<()> {
    let cfg = common.load()?;
    let target = common.load_other(to)?;
    anyhow::ensure!(
        target.storage != cfg.storage,
        "{} configures the storage already in use",
        to.display()
    );
    anyhow::ensure!(
        target.data_dir == cfg.data_dir,
        "{} has data_dir {}, not {}: the database stays where it is, so both must use the same data dir",
        to.display(),
        target.data_dir.display(),
        cfg.data_dir.display()
    );
    let from = crate::server::open_storage(&cfg).await?;
    let dest = crate::server::open_storage(&target).await?;
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
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for f in &r.failed {
            println!("not copied {f}");
        }
        println!(
            "copied {} blobs ({}); {} were there already; {} failed",
            r.blobs_copied,
            Bytes(r.bytes_copied).human(),
            r.blobs_present,
            r.failed.len()
        );
    }
    anyhow::ensure!(
        r.failed.is_empty(),
        "{} blobs were not copied",
        r.failed.len()
    );
    Ok(())
}
