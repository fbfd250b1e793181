//! Gaps reported for purged events: only where one was, only for what a filter matches, and
//! from folded and version 1 records.

use super::*;

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
        crate::store::writer::fold_purged(&tx, live).unwrap();
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
    assert_eq!(v, crate::store::schema::SCHEMA_VERSION);
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
