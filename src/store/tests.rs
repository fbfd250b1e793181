use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::ErrorCode;
use crate::clock::ManualClock;

fn open_with_clock(dir: &tempfile::TempDir) -> (EventStore, ManualClock) {
    let clock = ManualClock::new(1_700_000_000_000);
    let cfg = Config {
        clock: Arc::new(clock.clone()),
        ..Config::default()
    };
    (
        EventStore::open(dir.path().join("t.db"), cfg).unwrap(),
        clock,
    )
}

fn ev(t: &str, ch: i64) -> NewEvent {
    NewEvent::new(t, ch)
}

#[test]
fn append_assigns_increasing_ids_and_fetch_returns_them() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_with_clock(&dir);
    let a = s
        .append(ev("message_create", 1).data(r#"{"x":1}"#))
        .unwrap();
    let b = s.append(ev("badge_update", 1)).unwrap();
    assert!(b > a);
    let batch = s.fetch(&FetchRequest::new([1])).unwrap();
    assert_eq!(
        batch.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![a, b]
    );
    assert_eq!(batch.events[0].data, r#"{"x":1}"#);
    assert!(!batch.gap && !batch.has_more);
    let again = s
        .fetch(&FetchRequest::new([1]).cursor(batch.cursor))
        .unwrap();
    assert!(again.events.is_empty());
}

#[test]
fn every_validation_error_has_its_code_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_with_clock(&dir);
    let cases: Vec<(NewEvent, ErrorCode)> = vec![
        (ev("Bad", 1), ErrorCode::InvalidEventType),
        (ev("ok", 0), ErrorCode::InvalidChannel),
        (ev("ok", -5), ErrorCode::InvalidChannel),
        (ev("ok", 1).data("[1]"), ErrorCode::InvalidData),
        (ev("ok", 1).data("{oops"), ErrorCode::InvalidData),
        (
            ev("ok", 1).data(format!(r#"{{"a":"{}"}}"#, "x".repeat(70_000))),
            ErrorCode::DataTooLarge,
        ),
        (
            ev("ok", 1).ttl(Duration::from_millis(10)),
            ErrorCode::InvalidTtl,
        ),
        (
            ev("ok", 1).ttl(Duration::from_secs(365 * 86_400)),
            ErrorCode::InvalidTtl,
        ),
        (ev("ok", 1).idempotency_key(""), ErrorCode::InvalidArgument),
    ];
    for (e, code) in cases {
        assert_eq!(s.append(e.clone()).unwrap_err().code(), code, "{e:?}");
        // In a batch, one bad event refuses all.
        let err = s.append_batch(vec![ev("fine", 1), e]).unwrap_err();
        assert_eq!(err.code(), code);
    }
    assert_eq!(s.head_cursor().unwrap().lanes(), [0; 4]);
    for bad in [
        FetchRequest::new([]),
        FetchRequest::new([0]),
        FetchRequest::new([1]).limit(0),
        FetchRequest::new([1]).limit(MAX_LIMIT + 1),
        FetchRequest::new([1]).types(["Nope"]),
        FetchRequest::new(1..=(MAX_CHANNELS as i64 + 1)),
    ] {
        assert!(s.fetch(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn idempotency_key_dedupes_and_detects_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_with_clock(&dir);
    let a = s
        .append(ev("message_create", 1).idempotency_key("k"))
        .unwrap();
    let b = s
        .append(ev("message_create", 1).idempotency_key("k"))
        .unwrap();
    assert_eq!(a, b);
    let err = s
        .append(ev("message_delete", 1).idempotency_key("k"))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::IdempotencyConflict);
    // A conflicting batch leaves nothing behind.
    assert!(
        s.append_batch(vec![
            ev("x", 1).idempotency_key("new"),
            ev("message_delete", 1).idempotency_key("k"),
        ])
        .is_err()
    );
    let all = s.fetch(&FetchRequest::new([1])).unwrap();
    assert_eq!(all.events.len(), 1);
}

#[test]
fn priority_lanes_and_sequential_order() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_with_clock(&dir);
    let low = s.append(ev("statistics_update", 1)).unwrap();
    let norm = s.append(ev("badge_update", 1)).unwrap();
    let crit = s.append(ev("message_create", 1)).unwrap();
    let b = s.fetch(&FetchRequest::new([1]).limit(2)).unwrap();
    // share = 1 per lane; with 3 lanes pending and 2 slots, the oldest heads go first.
    assert_eq!(
        b.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![norm, low]
    );
    assert!(b.has_more);
    let b2 = s
        .fetch(&FetchRequest::new([1]).limit(2).cursor(b.cursor))
        .unwrap();
    assert_eq!(
        b2.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![crit]
    );

    let seq = s
        .fetch(
            &FetchRequest::new([1])
                .order(Order::Sequential)
                .cursor(Cursor::from_last_event_id(0)),
        )
        .unwrap();
    // Sorted by priority inside the batch.
    assert_eq!(
        seq.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![crit, norm, low]
    );
    assert!(seq.cursor.is_sequential());
    assert_eq!(seq.cursor.min_position(), crit);
}

#[test]
fn filters_by_channel_thread_and_type() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_with_clock(&dir);
    s.append(ev("message_create", 1).thread_id(5)).unwrap();
    s.append(ev("message_create", 2).thread_id(5)).unwrap();
    let want = s.append(ev("reaction_update", 1).thread_id(5)).unwrap();
    s.append(ev("reaction_update", 1).thread_id(6)).unwrap();
    let b = s
        .fetch(&FetchRequest::new([1]).thread(5).types(["reaction_update"]))
        .unwrap();
    assert_eq!(
        b.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![want]
    );
}

#[test]
fn expired_events_are_never_delivered_and_report_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (s, clock) = open_with_clock(&dir);
    let start = s.head_cursor().unwrap();
    s.append(ev("message_create", 1).ttl(Duration::from_secs(5)))
        .unwrap();
    let live = s.append(ev("message_create", 1)).unwrap();
    clock.advance_ms(4_999);
    assert_eq!(
        s.fetch(&FetchRequest::new([1]).cursor(start))
            .unwrap()
            .events
            .len(),
        2
    );
    // At exactly its expiry time an event is expired.
    clock.advance_ms(1);
    let b = s.fetch(&FetchRequest::new([1]).cursor(start)).unwrap();
    assert_eq!(
        b.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![live]
    );
    clock.advance_ms(1_000);
    let b = s.fetch(&FetchRequest::new([1]).cursor(start)).unwrap();
    assert_eq!(
        b.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![live]
    );
    assert!(b.gap);
    // Another channel's client saw nothing expire.
    let other = s.fetch(&FetchRequest::new([2]).cursor(start)).unwrap();
    assert!(!other.gap);
    // Purged: still a gap for a client that had not passed it.
    assert_eq!(s.purge_expired(100).unwrap(), 1);
    let b = s.fetch(&FetchRequest::new([1]).cursor(start)).unwrap();
    assert!(b.gap);
    // Not for one that had.
    let after = s.fetch(&FetchRequest::new([1]).cursor(b.cursor)).unwrap();
    assert!(!after.gap);
}

#[test]
fn cursor_from_another_database_reports_a_gap() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let (s1, _) = open_with_clock(&d1);
    let (s2, _) = open_with_clock(&d2);
    s1.append(ev("a", 1)).unwrap();
    s2.append(ev("a", 1)).unwrap();
    let c1 = s1.head_cursor().unwrap();
    let b = s2.fetch(&FetchRequest::new([1]).cursor(c1)).unwrap();
    assert!(b.gap);
    assert_eq!(b.events.len(), 1);
}

#[test]
fn wait_returns_at_once_when_pending_and_wakes_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(EventStore::open(dir.path().join("w.db"), Config::default()).unwrap());
    s.append(ev("a", 1)).unwrap();
    let b = s
        .wait(&FetchRequest::new([1]), Duration::from_secs(30))
        .unwrap();
    assert_eq!(b.events.len(), 1);
    let cur = b.cursor;
    let s2 = s.clone();
    let t = std::thread::spawn(move || {
        s2.wait(&FetchRequest::new([1]).cursor(cur), Duration::from_secs(30))
    });
    std::thread::sleep(Duration::from_millis(50));
    s.append(ev("b", 2)).unwrap(); // another channel: must not end the wait
    let id = s.append(ev("c", 1)).unwrap();
    let b = t.join().unwrap().unwrap();
    assert_eq!(b.events.iter().map(|e| e.id).collect::<Vec<_>>(), vec![id]);
}

