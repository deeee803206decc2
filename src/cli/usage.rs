//! `berth du [NAMESPACE]`: storage used per repository, read from the data dir's database
//! beside a running server (or without one).

use crate::config::Bytes;
use crate::server::Services;

use super::CommonArgs;

pub async fn du(common: &CommonArgs, namespace: Option<&str>, json: bool) -> anyhow::Result<()> {
    let cfg = common.load()?;
    let services = Services::open(&cfg).await?;
    let usage = services.usage().usage(namespace).await?;
    services.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&usage)?);
        return Ok(());
    }
    println!(
        "{:<48} {:>12} {:>12} {:>12}",
        "REPOSITORY", "TOTAL", "UNIQUE", "SHARED"
    );
    for r in &usage.repositories {
        println!(
            "{:<48} {:>12} {:>12} {:>12}",
            r.repository,
            Bytes(r.total).human(),
            Bytes(r.unique).human(),
            Bytes(r.shared).human()
        );
    }
    println!(
        "{} repositories, {} stored{}",
        usage.repositories.len(),
        Bytes(usage.total).human(),
        namespace
            .map(|n| format!(" in namespace {n}"))
            .unwrap_or_default()
    );
    Ok(())
}
