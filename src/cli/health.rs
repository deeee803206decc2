//! `berth health`: asks a running server's `/readyz`, for scripts and container
//! `HEALTHCHECK`s. Exits 0 when it is ready, 1 when it answers not ready or does not answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::config::Config;

/// The URL of the server's `/readyz` from its configuration: its address (a wildcard one
/// asked on loopback), over HTTPS when it serves TLS.
pub fn readyz_url(cfg: &Config) -> String {
    let mut addr: SocketAddr = cfg.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let scheme = if cfg.tls_enabled() { "https" } else { "http" };
    format!("{scheme}://{addr}/readyz")
}

/// Returns whether the server is ready, printing its answer.
pub async fn health(cfg: &Config, url: Option<String>, timeout: Duration) -> anyhow::Result<bool> {
    let url = url.unwrap_or_else(|| readyz_url(cfg));
    // A local check of liveness, not of the certificate: the server's own certificate
    // may be for a name other than the loopback address.
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .build()?;
    match client.get(&url).send().await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            if ok {
                println!("{body}");
            } else {
                eprintln!("berth is not ready ({status} from {url}): {body}");
            }
            Ok(ok)
        }
        Err(e) => {
            eprintln!("berth does not answer at {url}: {e}");
            Ok(false)
        }
    }
}
