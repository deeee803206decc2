//! The outbox on SQLite: claims, leases, outcomes, listings, redelivery and pruning.

use super::*;
use crate::metadata::sqlite::SqliteMetadata;

async fn db() -> (tempfile::TempDir, SqliteMetadata) {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteMetadata::open(&dir.path().join("berth.db"))
        .await
        .unwrap();
    (dir, db)
}

fn delivery(event: &str, endpoint: &str, at: i64) -> NewDelivery {
    NewDelivery {
        event_id: event.into(),
        endpoint: endpoint.into(),
        action: "push".into(),
        repository: Some("team/app".into()),
        body: format!("{{\"events\":[{{\"id\":\"{event}\"}}]}}"),
        created_at: at,
    }
}

#[tokio::test]
async fn a_claim_leases_due_rows_once_and_a_lost_lease_comes_back() {
    let (_d, db) = db().await;
    db.enqueue(&[delivery("e1", "a", 1000), delivery("e2", "a", 1001)])
        .await
        .unwrap();
    // Queuing the same (event, endpoint) again changes nothing.
    db.enqueue(&[delivery("e1", "a", 5000), delivery("e1", "b", 1000)])
        .await
        .unwrap();
    let got = db.claim("a", 2000, 12_000, 10).await.unwrap();
    assert_eq!(
        got.iter()
            .map(|c| (c.event_id.as_str(), c.attempt))
            .collect::<Vec<_>>(),
        [("e1", 1), ("e2", 1)]
    );
    assert!(got[0].body.contains("\"e1\""));
    // Leased: nobody else gets them until the lease ends.
    assert!(db.claim("a", 2001, 12_000, 10).await.unwrap().is_empty());
    assert_eq!(db.next_due("a").await.unwrap(), Some(12_000));
    // The worker died: after the lease they are due again, as second attempts.
    let again = db.claim("a", 12_000, 22_000, 1).await.unwrap();
    assert_eq!((again[0].event_id.as_str(), again[0].attempt), ("e1", 2));
    // Released at a stop, due at once (beside e2, whose lease ended too).
    db.release(&[again[0].id], 13_000).await.unwrap();
    let both = db.claim("a", 13_000, 23_000, 5).await.unwrap();
    assert_eq!(
        both.iter()
            .map(|c| (c.event_id.as_str(), c.attempt))
            .collect::<Vec<_>>(),
        [("e1", 3), ("e2", 2)]
    );
    // The other endpoint's row is its own.
    assert_eq!(db.claim("b", 2000, 12_000, 5).await.unwrap().len(), 1);
}

#[tokio::test]
async fn outcomes_show_in_the_summary_and_listing() {
    let (_d, db) = db().await;
    let batch: Vec<_> = (0..3)
        .map(|i| delivery(&format!("e{i}"), "a", 100))
        .collect();
    db.enqueue(&batch).await.unwrap();
    let c = db.claim("a", 100, 10_000, 3).await.unwrap();
    db.finish(c[0].id, "a", 200, &Outcome::Delivered { status: 204 })
        .await
        .unwrap();
    let retry = Outcome::Retry {
        next_attempt_at: 1_300,
        status: Some(503),
        error: "503 Service Unavailable".into(),
    };
    db.finish(c[1].id, "a", 300, &retry).await.unwrap();
    let failed = Outcome::Failed {
        status: None,
        error: "connection refused".into(),
    };
    db.finish(c[2].id, "a", 400, &failed).await.unwrap();

    let s = db.summary("a").await.unwrap();
    assert_eq!((s.pending, s.delivered, s.failed), (1, 1, 1));
    assert_eq!(s.last_success_at, Some(200));
    assert_eq!(s.last_failure_at, Some(400));
    assert_eq!(s.last_error.as_deref(), Some("connection refused"));
    assert_eq!(db.next_due("a").await.unwrap(), Some(1_300));
    assert_eq!(
        db.summary("none").await.unwrap(),
        EndpointSummary::default()
    );

    let all = db.deliveries("a", None, 10).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].event_id, "e2", "most recent first");
    assert_eq!(all[0].state, DeliveryState::Failed);
    let pending = db
        .deliveries("a", Some(DeliveryState::Pending), 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].last_status, Some(503));
    assert_eq!(pending[0].attempts, 1);

    // A failed delivery queued again is due at once, and then delivered.
    assert_eq!(db.redeliver("a", None, 500).await.unwrap(), 1);
    let c = db.claim("a", 500, 10_000, 5).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].event_id.as_str(), c[0].attempt, c[0].retry_since),
        ("e2", 2, 500)
    );

    // Pruning takes only old delivered and failed rows.
    assert_eq!(db.prune(201, 0).await.unwrap(), 1);
    assert_eq!(db.deliveries("a", None, 10).await.unwrap().len(), 2);
}
