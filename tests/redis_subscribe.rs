//! `EventStore::subscribe` on Redis (feature `redis`), the feed of the daemon's fan-out: every
//! event appended through any store handle (another process's, another host's) reaches the
//! subscriber once, in id order, in batches that each start where the last ended; a Redis that
//! restarts empty or loses its newest writes is reported as a discontinuity (a batch whose
//! `after` is not the last head) with the store's epoch moved, and events flow again after it.
//! Kept apart from `redis_store.rs`, which holds the engine's request/response behaviour.

#![cfg(feature = "redis")]

mod redis_common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lms_realtime::{Config, EventStore, NewEvent, Subscription};
use redis_common::RedisServer;

/// What a subscriber saw.
#[derive(Default, Debug)]
struct Seen {
    /// `(after, head, ids)` per batch.
    batches: Vec<(i64, i64, Vec<i64>)>,
}

impl Seen {
    fn head(&self) -> Option<i64> {
        self.batches.last().map(|b| b.1)
    }

    fn ids(&self) -> Vec<i64> {
        self.batches.iter().flat_map(|b| b.2.clone()).collect()
    }

    /// Indexes of the batches that do not start where the one before ended.
    fn discontinuities(&self, start: i64) -> Vec<usize> {
        let mut last = start;
        let mut out = Vec::new();
        for (i, (after, head, _)) in self.batches.iter().enumerate() {
            if *after != last {
                out.push(i);
            }
            last = *head;
        }
        out
    }
}

fn subscribe(s: &EventStore) -> (Arc<Mutex<Seen>>, Subscription) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let into = seen.clone();
    let sub = s
        .subscribe(move |b| {
            into.lock().unwrap().batches.push((
                b.after,
                b.head,
                b.events.iter().map(|e| e.id).collect(),
            ))
        })
        .unwrap();
    (seen, sub)
}

