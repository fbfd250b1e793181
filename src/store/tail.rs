//! Waking waiters: one tail reader per store, and a registry of waiters by channel.
//!
//! Every committed append bumps a counter in shared memory and wakes its futex (see
//! [`crate::shm::ChangeSignal`]). One watcher thread per store sleeps on that futex; when it
//! moves, the watcher reads the new events' routing columns (id, channel, lane, thread, type)
//! once, and signals only the waiters whose channels and filters match. A thousand idle waiters
//! therefore cost one query per append, not a thousand, and a waiter on a quiet channel is not
//! woken by traffic elsewhere.
//!
//! The futex wake is the fast path (microseconds). As a safety net against a writer that died
//! between its commit and its wake-up, the watcher also looks at the head every
//! [`SAFETY_NET`]; that costs one indexed read per interval per process.
//!
//! ## Commits of this process
//!
//! A commit by this process's own writer hands its events over directly ([`Tail::hand_off`]),
//! before it bumps the counter: the writer knows them, with their ids, and that they are every
//! event in `(head before, head after]` (it held the writer lock). Reading them back cost the
//! watcher a wake-up, a read transaction and a decode per event, more CPU than the commit's
//! own work in the daemon. Both paths deliver through one ordered step ([`deliver`]) that
//! moves the routed head only from where it stands: a hand-off that does not start exactly
//! there (another process's commit came first and is not read yet, or the watcher has already
//! read these rows) does nothing, and the watcher reads as before. So each event is routed
//! once, in id order, whichever path carries it. The watcher, woken by a bump, skips its look
//! at the database when every bump since its last look was a hand-off's (see [`Looked`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::conn::open_connection;
use super::{FetchRequest, Shared, fetch};
use crate::error::{Error, Result};
use crate::event::Event;

/// How often the watcher checks the head without having been woken.
pub(crate) const SAFETY_NET: Duration = Duration::from_millis(250);

/// Rows the watcher reads per query when many events arrive at once.
const TAIL_CHUNK: i64 = 2048;

#[derive(Debug)]
struct Waiter {
    thread: Option<i64>,
    types: Vec<String>,
    lanes: [i64; 4],
    fired: bool,
}

#[derive(Debug)]
struct WaiterSlot {
    state: Mutex<Waiter>,
    cv: Condvar,
}

/// What a tail subscriber is handed: every event with an id in `(after, head]` that still
/// exists, in id order. An event whose stored data cannot be delivered (see
/// [`undeliverable_events_seen`](super::undeliverable_events_seen)) comes as expired:
/// `expires_at` 0 and data `{}`.
#[derive(Debug)]
pub struct TailBatch<'a> {
    /// The events, ascending by id.
    pub events: &'a [Event],
    /// The head of the previous batch handed to this subscriber (or the subscription's start).
    /// When it is not (only on Redis, after the engine lost data: a new epoch, whose ids start
    /// again at 0, or a head gone back), the batch is a discontinuity: what the subscriber holds
    /// is stale, and events continue from here. The store's [`epoch`](super::EventStore::epoch)
    /// has been updated before such a batch.
    pub after: i64,
    /// Every event with an id at or below this has now been handed over (or had been purged).
    pub head: i64,
}

/// A subscriber's callback. It runs on the store's tail-reader thread, or on the thread of a
/// commit of this process (see [`Tail::hand_off`]), one call at a time, so it must be quick
/// (hand the events to a queue) and must not call back into the store.
pub type TailCallback = Arc<dyn Fn(&TailBatch<'_>) + Send + Sync>;

#[derive(Default)]
struct Registry {
    next_id: u64,
    by_channel: HashMap<i64, Vec<(u64, Arc<WaiterSlot>)>>,
    subscribers: Vec<(u64, TailCallback)>,
    watcher: Option<std::thread::JoinHandle<()>>,
    /// Events at or below this id have been routed.
    routed_head: i64,
    /// Hand-offs that routed a commit's events, wrapping (each is followed by one bump of the
    /// change counter).
    handed: u32,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("channels", &self.by_channel.len())
            .field("subscribers", &self.subscribers.len())
            .field("routed_head", &self.routed_head)
            .finish()
    }
}

#[derive(Debug)]
pub(crate) struct Tail {
    shared: Arc<Shared>,
    registry: Arc<Mutex<Registry>>,
    /// Held by whoever delivers (the watcher or a hand-off) from its check of the routed head
    /// until its subscribers have returned, so batches reach them in order.
    order: Arc<Mutex<()>>,
}

/// Where an engine keeps its subscribers: a [`Subscription`] removes its callback from it.
pub(crate) trait Subscribers: Send + Sync {
    /// Removes subscriber `id`.
    fn remove(&self, id: u64);
}

