//! One conformance suite for every storage backend. Each backend instantiates it with
//! `storage_suite!(module_name, async constructor)`.

use std::io;

use bytes::Bytes;
use futures::StreamExt;

use super::fs::collect;
use super::{ByteStream, Committed, Storage, StorageError};
use crate::oci::range::ByteRange;
use crate::oci::{Algorithm, UploadId};

fn chunks(parts: &[&'static [u8]]) -> ByteStream {
    let v: Vec<io::Result<Bytes>> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
    futures::stream::iter(v).boxed()
}

fn failing_after(part: &'static [u8]) -> ByteStream {
    let v: Vec<io::Result<Bytes>> = vec![
        Ok(Bytes::from_static(part)),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ];
    futures::stream::iter(v).boxed()
}

pub async fn put_stat_read_delete(s: &dyn Storage) {
    let data = Bytes::from_static(b"hello, berth");
    let d = Algorithm::Sha256.digest(&data);
    assert_eq!(s.stat(&d).await.unwrap(), None);
    assert!(matches!(
        s.read(&d, None).await,
        Err(StorageError::NotFound)
    ));
    s.put(&d, data.clone()).await.unwrap();
    s.put(&d, data.clone()).await.unwrap(); // idempotent
    assert_eq!(s.stat(&d).await.unwrap(), Some(12));
    assert_eq!(
        collect(s.read(&d, None).await.unwrap()).await.unwrap(),
        data
    );
    let part = s
        .read(&d, Some(ByteRange { start: 7, end: 11 }))
        .await
        .unwrap();
    assert_eq!(collect(part).await.unwrap(), b"berth");
    let listed = s.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, d);
    let age = std::time::SystemTime::now()
        .duration_since(listed[0].1)
        .unwrap_or_default();
    assert!(age.as_secs() < 60, "a blob just stored is listed as new");
    assert!(s.delete(&d).await.unwrap());
    assert!(!s.delete(&d).await.unwrap());
    assert_eq!(s.stat(&d).await.unwrap(), None);
}

pub async fn upload_appends_and_commits(s: &dyn Storage) {
    let id = UploadId::new_random();
    s.begin(&id).await.unwrap();
    assert_eq!(s.list_uploads().await.unwrap(), vec![id.clone()]);
    let n = s.append(&id, 0, chunks(&[b"ab", b"cd"])).await.unwrap();
    assert_eq!(n, 4);
    let n = s.append(&id, 4, chunks(&[b"ef"])).await.unwrap();
    assert_eq!(n, 6);
    let d = Algorithm::Sha256.digest(b"abcdef");
    // Not visible as a blob before commit.
    assert_eq!(s.stat(&d).await.unwrap(), None);
    let read = collect(s.read_upload(&id, 6).await.unwrap()).await.unwrap();
    assert_eq!(read, b"abcdef");
    s.commit(&id, 6, &d).await.unwrap();
    assert_eq!(s.stat(&d).await.unwrap(), Some(6));
    assert!(s.list_uploads().await.unwrap().is_empty());
    assert!(matches!(
        s.append(&id, 6, chunks(&[b"x"])).await,
        Err(StorageError::NotFound)
    ));
}

pub async fn unacknowledged_bytes_are_dropped(s: &dyn Storage) {
    let id = UploadId::new_random();
    s.begin(&id).await.unwrap();
    assert_eq!(s.append(&id, 0, chunks(&[b"abc"])).await.unwrap(), 3);
    // A stream that fails mid-way acknowledges nothing...
    assert!(matches!(
        s.append(&id, 3, failing_after(b"junk")).await,
        Err(StorageError::Source(_))
    ));
    // ...and the next append from the acknowledged offset starts clean.
    assert_eq!(s.append(&id, 3, chunks(&[b"def"])).await.unwrap(), 6);
    let d = Algorithm::Sha256.digest(b"abcdef");
    s.commit(&id, 6, &d).await.unwrap();
    assert_eq!(
        collect(s.read(&d, None).await.unwrap()).await.unwrap(),
        b"abcdef"
    );
}

pub async fn commit_truncates_to_acknowledged_length(s: &dyn Storage) {
    let id = UploadId::new_random();
    s.begin(&id).await.unwrap();
    s.append(&id, 0, chunks(&[b"abcdef"])).await.unwrap();
    let d = Algorithm::Sha256.digest(b"abcd");
    s.commit(&id, 4, &d).await.unwrap();
    assert_eq!(s.stat(&d).await.unwrap(), Some(4));
}

pub async fn short_uploads_are_refused(s: &dyn Storage) {
    let id = UploadId::new_random();
    s.begin(&id).await.unwrap();
    s.append(&id, 0, chunks(&[b"ab"])).await.unwrap();
    assert!(matches!(
        s.append(&id, 5, chunks(&[b"x"])).await,
        Err(StorageError::ShortUpload {
            expected: 5,
            actual: 2
        })
    ));
    let d = Algorithm::Sha256.digest(b"abcdefgh");
    assert!(matches!(
        s.commit(&id, 8, &d).await,
        Err(StorageError::ShortUpload { .. })
    ));
    assert_eq!(s.stat(&d).await.unwrap(), None);
}

