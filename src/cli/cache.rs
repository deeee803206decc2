//! `berth cache ...`: the pull-through cache from the command line. Each command opens the
//! data dir's storage and database beside a running server (or without one), as the
//! server's own services do.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use crate::config::Bytes;
use crate::metadata::rfc3339;
use crate::proxy::Proxy;
use crate::server::Services;

use super::{CacheCommand, CommonArgs};

async fn open(common: &CommonArgs) -> anyhow::Result<(Services, Proxy)> {
    let cfg = common.load()?;
    let services = Services::open(&cfg).await?;
    let proxy = services
        .proxy
        .clone()
        .context("no upstreams are configured (proxy.upstreams): there is no cache")?;
    Ok((services, proxy))
}

pub async fn run(command: CacheCommand) -> anyhow::Result<()> {
    match command {
        CacheCommand::Warm {
            file,
            parallel,
            platform,
            common,
        } => warm(&common, &file, parallel, platform.as_deref()).await,
        CacheCommand::Ls { json, common } => ls(&common, json).await,
        CacheCommand::Stats { json, common } => stats(&common, json).await,
        CacheCommand::Refresh { image, common } => {
            let (services, proxy) = open(&common).await?;
            let (repo, reference) = proxy.image(&image).map_err(anyhow::Error::msg)?;
            let (before, after) = proxy.refresh(&repo, &reference).await?;
            services.flush().await;
            match before {
                Some(b) if b == after => println!("{image}: unchanged ({after})"),
                Some(b) => println!("{image}: {b} -> {after}"),
                None => println!("{image}: fetched {after}"),
            }
            Ok(())
        }
        CacheCommand::Purge {
            image,
            all,
            dry_run,
            common,
        } => purge(&common, image.as_deref(), all, dry_run).await,
        CacheCommand::Pin { repo, common } => pin(&common, &repo, true).await,
        CacheCommand::Unpin { repo, common } => pin(&common, &repo, false).await,
    }
}

