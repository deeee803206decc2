//! The one place that builds filesystem paths for the embedded storage.
//!
//! ```text
//! <root>/
//!   blobs/<algorithm>/<first two hex>/<hex>   committed blobs, immutable, named by digest
//!   uploads/<uuid>                            in-progress upload bytes
//!   tmp/<uuid>                                whole-blob writes before their rename
//!   quarantine/<algorithm>/<hex>              blobs scrub found corrupt, kept for inspection
//! ```
//! Everything under `blobs/` appeared there by an atomic rename of a file already fsynced.

use std::path::{Path, PathBuf};

use crate::oci::{Digest, UploadId};

#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn blob(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs_dir()
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    pub fn upload(&self, id: &UploadId) -> PathBuf {
        self.uploads_dir().join(id.as_str())
    }

    pub fn quarantined(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("quarantine")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn tmp_file(&self) -> PathBuf {
        self.tmp_dir().join(UploadId::new_random().as_str())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_fan_out_by_prefix() {
        let l = Layout::new("/d");
        let d: Digest = format!("sha256:ab{}", "0".repeat(62)).parse().unwrap();
        assert_eq!(
            l.blob(&d),
            PathBuf::from(format!("/d/blobs/sha256/ab/ab{}", "0".repeat(62)))
        );
    }
}
