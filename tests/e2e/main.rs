//! End-to-end tests: the real server on `127.0.0.1:0` (in process, or the `berth` binary for
//! the CLI and restart tests), each test with its own temporary data dir and database. One
//! test binary, a module per area, so the suite links once.

mod common;

mod admin_api;
mod api_base_and_names;
mod api_blobs;
mod api_delete;
mod api_discovery;
mod api_manifests;
mod api_uploads;
mod audit;
mod auth_matrix;
mod auth_tokens;
mod cli_access;
mod cli_cache;
mod cli_du;
mod cli_users;
mod gc;
mod immutable;
mod lifecycle_util;
mod ops;
mod policies;
mod postgres_tls;
mod proxy;
mod quota;
mod ratelimit;
mod relay;
mod replicas;
mod restart;
mod retention;
mod s3;
mod scrub;
mod webhooks;
