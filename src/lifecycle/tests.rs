//! A property test of GC's safety: random sequences of pushes, tags, untags, deletes, mounts
//! and GC runs (with no grace at all), with uploads in flight across them, never leave a
//! blob that a manifest references missing or altered, and an upload in flight always
//! completes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use proptest::prelude::*;

use super::{GcOptions, Lifecycle, Settings};
use crate::metadata::sqlite::SqliteMetadata;
use crate::oci::{Algorithm, Digest, Reference, RepoName, UploadId};
use crate::registry::{AppendRequest, Policy, Registry, Service};
use crate::storage::memory::MemoryStorage;
use crate::storage::ByteStream;

const REPOS: [&str; 3] = ["p/a", "p/b", "q/c"];
const TAGS: [&str; 3] = ["t0", "t1", "t2"];
const BLOBS: usize = 6;

#[derive(Clone, Debug)]
enum Op {
    PushBlob {
        repo: usize,
        blob: usize,
    },
    StartUpload {
        repo: usize,
        blob: usize,
    },
    FinishUpload {
        which: usize,
    },
    /// A manifest over blobs the repository may or may not hold (GC may have taken them).
    PutImage {
        repo: usize,
        tag: usize,
        blobs: u8,
    },
    /// A whole push: the blobs, then the manifest.
    PushImage {
        repo: usize,
        tag: usize,
        blobs: u8,
    },
    PutIndex {
        repo: usize,
        tag: usize,
        children: u8,
    },
    DeleteTag {
        repo: usize,
        tag: usize,
    },
    DeleteManifest {
        repo: usize,
        tag: usize,
    },
    Mount {
        from: usize,
        to: usize,
        blob: usize,
    },
    Gc,
}

fn op() -> impl Strategy<Value = Op> {
    let repo = 0..REPOS.len();
    let tag = 0..TAGS.len();
    let blob = 0..BLOBS;
    prop_oneof![
        (repo.clone(), blob.clone()).prop_map(|(repo, blob)| Op::PushBlob { repo, blob }),
        (repo.clone(), blob.clone()).prop_map(|(repo, blob)| Op::StartUpload { repo, blob }),
        (0..4usize).prop_map(|which| Op::FinishUpload { which }),
        (repo.clone(), tag.clone(), 1..64u8).prop_map(|(repo, tag, blobs)| Op::PutImage {
            repo,
            tag,
            blobs
        }),
        (repo.clone(), tag.clone(), 1..64u8).prop_map(|(repo, tag, blobs)| Op::PushImage {
            repo,
            tag,
            blobs
        }),
        (repo.clone(), tag.clone(), 1..64u8).prop_map(|(repo, tag, blobs)| Op::PushImage {
            repo,
            tag,
            blobs
        }),
        (repo.clone(), tag.clone(), 1..8u8).prop_map(|(repo, tag, children)| Op::PutIndex {
            repo,
            tag,
            children
        }),
        (repo.clone(), tag.clone()).prop_map(|(repo, tag)| Op::DeleteTag { repo, tag }),
        (repo.clone(), tag.clone()).prop_map(|(repo, tag)| Op::DeleteManifest { repo, tag }),
        (repo.clone(), repo.clone(), blob).prop_map(|(from, to, blob)| Op::Mount {
            from,
            to,
            blob
        }),
        Just(Op::Gc),
        Just(Op::Gc),
    ]
}

fn blob(i: usize) -> Bytes {
    Bytes::from(format!("blob number {i} ").repeat(40))
}

fn digest(b: &[u8]) -> Digest {
    Algorithm::Sha256.digest(b)
}

fn stream(b: Bytes) -> ByteStream {
    futures::stream::once(async move { Ok(b) }).boxed()
}

fn repo(i: usize) -> RepoName {
    REPOS[i].parse().unwrap()
}

fn descriptor(media_type: &str, data: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": digest(data).to_string(), "size": data.len()})
}

