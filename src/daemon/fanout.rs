//! Fan-out: one tail subscription per store feeds a ring of recent events in memory and wakes
//! only the waiters whose channels and filters match.
//!
//! The store's tail reader (one thread, woken by the cross-process futex on every commit from
//! any process) hands every new event to [`Hub::on_tail`] in id order. The hub appends them to
//! the ring and kicks a dispatcher task, which, per new event, looks up the waiters of its
//! channel and notifies those whose lane position, thread and types match: O(matching waiters)
//! per event, no database query per waiter. (Waking from a runtime thread queues the woken
//! polls locally; from the tail thread each wake would cross into the runtime.) A woken waiter builds its batch with [`EventStore::assemble`] from the ring — the same
//! batch a fetch would return — and only reads the database when the ring no longer reaches back
//! to its cursor (a client far behind, or the first poll with an old cursor).
//!
//! An event reaches the ring when the tail reader has read it, a fraction of a millisecond after
//! its commit. A publish is acknowledged at the commit, so a poll with `timeout=0` sent right
//! after may not see the event yet: it sees it on its next poll (its cursor never moves past an
//! event the ring has not seen). A poll that waits is woken by it.
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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::clock::{Clock, SystemClock};
use crate::cursor::Cursor;
use crate::event::Event;
use crate::guards::ClientMode;
use crate::store::{Batch, EventStore, FetchRequest, Order, TailBatch};

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

/// A poll response, rendered once and shared by every waiter that would get the same one.
#[derive(Debug)]
pub(crate) struct Rendered {
    /// The JSON body.
    pub(crate) body: Bytes,
    /// The delivered events' append times (ms), for the delivery-latency metric.
    pub(crate) stamps: Vec<i64>,
    /// The mode advertised in the body.
    pub(crate) mode: ClientMode,
    /// The body gzipped, made by the first poll that gets this response and accepts gzip (when
    /// the body is large enough to be compressed), then shared like the body; `None` inside if
    /// compressing failed.
    pub(crate) gz: std::sync::OnceLock<Option<Bytes>>,
}

impl Rendered {
    /// A rendered response, not compressed yet.
    pub(crate) fn new(body: Bytes, stamps: Vec<i64>, mode: ClientMode) -> Rendered {
        Rendered {
            body,
            stamps,
            mode,
            gz: std::sync::OnceLock::new(),
        }
    }
}

/// What makes two polls' responses identical at one head: the request (with its cursor) and
/// the advertised mode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    channels: Vec<i64>,
    thread: Option<i64>,
    types: Vec<String>,
    cursor: Cursor,
    limit: usize,
    sequential: bool,
    mode: ClientMode,
    retry_ms: u64,
}

impl Key {
    fn new(req: &FetchRequest, mode: ClientMode, retry_ms: u64) -> Key {
        Key {
            channels: req.channels.clone(),
            thread: req.thread_id,
            types: req.types.clone(),
            cursor: req.cursor,
            limit: req.limit,
            sequential: req.order == Order::Sequential,
            mode,
            retry_ms,
        }
    }

    /// Whether this is the key of `req` (without building that key).
    fn is(&self, req: &FetchRequest, mode: ClientMode, retry_ms: u64) -> bool {
        self.cursor == req.cursor
            && self.channels == req.channels
            && self.thread == req.thread_id
            && self.types == req.types
            && self.limit == req.limit
            && self.sequential == (req.order == Order::Sequential)
            && self.mode == mode
            && self.retry_ms == retry_ms
    }

    /// The hash of the key of `req`: what the cache is indexed by.
    fn hash_of(req: &FetchRequest, mode: ClientMode, retry_ms: u64) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        req.channels.hash(&mut h);
        req.thread_id.hash(&mut h);
        req.types.hash(&mut h);
        req.cursor.hash(&mut h);
        req.limit.hash(&mut h);
        (req.order == Order::Sequential).hash(&mut h);
        mode.hash(&mut h);
        retry_ms.hash(&mut h);
        h.finish()
    }
}

