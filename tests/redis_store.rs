//! The Redis engine's own behaviour (feature `redis`), on `redis-server`s these tests start:
//! a Redis that restarts empty or loses its newest writes answers `gap: true` with a fresh
//! position, never a wrong one; a Redis that is down fails appends fast with `Storage` and
//! changes nothing, and one that comes back serves the same store; idempotent appends; waits
//! woken by another store's append; consumer cursors kept across reopening.

#![cfg(feature = "redis")]

mod redis_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lms_realtime::clock::ManualClock;
use lms_realtime::store::StoreLocation;
use lms_realtime::{Config, ErrorCode, EventStore, FetchRequest, NewEvent};
use redis_common::RedisServer;

fn ids(b: &lms_realtime::Batch) -> Vec<i64> {
    b.events.iter().map(|e| e.id).collect()
}

fn append_n(s: &EventStore, channel: i64, n: usize) -> Vec<i64> {
    (0..n)
        .map(|_| s.append(NewEvent::new("message_create", channel)).unwrap())
        .collect()
}

#[test]
fn opens_by_url_or_location_and_round_trips_events() {
    let server = RedisServer::start();
    let url = server.url();
    let s =
        EventStore::open_location(&StoreLocation::parse(&url).unwrap(), Config::default()).unwrap();
    assert!(s.path().to_string_lossy().starts_with("redis://127.0.0.1:"));
    let id = s
        .append(
            NewEvent::new("message_create", 7)
                .message_id(3)
                .thread_id(-2)
                .user_id(9)
                .data(r#"{"text":"h\u00e9llo","n":[1,2]}"#),
        )
        .unwrap();
    let b = s.fetch(&FetchRequest::new([7])).unwrap();
    assert_eq!(ids(&b), vec![id]);
    let e = &b.events[0];
    assert_eq!(
        (e.message_id, e.thread_id, e.user_id, e.data.as_str()),
        (Some(3), Some(-2), 9, r#"{"text":"h\u00e9llo","n":[1,2]}"#)
    );
    assert_eq!(b.cursor, s.head_cursor().unwrap());
    assert!(!b.gap && !b.has_more);
    // Bad input is refused before Redis is asked, as on SQLite.
    assert_eq!(
        s.append(NewEvent::new("Bad", 7)).unwrap_err().code(),
        ErrorCode::InvalidEventType
    );
    assert_eq!(
        EventStore::open_url("/tmp/x.db", Config::default())
            .unwrap_err()
            .code(),
        ErrorCode::InvalidArgument
    );
}

#[test]
fn a_redis_restarted_empty_answers_gap_and_a_fresh_position() {
    let mut server = RedisServer::start();
    let s = EventStore::open_url(&server.url(), Config::default()).unwrap();
    append_n(&s, 1, 5);
    let before = s.fetch(&FetchRequest::new([1])).unwrap();
    assert_eq!(before.events.len(), 5);
    let old_epoch = s.epoch();

    server.restart();
    // Another writer (another host) appends first: ids start again at 1, under a new epoch.
    let other = EventStore::open_url(&url_of(&s), Config::default()).unwrap();
    let fresh = append_n(&other, 1, 2);
    assert_eq!(fresh, vec![1, 2]);

    // The old cursor's positions (5) would skip both; the epoch says they mean nothing here.
    let b = s
        .fetch(&FetchRequest::new([1]).cursor(before.cursor))
        .unwrap();
    assert!(b.gap, "a cursor from before the restart must get gap: true");
    assert_eq!(ids(&b), fresh);
    assert_ne!(s.epoch(), old_epoch);
    assert_eq!(b.cursor, other.head_cursor().unwrap());
    let again = s.fetch(&FetchRequest::new([1]).cursor(b.cursor)).unwrap();
    assert!(!again.gap && again.events.is_empty());
}

/// The store's URL, as another process would be given it.
fn url_of(s: &EventStore) -> String {
    s.path().to_string_lossy().into_owned()
}

#[test]
fn a_redis_that_lost_its_newest_writes_answers_gap_not_wrong_positions() {
    let server = RedisServer::start();
    let url = server.url();
    let s = EventStore::open_url(&url, Config::default()).unwrap();
    append_n(&s, 1, 4);
    let seen = s.fetch(&FetchRequest::new([1])).unwrap();
    // A failover that kept the epoch but lost ids 3 and 4: the sequence is back at 2.
    let store_name = url.rsplit("store=").next().unwrap();
    let key = |k: &str| format!("lmsrt:{{{store_name}}}:{k}");
    assert_eq!(
        server.command(&["SET", &key("seq"), "2"]).as_deref(),
        Some("+OK")
    );
    // (message_create is critical: lane 0.)
    let lane = key("l:1:0");
    assert_eq!(
        server.command(&["XDEL", &lane, "3", "4"]).as_deref(),
        Some(":2")
    );
    // The stream's top id goes back too, as on a replica that never got 3 and 4.
    assert_eq!(
        server.command(&["XSETID", &lane, "2"]).as_deref(),
        Some("+OK")
    );
    assert_eq!(
        server
            .command(&["ZADD", &key("lanes"), "2", &lane])
            .as_deref(),
        Some(":0")
    );
    let b = s
        .fetch(&FetchRequest::new([1]).cursor(seen.cursor))
        .unwrap();
    assert!(b.gap, "a cursor past the head must get gap: true");
    assert_eq!(b.cursor.lanes(), [2; 4]);
    // Ids 3 and 4 are handed out again: the reader gets them, as new events.
    let reused = append_n(&s, 1, 2);
    assert_eq!(reused, vec![3, 4]);
    let next = s.fetch(&FetchRequest::new([1]).cursor(b.cursor)).unwrap();
    assert_eq!(ids(&next), reused);
}

#[test]
fn redis_down_fails_fast_changes_nothing_and_coming_back_needs_no_reopen() {
    let mut server = RedisServer::start_persistent();
    let s = EventStore::open_url(&server.url(), Config::default()).unwrap();
    append_n(&s, 1, 3);
    let head = s.head_cursor().unwrap();

    server.kill();
    let started = Instant::now();
    let e = s
        .append(NewEvent::new("message_create", 1).idempotency_key("k1"))
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Storage, "{e}");
    assert_eq!(
        s.fetch(&FetchRequest::new([1])).unwrap_err().code(),
        ErrorCode::Storage
    );
    let w = s.wait(
        &FetchRequest::new([1]).cursor(head),
        Duration::from_secs(30),
    );
    assert_eq!(w.unwrap_err().code(), ErrorCode::Storage);
    // Refused connections: nothing waits for the 2 s I/O timeout, let alone the 30 s wait.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "calls on a Redis that is down took {:?}",
        started.elapsed()
    );

    server.run();
    // Same store, not reopened: the failed append left nothing behind.
    assert_eq!(s.head_cursor().unwrap(), head);
    let b = s.fetch(&FetchRequest::new([1]).cursor(head)).unwrap();
    assert!(b.events.is_empty() && !b.gap);
    let id = s
        .append(NewEvent::new("message_create", 1).idempotency_key("k1"))
        .unwrap();
    assert_eq!(id, 4);
    let b = s.fetch(&FetchRequest::new([1]).cursor(head)).unwrap();
    assert_eq!(ids(&b), vec![4]);
    assert!(!b.gap);
}

