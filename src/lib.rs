//! berth: a container image registry implementing the OCI Distribution Spec v1.1.
//!
//! Layers, bottom to top (dependencies point down only): [`oci`] pure types; [`storage`] and
//! [`metadata`] backends; [`registry`] services, with the pull-through cache ([`proxy`]) and
//! the storage [`lifecycle`] beside them; [`http`] API; [`server`] assembly; the binary.

// The metadata queries in `metadata/sql/` are compiled once per SQL dialect, as modules of
// `metadata::sqlite` and `metadata::postgres`: loading them twice is the design.
#![allow(clippy::duplicate_mod)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod http;
pub mod import;
pub mod lifecycle;
pub mod metadata;
pub mod oci;
pub mod ops;
pub mod proxy;
pub mod registry;
pub mod server;
pub mod storage;
pub mod tls;