/// Responses rendered at one head. When one event wakes 10,000 waiters of a channel, they all
/// hold the same cursor: the batch is assembled and serialized once, not 10,000 times.
#[derive(Debug, Default)]
struct Responses {
    head: i64,
    made: Option<Instant>,
    /// By [`Key::hash_of`]; a lookup compares the keys of its bucket, so it allocates nothing.
    map: HashMap<u64, Vec<(Key, Arc<Rendered>)>>,
    len: usize,
    /// The response stored last, checked before the map: a fan-out's polls all ask for the
    /// one the first of them stored, and are answered without hashing their request.
    last: Option<(Key, Arc<Rendered>)>,
}

/// Longest a rendered response is reused: expiry is judged when a batch is assembled, so a
/// response is only shared while it is fresh (and never one holding an event close to expiry).
const RESPONSE_TTL: Duration = Duration::from_millis(200);
/// Most distinct responses kept per head.
const RESPONSES_MAX: usize = 4096;

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
        mode: ClientMode,
        retry_ms: u64,
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
            let hash;
            {
                let cache = lock(&self.responses);
                let fresh =
                    cache.head == r.head && cache.made.is_some_and(|m| m.elapsed() < RESPONSE_TTL);
                if fresh
                    && let Some((k, hit)) = &cache.last
                    && k.is(req, mode, retry_ms)
                {
                    return Answer::Ready(hit.clone());
                }
                hash = Key::hash_of(req, mode, retry_ms);
                if fresh
                    && let Some((_, hit)) = cache
                        .map
                        .get(&hash)
                        .and_then(|b| b.iter().find(|(k, _)| k.is(req, mode, retry_ms)))
                {
                    return Answer::Ready(hit.clone());
                }
            }
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
        let now_ms = SystemClock.now_ms();
        let shareable = batch
            .events
            .iter()
            .all(|e| e.expires_at > now_ms + 2 * RESPONSE_TTL.as_millis() as i64);
        let rendered = Arc::new(render(&batch));
        if shareable {
            let mut cache = lock(&self.responses);
            if cache.head < head || cache.made.is_none_or(|m| m.elapsed() >= RESPONSE_TTL) {
                cache.map.clear();
                cache.len = 0;
                cache.last = None;
                cache.head = head;
                cache.made = Some(Instant::now());
            }
            if cache.head == head && cache.len < RESPONSES_MAX {
                let bucket = cache.map.entry(hash).or_default();
                if !bucket.iter().any(|(k, _)| k.is(req, mode, retry_ms)) {
                    let key = Key::new(req, mode, retry_ms);
                    bucket.push((key.clone(), rendered.clone()));
                    cache.len += 1;
                    cache.last = Some((key, rendered.clone()));
                }
            }
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
mod tests {
    use super::*;
    use crate::event::Priority;
    use crate::{Config, NewEvent};

    /// Hands `events` to the hub as the store's tail reader would.
    fn feed(hub: &Hub, events: &[Event], after: i64, head: i64) {
        hub.on_tail(&TailBatch {
            events,
            after,
            head,
        });
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
            )
        };
        let req = FetchRequest::new([1]).normalized().unwrap();
        let Answer::Ready(a) = hub.respond(&store, &req, ClientMode::Long, 0, render) else {
            panic!()
        };
        let Answer::Ready(b) = hub.respond(&store, &req, ClientMode::Long, 0, render) else {
            panic!()
        };
        assert!(Arc::ptr_eq(&a, &b));
        // Another channel, another mode, or a newer head: rendered anew.
        let other = FetchRequest::new([2]).normalized().unwrap();
        assert!(matches!(
            hub.respond(&store, &other, ClientMode::Long, 0, render),
            Answer::Ready(_)
        ));
        assert!(matches!(
            hub.respond(&store, &req, ClientMode::Medium, 0, render),
            Answer::Ready(_)
        ));
        feed(&hub, &[ev(3, 1)], 2, 3);
        let Answer::Ready(c) = hub.respond(&store, &req, ClientMode::Long, 0, render) else {
            panic!()
        };
        assert_eq!(&c.body[..], b"2");
        assert_eq!(renders.get(), 4);
        // Nothing new past the cursor: empty, with the cursor to wait from.
        let at_head = FetchRequest::new([1])
            .cursor(crate::Cursor::from_last_event_id(3))
            .normalized()
            .unwrap();
        assert!(matches!(
            hub.respond(&store, &at_head, ClientMode::Long, 0, render),
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
            )
        };
        let Answer::Ready(r) = hub.respond(&store, &req, ClientMode::Long, 0, render) else {
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
}
