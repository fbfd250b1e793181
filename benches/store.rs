//! Criterion benches of the store's throughput, each next to its alternative in the same run.
//!
//! * `append/raw_insert` vs `append/store_append`: one event per transaction, the store against
//!   a plain rusqlite INSERT of the same row into the same schema (WAL, synchronous=NORMAL).
//! * `append/store_batch_100`: `append_batch` of 100 events (report is per batch).
//! * `fetch/*`: a fetch of up to 50 on a 200,000-event store over 1,000 channels (the
//!   percentile figures on a 1,000,000-event store come from `benches/latency.rs`).
//!
//! Run: `cargo bench --bench store`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lms_realtime::clock::ManualClock;
use lms_realtime::{Config, Cursor, EventStore, FetchRequest, NewEvent, Order, Priority};

fn event(i: u64) -> NewEvent {
    NewEvent::new("message_create", 1 + (i % 50) as i64)
        .message_id(i as i64)
        .user_id(7)
        .data(r#"{"text":"hello there, this is a chat message","mentions":[3,4]}"#)
}

fn bench_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path().join("store.db"), Config::default()).unwrap();
    // The raw side: the same schema (created by the store), a connection set up as anyone
    // would for WAL, and the same INSERT the store runs.
    let raw_path = dir.path().join("raw.db");
    drop(EventStore::open(&raw_path, Config::default()).unwrap());
    let raw = rusqlite::Connection::open(&raw_path).unwrap();
    raw.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .unwrap();

    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(8));
    let mut i = 0u64;
    g.bench_function("raw_insert", |b| {
        let mut s = raw
            .prepare(
                "INSERT INTO lmsrt_events (event_type, priority, channel_id, message_id, thread_id,
                     user_id, data, timestamp, expires_at, idem_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .unwrap();
        b.iter(|| {
            i += 1;
            let e = event(i);
            s.execute(rusqlite::params![
                e.event_type,
                1,
                e.channel_id,
                e.message_id,
                e.thread_id,
                e.user_id,
                e.data,
                1_700_000_000_000i64,
                1_700_003_600_000i64,
                e.idempotency_key
            ])
            .unwrap()
        })
    });
    g.bench_function("store_append", |b| {
        b.iter(|| {
            i += 1;
            store.append(event(i)).unwrap()
        })
    });
    g.throughput(Throughput::Elements(100));
    g.bench_function("store_batch_100", |b| {
        b.iter(|| {
            let batch: Vec<NewEvent> = (0..100)
                .map(|_| {
                    i += 1;
                    event(i)
                })
                .collect();
            store.append_batch(batch).unwrap()
        })
    });
    g.finish();
}

fn bench_fetch(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let store = EventStore::open(
        dir.path().join("fetch.db"),
        Config {
            clock: Arc::new(clock.clone()),
            ..Config::default()
        },
    )
    .unwrap();
    let n = 200_000u64;
    for chunk in 0..(n / 10_000) {
        let batch: Vec<NewEvent> = (0..10_000)
            .map(|k| {
                let i = chunk * 10_000 + k;
                NewEvent::new("message_create", 1 + (i * 7919 % 1000) as i64)
                    .priority(Priority::from_i64(1 + (i % 4) as i64).unwrap())
                    .data(r#"{"text":"hello"}"#)
            })
            .collect();
        store.append_batch(batch).unwrap();
    }
    let head = store.head_cursor().unwrap().lanes()[0];
    let channels: Vec<i64> = (1..=10).map(|k| k * 97).collect();
    let mut g = c.benchmark_group("fetch");
    for (name, cursor) in [
        ("live_tail_10ch", Cursor::from_last_event_id(head - 100)),
        ("catch_up_10ch", Cursor::from_last_event_id(head / 2)),
    ] {
        for order in [Order::Priority, Order::Sequential] {
            let req = FetchRequest::new(channels.clone())
                .cursor(cursor)
                .limit(50)
                .order(order);
            g.bench_function(format!("{name}_{order:?}"), |b| {
                b.iter(|| store.fetch(&req).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_secs(1));
    targets = bench_append, bench_fetch
}
criterion_main!(benches);