#[test]
fn wait_times_out_with_an_empty_batch_and_a_valid_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let s = EventStore::open(dir.path().join("w.db"), Config::default()).unwrap();
    s.append(ev("a", 2)).unwrap();
    let b = s
        .wait(&FetchRequest::new([1]), Duration::from_millis(30))
        .unwrap();
    assert!(b.events.is_empty() && !b.gap);
    assert_eq!(b.cursor.lanes(), [1; 4]);
}

#[test]
fn close_wakes_waiters_and_refuses_later_calls() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(EventStore::open(dir.path().join("c.db"), Config::default()).unwrap());
    let s2 = s.clone();
    let t = std::thread::spawn(move || s2.wait(&FetchRequest::new([1]), Duration::from_secs(60)));
    std::thread::sleep(Duration::from_millis(50));
    s.close();
    assert_eq!(t.join().unwrap().unwrap_err().code(), ErrorCode::Closed);
    assert_eq!(s.append(ev("a", 1)).unwrap_err().code(), ErrorCode::Closed);
    assert_eq!(
        s.fetch(&FetchRequest::new([1])).unwrap_err().code(),
        ErrorCode::Closed
    );
    s.close(); // idempotent
}

#[test]
fn consumer_cursors_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let c = {
        let s = EventStore::open(&path, Config::default()).unwrap();
        s.append(ev("a", 1)).unwrap();
        let c = s.head_cursor().unwrap();
        assert_eq!(s.load_cursor("php").unwrap(), None);
        s.commit_cursor("php", &c).unwrap();
        assert!(s.commit_cursor("", &c).is_err());
        c
    };
    let s = EventStore::open(&path, Config::default()).unwrap();
    assert_eq!(s.load_cursor("php").unwrap(), Some(c));
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.db");
    drop(EventStore::open(&path, Config::default()).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(c);
    let err = EventStore::open(&path, Config::default()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::SchemaTooNew);
}

