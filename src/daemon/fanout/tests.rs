//! The hub alone, without HTTP: ring, dispatch, shared responses, registration.

use bytes::Bytes;

use super::*;
use crate::event::Priority;
use crate::guards::ClientMode;
use crate::{Config, NewEvent};

/// Hands `events` to the hub as the store's tail reader would.
fn feed(hub: &Hub, events: &[Event], after: i64, head: i64) {
    hub.on_tail(&TailBatch {
        events,
        after,
        head,
    });
}

fn style(mode: ClientMode) -> Style {
    Style {
        format: Format::Poll,
        mode,
        retry_ms: 0,
    }
}

fn ev(id: i64, ch: i64) -> Event {
    Event {
        id,
        event_type: "message_create".into(),
        priority: Priority::Critical,
        channel_id: ch,
        message_id: None,
        thread_id: None,
        user_id: 0,
        data: "{}".into(),
        timestamp: 0,
        expires_at: i64::MAX,
    }
}

#[test]
fn ring_trims_and_reports_misses_below_its_floor() {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path().join("e.db"), Config::default()).unwrap();
    let hub = Arc::new(Hub::new(4));
    hub.start_at(0);
    let events: Vec<Event> = (1..=10).map(|i| ev(i, 1)).collect();
    feed(&hub, &events, 0, 10);
    assert_eq!(hub.ring_stats(), (4, 6, 10));
    let req = FetchRequest::new([1]).normalized().unwrap();
    assert!(matches!(hub.assemble(&store, &req), FromRing::Miss));
    let req = FetchRequest::new([1])
        .cursor(crate::Cursor::from_last_event_id(7))
        .normalized()
        .unwrap();
    let FromRing::Batch(b) = hub.assemble(&store, &req) else {
        panic!("the ring covers 7")
    };
    assert_eq!(
        b.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        [8, 9, 10]
    );
    // A discontinuity restarts the ring.
    feed(&hub, &[ev(20, 1)], 19, 20);
    assert_eq!(hub.ring_stats(), (1, 19, 20));
    let _ = store.append(NewEvent::new("x", 1));
}

#[test]
fn identical_polls_share_one_rendered_response() {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path().join("e.db"), Config::default()).unwrap();
    let hub = Arc::new(Hub::new(16));
    hub.start_at(0);
    feed(&hub, &[ev(1, 1), ev(2, 2)], 0, 2);
    let renders = std::cell::Cell::new(0);
    let render = |b: &Batch| {
        renders.set(renders.get() + 1);
        Rendered::new(
            Bytes::from(format!("{}", b.events.len())),
            vec![],
            ClientMode::Long,
            b.cursor,
        )
    };
    let req = FetchRequest::new([1]).normalized().unwrap();
    let Answer::Ready(a) = hub.respond(&store, &req, style(ClientMode::Long), render) else {
        panic!()
    };
    let Answer::Ready(b) = hub.respond(&store, &req, style(ClientMode::Long), render) else {
        panic!()
    };
    assert!(Arc::ptr_eq(&a, &b));
    // Another channel, another mode, or a newer head: rendered anew.
    let other = FetchRequest::new([2]).normalized().unwrap();
    assert!(matches!(
        hub.respond(&store, &other, style(ClientMode::Long), render),
        Answer::Ready(_)
    ));
    assert!(matches!(
        hub.respond(&store, &req, style(ClientMode::Medium), render),
        Answer::Ready(_)
    ));
    // The same batch in the LMS theme's format is another body.
    let lms = Style {
        format: Format::Lms,
        ..style(ClientMode::Long)
    };
    let Answer::Ready(l) = hub.respond(&store, &req, lms, render) else {
        panic!()
    };
    assert!(!Arc::ptr_eq(&a, &l));
    feed(&hub, &[ev(3, 1)], 2, 3);
    let Answer::Ready(c) = hub.respond(&store, &req, style(ClientMode::Long), render) else {
        panic!()
    };
    assert_eq!(&c.body[..], b"2");
    assert_eq!(renders.get(), 5);
    // Nothing new past the cursor: empty, with the cursor to wait from.
    let at_head = FetchRequest::new([1])
        .cursor(crate::Cursor::from_last_event_id(3))
        .normalized()
        .unwrap();
    assert!(matches!(
        hub.respond(&store, &at_head, style(ClientMode::Long), render),
        Answer::Empty(_)
    ));
}

