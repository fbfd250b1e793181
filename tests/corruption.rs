//! A damaged page in the middle of the store: fetches fail with `Corrupt` (not `Storage`, not a
//! hang), the metric counts it and health says unavailable; the check reports the damage; the
//! salvage copies every readable row with its id, keeps cursors, idempotency keys and the id
//! sequence, and records the lost ids so a reader continuing from its old cursor gets a gap.

mod corrupt_common;

use std::collections::BTreeSet;
use std::sync::Arc;

use corrupt_common::{CHANNELS, EVENTS, build, damage, damage_pages, event};
use lms_realtime::error::{Error, ErrorCode};
use lms_realtime::metrics::{HealthStatus, Metrics, MetricsConfig};
use lms_realtime::store::{self, FetchRequest, Order};
use lms_realtime::{Cursor, EventStore};

fn request(cursor: Cursor) -> FetchRequest {
    FetchRequest::new(1..=CHANNELS)
        .order(Order::Sequential)
        .limit(100)
        .cursor(cursor)
}

/// Follows the cursor from `from` until the head or the first error; returns the ids
/// received, the batches' gap flags, the last cursor and the error.
fn read_all(s: &EventStore, from: Cursor) -> (Vec<i64>, bool, Cursor, Option<Error>) {
    let (mut ids, mut gap, mut cursor) = (Vec::new(), false, from);
    for _ in 0..1000 {
        match s.fetch(&request(cursor)) {
            Ok(b) => {
                ids.extend(b.events.iter().map(|e| e.id));
                gap |= b.gap;
                if b.cursor == cursor && b.events.is_empty() {
                    return (ids, gap, cursor, None);
                }
                cursor = b.cursor;
            }
            Err(e) => return (ids, gap, cursor, Some(e)),
        }
    }
    panic!("the reader never reached the head");
}

#[test]
fn a_damaged_page_is_reported_checked_and_salvaged_with_an_honest_gap() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    build(&db);
    damage(&db);

    // Readers hit the damage: a distinct error, every time, and it is counted.
    let metrics = Arc::new(Metrics::in_process(MetricsConfig::default()));
    let s = EventStore::open(
        &db,
        store::Config {
            metrics: Some(metrics.clone()),
            ..store::Config::default()
        },
    )
    .unwrap();
    let (before, _, stuck, err) = read_all(&s, Cursor::START);
    let err = err.expect("a reader crossing the damaged page fails");
    assert_eq!(err.code(), ErrorCode::Corrupt, "{err}");
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert!(!before.is_empty() && before.len() < EVENTS as usize);
    let again = s.fetch(&request(stuck)).unwrap_err();
    assert_eq!(
        again.code(),
        ErrorCode::Corrupt,
        "no way past it without a salvage"
    );
    let snap = metrics.snapshot();
    assert!(
        snap.counters["corrupt_reads"].total >= 2,
        "{:?}",
        snap.counters
    );
    assert_eq!(snap.health.status, HealthStatus::Unavailable);
    assert!(
        snap.health.reasons[0].contains("corrupt"),
        "{:?}",
        snap.health
    );
    assert!(store::corruption_seen().0 >= 2);
    s.close();
    drop(s);

    // The check sees it.
    let report = store::check_file(&db).unwrap();
    assert!(!report.ok, "{report:?}");
    assert!(!report.problems.is_empty());

    // The salvage copies everything else, ids kept, and knows exactly what it lost.
    let new = dir.path().join("salvaged.db");
    let r = store::salvage_file(&db, &new).unwrap();
    assert!(r.dest_ok, "{r:?}");
    assert!(
        r.lost_exact,
        "the index is intact, so the loss is known exactly: {r:?}"
    );
    assert!(
        r.events_lost > 0 && r.events_lost < 50,
        "one leaf page: {r:?}"
    );
    assert_eq!(r.events_copied + r.events_lost, EVENTS as u64, "{r:?}");
    assert_eq!(r.sequence, EVENTS);
    assert!(r.epoch_kept && r.cursors_complete && r.purged_complete);
    assert_eq!(r.cursors_copied, 1);
    assert_eq!(r.lost_ranges.len(), 1, "{r:?}");
    let [lo, hi] = r.lost_ranges[0];
    assert_eq!((hi - lo + 1) as u64, r.events_lost);
    assert!(
        lo > stuck.lanes().into_iter().min().unwrap(),
        "the reader stopped before the damage"
    );
    assert!(store::check_file(&new).unwrap().ok);
    assert!(
        salvage_refuses_to_overwrite(&db, &new),
        "an existing destination is refused"
    );

    let s = EventStore::open(&new, store::Config::default()).unwrap();
    // Every event off the damaged page is there with its original id.
    let (all, _, _, err) = read_all(&s, Cursor::START);
    assert!(err.is_none(), "{err:?}");
    let expected: BTreeSet<i64> = (1..=EVENTS).filter(|i| *i < lo || *i > hi).collect();
    assert_eq!(all.iter().copied().collect::<BTreeSet<_>>(), expected);
    assert_eq!(all.len(), expected.len(), "no duplicates");
    // The wedged reader continues from its old cursor, told about the gap.
    let (mut rest, gap, _, err) = read_all(&s, stuck);
    // Sequential batches are sorted by priority inside each batch.
    rest.sort_unstable();
    assert!(err.is_none(), "{err:?}");
    assert!(gap, "the lost events are reported as a gap");
    let after: Vec<i64> = expected
        .iter()
        .copied()
        .filter(|i| *i > stuck.lanes()[0])
        .collect();
    assert_eq!(rest, after);
    // A reader already past the damage sees no gap.
    let past = Cursor::parse(&hi.to_string()).unwrap();
    let (_, gap, _, _) = read_all(&s, past);
    assert!(!gap);
    // Consumer cursors, idempotency keys and the sequence survive.
    let c = s
        .load_cursor("reader")
        .unwrap()
        .expect("the consumer cursor is copied");
    assert!(c.lanes().into_iter().all(|l| l >= 100));
    let keyed = (1..=EVENTS)
        .find(|i| i % 10 == 0 && (*i < lo || *i > hi))
        .unwrap();
    let pad = "x".repeat(600);
    assert_eq!(
        s.append(event(keyed, &pad)).unwrap(),
        keyed,
        "a replay gets its old id"
    );
    assert_eq!(s.append(event(EVENTS + 1, &pad)).unwrap(), EVENTS + 1);
}