/// Waits (10 s at most) until `done` holds for what the subscriber saw.
fn wait_for(seen: &Mutex<Seen>, what: &str, done: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(&seen.lock().unwrap()) {
        assert!(
            Instant::now() < deadline,
            "within 10 s, the subscriber did not see {what}: {:?}",
            seen.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn append_n(s: &EventStore, channel: i64, n: usize) -> Vec<i64> {
    (0..n)
        .map(|_| s.append(NewEvent::new("message_create", channel)).unwrap())
        .collect()
}

#[test]
fn appends_through_every_handle_reach_the_subscriber_once_in_order() {
    let server = RedisServer::start();
    let url = server.url();
    let ours = EventStore::open_url(&url, Config::default()).unwrap();
    // Another process's (or host's) handle on the same store: nothing shared in memory.
    let other = EventStore::open_url(&url, Config::default()).unwrap();
    append_n(&ours, 1, 3);
    let (seen, sub) = subscribe(&ours);
    assert_eq!(sub.start(), 3, "a subscription starts at the head");

    let mut appended = Vec::new();
    std::thread::scope(|scope| {
        let threads: Vec<_> = [(&ours, 0i64), (&ours, 1), (&other, 2), (&other, 3)]
            .into_iter()
            .map(|(store, n)| {
                scope.spawn(move || {
                    let mut ids = Vec::new();
                    for i in 0..150 {
                        let batch = (0..1 + i % 3).map(|_| NewEvent::new("m", 1 + n)).collect();
                        ids.extend(store.append_batch(batch).unwrap());
                    }
                    ids
                })
            })
            .collect();
        for t in threads {
            appended.extend(t.join().unwrap());
        }
    });
    // Ids skipped by advance_ids leave a long range with no event: crossed, not stalled on.
    other.advance_ids(1_000_000).unwrap();
    appended.extend(append_n(&other, 9, 2));
    appended.sort_unstable();
    let last = *appended.last().unwrap();
    wait_for(&seen, "the last append", |s| s.head() == Some(last));

    let s = seen.lock().unwrap();
    assert!(
        s.discontinuities(3).is_empty(),
        "every batch starts where the last ended: {:?}",
        s.batches
    );
    assert_eq!(
        s.ids(),
        appended,
        "every event once, in id order, nothing else"
    );
    drop(s);

    // Dropped: no more deliveries.
    drop(sub);
    let before = seen.lock().unwrap().batches.len();
    append_n(&other, 1, 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(seen.lock().unwrap().batches.len(), before);
}

#[test]
fn a_redis_restarted_empty_is_a_discontinuity_and_events_flow_again() {
    let mut server = RedisServer::start();
    let url = server.url();
    let ours = EventStore::open_url(&url, Config::default()).unwrap();
    let other = EventStore::open_url(&url, Config::default()).unwrap();
    let (seen, _sub) = subscribe(&ours);
    append_n(&other, 1, 5);
    wait_for(&seen, "the first 5 events", |s| s.head() == Some(5));
    let old_epoch = ours.epoch();

    server.restart();
    // Down and up: the feed reconnects by itself. The new epoch's ids start again at 1.
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        match other.append(NewEvent::new("message_create", 1)) {
            Ok(id) => break vec![id],
            Err(e) => assert!(
                Instant::now() < deadline,
                "appends did not come back within 10 s: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(fresh, vec![1]);
    let fresh: Vec<i64> = fresh.into_iter().chain(append_n(&other, 1, 2)).collect();
    wait_for(&seen, "the new epoch's events", |s| {
        s.ids().ends_with(&fresh) && s.head() == Some(3)
    });

    let s = seen.lock().unwrap();
    let cuts = s.discontinuities(0);
    assert_eq!(cuts.len(), 1, "one discontinuity: {:?}", s.batches);
    let (after, head, ids) = &s.batches[cuts[0]];
    assert_eq!((*after, *head), (0, 0), "the new epoch starts at 0");
    assert!(ids.is_empty());
    assert_eq!(
        s.ids(),
        vec![1, 2, 3, 4, 5, 1, 2, 3],
        "nothing twice per epoch"
    );
    assert_ne!(ours.epoch(), old_epoch, "the epoch was updated");
    assert_eq!(
        ours.head_cursor().unwrap(),
        other.head_cursor().unwrap(),
        "both handles see the new epoch"
    );
}

#[test]
fn a_head_gone_back_under_the_same_epoch_is_a_discontinuity_at_the_head() {
    let server = RedisServer::start();
    let url = server.url();
    let ours = EventStore::open_url(&url, Config::default()).unwrap();
    let (seen, _sub) = subscribe(&ours);
    append_n(&ours, 1, 4);
    wait_for(&seen, "4 events", |s| s.head() == Some(4));
    // A failover that kept the epoch but lost ids 3 and 4.
    let store_name = url.rsplit("store=").next().unwrap();
    let key = |k: &str| format!("lmsrt:{{{store_name}}}:{k}");
    assert_eq!(
        server.command(&["SET", &key("seq"), "2"]).as_deref(),
        Some("+OK")
    );
    // (message_create is critical: lane 0.) The stream's top id goes back too, as on a
    // replica that never got 3 and 4.
    server.command(&["XDEL", &key("l:1:0"), "3", "4"]);
    server.command(&["XSETID", &key("l:1:0"), "2"]);
    server.command(&["ZADD", &key("lanes"), "2", &key("l:1:0")]);
    let epoch = ours.epoch();
    // Seen within the safety net's read, or at once after a failover's reconnect. (Appends
    // before that reusing every lost id would go unseen: the case docs/redis.md calls
    // undetectable.)
    wait_for(&seen, "the head going back", |s| {
        s.discontinuities(0).len() == 1
    });
    // Ids 3 and 4 are handed out again, to new events.
    let reused = append_n(&ours, 1, 3);
    assert_eq!(reused, vec![3, 4, 5]);
    wait_for(&seen, "the reused ids", |s| s.head() == Some(5));
    let s = seen.lock().unwrap();
    let cuts = s.discontinuities(0);
    assert_eq!(cuts.len(), 1, "one discontinuity: {:?}", s.batches);
    assert_eq!(s.batches[cuts[0]].0, 2, "restarts at the head now");
    assert_eq!(s.ids(), vec![1, 2, 3, 4, 3, 4, 5]);
    assert_eq!(ours.epoch(), epoch);
}