#[test]
fn commits_with_no_waiter_are_dispatched_without_a_wake_up_and_still_seen() {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path().join("e.db"), Config::default()).unwrap();
    let hub = Arc::new(Hub::new(16));
    hub.start_at(0);
    feed(&hub, &[ev(1, 1), ev(2, 1)], 0, 2);
    assert_eq!(*lock(&hub.shards[0].dispatched), 2, "counted as dispatched");
    // A poll registering afterwards reads them from the ring.
    let req = FetchRequest::new([1]).normalized().unwrap();
    let reg = hub.register(&req);
    let render = |b: &Batch| {
        Rendered::new(
            Bytes::from(format!("{}", b.events.len())),
            vec![],
            ClientMode::Long,
            b.cursor,
        )
    };
    let Answer::Ready(r) = hub.respond(&store, &req, style(ClientMode::Long), render) else {
        panic!("the events are in the ring")
    };
    assert_eq!(&r.body[..], b"2");
    // With a waiter registered, a commit is dispatched to it.
    reg.waiter.set_lanes([2; 4]);
    feed(&hub, &[ev(3, 1)], 2, 3);
    assert_eq!(
        *lock(&hub.shards[0].dispatched),
        2,
        "left to the dispatcher"
    );
    hub.dispatch();
    assert!(reg.waiter.fired.load(Ordering::Acquire));
}

#[test]
fn a_woken_waiter_leaves_every_map_and_rearms() {
    let hub = Arc::new(Hub::new(16));
    hub.start_at(0);
    // Channels 1 and 2: woken by an event on 1, it leaves the map of 2 as well.
    let a = hub.register(&FetchRequest::new([1, 2]).normalized().unwrap());
    let b = hub.register(&FetchRequest::new([2]).normalized().unwrap());
    assert_eq!(hub.waiter_count(), 2);
    feed(&hub, &[ev(1, 1)], 0, 1);
    hub.dispatch();
    assert!(a.waiter.fired.load(Ordering::Acquire));
    assert_eq!(hub.waiter_count(), 1, "only b is still registered");
    {
        let ws = lock(&hub.shards[0].waiters);
        assert!(!ws.contains_key(&1));
        assert_eq!(ws[&2].len(), 1);
    }
    // A second event on 2 wakes only b: a is out of the maps until it rearms.
    feed(&hub, &[ev(2, 2)], 1, 2);
    hub.dispatch();
    assert!(b.waiter.fired.load(Ordering::Acquire));
    assert_eq!(hub.waiter_count(), 0);
    assert!(lock(&hub.shards[0].waiters).is_empty());
    // Rearmed (a poll that found nothing to deliver), it is woken by the next event.
    assert!(a.rearm());
    assert!(!a.rearm(), "already registered");
    a.waiter.set_lanes([2; 4]);
    assert_eq!(hub.waiter_count(), 1);
    feed(&hub, &[ev(3, 2)], 2, 3);
    hub.dispatch();
    assert!(a.waiter.fired.load(Ordering::Acquire));
    // Dropping fired registrations leaves the count alone (the dispatcher counted them).
    drop((a, b));
    assert_eq!(hub.waiter_count(), 0);
    assert!(lock(&hub.shards[0].waiters).is_empty());
}

#[test]
fn only_matching_waiters_are_notified() {
    let hub = Arc::new(Hub::new(16));
    hub.start_at(0);
    let a = hub.register(&FetchRequest::new([1]).normalized().unwrap());
    let b = hub.register(&FetchRequest::new([2]).normalized().unwrap());
    let c = hub.register(
        &FetchRequest::new([1])
            .cursor(crate::Cursor::from_last_event_id(5))
            .normalized()
            .unwrap(),
    );
    assert_eq!(hub.waiter_count(), 3);
    feed(&hub, &[ev(3, 1)], 0, 3);
    hub.dispatch();
    assert!(a.waiter.fired.load(Ordering::Acquire));
    assert!(!b.waiter.fired.load(Ordering::Acquire));
    assert!(!c.waiter.fired.load(Ordering::Acquire), "below its cursor");
    drop((a, b, c));
    assert_eq!(hub.waiter_count(), 0);
    assert!(lock(&hub.shards[0].waiters).is_empty());
}

/// A store that lost data restarts its ids below the ring's head (a Redis restarted empty):
/// every waiter is woken, whatever its lanes, and no response rendered before is reused.
#[test]
fn a_discontinuity_below_the_head_wakes_every_waiter() {
    let hub = Arc::new(Hub::new(16));
    hub.start_at(0);
    feed(&hub, &[ev(1, 1), ev(2, 1), ev(3, 1)], 0, 3);
    hub.dispatch();
    let at_head = FetchRequest::new([1])
        .cursor(crate::Cursor::from_last_event_id(3))
        .normalized()
        .unwrap();
    let reg = hub.register(&at_head);
    lock(&hub.responses).put(3, 7, &at_head, style(ClientMode::Long), &{
        Arc::new(Rendered::new(
            Bytes::from_static(b"old"),
            Vec::new(),
            ClientMode::Long,
            crate::Cursor::from_last_event_id(3),
        ))
    });
    // The new epoch starts at 0; its event 1 is below the waiter's lanes.
    feed(&hub, &[], 0, 0);
    feed(&hub, &[ev(1, 1)], 0, 1);
    assert_eq!(hub.ring_stats(), (1, 0, 1));
    hub.dispatch();
    assert!(
        reg.waiter.fired.load(Ordering::Acquire),
        "woken to rebuild its batch"
    );
    assert!(
        lock(&hub.responses)
            .get(3, &at_head, style(ClientMode::Long))
            .is_err(),
        "nothing rendered before the discontinuity is reused"
    );
}