/// Starts `threads` threads, each appending `per` events to channel 1; join them for the ids.
fn append_from_threads(
    s: &Arc<EventStore>,
    threads: usize,
    per: usize,
) -> Vec<std::thread::JoinHandle<Vec<i64>>> {
    (0..threads)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                (0..per)
                    .map(|i| {
                        s.append(ev("message_create", 1).data(format!(r#"{{"t":{t},"i":{i}}}"#)))
                            .unwrap()
                    })
                    .collect()
            })
        })
        .collect()
}

/// Every id the appending threads were given, without repeats, ascending.
fn distinct_ids(threads: Vec<std::thread::JoinHandle<Vec<i64>>>) -> Vec<i64> {
    let mut ids: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[test]
fn group_commit_from_many_threads_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(EventStore::open(dir.path().join("g.db"), Config::default()).unwrap());
    let threads = append_from_threads(&s, 8, 200);
    let ids = distinct_ids(threads);
    assert_eq!(ids.len(), 1600);
    let mut cur = Cursor::START;
    let mut seen = 0;
    loop {
        let b = s
            .fetch(&FetchRequest::new([1]).cursor(cur).limit(1000))
            .unwrap();
        if b.events.is_empty() {
            break;
        }
        seen += b.events.len();
        cur = b.cursor;
    }
    assert_eq!(seen, 1600);
}

/// Callers queued behind a commit that takes far longer than they watch their slot for go to
/// sleep; each must still be woken with its own ids once the commit lands.
#[test]
fn callers_asleep_behind_a_slow_commit_are_all_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.db");
    let s = Arc::new(EventStore::open(&path, Config::default()).unwrap());
    let before = s.append(ev("message_create", 1)).unwrap();
    // A writer that does not take the store's lock holds SQLite's write lock for a while, so
    // the next leader waits in the busy handler while the others queue.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch("BEGIN IMMEDIATE").unwrap();
    let threads = append_from_threads(&s, 8, 3);
    std::thread::sleep(Duration::from_millis(50));
    raw.execute_batch("COMMIT").unwrap();
    let ids = distinct_ids(threads);
    assert_eq!(ids.len(), 24);
    assert!(ids[0] > before);
    let b = s
        .fetch(&FetchRequest::new([1]).cursor(Cursor::START).limit(100))
        .unwrap();
    assert_eq!(b.events.len(), 25);
}