/// A commit of bytes already stored keeps the upload (the caller cancels it once the blob is
/// linked, or commits it again if the stored copy was deleted meanwhile).
pub async fn commit_deduplicates_and_cancel_forgets(s: &dyn Storage) {
    let d = Algorithm::Sha256.digest(b"same");
    s.put(&d, Bytes::from_static(b"same")).await.unwrap();
    let id = UploadId::new_random();
    s.begin(&id).await.unwrap();
    s.append(&id, 0, chunks(&[b"same"])).await.unwrap();
    assert_eq!(s.commit(&id, 4, &d).await.unwrap(), Committed::Existing);
    assert_eq!(s.stat(&d).await.unwrap(), Some(4));
    assert_eq!(s.list_uploads().await.unwrap(), vec![id.clone()]);
    assert!(s.delete(&d).await.unwrap());
    assert_eq!(s.commit(&id, 4, &d).await.unwrap(), Committed::Published);
    assert_eq!(
        collect(s.read(&d, None).await.unwrap()).await.unwrap(),
        b"same"
    );
    let other = UploadId::new_random();
    s.begin(&other).await.unwrap();
    s.cancel(&other).await.unwrap();
    s.cancel(&other).await.unwrap();
    assert!(s.list_uploads().await.unwrap().is_empty());
}

pub async fn empty_blobs_work(s: &dyn Storage) {
    let id = UploadId::new_random();
    s.begin(&id).await.unwrap();
    let d = Algorithm::Sha256.digest(b"");
    s.commit(&id, 0, &d).await.unwrap();
    assert_eq!(s.stat(&d).await.unwrap(), Some(0));
    assert!(collect(s.read(&d, None).await.unwrap())
        .await
        .unwrap()
        .is_empty());
}

/// An upload that is read while it grows: every announced length is readable at once, the
/// last announcement is the whole upload, and reads at an offset see exactly those bytes,
/// before and (from the blob) after the commit.
pub async fn followed_uploads_are_readable_as_they_grow(s: &dyn Storage) {
    let id = UploadId::new_random();
    s.begin(&id).await.unwrap();
    let announced = parking_lot::Mutex::new(Vec::new());
    let parts: Vec<io::Result<Bytes>> = (0..40u8)
        .map(|i| Ok(Bytes::from(vec![i; 64 * 1024])))
        .collect();
    let n = s
        .append_following(&id, 0, futures::stream::iter(parts).boxed(), &|n| {
            announced.lock().push(n)
        })
        .await
        .unwrap();
    assert_eq!(n, 40 * 64 * 1024);
    let announced = announced.into_inner();
    assert_eq!(announced.last(), Some(&n));
    assert!(announced.windows(2).all(|w| w[0] <= w[1]), "{announced:?}");
    let mid = collect(s.read_upload_at(&id, 64 * 1024 - 2, 4).await.unwrap())
        .await
        .unwrap();
    assert_eq!(mid, [0, 0, 1, 1]);
    let whole = collect(s.read_upload(&id, n).await.unwrap()).await.unwrap();
    let d = Algorithm::Sha256.digest(&whole);
    s.commit(&id, n, &d).await.unwrap();
    let tail = collect(
        s.read(
            &d,
            Some(ByteRange {
                start: n - 2,
                end: n - 1,
            }),
        )
        .await
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(tail, [39, 39]);
}

pub async fn quarantine_takes_a_blob_out_of_service(s: &dyn Storage) {
    let data = Bytes::from_static(b"bytes gone bad");
    let d = Algorithm::Sha256.digest(&data);
    assert!(!s.quarantine(&d).await.unwrap(), "nothing to quarantine");
    s.put(&d, data.clone()).await.unwrap();
    assert!(s.quarantine(&d).await.unwrap());
    assert_eq!(s.stat(&d).await.unwrap(), None);
    assert!(matches!(
        s.read(&d, None).await,
        Err(StorageError::NotFound)
    ));
    assert!(s.list().await.unwrap().is_empty());
    // Stored again (a push heals it), the blob is served once more.
    s.put(&d, data.clone()).await.unwrap();
    assert_eq!(s.stat(&d).await.unwrap(), Some(data.len() as u64));
}

/// A blob larger than one multipart part, appended in uneven chunks (some under S3's 5 MiB
/// minimum part size), then overwritten past an acknowledged offset, reads back whole.
pub async fn large_blobs_go_in_parts(s: &dyn Storage) {
    let id = UploadId::new_random();
    s.begin(&id).await.unwrap();
    let big: Vec<u8> = (0..(40u32 << 20) / 4)
        .flat_map(|i| i.to_le_bytes())
        .collect();
    let big = Bytes::from(big);
    let mut at = 0u64;
    for piece in [1usize << 20, 3 << 20, 20 << 20, 7 << 20] {
        let part = big.slice(at as usize..at as usize + piece);
        let stream = futures::stream::iter(
            part.chunks(256 << 10)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<io::Result<Bytes>>>(),
        )
        .boxed();
        at = s.append(&id, at, stream).await.unwrap();
    }
    let rest = big.slice(at as usize..);
    assert_eq!(
        s.append(&id, at, futures::stream::iter(vec![Ok(rest)]).boxed())
            .await
            .unwrap(),
        big.len() as u64
    );
    let d = Algorithm::Sha256.digest(&big);
    assert_eq!(
        s.commit(&id, big.len() as u64, &d).await.unwrap(),
        Committed::Published
    );
    assert_eq!(s.stat(&d).await.unwrap(), Some(big.len() as u64));
    let back = collect(s.read(&d, None).await.unwrap()).await.unwrap();
    assert!(back == big, "the blob reads back byte for byte");
    let mid = collect(
        s.read(
            &d,
            Some(ByteRange {
                start: 5 << 20,
                end: (5 << 20) + 7,
            }),
        )
        .await
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(mid, big.slice(5 << 20..(5 << 20) + 8));
    assert!(s.delete(&d).await.unwrap());
}

macro_rules! storage_suite {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;
            storage_suite!(@tests $make; put_stat_read_delete, upload_appends_and_commits,
                unacknowledged_bytes_are_dropped, commit_truncates_to_acknowledged_length,
                short_uploads_are_refused, commit_deduplicates_and_cancel_forgets,
                empty_blobs_work, followed_uploads_are_readable_as_they_grow,
                quarantine_takes_a_blob_out_of_service, large_blobs_go_in_parts);
        }
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_guard, store) = $make.await;
                super::$name(&*store).await;
            }
        )*
    };
}

