//! What registry operations can fail with, in the spec's terms. The HTTP layer maps each
//! variant to its error code and status.

use std::io;
use std::time::Duration;

use crate::metadata::MetadataError;
use crate::oci::{Digest, RepoName};
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to repository")]
    BlobUnknown(Digest),
    #[error("upload session unknown")]
    UploadUnknown,
    #[error("{0}")]
    UploadInvalid(String),
    /// A chunk did not start where the upload ends; `size` is the acknowledged length.
    #[error("chunk out of order: the upload holds {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    DigestInvalid(String),
    #[error("{0}")]
    SizeInvalid(String),
    #[error("{0}")]
    ManifestUnknown(String),
    #[error("{0}")]
    ManifestInvalid(String),
    #[error("manifest is larger than the {limit} byte limit")]
    ManifestTooLarge { limit: u64 },
    #[error("manifest references content unknown to the repository")]
    ManifestBlobUnknown(Vec<Digest>),
    #[error("repository unknown")]
    NameUnknown(RepoName),
    #[error("{0}")]
    Unsupported(String),
    /// A `Range` outside a blob of `size` bytes.
    #[error("requested range not satisfiable")]
    RangeUnsatisfiable { size: u64 },
    /// The operation is refused whoever asks (a push to a proxied repository).
    #[error("{0}")]
    Denied(String),
    /// An upstream registry rate-limited berth and nothing usable is cached.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: Option<Duration>,
    },
    /// An upstream registry cannot be reached and nothing usable is cached.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The request body broke off: nothing from it was acknowledged.
    #[error("request body failed: {0}")]
    BodyFailed(io::Error),
    #[error(transparent)]
    Storage(StorageError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

impl From<StorageError> for RegistryError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Source(e) => RegistryError::BodyFailed(e),
            other => RegistryError::Storage(other),
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
