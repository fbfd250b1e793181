//! The daemon on a full disk: it lives (the shared metrics file it maps used to be sparse, and
//! the first store to it killed the daemon with SIGBUS), answers publishes with 503 `storage`
//! (then `circuit_open`) while the disk is full, and recovers by itself once space returns,
//! with every acknowledged event still there.

#![cfg(feature = "daemon")]

mod daemon_common;
mod tmpfs;

use std::sync::Arc;
use std::time::Duration;

use daemon_common::*;
use hyper::StatusCode;
use lms_realtime::{EventStore, daemon, store};
use serde_json::json;
use tmpfs::{Tmpfs, fill};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_the_daemon_recovers_when_space_returns() {
    let Some(fs) = Tmpfs::mount(8 << 20) else {
        return;
    };
    let db = fs.path().join("chat.db");
    // The daemon opens its files (the store's, and the metrics file beside it) on a full disk.
    let store = Arc::new(EventStore::open(&db, store::Config::default()).unwrap());
    let filler = fill(fs.path());
    let mut cfg = config();
    cfg.breaker_failures = 2;
    cfg.breaker_open_ms = 300;
    let spawned = daemon::spawn(store.clone(), cfg).await.unwrap();
    let mut c = Client::connect(spawned.addr).await;
    let t = token(5, &[1]);
    let ev = |n: i64| {
        json!({"event_type": "message_create", "channel_id": 1, "message_id": n,
        "data": {"pad": "x".repeat(300)}})
    };

    // Publishes go on into pages the WAL already has, then fail with 503: no signal.
    let mut acked = Vec::new();
    let mut refused = None;
    for n in 0..20_000 {
        let r = c.publish(&ev(n)).await;
        if r.status == StatusCode::OK {
            acked.extend(
                r.json()["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap()),
            );
        } else {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("publishes on a full disk never failed");
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "storage"),
        "{}",
        r.text()
    );
    assert!(r.header("retry-after").is_some());
    // A second failure opens the store's breaker: clients are told to back off.
    let r = c.publish(&ev(99_999)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    let h = c.get("/healthz", &[]).await;
    assert_eq!(h.status, StatusCode::SERVICE_UNAVAILABLE, "{}", h.text());
    assert_eq!(h.json()["store"]["breaker"], "open");

    std::fs::remove_file(&filler).unwrap();

    // Space is back: after the breaker's open period a publish goes through.
    let mut back = None;
    for n in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = c.publish(&ev(100_000 + n)).await;
        if r.status == StatusCode::OK {
            back = Some(r);
            break;
        }
    }
    let r = back.expect("the daemon did not recover within 5 s of space returning");
    acked.extend(
        r.json()["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap()),
    );
    let r = c
        .poll(&t, "channels=1&timeout=0&order=sequential&cursor=0")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let _ = spawned.shutdown.send(());
    spawned.task.await.unwrap().unwrap();
    drop(c);
    // Every acknowledged event is in the store.
    let mut got = Vec::new();
    let mut cur = lms_realtime::Cursor::START;
    loop {
        let b = store
            .fetch(&lms_realtime::FetchRequest::new([1]).cursor(cur).limit(1000))
            .unwrap();
        if b.events.is_empty() {
            break;
        }
        got.extend(b.events.iter().map(|e| e.id));
        cur = b.cursor;
    }
    assert_eq!(got, acked, "an acknowledged event was lost");
}
