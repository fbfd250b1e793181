//! `advance_ids`: the id floor, and readers, subscribers and appenders across the jump.

use super::*;

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
