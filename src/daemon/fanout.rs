//! Fan-out: one tail subscription per store feeds a ring of recent events in memory and wakes
//! only the waiters whose channels and filters match.
//!
//! The store hands every new event to [`Hub::on_tail`] in id order: the appender's commits
//! directly from its thread, with their ids, and other processes' commits (a PHP worker's)
//! from its tail reader (one thread, woken by the cross-process futex on every commit). The hub appends them to
//! the ring and kicks a dispatcher task, which, per new event, looks up the waiters of its
//! channel and notifies those whose lane position, thread and types match: O(matching waiters)
//! per event, no database query per waiter. (Waking from a runtime thread queues the woken
//! polls locally; from the tail thread each wake would cross into the runtime.) A woken waiter builds its batch with [`EventStore::assemble`] from the ring — the same
//! batch a fetch would return — and only reads the database when the ring no longer reaches back
//! to its cursor (a client far behind, or the first poll with an old cursor).
//!
//! A publish through the daemon usually reaches the ring before it is acknowledged; an event
//! appended by another process (or a publish committed right after one, before the tail reader
//! has read that), when the tail reader has read it, a fraction of a millisecond after its
//! commit. So a poll with `timeout=0` sent right after such a commit may not see the event yet: it sees it on its next poll (its cursor never moves past an event
//! the ring has not seen). A poll that waits is woken by it.
//!
//! ## Why no wake-up is lost
//!
//! A waiter registers *before* it builds its first batch, and it always builds from the ring or
//! the store *after* registering. An event is pushed into the ring before the dispatcher looks
//! the waiters up (it reads the events from the ring, then takes the waiters' lock). So an event is either in the ring when the waiter reads
//! it, or pushed after the registration, and then the waiter is notified. For a batch read from
//! the store the same holds: the tail reader only routes events committed after it read them,
//! which is after the fetch's snapshot began, which is after the registration. `Notify` keeps a
//! permit when nobody is awaiting yet, so a notification between the check and the await is not
//! lost either.
//!
//! The dispatcher takes a waiter it wakes out of the waiter maps. A woken poll almost always
//! has a batch to deliver; one that finds nothing after all registers again
//! ([`Registration::rearm`]) and builds its batch again after that, as it did the first time.
//!
//! The cache of rendered responses the waiters share is in `fanout/responses.rs`; the hub's
//! tests are in `fanout/tests.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tokio::sync::Notify;

use crate::cursor::Cursor;
use crate::event::Event;
use crate::store::{Batch, EventStore, FetchRequest, TailBatch};

mod responses;
pub(crate) use responses::{Format, Rendered, Style};
use responses::{Responses, shareable};

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
    /// Set (under its shard's waiters lock) when the dispatcher wakes the waiter and takes it
    /// out of the waiter maps: the woken poll then has nothing to unregister, and a poll that
    /// finds nothing to deliver after all registers again ([`Registration::rearm`]).
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

/// The waiters of one shard (one serving thread with its own runtime, see `daemon::run`),
/// with its own dispatcher: a fan-out wakes each shard's polls from that shard's thread, so
/// their responses are written in parallel, and each wake-up stays local to its runtime.
#[derive(Debug, Default)]
struct Shard {
    /// Wakes this shard's dispatcher task.
    kick: Notify,
    /// Events at or below this id have been dispatched to this shard's waiters.
    dispatched: Mutex<i64>,
    /// Per channel, by registration id: the dispatcher wakes a channel's waiters oldest
    /// first. That order is also the order their connections were served in before, and so
    /// roughly the order their tasks, buffers and sockets sit in memory; a fan-out's polls
    /// then run in that order rather than in a hash order that jumps across thousands of
    /// cold pages (measured: the median write phase of a fan-out to 10,000 polls went from
    /// 118.5 ms to 96.8 ms, and the load generator, reading them in its own connection order,
    /// kept up better too).
    waiters: Mutex<HashMap<i64, BTreeMap<u64, Arc<Waiter>>>>,
    count: AtomicU64,
}

