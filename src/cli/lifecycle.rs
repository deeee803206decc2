//! `berth gc`, `berth retention run` and `berth scrub`: the storage lifecycle on demand,
//! beside a running server (through the database, waiting for a run in progress) or without
//! one.

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{Bytes, Span};
use crate::lifecycle::{GcOptions, ScrubOptions};
use crate::server::Services;

use super::CommonArgs;

/// How much lower than the server a maintenance command runs (nice, 0 to 19).
const MAINTENANCE_NICE: i32 = 10;

/// Lowers this process's CPU priority, so a server sharing the machine answers its requests
/// first and GC, retention or scrub take the CPU it leaves. Called before the runtime starts:
/// every thread made afterwards (SQLite's, the blocking pool's) inherits it.
pub fn lower_priority() {
    // SAFETY: setpriority changes only this thread's scheduling priority; no memory is
    // passed to the kernel.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, MAINTENANCE_NICE) };
    if rc != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "cannot lower the maintenance command's priority"
        );
    }
}

pub async fn gc(
    common: &CommonArgs,
    dry_run: bool,
    grace: Option<Span>,
    json: bool,
) -> anyhow::Result<()> {
    let cfg = common.load()?;
    let services = Services::open(&cfg).await?;
    let report = services
        .lifecycle
        .gc(GcOptions {
            dry_run,
            grace: grace.map(|g| g.0),
        })
        .await;
    services.close().await;
    let r = report?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    if dry_run {
        for i in &r.items {
            println!(
                "would remove {} {}{}",
                i.digest,
                Bytes(i.size).human(),
                if i.manifest { " (manifest)" } else { "" }
            );
        }
    }
    println!(
        "{} {} blobs ({} manifests, {} orphan files), {}; {} idle links, {} abandoned uploads; grace {}; {:.2} s",
        if dry_run { "would remove" } else { "removed" },
        r.blobs + r.orphan_files,
        r.manifests,
        r.orphan_files,
        Bytes(r.bytes).human(),
        r.links,
        r.uploads,
        Span(std::time::Duration::from_secs(r.grace_secs)),
        r.seconds
    );
    Ok(())
}

pub async fn retention(common: &CommonArgs, dry_run: bool, json: bool) -> anyhow::Result<()> {
    let cfg = common.load()?;
    let services = Services::open(&cfg).await?;
    let report = services.lifecycle.retention(dry_run).await;
    services.close().await;
    let r = report?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    if services.policies.texts().retention.is_empty() {
        println!("no retention rules are configured");
        return Ok(());
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    for t in &r.tags {
        println!(
            "{verb} tag {}:{} {} ({})",
            t.repository, t.tag, t.digest, t.reason
        );
    }
    for m in &r.manifests {
        println!(
            "{verb} manifest {}@{} ({})",
            m.repository, m.digest, m.reason
        );
    }
    println!(
        "{verb} {} tags and {} manifests{}",
        r.tags.len(),
        r.manifests.len(),
        if dry_run {
            ""
        } else {
            "; run berth gc to reclaim their blobs after the grace period"
        }
    );
    Ok(())
}

/// Returns whether every blob was sound.
pub async fn scrub(
    common: &CommonArgs,
    rate_mb: Option<f64>,
    restart: bool,
    json: bool,
) -> anyhow::Result<bool> {
    let cfg = common.load()?;
    let services = Services::open(&cfg).await?;
    let bar = if json {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "scrub {bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        );
        b
    };
    let progress = |p: crate::lifecycle::scrub::ScrubProgress| {
        bar.set_length(p.total_bytes);
        bar.set_position(p.done_bytes);
    };
    let report = services
        .lifecycle
        .scrub(
            ScrubOptions {
                rate: rate_mb.map(|r| (r * 1_000_000.0) as u64),
                restart,
            },
            &progress,
        )
        .await;
    bar.finish_and_clear();
    services.close().await;
    let r = report?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(r.clean());
    }
    if let Some(after) = &r.resumed_after {
        println!("resumed an interrupted scrub after {after}");
    }
    for d in &r.corrupt {
        println!("corrupt {d} (quarantined)");
    }
    for d in &r.missing {
        println!("missing {d} (quarantined)");
    }
    println!(
        "checked {} blobs, {} in {:.1} s: {} corrupt, {} missing",
        r.checked,
        Bytes(r.bytes).human(),
        r.seconds,
        r.corrupt.len(),
        r.missing.len()
    );
    Ok(r.clean())
}