#[test]
fn idempotent_appends() {
    let server = RedisServer::start();
    let s = EventStore::open_url(&server.url(), Config::default()).unwrap();
    let ev = || NewEvent::new("message_create", 1).idempotency_key("msg-9");
    let a = s.append(ev()).unwrap();
    assert_eq!(s.append(ev()).unwrap(), a, "a retry returns the first id");
    // The same key for another event: refused, and the whole batch with it.
    let head = s.head_cursor().unwrap();
    let e = s
        .append_batch(vec![
            NewEvent::new("message_create", 2),
            ev().data(r#"{"other":true}"#),
        ])
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::IdempotencyConflict);
    assert_eq!(
        s.head_cursor().unwrap(),
        head,
        "nothing of the batch written"
    );
    // Twice in one batch: one event.
    let ids = s
        .append_batch(vec![
            NewEvent::new("x", 1).idempotency_key("b"),
            NewEvent::new("x", 1).idempotency_key("b"),
        ])
        .unwrap();
    assert_eq!(ids[0], ids[1]);
    let b = s.fetch(&FetchRequest::new([1])).unwrap();
    assert_eq!(b.events.len(), 2);
}

#[test]
fn purged_keys_are_free_again_and_readers_get_gap() {
    let server = RedisServer::start();
    let clock = ManualClock::new(1_000_000);
    let cfg = Config {
        clock: Arc::new(clock.clone()),
        ..Config::default()
    };
    let s = EventStore::open_url(&server.url(), cfg).unwrap();
    let start = s.head_cursor().unwrap();
    let a = s
        .append(
            NewEvent::new("message_create", 1)
                .ttl(Duration::from_secs(1))
                .idempotency_key("k"),
        )
        .unwrap();
    let keep = s.append(NewEvent::new("message_create", 1)).unwrap();
    clock.advance_ms(1_000);
    assert_eq!(s.purge_expired(usize::MAX).unwrap(), 1);
    assert_eq!(s.purge_expired(usize::MAX).unwrap(), 0);
    let b = s.fetch(&FetchRequest::new([1]).cursor(start)).unwrap();
    assert!(b.gap, "the purged event was owed");
    assert_eq!(ids(&b), vec![keep]);
    // Another channel's reader was owed nothing.
    let other = s.fetch(&FetchRequest::new([2]).cursor(start)).unwrap();
    assert!(!other.gap);
    // The key went with its event: it names a new one now.
    let again = s
        .append(NewEvent::new("message_create", 1).idempotency_key("k"))
        .unwrap();
    assert!(again > a);
}

