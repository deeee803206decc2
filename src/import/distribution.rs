//! Reads a Distribution (`registry:2`) filesystem layout and imports its repositories into
//! berth through the registry services, so every blob is hashed as it is copied and every
//! manifest is checked as if it were pushed.
//!
//! ```text
//! <root>/docker/registry/v2/
//!   blobs/<alg>/<first two hex>/<hex>/data                 the bytes of every blob
//!   repositories/<name>/_layers/<alg>/<hex>/link           blobs linked into the repository
//!   repositories/<name>/_manifests/revisions/<alg>/<hex>/link   its manifests
//!   repositories/<name>/_manifests/tags/<tag>/current/link      what each tag points at
//! ```
//! A link file holds a digest. Nothing under the layout is written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Serialize;
use tokio_util::io::ReaderStream;

use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::registry::Registry;

/// Distribution's storage root (`rootdirectory`), or its `docker/registry/v2` directory.
pub struct Layout {
    v2: PathBuf,
}

/// What an import did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub repositories: usize,
    /// Blobs copied (hashed and stored), and their bytes.
    pub blobs_copied: usize,
    pub bytes_copied: u64,
    /// Blobs linked without copying: already stored, by this import or before it.
    pub blobs_linked: usize,
    pub manifests: usize,
    pub tags: usize,
    /// What could not be imported, and why, one line each.
    pub skipped: Vec<String>,
}

/// Progress, for a bar: bytes copied so far.
pub type Progress<'a> = &'a (dyn Fn(u64) + Send + Sync);

impl Layout {
    pub fn open(dir: &Path) -> anyhow::Result<Layout> {
        let nested = dir.join("docker/registry/v2");
        let v2 = if nested.is_dir() {
            nested
        } else {
            dir.to_path_buf()
        };
        anyhow::ensure!(
            v2.join("repositories").is_dir() || v2.join("blobs").is_dir(),
            "{} holds no Distribution layout (no docker/registry/v2/repositories)",
            dir.display()
        );
        Ok(Layout { v2 })
    }

    /// Every repository, by name, in name order. A directory is a repository when it holds
    /// `_manifests` or `_layers`; repositories may nest (`a` and `a/b`).
    pub fn repositories(&self) -> anyhow::Result<Vec<RepoName>> {
        let root = self.v2.join("repositories");
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut is_repo = false;
            for e in entries {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name == "_manifests" || name == "_layers" {
                    is_repo = true;
                } else if !name.starts_with('_') && e.file_type()?.is_dir() {
                    stack.push(e.path());
                }
            }
            if is_repo {
                let rel = dir.strip_prefix(&root)?.to_string_lossy().into_owned();
                match rel.parse() {
                    Ok(r) => out.push(r),
                    Err(e) => tracing::warn!(repository = rel, error = %e, "not a valid name"),
                }
            }
        }
        out.sort_by(|a: &RepoName, b| a.as_str().cmp(b.as_str()));
        Ok(out)
    }

    fn repo_dir(&self, repo: &RepoName) -> PathBuf {
        self.v2.join("repositories").join(repo.as_str())
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.v2
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The digests linked under `<repo>/<sub>/<alg>/<hex>/link`, each checked against its
    /// directory's name.
    fn links(&self, repo: &RepoName, sub: &str) -> anyhow::Result<Vec<Digest>> {
        let base = self.repo_dir(repo).join(sub);
        let mut out = Vec::new();
        let Ok(algs) = std::fs::read_dir(&base) else {
            return Ok(out);
        };
        for alg in algs {
            let alg = alg?;
            for entry in std::fs::read_dir(alg.path())? {
                let entry = entry?;
                let Some(d) = read_link(&entry.path().join("link")) else {
                    continue;
                };
                let named = format!(
                    "{}:{}",
                    alg.file_name().to_string_lossy(),
                    entry.file_name().to_string_lossy()
                );
                if d.to_string() == named {
                    out.push(d);
                }
            }
        }
        out.sort_by_key(|d| d.to_string());
        Ok(out)
    }

    /// Each tag with the manifest it points at.
    fn tags(&self, repo: &RepoName) -> anyhow::Result<Vec<(Tag, Digest)>> {
        let base = self.repo_dir(repo).join("_manifests/tags");
        let mut out = Vec::new();
        let Ok(tags) = std::fs::read_dir(&base) else {
            return Ok(out);
        };
        for t in tags {
            let t = t?;
            let name = t.file_name().to_string_lossy().into_owned();
            let (Ok(tag), Some(d)) = (
                name.parse::<Tag>(),
                read_link(&t.path().join("current/link")),
            ) else {
                continue;
            };
            out.push((tag, d));
        }
        out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        Ok(out)
    }

    /// Total bytes of the blobs every repository links, each counted once, for a progress
    /// bar's length.
    pub fn total_bytes(&self, repos: &[RepoName]) -> u64 {
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        for r in repos {
            for sub in ["_layers", "_manifests/revisions"] {
                for d in self.links(r, sub).unwrap_or_default() {
                    if seen.insert(d.clone()) {
                        total += std::fs::metadata(self.blob_path(&d)).map_or(0, |m| m.len());
                    }
                }
            }
        }
        total
    }
}

