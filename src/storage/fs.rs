//! The embedded backend: blobs as files on the local filesystem.
//!
//! Write ordering: bytes are written and fsynced in `uploads/` or `tmp/`, then renamed into
//! `blobs/`, then the parent directory is fsynced. A crash at any point leaves either no blob
//! or a whole one; readers never see a partial file.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};

use super::paths::Layout;
use super::{BlobStore, ByteStream, Committed, Result, StorageError, UploadArea};
use crate::oci::range::ByteRange;
use crate::oci::{Digest, UploadId};

/// A whole-blob write in `tmp/` this old was abandoned by a crash.
const TMP_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Read and write buffer size: large enough that per-call overhead vanishes at GB/s.
const IO_BUF: usize = 1 << 20;

pub struct FsStorage {
    layout: Layout,
}

impl FsStorage {
    /// Opens (creating if needed) a store rooted at `root`, and checks it is writable.
    pub async fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let layout = Layout::new(root);
        for dir in [layout.blobs_dir(), layout.uploads_dir(), layout.tmp_dir()] {
            fs::create_dir_all(&dir).await?;
        }
        // Leftovers of whole-blob writes interrupted by a crash: never visible, safe to drop
        // once old. A young one may be a running server's write in progress (the CLI opens
        // the store beside a server), so it stays.
        let horizon = SystemTime::now() - TMP_MAX_AGE;
        let mut tmp = fs::read_dir(layout.tmp_dir()).await?;
        while let Some(e) = tmp.next_entry().await? {
            let old = e
                .metadata()
                .await
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < horizon);
            if old {
                let _ = fs::remove_file(e.path()).await;
            }
        }
        let probe = layout.tmp_file();
        fs::write(&probe, b"").await?;
        fs::remove_file(&probe).await?;
        Ok(FsStorage { layout })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }
}

fn not_found_as_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn map_not_found(e: io::Error) -> StorageError {
    if e.kind() == io::ErrorKind::NotFound {
        StorageError::NotFound
    } else {
        StorageError::Io(e)
    }
}

/// Moves a fsynced file to its final blob path and makes the rename durable (blocking). The
/// file's modification time becomes the time of publication: garbage collection never
/// removes a blob file younger than its floor, which covers the moment between this rename
/// and the metadata row that links it.
fn publish(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::File::options()
        .write(true)
        .open(from)?
        .set_modified(std::time::SystemTime::now())?;
    let parent = to.parent().expect("blob paths have a parent");
    std::fs::create_dir_all(parent)?;
    std::fs::rename(from, to)?;
    std::fs::File::open(parent)?.sync_all()
}

/// Runs blocking filesystem work on the blocking pool, in one hop.
/// Every blob file under `root` (`ALG/PREFIX/HEX`) with its modification time. A file deleted
/// since the listing began is simply not listed.
fn list_blobs(root: &Path) -> io::Result<Vec<(Digest, SystemTime)>> {
    let mut out = Vec::new();
    for alg in std::fs::read_dir(root)? {
        let alg = alg?;
        let alg_name = alg.file_name().to_string_lossy().into_owned();
        for prefix in std::fs::read_dir(alg.path())? {
            for f in std::fs::read_dir(prefix?.path())? {
                let f = f?;
                let name = format!("{alg_name}:{}", f.file_name().to_string_lossy());
                let Ok(d) = name.parse() else { continue };
                if let Some(md) = not_found_as_none(f.metadata())? {
                    out.push((d, md.modified()?));
                }
            }
        }
    }
    Ok(out)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))?
}

/// Chunks a reader thread may have ready ahead of the network.
const READ_AHEAD: usize = 4;

/// Streams `len` bytes of a file from `start`. A blocking reader thread fills fresh buffers
/// (no intermediate copy) and runs up to [`READ_AHEAD`] chunks ahead of the client, so disk
/// reads and network writes overlap; it stops as soon as the client goes away.
async fn file_stream(path: &Path, range: Option<ByteRange>) -> Result<ByteStream> {
    let path = path.to_path_buf();
    let (file, start, len) = blocking(move || {
        let file = std::fs::File::open(&path)?;
        let size = file.metadata()?.len();
        let (start, len) = match range {
            None => (0, size),
            Some(r) => (r.start, r.len().min(size.saturating_sub(r.start))),
        };
        Ok((file, start, len))
    })
    .await
    .map_err(map_not_found)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let (mut pos, end) = (start, start + len);
        while pos < end {
            let want = (end - pos).min(IO_BUF as u64) as usize;
            let mut buf = bytes::BytesMut::zeroed(want);
            let mut filled = 0;
            let mut result = Ok(());
            while filled < want {
                match file.read_at(&mut buf[filled..], pos + filled as u64) {
                    Ok(0) => {
                        result = Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "blob shorter than its size",
                        ));
                        break;
                    }
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            let failed = result.is_err();
            let item = result.map(|()| buf.freeze());
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
            pos += want as u64;
        }
    });
    Ok(tokio_stream_from(rx))
}

