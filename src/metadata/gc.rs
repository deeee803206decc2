//! Garbage collection's queries. A blob goes when no manifest in any repository references
//! it, it is no manifest itself, and it and every link to it have been idle past the cutoff
//! (idle: since it was stored or linked, or since it lost its last reference). It goes in two
//! transactions, each under the write lock every link takes:
//!
//! 1. [`GcStore::gc_claim`] selects such blobs, deletes their links and rows and records
//!    them in `gc_pending`. From then on no repository serves them, and a push that needs
//!    one uploads it again.
//! 2. [`GcStore::gc_finish`] deletes the bytes of pending blobs that still have no row, and
//!    forgets the pending entries. A blob stored and linked again between the two (its row
//!    is back) keeps its bytes.
//!
//! A crash between them leaves pending entries, which the next run finishes. See
//! ARCHITECTURE.md, "Garbage collection".

use async_trait::async_trait;

/// Deletes many blobs' bytes (`parallel` requests at a time): one outcome per digest, in
/// order. Called by [`GcStore::gc_finish`] while no link to them can be made.
pub type DeleteBatch<'a> = &'a (dyn Fn(Vec<Digest>, usize) -> futures::future::BoxFuture<'static, Vec<std::io::Result<()>>>
         + Send
         + Sync);
use super::Result;
use crate::oci::Digest;

/// A blob GC removes (or would remove).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoomedBlob {
    pub digest: Digest,
    pub size: u64,
    /// The blob held a manifest's bytes.
    pub manifest: bool,
}

/// What a dry run predicts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcPlan {
    pub blobs: Vec<DoomedBlob>,
    /// Links to blobs that stay (another repository references them).
    pub links: u64,
}

/// Where a batched scan stopped.
pub type Cursor = Option<String>;

#[async_trait]
pub trait GcStore: Send + Sync + 'static {
    /// What a run with this cutoff (seconds since the epoch) would remove now.
    async fn gc_plan(&self, cutoff: i64) -> Result<GcPlan>;
    /// Claims up to `limit` collectable blobs after `after` (in digest order): their links
    /// and rows go and they become pending. Returns them and where the scan stopped (`None`
    /// when it reached the end).
    async fn gc_claim(
        &self,
        cutoff: i64,
        after: &Cursor,
        limit: u32,
    ) -> Result<(Vec<DoomedBlob>, Cursor)>;
    /// Blobs claimed but whose bytes are not yet deleted (left by a crash, or just claimed).
    async fn gc_pending(&self, limit: u32) -> Result<Vec<DoomedBlob>>;
    /// Deletes the bytes of `batch` (those still without a row) in one call to `delete`
    /// (`parallel` requests at a time), under the write lock, and forgets them. Returns the
    /// ones whose bytes went, and how many pending entries were settled (deleted, or stored
    /// again meanwhile and kept).
    async fn gc_finish(
        &self,
        batch: &[DoomedBlob],
        parallel: usize,
        delete: DeleteBatch<'_>,
    ) -> Result<(Vec<DoomedBlob>, usize)>;
    /// Removes up to `limit` links idle past the cutoff to blobs their repository does not
    /// reference (the blob stays: something else references it). Returns how many went and
    /// where the scan stopped.
    async fn gc_drop_links(
        &self,
        cutoff: i64,
        after: &Option<(i64, String)>,
        limit: u32,
    ) -> Result<(u64, Option<(i64, String)>)>;
    /// Every digest with a blob row or a pending entry.
    async fn known_blobs(&self) -> Result<std::collections::HashSet<String>>;
    /// Makes stored files without a row pending (crash leftovers), unless a row appeared.
    async fn gc_adopt(&self, files: &[(Digest, u64)]) -> Result<u64>;
}