impl Subscribers for Mutex<Registry> {
    fn remove(&self, id: u64) {
        lock(self).subscribers.retain(|(i, _)| *i != id);
    }
}

/// A tail subscription (see [`EventStore::subscribe`](super::EventStore::subscribe)); the
/// callback is removed when this is dropped.
pub struct Subscription {
    registry: Arc<dyn Subscribers>,
    id: u64,
    start: i64,
}

impl Subscription {
    /// Subscriber `id` of `registry`, handed every event with an id above `start`.
    pub(crate) fn new(registry: Arc<dyn Subscribers>, id: u64, start: i64) -> Subscription {
        Subscription {
            registry,
            id,
            start,
        }
    }

    /// The subscription hands over every event with an id above this.
    pub fn start(&self) -> i64 {
        self.start
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("start", &self.start)
            .finish()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// A waiter's registration; unregisters on drop.
pub(crate) struct Registration<'a> {
    tail: &'a Tail,
    id: u64,
    channels: Vec<i64>,
    slot: Arc<WaiterSlot>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tail {
    pub(crate) fn new(shared: Arc<Shared>) -> Tail {
        Tail {
            shared,
            registry: Arc::new(Mutex::new(Registry::default())),
            order: Arc::new(Mutex::new(())),
        }
    }

    /// Registers a waiter for `req` and makes sure the watcher runs. Register *before* the
    /// first fetch: any event committed after that fetch's snapshot is then routed to us.
    pub(crate) fn register(
        &self,
        req: &FetchRequest,
        head: impl FnOnce() -> Result<i64>,
    ) -> Result<Registration<'_>> {
        let slot = Arc::new(WaiterSlot {
            state: Mutex::new(Waiter {
                thread: req.thread_id,
                types: req.types.clone(),
                lanes: req.cursor.lanes(),
                fired: false,
            }),
            cv: Condvar::new(),
        });
        let mut reg = lock(&self.registry);
        self.ensure_watcher(&mut reg, head)?;
        reg.next_id += 1;
        let id = reg.next_id;
        for ch in &req.channels {
            reg.by_channel
                .entry(*ch)
                .or_default()
                .push((id, slot.clone()));
        }
        Ok(Registration {
            tail: self,
            id,
            channels: req.channels.clone(),
            slot,
        })
    }

    /// Starts the watcher if it is not running. It must start from a head read now, before
    /// the caller's first fetch; starting from a later head could skip an event that fetch did
    /// not see.
    fn ensure_watcher(&self, reg: &mut Registry, head: impl FnOnce() -> Result<i64>) -> Result<()> {
        if reg.watcher.is_none() {
            reg.routed_head = head()?;
            let shared = self.shared.clone();
            let registry = self.registry.clone();
            let order = self.order.clone();
            let h = std::thread::Builder::new()
                .name("lmsrt-tail".into())
                .spawn(move || watch(shared, registry, order))
                .map_err(|e| Error::io(&self.shared.path, e))?;
            reg.watcher = Some(h);
        }
        Ok(())
    }

    /// Adds a tail subscriber; returns its id and the head it starts after: it will be handed
    /// every event with a larger id.
    pub(crate) fn subscribe(
        &self,
        f: TailCallback,
        head: impl FnOnce() -> Result<i64>,
    ) -> Result<Subscription> {
        let mut reg = lock(&self.registry);
        self.ensure_watcher(&mut reg, head)?;
        reg.next_id += 1;
        let id = reg.next_id;
        reg.subscribers.push((id, f));
        Ok(Subscription::new(
            self.registry.clone(),
            id,
            reg.routed_head,
        ))
    }

    /// Hands over what a commit of this process added: `events()` gives every event with an id
    /// in `(after, head]`, ascending. Routed here if the tail has routed exactly up to `after`;
    /// otherwise left to the watcher (see the module docs). Call it before bumping the change
    /// counter. Returns whether it was routed here (counted as a hand-off): then the watcher
    /// has nothing to read for this commit, and the bump need not wake it.
    pub(crate) fn hand_off(
        &self,
        after: i64,
        head: i64,
        events: impl FnOnce() -> Vec<Event>,
    ) -> bool {
        if head <= after {
            return false;
        }
        let _order = lock(&self.order);
        {
            let mut reg = lock(&self.registry);
            if reg.watcher.is_none() || reg.routed_head != after {
                return false;
            }
            if reg.subscribers.is_empty() && reg.by_channel.is_empty() {
                reg.routed_head = head;
                reg.handed = reg.handed.wrapping_add(1);
                return true;
            }
        }
        // Nobody else moves the routed head while `order` is held.
        if deliver(&self.registry, after, head, &events()) {
            let mut reg = lock(&self.registry);
            reg.handed = reg.handed.wrapping_add(1);
            return true;
        }
        false
    }

    /// Stops the watcher and wakes every waiter (they then see the store closed).
    pub(crate) fn shutdown(&self) {
        let h = {
            let mut reg = lock(&self.registry);
            for slots in reg.by_channel.values() {
                for (_, s) in slots {
                    lock(&s.state).fired = true;
                    s.cv.notify_all();
                }
            }
            reg.watcher.take()
        };
        self.shared.signal.nudge();
        if let Some(h) = h {
            let _ = h.join();
        }
    }
}

impl Registration<'_> {
    /// Updates the positions below which events do not concern this waiter.
    pub(crate) fn set_lanes(&self, lanes: [i64; 4]) {
        lock(&self.slot.state).lanes = lanes;
    }

