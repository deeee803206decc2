//! Pure OCI types: digests, names, references, media types, manifest parsing and HTTP range
//! grammar. Nothing here does I/O; every layer above builds on these validated values.

pub mod digest;
pub mod manifest;
pub mod media;
pub mod name;
pub mod range;
pub mod size;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use manifest::{Descriptor, ManifestError, ParsedManifest};
pub use name::{NameError, Reference, RepoName, Tag, UploadId};