/// Callers sharing a group each keep their own outcome: a retry of a stored event gets its id,
/// a key reused for a different event fails that caller alone, and neither touches the other
/// callers' rows in the same transaction.
#[test]
fn idempotency_outcomes_stay_per_caller_inside_shared_groups() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(EventStore::open(dir.path().join("i.db"), Config::default()).unwrap());
    const ROUNDS: usize = 100; // 8 × ROUNDS plain events fit one fetch (MAX_LIMIT)
    // Threads 0–3 retry the same event under `same-i`; threads 4–7 each put their own event
    // under `clash-i`. Every thread also appends one event without a key per round.
    let threads: Vec<_> = (0..8usize)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut keyed = Vec::new();
                for i in 0..ROUNDS {
                    let e = if t < 4 {
                        ev("message_create", 1)
                            .data(format!(r#"{{"i":{i}}}"#))
                            .idempotency_key(format!("same-{i}"))
                    } else {
                        ev("message_create", 2)
                            .data(format!(r#"{{"i":{i},"t":{t}}}"#))
                            .idempotency_key(format!("clash-{i}"))
                    };
                    keyed.push(s.append(e).map_err(|e| e.code()));
                    s.append(ev("message_create", 3).data(format!(r#"{{"t":{t},"i":{i}}}"#)))
                        .unwrap();
                }
                keyed
            })
        })
        .collect();
    let keyed: Vec<Vec<std::result::Result<i64, ErrorCode>>> =
        threads.into_iter().map(|h| h.join().unwrap()).collect();
    let all = |ch: i64| {
        s.fetch(
            &FetchRequest::new([ch])
                .cursor(Cursor::START)
                .limit(MAX_LIMIT)
                .order(Order::Sequential),
        )
        .unwrap()
        .events
    };
    let (same, clash, plain) = (all(1), all(2), all(3));
    assert_eq!(plain.len(), 8 * ROUNDS);
    assert_eq!(same.len(), ROUNDS);
    assert_eq!(clash.len(), ROUNDS);
    for i in 0..ROUNDS {
        // What each thread got in round `i`.
        let got: Vec<_> = keyed.iter().map(|k| k[i]).collect();
        let ids: Vec<i64> = got[..4].iter().map(|r| r.unwrap()).collect();
        assert!(ids.iter().all(|&id| id == ids[0]), "round {i}: {ids:?}");
        assert!(same.iter().any(|e| e.id == ids[0]));
        let won: Vec<(usize, i64)> = (4..8)
            .filter_map(|t| got[t].ok().map(|id| (t, id)))
            .collect();
        assert_eq!(won.len(), 1, "round {i}: one clash-{i} append wins");
        for t in (4..8).filter(|&t| t != won[0].0) {
            assert_eq!(got[t], Err(ErrorCode::IdempotencyConflict));
        }
        let stored = clash.iter().find(|e| e.id == won[0].1).unwrap();
        let data: serde_json::Value = serde_json::from_str(&stored.data).unwrap();
        assert_eq!(data["t"], won[0].0, "the stored event is the winner's");
    }
}

/// A row SQLite refuses fails its whole group: every caller in it gets the error (none is left
/// waiting), nothing of the group is stored, and appends after it go on.
#[test]
fn a_failing_insert_fails_its_group_and_leaves_no_caller_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.db");
    let s = Arc::new(EventStore::open(&path, Config::default()).unwrap());
    // Validation cannot produce a row SQLite refuses; a trigger can.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON lmsrt_events WHEN NEW.channel_id = 13
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    let threads: Vec<_> = (0..8i64)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                (0..100i64)
                    .map(|i| {
                        let ch = if (t + i) % 10 == 0 { 13 } else { 1 + t };
                        let r = s.append(ev("message_create", ch).data(format!(r#"{{"i":{i}}}"#)));
                        (ch, r.map_err(|e| e.code()))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // A caller left waiting would hang the joins: a watchdog turns that into a failure (a
    // liveness bound, far beyond any real run; not a timing assertion).
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let all: Vec<_> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let _ = done.send(all);
    });
    let outcomes = finished
        .recv_timeout(Duration::from_secs(120))
        .expect("a caller of a failed group was never answered");
    assert_eq!(outcomes.len(), 800);
    for (ch, r) in &outcomes {
        if *ch == 13 {
            assert!(r.is_err(), "a refused row was acknowledged");
        }
        if let Err(code) = r {
            assert_eq!(*code, ErrorCode::Storage);
        }
    }
    let acked: Vec<i64> = outcomes.iter().filter_map(|(_, r)| r.ok()).collect();
    assert!(!acked.is_empty());
    let stored: Vec<i64> = (1..=8)
        .flat_map(|ch| {
            s.fetch(
                &FetchRequest::new([ch])
                    .cursor(Cursor::START)
                    .limit(MAX_LIMIT),
            )
            .unwrap()
            .events
        })
        .map(|e| e.id)
        .collect();
    let (mut a, mut b) = (acked.clone(), stored);
    a.sort();
    b.sort();
    assert_eq!(a, b, "exactly the acknowledged events are stored");
    s.append(ev("message_create", 1)).unwrap();
}

#[test]
fn background_purger_removes_expired_events() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let cfg = Config {
        clock: Arc::new(clock.clone()),
        purge_interval: Some(Duration::from_millis(10)),
        ..Config::default()
    };
    let s = EventStore::open(dir.path().join("bg.db"), cfg).unwrap();
    let start = s.head_cursor().unwrap();
    s.append(ev("a", 1).ttl(Duration::from_secs(2))).unwrap();
    let keep = s.append(ev("a", 1)).unwrap();
    clock.advance_ms(3_000);
    let count = || -> i64 {
        rusqlite::Connection::open(dir.path().join("bg.db"))
            .unwrap()
            .query_row("SELECT count(*) FROM lmsrt_events", [], |r| r.get(0))
            .unwrap()
    };
    // Poll (not a timing assertion): the purger runs every 10 ms; allow it ample time.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count() != 1 {
        assert!(std::time::Instant::now() < deadline, "purger never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    let b = s.fetch(&FetchRequest::new([1]).cursor(start)).unwrap();
    assert_eq!(
        b.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![keep]
    );
    assert!(b.gap, "the purged event is reported as a gap");
    s.close(); // stops the purger thread
}

/// Waiters are woken only by events they match: an append to one channel ends exactly the
/// waits on that channel, not the other hundreds.
#[test]
fn only_matching_waiters_wake() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(EventStore::open(dir.path().join("many.db"), Config::default()).unwrap());
    let head = s.head_cursor().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiters: Vec<_> = (1..=300i64)
        .map(|ch| {
            let s = s.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let r = s.wait(
                    &FetchRequest::new([ch]).cursor(head),
                    Duration::from_secs(60),
                );
                tx.send((ch, r.map(|b| b.events.len()))).unwrap();
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    s.append(ev("message_create", 77)).unwrap();
    let (ch, n) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!((ch, n.unwrap()), (77, 1));
    // Nobody else returned.
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    s.close();
    let mut rest = 0;
    while let Ok((_, r)) = rx.recv_timeout(Duration::from_secs(30)) {
        assert_eq!(r.unwrap_err().code(), ErrorCode::Closed);
        rest += 1;
        if rest == 299 {
            break;
        }
    }
    assert_eq!(rest, 299);
    for w in waiters {
        w.join().unwrap();
    }
}

#[test]
fn configured_metrics_record_appends_fetches_and_waits_but_not_bad_input_as_errors() {
    use crate::metrics::MetricsConfig;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let metrics = Arc::new(Metrics::open(&db, MetricsConfig::default()).unwrap());
    let cfg = Config {
        metrics: Some(metrics.clone()),
        ..Config::default()
    };
    let s = EventStore::open(&db, cfg).unwrap();
    s.append(ev("message_create", 1)).unwrap();
    s.append_batch(vec![ev("message_create", 1), ev("reaction_update", 2)])
        .unwrap();
    assert!(s.append(ev("Bad!", 1)).is_err());
    let b = s.fetch(&FetchRequest::new([1, 2])).unwrap();
    assert_eq!(b.events.len(), 3);
    let empty = s
        .wait(
            &FetchRequest::new([1, 2]).cursor(b.cursor),
            Duration::from_millis(20),
        )
        .unwrap();
    assert!(empty.events.is_empty());

    // Another handle on the same file (as another process would open it) sees the figures.
    let view = Metrics::open(&db, MetricsConfig::default())
        .unwrap()
        .snapshot();
    let c = |n: &str| view.counters[n].total;
    assert_eq!(c("appends"), 3, "two calls that committed and one refused");
    assert_eq!(c("append_errors"), 0, "bad input is not a store fault");
    assert_eq!(c("fetches"), 1);
    assert_eq!(c("waits"), 1);
    assert_eq!(c("wait_timeouts"), 1);
    assert_eq!(
        view.histograms["append"].count, 2,
        "latency of the committed calls only"
    );
    assert_eq!(view.histograms["fetch"].count, 1);
    assert!(view.histograms["wait"].window.max_us >= 20_000);

    // Without the setting nothing is recorded.
    let dir2 = tempfile::tempdir().unwrap();
    let db2 = dir2.path().join("n.db");
    let quiet = EventStore::open(&db2, Config::default()).unwrap();
    quiet.append(ev("message_create", 1)).unwrap();
    let none = Metrics::open(&db2, MetricsConfig::default())
        .unwrap()
        .snapshot();
    assert_eq!(none.counters["appends"].total, 0);
}

#[test]
fn a_long_wal_is_checkpointed_before_the_commit_count_comes_round() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_with_clock(&dir);
    let db = dir.path().join("t.db");
    let schema_only = std::fs::metadata(&db).unwrap().len();
    // Ten commits (CHECKPOINT_EVERY is 1,000) writing about 5,000 frames (CHECKPOINT_FRAMES
    // is 4,096): 2 KiB rows, two to a page.
    let text = "x".repeat(2000);
    for _ in 0..10 {
        let batch = (0..1000)
            .map(|k| ev("message_create", 1 + k % 50).data(format!(r#"{{"t":"{text}"}}"#)))
            .collect();
        s.append_batch(batch).unwrap();
    }
    assert!(s.shared.wal_frames.load(Ordering::Relaxed) >= conn::CHECKPOINT_FRAMES);
    // Until a checkpoint copies pages back, the database file holds only the schema.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let copied = loop {
        let len = std::fs::metadata(&db).unwrap().len();
        if len > schema_only + (4 << 20) || std::time::Instant::now() > deadline {
            break len;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        copied > schema_only + (4 << 20),
        "no checkpoint ran: the database file is still {copied} bytes"
    );
}

fn ids(b: &Batch) -> Vec<i64> {
    b.events.iter().map(|e| e.id).collect()
}

/// The `sqlite_sequence` rows of `lmsrt_events`, read with a connection of its own.
fn sequence_rows(path: &std::path::Path) -> Vec<i64> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut s = c
        .prepare("SELECT seq FROM sqlite_sequence WHERE name = 'lmsrt_events'")
        .unwrap();
    s.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn advance_ids_raises_the_next_id_once_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adv.db");
    let s = EventStore::open(&path, Config::default()).unwrap();
    // An empty log has no sequence row yet: 0 changes nothing, a real floor creates the row.
    assert_eq!(s.advance_ids(0).unwrap(), 0);
    assert!(sequence_rows(&path).is_empty());
    assert_eq!(s.advance_ids(50).unwrap(), 50);
    assert_eq!(s.head_cursor().unwrap().lanes(), [50; 4]);
    assert_eq!(s.append(ev("message_create", 1)).unwrap(), 51);
    // Behind or at the head: a no-op that returns the head.
    assert_eq!(s.advance_ids(10).unwrap(), 51);
    assert_eq!(s.advance_ids(51).unwrap(), 51);
    // Past the head again: the row is updated, never duplicated.
    assert_eq!(s.advance_ids(70).unwrap(), 70);
    assert_eq!(sequence_rows(&path), vec![70]);
    for bad in [-1, i64::MIN, i64::MAX] {
        let e = s.advance_ids(bad).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{bad}");
    }
    assert_eq!(
        sequence_rows(&path),
        vec![70],
        "refused calls change nothing"
    );
    assert_eq!(s.append(ev("message_create", 1)).unwrap(), 71);
    // The floor is in the file: another handle (another process) sees it, and it survives a
    // reopen.
    let other = EventStore::open(&path, Config::default()).unwrap();
    assert_eq!(other.advance_ids(100).unwrap(), 100);
    drop(other);
    s.close();
    assert_eq!(s.advance_ids(1).unwrap_err().code(), ErrorCode::Closed);
    let s = EventStore::open(&path, Config::default()).unwrap();
    assert_eq!(s.append(ev("message_create", 1)).unwrap(), 101);
}

/// Ids skipped by `advance_ids` were never assigned, so nothing was lost: readers whose cursors
/// are before the jump get the later events with `gap: false`, along both read paths (live
/// tail and catch-up) and the daemon's in-memory one, with priority and sequential cursors.
/// Real expiries and purges on either side of the jump are still reported.
#[test]
fn readers_cross_an_id_jump_without_a_gap() {
    // 256: the jump puts the head far beyond the cursors (catch-up, per-lane index reads);
    // i64::MAX: everything is read in one live-tail query.
    for window in [256, i64::MAX] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_700_000_000_000);
        let cfg = Config {
            clock: Arc::new(clock.clone()),
            live_tail_window: window,
            ..Config::default()
        };
        let s = EventStore::open(dir.path().join("jump.db"), cfg).unwrap();
        let crit = s.append(ev("message_create", 1)).unwrap(); // 1, lane 1
        let low = s.append(ev("statistics_update", 1)).unwrap(); // 2, lane 4
        let norm = s.append(ev("badge_update", 1)).unwrap(); // 3, lane 3
        assert_eq!((crit, low, norm), (1, 2, 3));
        // A priority cursor part-way through the lanes: one slot takes the oldest lane head.
        let part = s.fetch(&FetchRequest::new([1]).limit(1)).unwrap();
        assert_eq!(ids(&part), vec![crit]);
        assert_eq!(part.cursor.lanes(), [3, 3, 0, 0]);
        let head_before = s.head_cursor().unwrap();

        assert_eq!(s.advance_ids(1000).unwrap(), 1000, "window {window}");
        let head_after = s.head_cursor().unwrap();
        assert_eq!(head_after.lanes(), [1000; 4]);
        let c2 = s.append(ev("message_create", 1)).unwrap();
        let high = s.append(ev("reaction_update", 1)).unwrap();
        assert_eq!((c2, high), (1001, 1002));

        let from = |cursor: Cursor, order: Order, limit: usize| {
            s.fetch(
                &FetchRequest::new([1])
                    .cursor(cursor)
                    .order(order)
                    .limit(limit),
            )
            .unwrap()
        };
        // Priority cursors: part-way, and caught up before the jump.
        let b = from(part.cursor, Order::Priority, 50);
        assert_eq!(ids(&b), vec![c2, high, norm, low]);
        assert!(!b.gap && !b.has_more, "window {window}: {b:?}");
        assert_eq!(b.cursor.lanes(), [1002; 4]);
        let b = from(head_before, Order::Priority, 50);
        assert_eq!(ids(&b), vec![c2, high]);
        assert!(!b.gap);
        // One at a time across the jump: every lane position moves over the skipped ids.
        let mut cur = head_before;
        let mut got = Vec::new();
        loop {
            let b = from(cur, Order::Priority, 1);
            assert!(!b.gap, "window {window}: {b:?}");
            if b.events.is_empty() {
                break;
            }
            got.extend(ids(&b));
            cur = b.cursor;
        }
        assert_eq!(got, vec![c2, high]);

        // Sequential integer cursors (a legacy `last_event_id`), also one at a time.
        let b = from(Cursor::parse("3").unwrap(), Order::Sequential, 50);
        assert_eq!(ids(&b), vec![c2, high]);
        assert!(!b.gap);
        assert_eq!(b.cursor.lanes(), [1002; 4]);
        let mut cur = Cursor::from_last_event_id(2);
        let mut got = Vec::new();
        loop {
            let b = from(cur, Order::Sequential, 1);
            assert!(!b.gap, "window {window}: {b:?}");
            if b.events.is_empty() {
                break;
            }
            got.extend(ids(&b));
            cur = b.cursor;
        }
        assert_eq!(got, vec![norm, c2, high]);
        assert_eq!(cur.lanes(), [1002; 4]);
        // A client still holding an id the old backend gave it, inside the skipped range.
        let b = from(Cursor::from_last_event_id(640), Order::Sequential, 50);
        assert_eq!(ids(&b), vec![c2, high]);
        assert!(!b.gap);

        // A new reader starting from the head cursor taken after the call gets only what
        // came after `past`.
        let b = from(head_after, Order::Priority, 50);
        assert_eq!(ids(&b), vec![c2, high]);
        assert!(!b.gap);
        let b = s
            .wait(
                &FetchRequest::new([1]).cursor(part.cursor),
                Duration::from_secs(30),
            )
            .unwrap();
        assert_eq!(ids(&b), vec![c2, high, norm, low]);
        assert!(!b.gap);

        // The daemon's path: the same batch built from events held in memory.
        let all = s.fetch(&FetchRequest::new([1]).limit(1000)).unwrap();
        let mut mem = all.events.clone();
        mem.sort_by_key(|e| e.id);
        for cursor in [part.cursor, head_before, Cursor::from_last_event_id(3)] {
            let req = FetchRequest::new([1]).cursor(cursor);
            let built = s.assemble(&req, &mem, 1002).unwrap().unwrap();
            assert_eq!(built, s.fetch(&req).unwrap());
            assert!(!built.gap);
        }

        // Control: a real loss on either side of the jump is still a gap, and only for
        // cursors that had not passed it.
        let exp_after = s
            .append(ev("badge_update", 1).ttl(Duration::from_secs(1)))
            .unwrap(); // 1003
        clock.advance_ms(2_000);
        let b = from(head_before, Order::Priority, 50);
        assert_eq!(ids(&b), vec![c2, high]);
        assert!(b.gap, "the expired event {exp_after} was missed");
        let b = from(Cursor::from_last_event_id(high), Order::Sequential, 50);
        assert!(b.events.is_empty() && b.gap);
        assert_eq!(s.purge_expired(100).unwrap(), 1);
        let b = from(Cursor::from_last_event_id(high), Order::Sequential, 50);
        assert!(b.events.is_empty() && b.gap, "purged {exp_after}");
        let b = from(Cursor::from_last_event_id(exp_after), Order::Sequential, 50);
        assert!(b.events.is_empty() && !b.gap);
    }
}

/// A tail subscriber (the daemon's fan-out) sees the jump as one continuous stream: the batch
/// after it starts where the last one ended, so the daemon's ring does not restart.
#[test]
fn a_tail_subscriber_follows_an_id_jump_without_a_discontinuity() {
    use std::sync::Mutex;
    let dir = tempfile::tempdir().unwrap();
    let s = EventStore::open(dir.path().join("sub.db"), Config::default()).unwrap();
    s.append(ev("message_create", 1)).unwrap();
    /// What one tail batch handed over: `after`, the event ids, `head`.
    type Seen = (i64, Vec<i64>, i64);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let sink = seen.clone();
    let sub = s
        .subscribe(move |b| {
            sink.lock()
                .unwrap()
                .push((b.after, b.events.iter().map(|e| e.id).collect(), b.head))
        })
        .unwrap();
    assert_eq!(sub.start(), 1);
    assert_eq!(s.advance_ids(500).unwrap(), 500);
    let id = s.append(ev("message_create", 1)).unwrap();
    assert_eq!(id, 501);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().last().is_none_or(|b| b.2 < id) {
        assert!(
            std::time::Instant::now() < deadline,
            "the tail reader never reached {id}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let seen = seen.lock().unwrap();
    let mut at = sub.start();
    let mut events: Vec<i64> = Vec::new();
    for (after, ids, head) in seen.iter() {
        assert_eq!(*after, at, "{seen:?}");
        events.extend(ids);
        at = *head;
    }
    assert_eq!(events, vec![id]);
}

/// Appenders on one handle (group commit) and another handle on the same file advancing the
/// ids meanwhile: every append is ordered before or after the jump, the ids on each side are
/// contiguous, and every append that started after the call returned is above the floor.
#[test]
fn advance_ids_is_ordered_with_concurrent_appends() {
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    const PAST: i64 = 1_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.db");
    let s = Arc::new(EventStore::open(&path, Config::default()).unwrap());
    let other = EventStore::open(&path, Config::default()).unwrap();
    let appended = Arc::new(AtomicUsize::new(0));
    let advanced = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (s, appended, advanced) = (s.clone(), appended.clone(), advanced.clone());
            std::thread::spawn(move || {
                let (mut ids, mut after) = (Vec::new(), Vec::new());
                while after.len() < 50 {
                    let started_after = advanced.load(Ordering::SeqCst);
                    let id = s.append(ev("message_create", 1)).unwrap();
                    appended.fetch_add(1, Ordering::SeqCst);
                    ids.push(id);
                    if started_after {
                        after.push(id);
                    }
                }
                (ids, after)
            })
        })
        .collect();
    while appended.load(Ordering::SeqCst) < 200 {
        std::thread::yield_now();
    }
    assert_eq!(other.advance_ids(PAST).unwrap(), PAST);
    advanced.store(true, Ordering::SeqCst);
    let mut all = Vec::new();
    for t in threads {
        let (ids, after) = t.join().unwrap();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert!(after.iter().all(|id| *id > PAST), "{after:?}");
        all.extend(ids);
    }
    all.sort_unstable();
    let below = all.iter().take_while(|id| **id <= PAST).count();
    let expect: Vec<i64> = (1..=below as i64)
        .chain(PAST + 1..=PAST + (all.len() - below) as i64)
        .collect();
    assert_eq!(all, expect);
    let mut got = Vec::new();
    let mut cur = Cursor::START;
    loop {
        let b = s
            .fetch(&FetchRequest::new([1]).cursor(cur).limit(97))
            .unwrap();
        assert!(!b.gap);
        if b.events.is_empty() {
            break;
        }
        got.extend(ids(&b));
        cur = b.cursor;
    }
    assert_eq!(got, all);
}

#[test]
fn out_of_range_settings_are_refused_by_name_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cfg.db");
    let cases: Vec<(Config, &str)> = vec![
        (
            Config {
                max_data_bytes: 1_000_000_000_000_000_000,
                ..Config::default()
            },
            "max_data_bytes must be 1 to 16777216",
        ),
        (
            Config {
                live_tail_window: -5,
                ..Config::default()
            },
            "live_tail_window must be 0 to 9223372036854775807, not -5",
        ),
        (
            Config {
                max_ttl: Duration::from_millis(u64::MAX),
                ..Config::default()
            },
            "max_ttl (ms) must be 1 to 3155760000000",
        ),
        (
            Config {
                purge_chunk: 0,
                ..Config::default()
            },
            "purge_chunk must be 1 to 100000",
        ),
        (
            Config {
                purge_interval: Some(Duration::ZERO),
                ..Config::default()
            },
            "purge_interval (ms) must be 10 to",
        ),
    ];
    for (cfg, says) in cases {
        let e = EventStore::open(&path, cfg).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert!(e.to_string().contains(says), "{e}");
    }
    assert!(!path.exists(), "nothing was created");
    assert!(Config::default().validate().is_ok());
}

/// Short- and long-lived events interleaved in one lane: purging the short ones is a gap only
/// for a batch whose range holds one of them, not for one that reads the long-lived events
/// between them (a single min..max purge interval per lane said gap for both).
#[test]
fn purges_report_a_gap_only_where_a_purged_event_was() {
    let dir = tempfile::tempdir().unwrap();
    let (s, clock) = open_with_clock(&dir);
    let start = s.head_cursor().unwrap();
    let short = || ev("badge_update", 1).ttl(Duration::from_secs(1));
    let a = s.append(short()).unwrap();
    let b = s.append(ev("badge_update", 1)).unwrap();
    let c = s.append(short()).unwrap();
    let d = s.append(ev("badge_update", 1)).unwrap();
    let req = |cur| FetchRequest::new([1]).cursor(cur).limit(1);
    let first = s.fetch(&req(start)).unwrap();
    assert_eq!(first.events[0].id, a);
    clock.advance_ms(2_000);
    assert_eq!(s.purge_expired(100).unwrap(), 2);
    // (a, b]: only the live b.
    let second = s.fetch(&req(first.cursor)).unwrap();
    assert_eq!(second.events[0].id, b);
    assert!(!second.gap, "nothing purged between {a} and {b}");
    // (b, d]: c was purged.
    let third = s.fetch(&req(second.cursor)).unwrap();
    assert_eq!(third.events[0].id, d);
    assert!(third.gap, "{c} was purged");
    // A client that had read past c before the purge: no gap.
    let fresh = s.fetch(&req(Cursor::from_last_event_id(c))).unwrap();
    assert_eq!(fresh.events[0].id, d);
    assert!(!fresh.gap);
}

/// A purged event of another thread or type is nothing a filtered client would have received.
#[test]
fn purged_events_a_filter_excludes_are_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (s, clock) = open_with_clock(&dir);
    let start = s.head_cursor().unwrap();
    s.append(
        ev("reaction_update", 1)
            .thread_id(6)
            .ttl(Duration::from_secs(1)),
    )
    .unwrap();
    s.append(
        ev("badge_update", 1)
            .thread_id(5)
            .ttl(Duration::from_secs(1)),
    )
    .unwrap();
    let want = s.append(ev("reaction_update", 1).thread_id(5)).unwrap();
    clock.advance_ms(2_000);
    assert_eq!(s.purge_expired(100).unwrap(), 2);
    let filtered = FetchRequest::new([1])
        .cursor(start)
        .thread(5)
        .types(["reaction_update"]);
    let b = s.fetch(&filtered).unwrap();
    assert_eq!(
        b.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![want]
    );
    assert!(!b.gap);
    // Either filter alone lets one of them through: a gap.
    let b = s
        .fetch(&FetchRequest::new([1]).cursor(start).thread(5))
        .unwrap();
    assert!(b.gap);
    let b = s
        .fetch(
            &FetchRequest::new([1])
                .cursor(start)
                .types(["reaction_update"]),
        )
        .unwrap();
    assert!(b.gap);
}

/// Exact records folded into their lane's interval (far behind the head), intervals left by a
/// version 1 file, and purges by a version 1 process still open after the upgrade all still
/// report their gaps: coarser, never fewer.
#[test]
fn folded_and_version_1_purge_records_still_report_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let (s, clock) = open_with_clock(&dir);
    let start = s.head_cursor().unwrap();
    let gone = s
        .append(ev("badge_update", 1).ttl(Duration::from_secs(1)))
        .unwrap();
    let live = s.append(ev("badge_update", 1)).unwrap();
    clock.advance_ms(2_000);
    assert_eq!(s.purge_expired(100).unwrap(), 1);
    let exact = |c: &rusqlite::Connection| -> i64 {
        c.query_row("SELECT count(*) FROM lmsrt_purged_events", [], |r| r.get(0))
            .unwrap()
    };
    {
        let mut c = rusqlite::Connection::open(&path).unwrap();
        assert_eq!(exact(&c), 1);
        let tx = c.transaction().unwrap();
        super::writer::fold_purged(&tx, live).unwrap();
        tx.commit().unwrap();
        assert_eq!(exact(&c), 0, "folded");
    }
    let b = s.fetch(&FetchRequest::new([1]).cursor(start)).unwrap();
    assert_eq!(
        b.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![live]
    );
    assert!(b.gap, "{gone} was purged");
    let past = Cursor::from_last_event_id(gone);
    assert!(!s.fetch(&FetchRequest::new([1]).cursor(past)).unwrap().gap);
    drop(s);

    // A version 1 file: its intervals are kept and read, the exact records are added.
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "DROP TABLE lmsrt_purged_events;
             ALTER TABLE lmsrt_purged DROP COLUMN exact_lo;
             ALTER TABLE lmsrt_purged DROP COLUMN exact_hi;
             ALTER TABLE lmsrt_purged DROP COLUMN folded_hi;
             PRAGMA user_version = 1",
        )
        .unwrap();
    }
    let (s, _) = open_with_clock(&dir);
    let b = s.fetch(&FetchRequest::new([1]).cursor(start)).unwrap();
    assert!(b.gap);
    assert!(!s.fetch(&FetchRequest::new([1]).cursor(past)).unwrap().gap);
    let c = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, super::schema::SCHEMA_VERSION);
    assert_eq!(exact(&c), 0);

    // A version 1 process purges after the upgrade: it widens the interval (to a later event,
    // past the live one) and records nothing else. Every cursor behind it gets the gap.
    let later = s.append(ev("badge_update", 1)).unwrap();
    c.execute(
        "UPDATE lmsrt_purged SET lo = min(lo, ?1), hi = max(hi, ?1)
         WHERE channel_id = 1 AND priority = 3",
        [later],
    )
    .unwrap();
    let b = s.fetch(&FetchRequest::new([1]).cursor(past)).unwrap();
    assert!(b.gap, "a version 1 purge is not recorded exactly");
}