fn tokio_stream_from(mut rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>) -> ByteStream {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

#[async_trait]
impl BlobStore for FsStorage {
    async fn probe(&self) -> Result<()> {
        // A file written, synced and removed in tmp/, and the blobs directory listed: what
        // a push and a pull need of the filesystem.
        let path = self.layout.tmp_file();
        let written = async {
            let mut f = fs::File::create(&path).await?;
            f.write_all(b"berth readiness probe").await?;
            f.sync_all().await
        }
        .await;
        let _ = fs::remove_file(&path).await;
        written?;
        fs::read_dir(self.layout.blobs_dir())
            .await?
            .next_entry()
            .await?;
        Ok(())
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        let md = not_found_as_none(fs::metadata(self.layout.blob(digest)).await)?;
        Ok(md.map(|m| m.len()))
    }

    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream> {
        file_stream(&self.layout.blob(digest), range).await
    }

    async fn put(&self, digest: &Digest, data: Bytes) -> Result<()> {
        let target = self.layout.blob(digest);
        let tmp = self.layout.tmp_file();
        blocking(move || {
            if target.exists() {
                return Ok(());
            }
            let write = || -> io::Result<()> {
                let mut f = std::fs::File::create(&tmp)?;
                std::io::Write::write_all(&mut f, &data)?;
                f.sync_all()?;
                publish(&tmp, &target)
            };
            write().inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
        })
        .await?;
        Ok(())
    }

    async fn delete(&self, digest: &Digest) -> Result<bool> {
        Ok(not_found_as_none(fs::remove_file(self.layout.blob(digest)).await)?.is_some())
    }

    async fn list(&self) -> Result<Vec<(Digest, SystemTime)>> {
        // One blocking task walks the whole tree: a task per directory entry (as
        // `tokio::fs` does) would wake a thread per file, tens of thousands of context
        // switches that the requests served meanwhile would pay for.
        let root = self.layout.blobs_dir();
        Ok(blocking(move || list_blobs(&root)).await?)
    }

    async fn quarantine(&self, digest: &Digest) -> Result<bool> {
        let (from, to) = (self.layout.blob(digest), self.layout.quarantined(digest));
        blocking(move || {
            if !from.exists() {
                return Ok(false);
            }
            let parent = to.parent().expect("quarantine paths have a parent");
            std::fs::create_dir_all(parent)?;
            match std::fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            }
            std::fs::File::open(from.parent().expect("blob paths have a parent"))?.sync_all()?;
            Ok(true)
        })
        .await
        .map_err(StorageError::Io)
    }
}

impl FsStorage {
    /// Opens an upload positioned at `offset`, dropping anything past it (never acknowledged).
    async fn open_for_append(&self, id: &UploadId, offset: u64) -> Result<File> {
        let mut file = OpenOptions::new()
            .write(true)
            .open(self.layout.upload(id))
            .await
            .map_err(map_not_found)?;
        let len = file.metadata().await?.len();
        if len < offset {
            return Err(StorageError::ShortUpload {
                expected: offset,
                actual: len,
            });
        }
        if len > offset {
            file.set_len(offset).await?;
        }
        file.seek(SeekFrom::Start(offset)).await?;
        Ok(file)
    }
}

/// Writes `pending` at the file's position and waits until it is in the file (not yet
/// durable); returns the new length.
async fn write_out(file: &mut File, pending: &mut bytes::BytesMut, len: u64) -> Result<u64> {
    if pending.is_empty() {
        return Ok(len);
    }
    file.write_all(pending).await?;
    // tokio's File hands writes to a blocking thread: flush waits until it is done.
    file.flush().await?;
    let n = pending.len() as u64;
    pending.clear();
    Ok(len + n)
}

#[async_trait]
impl UploadArea for FsStorage {
    async fn begin(&self, id: &UploadId) -> Result<()> {
        // Not fsynced: a session whose empty file is lost in a crash is dropped by
        // reconciliation, and nothing was acknowledged into it.
        File::create(self.layout.upload(id)).await?;
        Ok(())
    }

