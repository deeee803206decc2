//! Helpers for the storage-lifecycle tests: raw SQL against a server's database (to age
//! content without waiting), the blob files on disk, and GC runs.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use berth::lifecycle::{GcOptions, GcReport};

use crate::common::*;

impl TestServer {
    /// Runs SQL against the server's database, as another process would.
    pub async fn sql(&self, query: &str) {
        if let Some(url) = database_of(&self.config.data_dir) {
            // The tests' SQL names SQLite's clock; PostgreSQL spells it otherwise.
            let query = query.replace(
                "strftime('%s','now')",
                "CAST(FLOOR(EXTRACT(EPOCH FROM now())) AS BIGINT)",
            );
            psql(&url, &query);
            return;
        }
        let url = format!(
            "sqlite://{}",
            self.config.data_dir.join("berth.db").display()
        );
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query(query).execute(&pool).await.unwrap();
        pool.close().await;
    }

    /// The server's configuration as a file, for CLI commands that need more than the data
    /// dir (retention rules, quotas).
    pub fn config_file(&self) -> String {
        let path = self.config.data_dir.with_file_name("berth.yaml");
        std::fs::write(&path, self.config.to_yaml()).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// Runs GC in the server's process with the given grace.
    pub async fn gc(&self, grace_secs: u64) -> GcReport {
        self.lifecycle
            .gc(GcOptions {
                dry_run: false,
                grace: Some(Duration::from_secs(grace_secs)),
            })
            .await
            .expect("gc runs")
    }

    /// The digests of every committed blob file under the data dir.
    pub fn blob_files(&self) -> BTreeSet<String> {
        blob_files(&self.config.data_dir)
    }

    pub fn blob_path(&self, digest: &str) -> std::path::PathBuf {
        let (alg, hex) = digest.split_once(':').unwrap();
        self.config
            .data_dir
            .join("blobs")
            .join(alg)
            .join(&hex[..2])
            .join(hex)
    }
}

pub fn blob_files(data_dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(algs) = std::fs::read_dir(data_dir.join("blobs")) else {
        return out;
    };
    for alg in algs.flatten() {
        for prefix in std::fs::read_dir(alg.path()).unwrap().flatten() {
            for f in std::fs::read_dir(prefix.path()).unwrap().flatten() {
                out.insert(format!(
                    "{}:{}",
                    alg.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                ));
            }
        }
    }
    out
}

/// Every digest an image consists of: manifest, config, layers.
pub fn image_digests(img: &Image) -> Vec<String> {
    let mut v = vec![img.digest(), img.config.digest.clone()];
    v.extend(img.layers.iter().map(|l| l.digest.clone()));
    v
}

/// Pulls an image back and checks every byte: the manifest, then each blob's digest.
pub async fn assert_pulls(s: &TestServer, repo: &str, reference: &str, img: &Image) {
    let resp = s
        .get(&format!("/v2/{repo}/manifests/{reference}"))
        .header("accept", img.media_type.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{repo}:{reference}");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), img.manifest);
    for d in std::iter::once(&img.config).chain(img.layers.iter()) {
        let resp = s.get_blob(repo, &d.digest).await;
        assert_eq!(resp.status(), 200, "{repo} blob {}", d.digest);
        let body = resp.bytes().await.unwrap();
        assert_eq!(sha256(&body), d.digest);
    }
}