    /// Sleeps until a matching event is routed to us or `deadline` passes. Returns whether we
    /// were signalled (and clears the signal).
    pub(crate) fn sleep_until(&self, deadline: Instant) -> bool {
        let mut st = lock(&self.slot.state);
        loop {
            if st.fired {
                st.fired = false;
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .slot
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut reg = lock(&self.tail.registry);
        for ch in &self.channels {
            if let Some(v) = reg.by_channel.get_mut(ch) {
                v.retain(|(id, _)| *id != self.id);
                if v.is_empty() {
                    reg.by_channel.remove(ch);
                }
            }
        }
    }
}

/// Where the watcher last looked at the database: the change counter and the hand-off count
/// read just before. When the counter has moved since by exactly as many bumps as there were
/// hand-offs, every commit since was this process's and already routed: no look is needed. If a
/// hand-off's bump is still to come while another process's bump stands in for it, that bump
/// comes right after the hand-off and makes the counts differ, so the look is only deferred to
/// it; a counter that did not move (the safety net's timeout) always looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Looked {
    seq: u32,
    handed: u32,
}

impl Looked {
    fn covers(self, now: Looked) -> bool {
        now.seq != self.seq
            && now.seq.wrapping_sub(self.seq) == now.handed.wrapping_sub(self.handed)
    }
}

fn watch(shared: Arc<Shared>, registry: Arc<Mutex<Registry>>, order: Arc<Mutex<()>>) {
    let conn = match open_connection(&shared.path, shared.durability) {
        Ok(c) => c,
        Err(_) => return, // waiters still wake on their own deadlines
    };
    let mut looked: Option<Looked> = None;
    while !shared.closed.load(Ordering::SeqCst) {
        // Read the counter before the database: a commit after this read changes the counter,
        // so the futex wait below returns at once instead of sleeping through it. (The
        // hand-off count is read after it: a hand-off counted here bumps after it counted.)
        let seen = shared.signal.current();
        let now = Looked {
            seq: seen,
            handed: lock(&registry).handed,
        };
        let routed = looked.is_some_and(|l| l.covers(now))
            || route_new_events(&conn, &registry, &order).is_ok();
        looked = if routed {
            Some(now)
        } else {
            // Failed: the next round looks again, whatever the counts say.
            std::thread::sleep(Duration::from_millis(10));
            None
        };
        if shared.closed.load(Ordering::SeqCst) {
            break;
        }
        shared.signal.wait_change(seen, SAFETY_NET);
    }
}

/// Routes every event committed past the routed head (see [`deliver`]), in chunks.
fn route_new_events(
    conn: &Connection,
    registry: &Mutex<Registry>,
    order: &Mutex<()>,
) -> Result<()> {
    loop {
        let from = lock(registry).routed_head;
        let head = fetch::head_id(conn)?;
        if head <= from {
            return Ok(());
        }
        {
            let _order = lock(order);
            let mut reg = lock(registry);
            if reg.subscribers.is_empty() && reg.by_channel.is_empty() {
                if reg.routed_head == from {
                    reg.routed_head = head;
                }
                return Ok(());
            }
        }
        let batch = fetch::events_between(conn, from, head, TAIL_CHUNK)?;
        // Purged ids leave holes: when a chunk comes back short, everything up to the head
        // that still exists has been read.
        let upto = if (batch.len() as i64) < TAIL_CHUNK {
            head
        } else {
            batch.last().map_or(head, |e| e.id)
        };
        // A hand-off may have moved the routed head meanwhile: then this chunk is dropped and
        // the next round reads from where it stands now.
        let _order = lock(order);
        deliver(registry, from, upto, &batch);
    }
}

/// Routes `events`, every event with an id in `(after, upto]`, if the routed head is `after`:
/// wakes the matching waiters, moves the head to `upto` and hands the batch to every
/// subscriber. Returns whether it did (false: the head had moved, nothing was done). The
/// caller holds the tail's `order` lock, so deliveries reach subscribers in order.
fn deliver(registry: &Mutex<Registry>, after: i64, upto: i64, events: &[Event]) -> bool {
    let subscribers = {
        let mut reg = lock(registry);
        if reg.routed_head != after {
            return false;
        }
        for ev in events {
            let Some(slots) = reg.by_channel.get(&ev.channel_id) else {
                continue;
            };
            for (_, slot) in slots {
                let mut w = lock(&slot.state);
                if w.fired || ev.id <= w.lanes[ev.priority.lane()] {
                    continue;
                }
                if w.thread.is_some_and(|t| ev.thread_id != Some(t)) {
                    continue;
                }
                if !w.types.is_empty() && !w.types.contains(&ev.event_type) {
                    continue;
                }
                w.fired = true;
                slot.cv.notify_all();
            }
        }
        // Moving the head in the same critical section as taking the subscriber list means a
        // new subscriber starts exactly after the last batch it was not part of.
        reg.routed_head = upto;
        reg.subscribers.clone()
    };
    for (_, f) in &subscribers {
        f(&TailBatch {
            events,
            after,
            head: upto,
        });
    }
    true
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Instant;

    use crate::event::NewEvent;
    use crate::store::EventStore;

    use super::*;

    /// The watcher skips its look only when the counter moved by exactly the hand-offs since:
    /// never on a timeout (no move), never when another writer bumped too; counts wrap.
    #[test]
    fn the_reader_skips_only_bumps_that_were_hand_offs() {
        let at = |seq, handed| Looked { seq, handed };
        let last = at(10, 4);
        assert!(!last.covers(at(10, 4)), "a timeout or a nudge looks");
        assert!(last.covers(at(12, 6)), "two bumps, both hand-offs");
        assert!(!last.covers(at(12, 5)), "another writer's bump");
        assert!(
            !last.covers(at(11, 6)),
            "a hand-off whose bump is still to come"
        );
        assert!(at(u32::MAX, u32::MAX).covers(at(1, 1)), "across the wrap");
    }

    /// Appends through the subscribed store (handed off) interleave with appends through a
    /// second store on the same file, as another process's: every event reaches the subscriber
    /// exactly once, in id order, each batch starting where the last ended, and both paths
    /// carried some.
    #[test]
    fn hand_offs_and_the_reader_deliver_every_event_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        let ours = Arc::new(EventStore::open(&path, Default::default()).unwrap());
        let other = Arc::new(EventStore::open(&path, Default::default()).unwrap());
        #[derive(Default)]
        struct Seen {
            head: Option<i64>,
            ids: Vec<i64>,
            by_reader: usize,
            handed: usize,
            out_of_order: Vec<String>,
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let sub = ours
            .subscribe(move |b| {
                let mut s = lock(&s);
                if let Some(h) = s.head
                    && b.after != h
                {
                    s.out_of_order
                        .push(format!("batch after {} follows head {h}", b.after));
                }
                s.head = Some(b.head);
                s.ids.extend(b.events.iter().map(|e| e.id));
                if std::thread::current().name() == Some("lmsrt-tail") {
                    s.by_reader += b.events.len();
                } else {
                    s.handed += b.events.len();
                }
            })
            .unwrap();
        let mut appended = Vec::new();
        std::thread::scope(|scope| {
            let mut threads = Vec::new();
            for (store, n) in [(&ours, 0), (&ours, 1), (&other, 2), (&other, 3)] {
                threads.push(scope.spawn(move || {
                    let mut ids = Vec::new();
                    for i in 0..300 {
                        let batch = (0..1 + i % 3).map(|_| NewEvent::new("m", 1 + n)).collect();
                        ids.extend(store.append_batch(batch).unwrap());
                    }
                    ids
                }));
            }
            for t in threads {
                appended.extend(t.join().unwrap());
            }
        });
        let last = *appended.iter().max().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock(&seen).head.is_none_or(|h| h < last) {
            assert!(
                Instant::now() < deadline,
                "the subscriber reached {:?}, not {last}, within 10 s",
                lock(&seen).head
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(sub);
        let s = lock(&seen);
        assert!(s.out_of_order.is_empty(), "{:?}", s.out_of_order);
        assert!(
            s.ids.windows(2).all(|w| w[0] < w[1]),
            "ids delivered in strictly ascending order, each once"
        );
        let delivered: BTreeSet<i64> = s.ids.iter().copied().collect();
        let expected: BTreeSet<i64> = appended.iter().copied().collect();
        assert_eq!(delivered, expected, "every appended event, nothing else");
        assert!(
            s.handed > 0 && s.by_reader > 0,
            "both paths carried events: {} handed off, {} read back",
            s.handed,
            s.by_reader
        );
    }
}