#[test]
fn a_wait_is_woken_by_another_stores_append() {
    let server = RedisServer::start();
    let url = server.url();
    let waiter = EventStore::open_url(&url, Config::default()).unwrap();
    let writer = EventStore::open_url(&url, Config::default()).unwrap();
    let head = waiter.head_cursor().unwrap();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        writer.append(NewEvent::new("message_create", 3)).unwrap()
    });
    let b = waiter
        .wait(
            &FetchRequest::new([3]).cursor(head),
            Duration::from_secs(20),
        )
        .unwrap();
    let id = t.join().unwrap();
    assert_eq!(
        ids(&b),
        vec![id],
        "woken with the event, not by the timeout"
    );
    // Nothing new: the wait times out with the same position.
    let b2 = waiter
        .wait(
            &FetchRequest::new([3]).cursor(b.cursor),
            Duration::from_millis(100),
        )
        .unwrap();
    assert!(b2.events.is_empty() && !b2.gap);
    assert_eq!(b2.cursor, b.cursor);
    // Closing ends a wait at once with Closed.
    let waiter = Arc::new(waiter);
    let w2 = waiter.clone();
    let t = std::thread::spawn(move || {
        w2.wait(
            &FetchRequest::new([3]).cursor(b.cursor),
            Duration::from_secs(30),
        )
    });
    std::thread::sleep(Duration::from_millis(100));
    waiter.close();
    assert_eq!(t.join().unwrap().unwrap_err().code(), ErrorCode::Closed);
}

#[test]
fn consumer_cursors_are_kept_across_reopening_and_advance_ids_works() {
    let server = RedisServer::start();
    let url = server.url();
    let s = EventStore::open_url(&url, Config::default()).unwrap();
    append_n(&s, 1, 2);
    let c = s.head_cursor().unwrap();
    s.commit_cursor("indexer", &c).unwrap();
    assert_eq!(s.load_cursor("nobody").unwrap(), None);
    drop(s);
    let s = EventStore::open_url(&url, Config::default()).unwrap();
    assert_eq!(s.load_cursor("indexer").unwrap(), Some(c));
    assert_eq!(s.advance_ids(1000).unwrap(), 1000);
    assert_eq!(s.append(NewEvent::new("x", 1)).unwrap(), 1001);
    assert_eq!(s.advance_ids(5).unwrap(), 1001);
    assert_eq!(
        s.advance_ids(1 << 60).unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    let b = s.fetch(&FetchRequest::new([1]).cursor(c)).unwrap();
    assert_eq!(ids(&b), vec![1001]);
    assert!(!b.gap);
}

#[test]
fn the_largest_batch_is_one_append_with_consecutive_ids() {
    let server = RedisServer::start();
    let s = EventStore::open_url(&server.url(), Config::default()).unwrap();
    let n = lms_realtime::store::MAX_BATCH;
    let batch = (0..n)
        .map(|i| {
            if i % 10 == 0 {
                // The same event under k0 or k10, every 20 events.
                NewEvent::new("message_create", 1).idempotency_key(format!("k{}", i % 20))
            } else {
                let ty = ["message_create", "reaction_add", "badge_update"][i % 3];
                NewEvent::new(ty, 1 + (i % 7) as i64)
            }
        })
        .collect();
    let ids = s.append_batch(batch).unwrap();
    // Keys k0 and k10 repeat every 20 events: only their first events are new.
    assert_eq!(ids[20], ids[0]);
    assert_eq!(ids[30], ids[10]);
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), n - (n / 10 - 2));
    assert_eq!(distinct, (1..=distinct.len() as i64).collect::<Vec<_>>());
    let mut got = 0;
    let mut cursor = lms_realtime::Cursor::START;
    loop {
        let b = s
            .fetch(&FetchRequest::new(1..=7).cursor(cursor).limit(1000))
            .unwrap();
        got += b.events.len();
        cursor = b.cursor;
        if !b.has_more {
            break;
        }
    }
    assert_eq!(got, distinct.len());
}

