//! Fan-out: one tail subscription per store feeds a ring of recent events in memory and wakes
//! only the waiters whose channels and filters match.
//!
//! The store's tail reader (one thread, woken by the cross-process futex on every commit from
//! any process) hands every new event to [`Hub::on_tail`] in id order. The hub appends them to
//! the ring and, per event, looks up the waiters of its channel and notifies those whose lane
//! position, thread and types match: O(matching waiters) per event, no database query per
//! waiter. A woken waiter builds its batch with [`EventStore::assemble`] from the ring — the same
//! batch a fetch would return — and only reads the database when the ring no longer reaches back
//! to its cursor (a client far behind, or the first poll with an old cursor).
//!
//! ## Why no wake-up is lost
//!
//! A waiter registers *before* it builds its first batch, and it always builds from the ring or
//! the store *after* registering. An event is pushed into the ring before the waiters are looked
//! up (two locks, taken in that order). So an event is either in the ring when the waiter reads
//! it, or pushed after the registration, and then the waiter is notified. For a batch read from
//! the store the same holds: the tail reader only routes events committed after it read them,
//! which is after the fetch's snapshot began, which is after the registration. `Notify` keeps a
//! permit when nobody is awaiting yet, so a notification between the check and the await is not
//! lost either.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tokio::sync::Notify;

use crate::event::Event;
use crate::store::{Batch, EventStore, FetchRequest, TailBatch};

/// A waiting poll as the hub sees it.
#[derive(Debug)]
pub(crate) struct Waiter {
    id: u64,
    channels: Vec<i64>,
    thread: Option<i64>,
    types: Vec<String>,
    /// Per lane: events at or below this id do not concern the waiter.
    lanes: [AtomicI64; 4],
    pub(crate) notify: Notify,
    fired: AtomicBool,
}

impl Waiter {
    /// Updates the positions below which events do not concern this waiter.
    pub(crate) fn set_lanes(&self, lanes: [i64; 4]) {
        for (a, v) in self.lanes.iter().zip(lanes) {
            a.store(v, Ordering::Release);
        }
    }

    fn matches(&self, e: &Event) -> bool {
        e.id > self.lanes[e.priority.lane()].load(Ordering::Acquire)
            && self.thread.is_none_or(|t| e.thread_id == Some(t))
            && (self.types.is_empty() || self.types.contains(&e.event_type))
    }

    /// Waits for a notification (a permit stored before this call counts).
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
        self.fired.store(false, Ordering::Release);
    }
}

/// Events held in memory: every event with an id in `(floor, head]`, ascending.
#[derive(Debug, Default)]
struct Ring {
    events: Vec<Event>,
    /// Index of the first live entry of `events` (trimmed lazily, in chunks).
    start: usize,
    floor: i64,
    head: i64,
    /// False until the first head is known.
    ready: bool,
}

impl Ring {
    fn live(&self) -> &[Event] {
        &self.events[self.start..]
    }
}