storage_suite!(memory, async {
    (
        (),
        Box::new(super::super::memory::MemoryStorage::new()) as Box<dyn Storage>,
    )
});

storage_suite!(filesystem, async {
    let dir = tempfile::tempdir().unwrap();
    let store = super::super::fs::FsStorage::open(dir.path()).await.unwrap();
    (dir, Box::new(store) as Box<dyn Storage>)
});

/// The environment names an object store the test command started, or the suite is skipped
/// (except under CI, where that is a failure).
fn configured(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) => Some(v),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{var} is unset: run the suite through scripts/test.sh"
            );
            eprintln!("skipped: {var} unset");
            None
        }
    }
}

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} is unset"))
}

/// The S3 server the test command started (Garage, from `TEST_S3_*`), and a prefix of the
/// test's own in the shared bucket.
pub fn s3_test_store() -> Option<(std::sync::Arc<dyn object_store::ObjectStore>, String)> {
    let endpoint = configured("TEST_S3_ENDPOINT")?;
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("garage")
        .with_bucket_name(env("TEST_S3_BUCKET"))
        .with_access_key_id(env("TEST_S3_KEY_ID"))
        .with_secret_access_key(env("TEST_S3_SECRET"))
        .build()
        .expect("S3 test store");
    let prefix = format!("suite-{}", UploadId::new_random());
    Some((std::sync::Arc::new(store), prefix))
}

/// The Azure Blob Storage emulator the test command started (Azurite, from `TEST_AZURE_*`).
pub fn azure_test_store() -> Option<(std::sync::Arc<dyn object_store::ObjectStore>, String)> {
    let endpoint = configured("TEST_AZURE_ENDPOINT")?;
    let store = object_store::azure::MicrosoftAzureBuilder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_account(env("TEST_AZURE_ACCOUNT"))
        .with_access_key(env("TEST_AZURE_KEY"))
        .with_container_name(env("TEST_AZURE_CONTAINER"))
        .build()
        .expect("Azure test store");
    let prefix = format!("suite-{}", UploadId::new_random());
    Some((std::sync::Arc::new(store), prefix))
}

macro_rules! object_suite {
    ($module:ident, $store:ident; $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some((store, prefix)) = super::$store() else { return };
                    let s = super::super::object::ObjectStorage::new(store, &prefix);
                    super::$name(&s).await;
                }
            )*
        }
    };
    ($($backend:ident: $store:ident),*) => {
        $(
            object_suite!($backend, $store; put_stat_read_delete, upload_appends_and_commits,
                unacknowledged_bytes_are_dropped, commit_truncates_to_acknowledged_length,
                short_uploads_are_refused, commit_deduplicates_and_cancel_forgets,
                empty_blobs_work, followed_uploads_are_readable_as_they_grow,
                quarantine_takes_a_blob_out_of_service, large_blobs_go_in_parts);
        )*
    };
}

object_suite!(s3: s3_test_store, azure: azure_test_store);