#[test]
fn with_the_index_damaged_too_the_lost_ids_are_a_gap_for_every_channel() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    build(&db);
    damage(&db);
    // The lane index, which tells which channel and lane each lost event belonged to.
    damage_pages(&db, "lmsrt_events_lane", |pages| pages.to_vec());
    let new = dir.path().join("salvaged.db");
    let r = store::salvage_file(&db, &new).unwrap();
    assert!(r.dest_ok, "{r:?}");
    assert!(!r.lost_exact, "{r:?}");
    assert_eq!(r.lost_ranges.len(), 1, "{r:?}");
    let [lo, hi] = r.lost_ranges[0];
    assert_eq!(
        r.events_lost,
        (hi - lo + 1) as u64,
        "an upper bound: every unreadable id"
    );
    assert_eq!(r.events_copied + r.events_lost, EVENTS as u64, "{r:?}");
    let s = EventStore::open(&new, store::Config::default()).unwrap();
    let before = Cursor::parse(&(lo - 1).to_string()).unwrap();
    for ch in 1..=CHANNELS {
        let b = s
            .fetch(&FetchRequest::new([ch]).cursor(before).limit(1000))
            .unwrap();
        assert!(
            b.gap,
            "channel {ch}: which channel lost events is unknown, so all are told"
        );
        assert!(b.events.iter().all(|e| e.id < lo || e.id > hi));
    }
    let past = Cursor::parse(&hi.to_string()).unwrap();
    let b = s.fetch(&FetchRequest::new([1]).cursor(past)).unwrap();
    assert!(!b.gap, "readers past the loss are not told");
}

fn salvage_refuses_to_overwrite(db: &std::path::Path, existing: &std::path::Path) -> bool {
    matches!(
        store::salvage_file(db, existing).map_err(|e| e.code()),
        Err(ErrorCode::InvalidArgument)
    )
}
