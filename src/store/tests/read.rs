//! Fetches: priority lanes and sequential order, filters, expiry, cursors from another file.

use super::*;

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