/// Writers on four stores (four processes, as far as Redis can tell) append while a reader on a
/// fifth waits and fetches: every event arrives exactly once, in order within its lane.
#[test]
fn concurrent_writers_and_a_waiting_reader_lose_and_repeat_nothing() {
    let server = RedisServer::start();
    let url = server.url();
    let per_writer = 150;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = EventStore::open_url(&url, Config::default()).unwrap();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..per_writer {
                    let ty = [
                        "message_create",
                        "reaction_add",
                        "badge_update",
                        "stats_update",
                    ][(i + w) % 4];
                    if i % 5 == 0 {
                        let batch = (0..3)
                            .map(|_| NewEvent::new(ty, 1 + (i % 2) as i64))
                            .collect();
                        ids.extend(store.append_batch(batch).unwrap());
                    } else {
                        ids.push(store.append(NewEvent::new(ty, 1 + (i % 2) as i64)).unwrap());
                    }
                }
                ids
            })
        })
        .collect();
    let reader = EventStore::open_url(&url, Config::default()).unwrap();
    let mut cursor = lms_realtime::Cursor::START;
    let mut seen = std::collections::HashSet::new();
    let mut last_in_lane = [0i64; 4];
    let total = 4 * (per_writer + 2 * per_writer / 5);
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < total {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} events arrived within 60 s",
            seen.len()
        );
        let b = reader
            .wait(
                &FetchRequest::new([1, 2]).cursor(cursor).limit(7),
                Duration::from_secs(5),
            )
            .unwrap();
        assert!(!b.gap, "nothing expired or was purged");
        for e in &b.events {
            assert!(seen.insert(e.id), "event {} delivered twice", e.id);
            let l = e.priority.lane();
            assert!(e.id > last_in_lane[l], "lane {l} out of order at {}", e.id);
            last_in_lane[l] = e.id;
        }
        cursor = b.cursor;
    }
    let mut appended: Vec<i64> = writers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    appended.sort_unstable();
    let mut got: Vec<i64> = seen.into_iter().collect();
    got.sort_unstable();
    assert_eq!(got, appended);
}

#[test]
fn tls_files_on_a_plain_url_are_refused_clearly() {
    // rediss:// itself works (tests/redis_connect.rs); certificates for a plain URL are a
    // mistake said at open, not a plain-text connection.
    let e = EventStore::open_url("redis://127.0.0.1:1/0?tls_ca=/ca.pem", Config::default())
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    assert!(e.to_string().contains("rediss://"), "{e}");
}