async fn warm(
    common: &CommonArgs,
    file: &std::path::Path,
    parallel: usize,
    platform: Option<&str>,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let names: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let (services, proxy) = open(common).await?;
    let images = names
        .iter()
        .map(|n| proxy.image(n).map(|(r, rf)| (n.to_string(), r, rf)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let bars = MultiProgress::new();
    let overall = bars.add(ProgressBar::new(images.len() as u64));
    overall.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} images, {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    overall.set_prefix("warming");
    let fetched = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failures = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::new();
    for (name, repo, reference) in images {
        let (proxy, sem, overall, fetched, failures, bars) = (
            proxy.clone(),
            sem.clone(),
            overall.clone(),
            fetched.clone(),
            failures.clone(),
            bars.clone(),
        );
        let platform = platform.map(str::to_string);
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore stays open");
            let bar = bars.add(ProgressBar::new_spinner());
            bar.set_message(name.clone());
            bar.enable_steady_tick(Duration::from_millis(200));
            let f2 = fetched.clone();
            let o2 = overall.clone();
            let r = proxy
                .warm(&repo, &reference, platform.as_deref(), &move |n| {
                    let total = f2.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
                    o2.set_message(format!("{} fetched", Bytes(total).human()));
                })
                .await;
            bar.finish_and_clear();
            overall.inc(1);
            match r {
                Ok(w) => say(
                    &overall,
                    format!(
                        "{name}: {} manifests, {} blobs, {} fetched",
                        w.manifests,
                        w.blobs,
                        Bytes(w.bytes).human()
                    ),
                ),
                Err(e) => {
                    say(&overall, format!("{name}: FAILED: {e:#}"));
                    failures.lock().push(name);
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("a warm task failed")?;
    }
    overall.finish_and_clear();
    services.flush().await;
    let failed = failures.lock().clone();
    println!(
        "warmed {} of {} images, {} fetched from upstreams",
        names.len() - failed.len(),
        names.len(),
        Bytes(fetched.load(std::sync::atomic::Ordering::Relaxed)).human()
    );
    if !failed.is_empty() {
        bail!("{} images failed: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}

/// A line above the progress bars, or plain on stdout when they are hidden (not a terminal).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

async fn ls(common: &CommonArgs, json_out: bool) -> anyhow::Result<()> {
    let (services, proxy) = open(common).await?;
    let images = services
        .registry
        .store()
        .cached_images(&proxy.prefixes())
        .await?;
    if json_out {
        let v: Vec<_> = images
            .iter()
            .map(|i| {
                json!({
                    "repository": i.repo, "digest": i.digest.to_string(),
                    "media_type": i.media_type, "tags": i.tags, "bytes": i.bytes,
                    "cached_at": rfc3339(i.created_at),
                    "pulled_at": i.pulled_at.map(rfc3339), "pinned": i.pinned,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<40} {:<20} {:<19} {:>10} {:<20} PINNED",
        "REPOSITORY", "TAGS", "DIGEST", "SIZE", "LAST PULLED"
    );
    for i in images {
        let d = i.digest.to_string();
        println!(
            "{:<40} {:<20} {:<19} {:>10} {:<20} {}",
            i.repo,
            if i.tags.is_empty() {
                "-".into()
            } else {
                i.tags.join(",")
            },
            &d[..d.len().min(19)],
            Bytes(i.bytes).human(),
            i.pulled_at.map(rfc3339).unwrap_or_else(|| "never".into()),
            if i.pinned { "yes" } else { "" }
        );
    }
    Ok(())
}

async fn stats(common: &CommonArgs, json_out: bool) -> anyhow::Result<()> {
    let (_services, proxy) = open(common).await?;
    let v = serde_json::to_value(proxy.stats().await?)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let max = v["max_bytes"].as_u64().unwrap_or(0);
    println!(
        "cache: {} in {} images (bound: {})",
        Bytes(v["bytes"].as_u64().unwrap_or(0)).human(),
        v["images"],
        if max == 0 {
            "none".into()
        } else {
            Bytes(max).human()
        }
    );
    println!(
        "{:<12} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10}  RATE LIMIT",
        "UPSTREAM", "HITS", "MISSES", "STALE", "ERRORS", "MISMATCH", "FETCHED", "SERVED"
    );
    for u in v["upstreams"].as_array().into_iter().flatten() {
        let n = |k: &str| u[k].as_u64().unwrap_or(0);
        let budget = match &u["rate_limit"] {
            serde_json::Value::Null => "not reported".to_string(),
            b => format!(
                "{}/{} left (as of {})",
                b["remaining"],
                b["limit"],
                b["seen_at"].as_str().unwrap_or("")
            ),
        };
        println!(
            "{:<12} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10}  {budget}",
            u["name"].as_str().unwrap_or(""),
            n("hits"),
            n("misses"),
            n("stale"),
            n("errors"),
            n("digest_mismatches"),
            Bytes(n("bytes_fetched")).human(),
            Bytes(n("bytes_served")).human(),
        );
    }
    Ok(())
}

async fn purge(
    common: &CommonArgs,
    image: Option<&str>,
    all: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    let (_services, proxy) = open(common).await?;
    let selector = match (image, all) {
        (Some(_), true) | (None, false) => bail!("give an IMAGE or --all"),
        (None, true) => None,
        (Some(i), false) => Some(i.to_string()),
    };
    let plan = proxy
        .purge_plan(selector.as_deref())
        .await
        .map_err(anyhow::Error::msg)?;
    for i in &plan {
        println!(
            "{} {}@{} ({})",
            if dry_run { "would purge" } else { "purging" },
            i.repo,
            i.digest,
            Bytes(i.bytes).human()
        );
    }
    if dry_run {
        return Ok(());
    }
    let mut blobs = 0;
    for i in &plan {
        blobs += proxy.evict(&i.repo.parse()?, &i.digest).await?;
    }
    println!("purged {} manifests and {} blobs", plan.len(), blobs);
    Ok(())
}

async fn pin(common: &CommonArgs, repo: &str, pinned: bool) -> anyhow::Result<()> {
    let (services, proxy) = open(common).await?;
    let (local, _) = proxy.image(repo).map_err(anyhow::Error::msg)?;
    let changed = services
        .registry
        .store()
        .set_pin(local.as_str(), pinned)
        .await?;
    let word = if pinned { "pinned" } else { "unpinned" };
    if changed {
        println!("{local} is now {word}");
    } else {
        println!("{local} was already {word}");
    }
    Ok(())
}
