//! Appends: ids, validation, idempotency keys, and group commit across threads.

use super::*;

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