struct World {
    reg: Arc<Registry>,
    gc: Lifecycle,
    /// Uploads in flight: repository, id, blob.
    uploads: Vec<(usize, UploadId, usize)>,
    /// Manifests pushed and not deleted, per repository: digest and the blobs they reference
    /// (an index's children are manifests, checked in their own right while they exist).
    manifests: Vec<Vec<(Digest, Vec<Digest>)>>,
}

impl World {
    async fn new(dir: &std::path::Path) -> World {
        let meta = Arc::new(SqliteMetadata::open(&dir.join("berth.db")).await.unwrap());
        let reg = Arc::new(Registry::new(
            Arc::new(MemoryStorage::new()),
            meta.clone(),
            Policy::default(),
        ));
        let settings = Settings {
            grace: Duration::ZERO,
            batch: 3,
            ..Settings::default()
        };
        let gc = Lifecycle::new(meta, reg.clone(), settings, Arc::new(|| {}));
        World {
            reg,
            gc,
            uploads: Vec::new(),
            manifests: vec![Vec::new(); REPOS.len()],
        }
    }

    async fn put(
        &mut self,
        r: usize,
        tag: usize,
        media_type: &str,
        body: Vec<u8>,
        refs: Vec<Digest>,
    ) {
        let reference: Reference = TAGS[tag].parse().unwrap();
        let put = self
            .reg
            .put_manifest(
                &repo(r),
                &reference,
                Some(media_type),
                Bytes::from(body.clone()),
                vec![],
            )
            .await;
        // Refused when a blob is not (or no longer) in the repository: that is correct.
        if put.is_ok() {
            let d = digest(&body);
            if !self.manifests[r].iter().any(|(m, _)| *m == d) {
                self.manifests[r].push((d, refs));
            }
        }
    }