/// The fan-out hub of one store.
#[derive(Debug)]
pub(crate) struct Hub {
    ring: RwLock<Ring>,
    waiters: Mutex<HashMap<i64, HashMap<u64, Arc<Waiter>>>>,
    capacity: usize,
    next_id: AtomicU64,
    count: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The answer of [`Hub::assemble`].
pub(crate) enum FromRing {
    /// The batch, as a fetch would have returned it.
    Batch(Batch),
    /// The ring does not reach back to the cursor (or the cursor is from another store): fetch.
    Miss,
}

impl Hub {
    /// A hub keeping up to `capacity` recent events.
    pub(crate) fn new(capacity: usize) -> Hub {
        Hub {
            ring: RwLock::new(Ring::default()),
            waiters: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            next_id: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Called once the subscription exists: every event above `start` will be handed over.
    pub(crate) fn start_at(&self, start: i64) {
        let mut r = self.ring.write().unwrap_or_else(|p| p.into_inner());
        if !r.ready {
            r.ready = true;
            r.floor = start;
            r.head = start;
        }
    }

    /// The subscription callback (on the store's tail-reader thread): must be quick.
    pub(crate) fn on_tail(&self, batch: &TailBatch<'_>) {
        {
            let mut r = self.ring.write().unwrap_or_else(|p| p.into_inner());
            if !r.ready || batch.after != r.head {
                // First batch, or a discontinuity: the ring restarts here.
                r.events.clear();
                r.start = 0;
                r.floor = batch.after;
                r.ready = true;
            }
            r.events.extend_from_slice(batch.events);
            r.head = batch.head;
            let live = r.events.len() - r.start;
            if live > self.capacity {
                let drop = live - self.capacity;
                r.start += drop;
                r.floor = r.events[r.start - 1].id;
                // Compact when the dead prefix is as large as the live part, so trimming is
                // amortised O(1) per event.
                if r.start >= self.capacity {
                    let start = r.start;
                    r.events.drain(..start);
                    r.start = 0;
                }
            }
        }
        let waiters = lock(&self.waiters);
        if waiters.is_empty() {
            return;
        }
        for e in batch.events {
            let Some(ws) = waiters.get(&e.channel_id) else {
                continue;
            };
            for w in ws.values() {
                if !w.fired.load(Ordering::Acquire) && w.matches(e) {
                    w.fired.store(true, Ordering::Release);
                    w.notify.notify_one();
                }
            }
        }
    }

    /// Registers a waiter for `req` (normalized) starting at its cursor.
    pub(crate) fn register(self: &Arc<Self>, req: &FetchRequest) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let lanes = req.cursor.lanes();
        let w = Arc::new(Waiter {
            id,
            channels: req.channels.clone(),
            thread: req.thread_id,
            types: req.types.clone(),
            lanes: lanes.map(AtomicI64::new),
            notify: Notify::new(),
            fired: AtomicBool::new(false),
        });
        {
            let mut ws = lock(&self.waiters);
            for ch in &w.channels {
                ws.entry(*ch).or_default().insert(id, w.clone());
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        Registration {
            hub: self.clone(),
            waiter: w,
        }
    }

    /// Waiters registered now.
    pub(crate) fn waiter_count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Events in the ring, and the ids it covers.
    pub(crate) fn ring_stats(&self) -> (usize, i64, i64) {
        let r = self.ring.read().unwrap_or_else(|p| p.into_inner());
        (r.events.len() - r.start, r.floor, r.head)
    }

    /// Builds the batch for `req` from the ring, if the ring reaches back to its cursor.
    pub(crate) fn assemble(&self, store: &EventStore, req: &FetchRequest) -> FromRing {
        let r = self.ring.read().unwrap_or_else(|p| p.into_inner());
        let floor = req.cursor.min_position();
        if !r.ready || floor < r.floor {
            return FromRing::Miss;
        }
        let live = r.live();
        let from = live.partition_point(|e| e.id <= floor);
        match store.assemble(req, &live[from..], r.head) {
            Ok(Some(b)) => FromRing::Batch(b),
            _ => FromRing::Miss,
        }
    }
}

/// A registered waiter; unregisters when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    hub: Arc<Hub>,
    pub(crate) waiter: Arc<Waiter>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut ws = lock(&self.hub.waiters);
        for ch in &self.waiter.channels {
            if let Some(m) = ws.get_mut(ch) {
                m.remove(&self.waiter.id);
                if m.is_empty() {
                    ws.remove(ch);
                }
            }
        }
        self.hub.count.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Priority;
    use crate::{Config, NewEvent};

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
        hub.on_tail(&TailBatch {
            events: &events,
            after: 0,
            head: 10,
        });
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
        hub.on_tail(&TailBatch {
            events: &[ev(20, 1)],
            after: 19,
            head: 20,
        });
        assert_eq!(hub.ring_stats(), (1, 19, 20));
        let _ = store.append(NewEvent::new("x", 1));
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
        hub.on_tail(&TailBatch {
            events: &[ev(3, 1)],
            after: 0,
            head: 3,
        });
        assert!(a.waiter.fired.load(Ordering::Acquire));
        assert!(!b.waiter.fired.load(Ordering::Acquire));
        assert!(!c.waiter.fired.load(Ordering::Acquire), "below its cursor");
        drop((a, b, c));
        assert_eq!(hub.waiter_count(), 0);
        assert!(lock(&hub.waiters).is_empty());
    }
}
