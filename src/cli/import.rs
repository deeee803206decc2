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