#[test]
fn the_background_purger_removes_expired_events() {
    let server = RedisServer::start();
    let url = server.url();
    let clock = ManualClock::new(1_000_000);
    let cfg = Config {
        clock: Arc::new(clock.clone()),
        purge_interval: Some(Duration::from_millis(10)),
        ..Config::default()
    };
    let s = EventStore::open_url(&url, cfg).unwrap();
    s.append(NewEvent::new("message_create", 1).ttl(Duration::from_secs(1)))
        .unwrap();
    // (message_create is critical: lane 0.)
    let lane = format!("lmsrt:{{{}}}:l:1:0", url.rsplit("store=").next().unwrap());
    assert_eq!(server.command(&["XLEN", &lane]).as_deref(), Some(":1"));
    clock.advance_ms(1_000);
    let deadline = Instant::now() + Duration::from_secs(20);
    // The lane left empty is deleted.
    while server.command(&["EXISTS", &lane]).as_deref() != Some(":0") {
        assert!(
            Instant::now() < deadline,
            "the purger did not remove the expired event within 20 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Closing stops the purger (the store's drop joins it).
    s.close();
}

#[test]
fn one_batch_of_mixed_expiries_is_purged_event_by_event_and_in_chunks() {
    let server = RedisServer::start();
    let clock = ManualClock::new(1_000_000);
    let cfg = Config {
        clock: Arc::new(clock.clone()),
        ..Config::default()
    };
    let url = server.url();
    let s = EventStore::open_url(&url, cfg).unwrap();
    let start = s.head_cursor().unwrap();
    let ttl = |i: usize, secs| {
        NewEvent::new("message_create", 1)
            .ttl(Duration::from_secs(secs))
            .idempotency_key(format!("k{i}"))
    };
    // One append, one lane: its expiry is one range, whose events fall due at different times.
    let got = s
        .append_batch(vec![
            ttl(0, 1),
            ttl(1, 3600),
            ttl(2, 1),
            ttl(3, 1),
            ttl(4, 7200),
        ])
        .unwrap();
    let lane = format!("{}:l:1:0", key_prefix(&url));
    assert_eq!(server.command(&["XLEN", &lane]).as_deref(), Some(":5"));
    clock.advance_ms(1_000);
    // A purge takes at most what it is asked for, also inside one append's range.
    assert_eq!(s.purge_expired(2).unwrap(), 2);
    assert_eq!(s.purge_expired(2).unwrap(), 1);
    assert_eq!(s.purge_expired(2).unwrap(), 0);
    let b = s.fetch(&FetchRequest::new([1]).cursor(start)).unwrap();
    assert!(b.gap, "three purged events were owed");
    assert_eq!(ids(&b), vec![got[1], got[4]]);
    clock.advance_ms(3_600_000);
    assert_eq!(s.purge_expired(usize::MAX).unwrap(), 1);
    let b = s.fetch(&FetchRequest::new([1]).cursor(start)).unwrap();
    assert_eq!(ids(&b), vec![got[4]]);
    clock.advance_ms(3_600_000);
    assert_eq!(s.purge_expired(usize::MAX).unwrap(), 1);
    assert_eq!(s.purge_expired(usize::MAX).unwrap(), 0);
    let b = s.fetch(&FetchRequest::new([1]).cursor(start)).unwrap();
    assert!(b.events.is_empty() && b.gap);
    // The lane left empty is gone; a new append opens it again.
    assert_eq!(server.command(&["EXISTS", &lane]).as_deref(), Some(":0"));
    let next = s.append(NewEvent::new("message_create", 1)).unwrap();
    assert_eq!(next, got[4] + 1);
    let b = s.fetch(&FetchRequest::new([1]).cursor(b.cursor)).unwrap();
    assert_eq!(ids(&b), vec![next]);
}

#[test]
fn a_sequence_below_the_lanes_top_refuses_the_append_and_writes_nothing() {
    let server = RedisServer::start();
    let url = server.url();
    let s = EventStore::open_url(&url, Config::default()).unwrap();
    append_n(&s, 1, 3);
    // The sequence key lost (evicted, or edited) while the lanes were kept.
    let seq = format!("{}:seq", key_prefix(&url));
    assert_eq!(server.command(&["DEL", &seq]).as_deref(), Some(":1"));
    let e = s
        .append_batch(vec![
            NewEvent::new("message_create", 2),
            NewEvent::new("message_create", 1),
        ])
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Storage, "{e}");
    assert!(e.to_string().contains("sequence"), "{e}");
    // Put back: nothing of the refused append is there, and appends go on after it.
    assert_eq!(server.command(&["SET", &seq, "3"]).as_deref(), Some("+OK"));
    let all = s.fetch(&FetchRequest::new([1, 2])).unwrap();
    assert_eq!(ids(&all), vec![1, 2, 3]);
    assert_eq!(append_n(&s, 2, 1), vec![4]);
}

/// `lmsrt:{NAME}` of the store at `url`.
fn key_prefix(url: &str) -> String {
    format!("lmsrt:{{{}}}", url.rsplit("store=").next().unwrap())
}