    async fn apply(&mut self, op: Op) {
        match op {
            Op::PushBlob { repo: r, blob: b } => {
                let data = blob(b);
                self.reg
                    .put_blob(
                        &repo(r),
                        &digest(&data),
                        Some(data.len() as u64),
                        stream(data),
                    )
                    .await
                    .unwrap();
            }
            Op::StartUpload { repo: r, blob: b } => {
                let u = self.reg.start_upload(&repo(r)).await.unwrap();
                let data = blob(b);
                let half = data.slice(..data.len() / 2);
                let chunk = AppendRequest {
                    range: None,
                    length: Some(half.len() as u64),
                    body: stream(half),
                };
                self.reg
                    .append_upload(&repo(r), &u.id, chunk)
                    .await
                    .unwrap();
                self.uploads.push((r, u.id, b));
            }
            Op::FinishUpload { which } => {
                if self.uploads.is_empty() {
                    return;
                }
                let (r, id, b) = self.uploads.remove(which % self.uploads.len());
                let data = blob(b);
                let rest = data.slice(data.len() / 2..);
                let chunk = AppendRequest {
                    range: None,
                    length: Some(rest.len() as u64),
                    body: stream(rest),
                };
                self.reg
                    .complete_upload(&repo(r), &id, &digest(&data), Some(chunk))
                    .await
                    .expect("an upload in flight survives GC");
            }
            Op::PushImage {
                repo: r,
                tag,
                blobs,
            } => {
                for b in (0..BLOBS).filter(|i| blobs & (1 << i) != 0) {
                    Box::pin(self.apply(Op::PushBlob { repo: r, blob: b })).await;
                }
                Box::pin(self.apply(Op::PutImage {
                    repo: r,
                    tag,
                    blobs,
                }))
                .await;
            }
            Op::PutImage {
                repo: r,
                tag,
                blobs,
            } => {
                let picked: Vec<Bytes> = (0..BLOBS)
                    .filter(|i| blobs & (1 << i) != 0)
                    .map(blob)
                    .collect();
                let body = serde_json::to_vec(&serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": descriptor("application/vnd.oci.image.config.v1+json", &picked[0]),
                    "layers": picked[1..].iter().map(|b| descriptor("application/vnd.oci.image.layer.v1.tar", b)).collect::<Vec<_>>(),
                }))
                .unwrap();
                let refs = picked.iter().map(|b| digest(b)).collect();
                self.put(
                    r,
                    tag,
                    "application/vnd.oci.image.manifest.v1+json",
                    body,
                    refs,
                )
                .await;
            }
            Op::PutIndex {
                repo: r,
                tag,
                children,
            } => {
                let mut kids = Vec::new();
                for (i, (d, _)) in self.manifests[r].iter().enumerate().take(3) {
                    if children & (1 << i) != 0 {
                        let m = self
                            .reg
                            .manifest(&repo(r), &Reference::Digest(d.clone()), true)
                            .await;
                        if let Ok(m) = m {
                            let bytes = m.bytes.unwrap();
                            kids.push((m.record.media_type, bytes));
                        }
                    }
                }
                if kids.is_empty() {
                    return;
                }
                let body = serde_json::to_vec(&serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": kids.iter().map(|(t, b)| descriptor(t, b)).collect::<Vec<_>>(),
                }))
                .unwrap();
                self.put(
                    r,
                    tag,
                    "application/vnd.oci.image.index.v1+json",
                    body,
                    Vec::new(),
                )
                .await;
            }
            Op::DeleteTag { repo: r, tag } => {
                let _ = self
                    .reg
                    .delete_manifest(&repo(r), &TAGS[tag].parse().unwrap())
                    .await;
            }
            Op::DeleteManifest { repo: r, tag } => {
                let Ok(m) = self
                    .reg
                    .manifest(&repo(r), &TAGS[tag].parse().unwrap(), false)
                    .await
                else {
                    return;
                };
                let d = m.record.digest;
                if self
                    .reg
                    .delete_manifest(&repo(r), &Reference::Digest(d.clone()))
                    .await
                    .is_ok()
                {
                    self.manifests[r].retain(|(m, _)| *m != d);
                }
            }
            Op::Mount { from, to, blob: b } => {
                let _ = self
                    .reg
                    .mount_blob(&repo(to), &repo(from), &digest(&blob(b)))
                    .await;
            }
            Op::Gc => {
                self.gc
                    .gc(GcOptions {
                        dry_run: false,
                        grace: Some(Duration::ZERO),
                    })
                    .await
                    .unwrap();
            }
        }
    }

    /// Every manifest still pushed, and everything it references, reads back intact.
    async fn check(&self) {
        for (r, list) in self.manifests.iter().enumerate() {
            for (d, refs) in list {
                let m = self
                    .reg
                    .manifest(&repo(r), &Reference::Digest(d.clone()), true)
                    .await;
                let m = m.unwrap_or_else(|e| panic!("{} manifest {d}: {e}", REPOS[r]));
                assert_eq!(&digest(m.bytes.as_ref().unwrap()), d);
                for x in refs {
                    let b = self.reg.blob(&repo(r), x, None, true).await;
                    let b = b.unwrap_or_else(|e| panic!("{} blob {x} of {d}: {e}", REPOS[r]));
                    let mut h = Algorithm::Sha256.hasher();
                    let mut body = b.body.unwrap();
                    while let Some(c) = body.next().await {
                        h.update(&c.unwrap());
                    }
                    assert_eq!(&h.finish(), x, "{} blob {x} intact", REPOS[r]);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn gc_never_loses_a_referenced_blob(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut w = World::new(dir.path()).await;
            for op in ops {
                w.apply(op).await;
                w.check().await;
            }
            // In-flight uploads complete whatever GC did meanwhile.
            while !w.uploads.is_empty() {
                w.apply(Op::FinishUpload { which: 0 }).await;
            }
            w.apply(Op::Gc).await;
            w.check().await;
        });
    }
}