fn read_link(path: &Path) -> Option<Digest> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The media type a stored manifest declares, or the one its shape implies; `None` for a
/// schema 1 manifest, which berth does not serve.
fn media_type(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
        return None;
    }
    if let Some(m) = v.get("mediaType").and_then(|m| m.as_str()) {
        return Some(m.to_string());
    }
    Some(if v.get("manifests").is_some() {
        crate::oci::media::OCI_INDEX.to_string()
    } else {
        crate::oci::media::OCI_MANIFEST.to_string()
    })
}

fn is_index(media_type: &str) -> bool {
    media_type.contains("index") || media_type.contains("manifest.list")
}

/// Imports every repository of `layout` into `registry`. Safe to run again: what is there
/// already is linked, not copied, and tags are set to what the layout says.
pub async fn import(
    layout: &Layout,
    registry: &Registry,
    progress: Progress<'_>,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    // Where a blob was first linked in this run, to link it elsewhere without copying.
    let mut holder: HashMap<Digest, RepoName> = HashMap::new();
    for repo in layout.repositories()? {
        report.repositories += 1;
        for d in layout.links(&repo, "_layers")? {
            import_blob(
                layout,
                registry,
                &repo,
                &d,
                &mut holder,
                &mut report,
                progress,
            )
            .await?;
        }
        let mut manifests = Vec::new();
        for d in layout.links(&repo, "_manifests/revisions")? {
            let path = layout.blob_path(&d);
            let Ok(bytes) = tokio::fs::read(&path).await else {
                report
                    .skipped
                    .push(format!("{repo}@{d}: manifest bytes missing"));
                continue;
            };
            match media_type(&bytes) {
                Some(m) => manifests.push((d, m, Bytes::from(bytes))),
                None => report
                    .skipped
                    .push(format!("{repo}@{d}: schema 1 manifests are not supported")),
            }
        }
        // Images before the indexes that list them; referrers need nothing before them.
        manifests.sort_by_key(|(_, m, _)| is_index(m));
        let mut imported = HashMap::new();
        for (d, m, bytes) in manifests {
            match registry
                .put_manifest(
                    &repo,
                    &Reference::Digest(d.clone()),
                    Some(&m),
                    bytes.clone(),
                    vec![],
                )
                .await
            {
                Ok(_) => {
                    report.manifests += 1;
                    imported.insert(d, (m, bytes));
                }
                Err(e) => report.skipped.push(format!("{repo}@{d}: {e}")),
            }
        }
        for (tag, d) in layout.tags(&repo)? {
            let Some((m, bytes)) = imported.get(&d) else {
                report
                    .skipped
                    .push(format!("{repo}:{tag}: its manifest {d} was not imported"));
                continue;
            };
            let reference = Reference::Tag(tag.clone());
            match registry
                .put_manifest(&repo, &reference, Some(m), bytes.clone(), vec![])
                .await
            {
                Ok(_) => report.tags += 1,
                Err(e) => report.skipped.push(format!("{repo}:{tag}: {e}")),
            }
        }
    }
    Ok(report)
}

async fn import_blob(
    layout: &Layout,
    registry: &Registry,
    repo: &RepoName,
    d: &Digest,
    holder: &mut HashMap<Digest, RepoName>,
    report: &mut Report,
    progress: Progress<'_>,
) -> anyhow::Result<()> {
    if registry.stat_blob(repo, d).await.is_ok() {
        report.blobs_linked += 1;
        holder.entry(d.clone()).or_insert_with(|| repo.clone());
        return Ok(());
    }
    if let Some(from) = holder.get(d) {
        if registry.mount_blob(repo, from, d).await?.is_some() {
            report.blobs_linked += 1;
            return Ok(());
        }
    }
    let path = layout.blob_path(d);
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            report.skipped.push(format!("{repo} blob {d}: {e}"));
            return Ok(());
        }
    };
    let len = file.metadata().await?.len();
    let body = Box::pin(ReaderStream::with_capacity(file, 1 << 20));
    match registry.put_blob(repo, d, Some(len), body).await {
        Ok(n) => {
            report.blobs_copied += 1;
            report.bytes_copied += n;
            progress(n);
            holder.insert(d.clone(), repo.clone());
        }
        Err(e) => report.skipped.push(format!("{repo} blob {d}: {e}")),
    }
    Ok(())
}