thread_local! {
    /// The shard whose runtime runs on this thread (0 unless a shard thread set it).
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as the one of shard `i`: polls registering from it join that shard.
pub(crate) fn set_current_shard(i: usize) {
    SHARD.with(|s| s.set(i));
}

/// The fan-out hub of one store.
#[derive(Debug)]
pub(crate) struct Hub {
    ring: RwLock<Ring>,
    responses: Mutex<Responses>,
    shards: Vec<Shard>,
    capacity: usize,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The answer of [`Hub::assemble`].
#[cfg(test)]
pub(crate) enum FromRing {
    /// The batch, as a fetch would have returned it.
    Batch(Batch),
    /// The ring does not reach back to the cursor (or the cursor is from another store): fetch.
    Miss,
}

/// The answer of [`Hub::respond`].
pub(crate) enum Answer {
    /// Something to deliver (events, a gap, or more to come): the rendered response.
    Ready(Arc<Rendered>),
    /// Nothing yet: wait from this cursor.
    Empty(Cursor),
    /// The ring cannot serve this cursor: fetch from the store.
    Miss,
}

impl Hub {
    /// A hub keeping up to `capacity` recent events, with one shard.
    #[cfg(test)]
    pub(crate) fn new(capacity: usize) -> Hub {
        Hub::with_shards(capacity, 1)
    }

    /// A hub keeping up to `capacity` recent events, for `shards` serving threads.
    pub(crate) fn with_shards(capacity: usize, shards: usize) -> Hub {
        Hub {
            ring: RwLock::new(Ring::default()),
            responses: Mutex::new(Responses::default()),
            shards: (0..shards.max(1)).map(|_| Shard::default()).collect(),
            capacity: capacity.max(1),
            next_id: AtomicU64::new(0),
        }
    }

    fn current_shard(&self) -> usize {
        SHARD.with(|s| s.get()).min(self.shards.len() - 1)
    }

    /// Called once the subscription exists: every event above `start` will be handed over.
    pub(crate) fn start_at(&self, start: i64) {
        let mut r = self.ring.write().unwrap_or_else(|p| p.into_inner());
        if !r.ready {
            r.ready = true;
            r.floor = start;
            r.head = start;
            for sh in &self.shards {
                *lock(&sh.dispatched) = start;
            }
        }
    }

    /// The subscription callback (on the store's tail-reader thread, or on the appender's
    /// after its commit): must be quick.
    pub(crate) fn on_tail(&self, batch: &TailBatch<'_>) {
        {
            let mut r = self.ring.write().unwrap_or_else(|p| p.into_inner());
            if !r.ready || batch.after != r.head {
                // First batch, or a discontinuity (a Redis store that lost data: ids may start
                // again below the old head): the ring restarts here, no response rendered
                // before is reused, and every waiter is woken to rebuild its batch (the store's
                // epoch has moved, so an old cursor is answered by a fetch, with its gap).
                r.events.clear();
                r.start = 0;
                r.floor = batch.after;
                r.ready = true;
                *lock(&self.responses) = Responses::default();
                for sh in &self.shards {
                    *lock(&sh.dispatched) = i64::MIN;
                }
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
        // The waiters are woken from the runtime by [`Hub::dispatch`]: waking thousands of
        // tasks from a worker thread queues them locally, where waking them from this foreign
        // thread would push each through the runtime's shared queue and unpark a worker.
        //
        // With no waiter registered there is nobody to wake (a publish-only load): the events
        // count as dispatched, and the runtime is not woken (a system call per commit). A poll
        // registering now reads the ring after registering, and so sees these events: if its
        // registration had come before this check, the check would have seen it (it precedes
        // the poll's read of the ring, which precedes this batch's write of it or sees it).
        // The same holds per shard: each shard is dispatched on its own.
        let mut head = None;
        for sh in &self.shards {
            if sh.count.load(Ordering::SeqCst) == 0 {
                let head = *head.get_or_insert_with(|| {
                    self.ring.read().unwrap_or_else(|p| p.into_inner()).head
                });
                let mut pos = lock(&sh.dispatched);
                if sh.count.load(Ordering::SeqCst) == 0 {
                    *pos = (*pos).max(head);
                    continue;
                }
            }
            sh.kick.notify_one();
        }
    }

    /// Wakes the waiters of shard 0 (tests).
    #[cfg(test)]
    pub(crate) fn dispatch(&self) {
        self.dispatch_shard(0);
    }

    /// Wakes the waiters of shard `shard` concerned by the events added since the last call.
    /// Runs in that shard's task ([`Hub::dispatch_loop`]), woken by [`Hub::on_tail`].
    fn dispatch_shard(&self, shard: usize) {
        let sh = &self.shards[shard];
        let mut woken: Vec<Arc<Waiter>> = Vec::new();
        {
            let r = self.ring.read().unwrap_or_else(|p| p.into_inner());
            let mut pos = lock(&sh.dispatched);
            let mut waiters = lock(&sh.waiters);
            // A woken waiter leaves the maps here, while the dispatcher walks them anyway:
            // its poll then has nothing to remove when it ends. Removing it there instead
            // costs each of a fan-out's polls a lookup in a map of thousands of cold entries,
            // before its response is written.
            if *pos < r.floor {
                // Events were trimmed before they were dispatched (or the ring restarted):
                // wake everyone, each rebuilds its batch from the ring or the store.
                take_all(&mut waiters, &mut woken);
            } else if !waiters.is_empty() {
                let live = r.live();
                let from = live.partition_point(|e| e.id <= *pos);
                let mut multi = false;
                for e in &live[from..] {
                    let Some(ws) = waiters.get_mut(&e.channel_id) else {
                        continue;
                    };
                    ws.retain(|_, w| {
                        if w.fired.load(Ordering::Acquire) {
                            // Fired by an earlier event on another of its channels.
                            return false;
                        }
                        if !w.matches(e) {
                            return true;
                        }
                        w.fired.store(true, Ordering::Release);
                        multi |= w.channels.len() > 1;
                        woken.push(w.clone());
                        false
                    });
                    if ws.is_empty() {
                        waiters.remove(&e.channel_id);
                    }
                }
                if multi {
                    // A waiter of several channels also leaves the maps of the others.
                    for w in woken.iter().filter(|w| w.channels.len() > 1) {
                        for ch in &w.channels {
                            if let Some(m) = waiters.get_mut(ch) {
                                m.remove(&w.id);
                                if m.is_empty() {
                                    waiters.remove(ch);
                                }
                            }
                        }
                    }
                }
            }
            sh.count.fetch_sub(woken.len() as u64, Ordering::SeqCst);
            *pos = r.head;
        }
        // Notified outside the locks, so woken polls can re-register without waiting.
        for w in woken {
            w.notify.notify_one();
        }
    }

    /// Wakes every registered waiter of every shard (shutdown: each then sees the shutdown
    /// flag, set before this call, and answers).
    pub(crate) fn wake_all(&self) {
        for sh in &self.shards {
            let mut woken = Vec::new();
            {
                let mut waiters = lock(&sh.waiters);
                take_all(&mut waiters, &mut woken);
                sh.count.fetch_sub(woken.len() as u64, Ordering::SeqCst);
            }
            for w in woken {
                w.notify.notify_one();
            }
        }
    }

    /// Shards of this hub.
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Dispatches shard `shard` whenever [`Hub::on_tail`] adds events; runs until aborted.
    /// Must run on that shard's runtime.
    pub(crate) async fn dispatch_loop(self: Arc<Self>, shard: usize) {
        loop {
            self.shards[shard].kick.notified().await;
            self.dispatch_shard(shard);
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
        let shard = self.current_shard();
        self.insert(shard, &w);
        Registration {
            hub: self.clone(),
            shard,
            waiter: w,
        }
    }

    /// Puts `w` in the waiter maps of `shard` (its dispatcher can wake it from now on).
    fn insert(&self, shard: usize, w: &Arc<Waiter>) {
        let sh = &self.shards[shard];
        {
            let mut ws = lock(&sh.waiters);
            w.fired.store(false, Ordering::Release);
            for ch in &w.channels {
                ws.entry(*ch).or_default().insert(w.id, w.clone());
            }
        }
        sh.count.fetch_add(1, Ordering::SeqCst);
    }

    /// Waiters registered now, over every shard.
    pub(crate) fn waiter_count(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.count.load(Ordering::Relaxed))
            .sum()
    }

    /// Waiters registered now, per shard.
    pub(crate) fn shard_waiters(&self) -> Vec<u64> {
        self.shards
            .iter()
            .map(|s| s.count.load(Ordering::Relaxed))
            .collect()
    }

    /// Events in the ring, and the ids it covers.
    pub(crate) fn ring_stats(&self) -> (usize, i64, i64) {
        let r = self.ring.read().unwrap_or_else(|p| p.into_inner());
        (r.events.len() - r.start, r.floor, r.head)
    }

    /// The response for `req` from the ring: shared with other waiters holding the same
    /// request and cursor at the same head, or assembled and rendered (with `render`) here.
    pub(crate) fn respond(
        &self,
        store: &EventStore,
        req: &FetchRequest,
        style: Style,
        render: impl FnOnce(&Batch) -> Rendered,
    ) -> Answer {
        let (batch, head, hash) = {
            let r = self.ring.read().unwrap_or_else(|p| p.into_inner());
            let floor = req.cursor.min_position();
            if !r.ready || floor < r.floor {
                return Answer::Miss;
            }
            if floor >= r.head && req.cursor.epoch == Some(store.epoch()) {
                // Nothing past the cursor: the common re-poll, answered without assembling.
                return Answer::Empty(req.cursor);
            }
            let hash = match lock(&self.responses).get(r.head, req, style) {
                Ok(hit) => return Answer::Ready(hit),
                Err(hash) => hash,
            };
            let live = r.live();
            let from = live.partition_point(|e| e.id <= floor);
            match store.assemble(req, &live[from..], r.head) {
                Ok(Some(b)) => (b, r.head, hash),
                _ => return Answer::Miss,
            }
        };
        if batch.events.is_empty() && !batch.gap && !batch.has_more {
            return Answer::Empty(batch.cursor);
        }
        let rendered = Arc::new(render(&batch));
        if shareable(&batch.events) {
            lock(&self.responses).put(head, hash, req, style, &rendered);
        }
        Answer::Ready(rendered)
    }

    /// Builds the batch for `req` from the ring, if the ring reaches back to its cursor.
    #[cfg(test)]
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

/// Takes every waiter out of `waiters` into `woken`, marked fired (once each, though a waiter of
/// several channels is in several maps).
fn take_all(waiters: &mut HashMap<i64, BTreeMap<u64, Arc<Waiter>>>, woken: &mut Vec<Arc<Waiter>>) {
    for (_, ws) in waiters.drain() {
        for (_, w) in ws {
            if !w.fired.swap(true, Ordering::AcqRel) {
                woken.push(w);
            }
        }
    }
}

/// A registered waiter; unregisters when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    hub: Arc<Hub>,
    shard: usize,
    pub(crate) waiter: Arc<Waiter>,
}

impl Registration {
    /// Registers the waiter again if the dispatcher has woken it (and so taken it out of the
    /// waiter maps). A poll woken for an event that gives it nothing to deliver calls this
    /// before it builds its batch again, as it did before its first batch: see the module
    /// docs on lost wake-ups. Returns whether it had to.
    pub(crate) fn rearm(&self) -> bool {
        if !self.waiter.fired.load(Ordering::Acquire) {
            return false;
        }
        self.hub.insert(self.shard, &self.waiter);
        true
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Fired: the dispatcher has taken it out already. Only this poll registers it again,
        // so a waiter seen fired here stays fired.
        if self.waiter.fired.load(Ordering::Acquire) {
            return;
        }
        let sh = &self.hub.shards[self.shard];
        let mut ws = lock(&sh.waiters);
        if self.waiter.fired.load(Ordering::Acquire) {
            // Fired between the check and the lock.
            return;
        }
        for ch in &self.waiter.channels {
            if let Some(m) = ws.get_mut(ch) {
                m.remove(&self.waiter.id);
                if m.is_empty() {
                    ws.remove(ch);
                }
            }
        }
        sh.count.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
