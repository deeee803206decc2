//! Bringing content into berth: a Distribution (`registry:2`) filesystem layout imported
//! through the registry services, and berth's own blobs copied to another storage backend;
//! every byte verified against its digest as it is copied.

pub mod distribution;
pub mod migrate;
