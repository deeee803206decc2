//! The process's own figures for `/metrics` (`process_*`, as every Prometheus client
//! library names them) and the data dir's filesystem, read from `/proc` and `statvfs`.

use std::path::Path;

/// What the process uses, at one moment.
#[derive(Clone, Debug, Default)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub threads: u64,
    pub start_time_seconds: f64,
}

/// Reads `/proc/self`; `None` where there is no procfs.
pub fn process() -> Option<ProcessStats> {
    use procfs::process::{LimitValue, Process};
    let me = Process::myself().ok()?;
    let stat = me.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    let boot = procfs::boot_time_secs().ok()? as f64;
    let max_fds = match me.limits().ok()?.max_open_files.soft_limit {
        LimitValue::Value(v) => v,
        LimitValue::Unlimited => u64::MAX,
    };
    Some(ProcessStats {
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
        resident_bytes: stat.rss * procfs::page_size(),
        virtual_bytes: stat.vsize,
        open_fds: me.fd_count().ok()? as u64,
        max_fds,
        threads: stat.num_threads.max(0) as u64,
        start_time_seconds: boot + stat.starttime as f64 / ticks,
    })
}

/// The size and free space of the filesystem holding `dir`, in bytes.
pub fn filesystem(dir: &Path) -> Option<(u64, u64)> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some((s.f_blocks * s.f_frsize, s.f_bavail * s.f_frsize))
}