    async fn append(&self, id: &UploadId, offset: u64, mut data: ByteStream) -> Result<u64> {
        let file = self.open_for_append(id, offset).await?;
        let mut w = BufWriter::with_capacity(IO_BUF, file);
        let mut written = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(StorageError::Source)?;
            w.write_all(&chunk).await?;
            written += chunk.len() as u64;
        }
        w.flush().await?;
        let file = w.into_inner();
        file.sync_data().await?;
        Ok(offset + written)
    }

    async fn append_following(
        &self,
        id: &UploadId,
        offset: u64,
        mut data: ByteStream,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64> {
        use futures::FutureExt;
        let mut file = self.open_for_append(id, offset).await?;
        // Bytes are written out whenever 1 MiB has gathered or the source has nothing more
        // ready, and only then announced: a follower never reads past what is in the file.
        let mut pending = bytes::BytesMut::new();
        let mut done = offset;
        loop {
            let next = match data.next().now_or_never() {
                Some(item) => item,
                None => {
                    if !pending.is_empty() {
                        done = write_out(&mut file, &mut pending, done).await?;
                        progress(done);
                    }
                    data.next().await
                }
            };
            match next {
                None => break,
                Some(chunk) => {
                    pending.extend_from_slice(&chunk.map_err(StorageError::Source)?);
                    if pending.len() >= IO_BUF {
                        done = write_out(&mut file, &mut pending, done).await?;
                        progress(done);
                    }
                }
            }
        }
        done = write_out(&mut file, &mut pending, done).await?;
        // Readable now; acknowledged (durable) only once this returns.
        progress(done);
        file.sync_data().await?;
        Ok(done)
    }

    async fn read_upload_at(&self, id: &UploadId, start: u64, len: u64) -> Result<ByteStream> {
        if len == 0 {
            return Ok(futures::stream::empty().boxed());
        }
        file_stream(
            &self.layout.upload(id),
            Some(ByteRange {
                start,
                end: start + len - 1,
            }),
        )
        .await
    }

    async fn read_upload(&self, id: &UploadId, len: u64) -> Result<ByteStream> {
        let path = self.layout.upload(id);
        let actual = fs::metadata(&path).await.map_err(map_not_found)?.len();
        if actual < len {
            return Err(StorageError::ShortUpload {
                expected: len,
                actual,
            });
        }
        if len == 0 {
            return Ok(futures::stream::empty().boxed());
        }
        file_stream(
            &path,
            Some(ByteRange {
                start: 0,
                end: len - 1,
            }),
        )
        .await
    }

    async fn commit(&self, id: &UploadId, len: u64, digest: &Digest) -> Result<Committed> {
        let path = self.layout.upload(id);
        let target = self.layout.blob(digest);
        blocking(move || {
            let file = std::fs::OpenOptions::new().write(true).open(&path)?;
            let actual = file.metadata()?.len();
            if actual < len {
                return Ok(Err(StorageError::ShortUpload {
                    expected: len,
                    actual,
                }));
            }
            if target.exists() {
                // Deduplicated: the bytes are already committed under this digest. The upload
                // stays until the caller has linked the blob (and checked it is still there).
                return Ok(Ok(Committed::Existing));
            }
            if actual > len {
                file.set_len(len)?;
                file.sync_all()?;
            }
            // Otherwise every byte was fdatasynced by the append that acknowledged it.
            drop(file);
            publish(&path, &target)?;
            Ok(Ok(Committed::Published))
        })
        .await
        .map_err(map_not_found)?
    }

    async fn cancel(&self, id: &UploadId) -> Result<()> {
        not_found_as_none(fs::remove_file(self.layout.upload(id)).await)?;
        Ok(())
    }

    async fn upload_modified(&self, id: &UploadId) -> Result<Option<SystemTime>> {
        let md = not_found_as_none(fs::metadata(self.layout.upload(id)).await)?;
        Ok(md.map(|m| m.modified()).transpose()?)
    }

    async fn list_uploads(&self) -> Result<Vec<UploadId>> {
        let mut out = Vec::new();
        let mut dir = fs::read_dir(self.layout.uploads_dir()).await?;
        while let Some(e) = dir.next_entry().await? {
            if let Ok(id) = e.file_name().to_string_lossy().parse() {
                out.push(id);
            }
        }
        Ok(out)
    }
}

/// Reads a whole upload stream into memory: only for tests and tiny data.
#[cfg(test)]
pub async fn collect(s: ByteStream) -> io::Result<Vec<u8>> {
    use futures::TryStreamExt;
    s.try_fold(Vec::new(), |mut acc, b| async move {
        acc.extend_from_slice(&b);
        Ok(acc)
    })
    .await
}
