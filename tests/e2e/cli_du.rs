//! `berth du [NAMESPACE]` on the data dir of a running server: per repository, the bytes it
//! holds, those only it holds, and those it shares; the namespace total counts each blob
//! once.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

// The server runs in this process: the runtime needs threads to answer while the CLI runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn du_splits_unique_and_shared_bytes() {
    let s = TestServer::start().await;
    let (a, _) = s.push_image("team/a", "v1", 2).await;
    let shared = &a.layers[0];
    let resp = s
        .post(&format!(
            "/v2/team/b/blobs/uploads/?mount={}&from=team/a",
            shared.digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let (b, _) = s.push_image("team/b", "v1", 1).await;
    s.push_image("other/c", "v1", 1).await;

    let size = |i: &Image| {
        i.config.size + i.layers.iter().map(|l| l.size).sum::<u64>() + i.manifest.len() as u64
    };
    let a_total = size(&a);
    let b_total = size(&b) + shared.size;
    let data = s.config.data_dir.to_str().unwrap().to_string();
    let (ok, out, err) = berth_cli(&["du", "team", "--json", "--data-dir", &data], None);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        json!({
            "repositories": [
                {"repository": "team/a", "total": a_total,
                 "unique": a_total - shared.size, "shared": shared.size},
                {"repository": "team/b", "total": b_total,
                 "unique": b_total - shared.size, "shared": shared.size},
            ],
            "total": a_total + b_total - shared.size,
        })
    );
    let (ok, out, err) = berth_cli(&["du", "--data-dir", &data], None);
    assert!(ok, "{err}");
    assert!(
        out.contains("REPOSITORY") && out.contains("other/c") && out.contains("3 repositories"),
        "{out}"
    );
    // A namespace that is a prefix of another's name is not confused with it.
    let (ok, out, _) = berth_cli(&["du", "tea", "--json", "--data-dir", &data], None);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, json!({"repositories": [], "total": 0}));
}
