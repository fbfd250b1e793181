//! The tail of a Redis store, for [`EventStore::subscribe`](crate::EventStore::subscribe) (the
//! daemon's fan-out): every event appended by any host, in id order, once each.
//!
//! One thread per store holds a subscription to the wake-up channel every append publishes its
//! new head on, and reads the events past the last id it routed: one script (`scripts::TAIL`)
//! reads, atomically with the epoch and the head, the lane streams that `…:lanes` says hold
//! ids past it: what it hands over is a snapshot, never half of a batch append. A missed message costs nothing lasting: any read reads up to the head, the
//! subscription coming up (first, or after a reconnect) reads, and so does a wake-up after
//! [`SAFETY_NET`] without a read (a message whose head was already read is skipped otherwise).
//!
//! **Lost data.** A new epoch (Redis restarted empty, was flushed, or failed over without the
//! meta key) or a head below the last id routed (a restart or failover that lost the newest
//! writes) is a discontinuity: subscribers get an empty batch whose `after` is not the last
//! batch's head (the new epoch's start, 0, or the head now), then the events from there. That
//! is how a [`TailBatch`] says "what you hold is stale" (see its docs); the store's epoch is
//! updated before, so a fan-out asking [`EventStore::assemble`](crate::EventStore::assemble)
//! with an old cursor is told to fetch, and the fetch answers `gap: true`.
//!
//! Appends through this store are not handed over from the appending thread (the SQLite
//! engine's hand-off): their ids interleave with other hosts' and come back through the same
//! channel a few hundred microseconds later.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::wake::{Heard, keep_listening};
use super::{RedisStore, decode, parse_epoch};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::store::tail::{Subscribers, TailCallback};
use crate::store::{Subscription, TailBatch};

/// Events read per lane and round trip.
const CHUNK: i64 = 1024;
/// The longest the thread goes without reading, while wake-ups keep coming whose heads it
/// has read (a flushed Redis reusing ids under a new epoch shows up in a read, not in them).
const SAFETY_NET: Duration = Duration::from_millis(250);
/// Epoch changes one catch-up follows before it gives up until the next wake-up (a Redis
/// flushed again and again must not keep the thread spinning).
const MAX_RESTARTS: u32 = 4;

#[derive(Default)]
struct State {
    next_id: u64,
    subscribers: Vec<(u64, TailCallback)>,
    /// Every event up to this id (of `epoch`) has been handed over.
    routed: i64,
    epoch: u32,
    started: bool,
}

/// The subscribers of one store and the thread that feeds them.
#[derive(Default)]
pub(super) struct Feed {
    state: Mutex<State>,
    stop: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state();
        f.debug_struct("Feed")
            .field("subscribers", &s.subscribers.len())
            .field("routed", &s.routed)
            .finish()
    }
}

impl Subscribers for Feed {
    fn remove(&self, id: u64) {
        self.state().subscribers.retain(|(i, _)| *i != id);
    }
}

impl Feed {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a subscriber; the first starts the thread from the head read now (Redis down:
    /// [`Error::Storage`], nothing started).
    pub(super) fn subscribe(
        self: &Arc<Self>,
        store: &RedisStore,
        f: TailCallback,
    ) -> Result<Subscription> {
        let mut st = self.state();
        if !st.started {
            let (epoch, head) = store.epoch_and_head()?;
            st.routed = head;
            st.epoch = epoch;
            let me = self.clone();
            let reader = store.companion();
            let channel = store.keys.wake();
            let h = std::thread::Builder::new()
                .name("lmsrt-redis-tail".into())
                .spawn(move || me.run(&reader, &channel))
                .map_err(|e| Error::Internal(format!("cannot start the tail thread: {e}")))?;
            *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
            st.started = true;
        }
        st.next_id += 1;
        let id = st.next_id;
        st.subscribers.push((id, f));
        Ok(Subscription::new(self.clone(), id, st.routed))
    }

    /// Stops the thread.
    pub(super) fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }

    fn run(&self, reader: &RedisStore, channel: &str) {
        let mut last_read: Option<Instant> = None;
        keep_listening(&reader.endpoint, channel, &self.stop, |heard| {
            let read_recently = last_read.is_some_and(|t| t.elapsed() < SAFETY_NET);
            let needed = match heard {
                Heard::Subscribed => true,
                Heard::Message(Some(h)) => h > self.state().routed || !read_recently,
                Heard::Message(None) | Heard::Quiet => !read_recently,
                Heard::Down => false,
            };
            if needed {
                // A failed read is tried again on the next wake-up or quiet slice.
                last_read = self.catch_up(reader).is_ok().then(Instant::now);
            }
        });
    }

    /// Hands over everything appended past the routed id, chunk by chunk.
    fn catch_up(&self, reader: &RedisStore) -> Result<()> {
        let mut restarts = 0;
        loop {
            let (from, epoch) = {
                let s = self.state();
                (s.routed, s.epoch)
            };
            let (now_epoch, head, upto, found) = read_tail(reader, from)?;
            let now_epoch = match now_epoch {
                Some(e) => parse_epoch(&e)?,
                // Redis lost everything and nobody has appended yet: the epoch starts now.
                None => reader.refresh_epoch()?,
            };
            reader.epoch.store(now_epoch, Ordering::Relaxed);
            if now_epoch != epoch {
                reader.stats.epoch_change();
                self.restart(now_epoch, 0);
                restarts += 1;
                if restarts >= MAX_RESTARTS {
                    return Err(Error::Storage(
                        "the store's epoch in Redis keeps changing".into(),
                    ));
                }
                continue;
            }
            if head < from {
                self.restart(epoch, head);
                return Ok(());
            }
            if head == from {
                return Ok(());
            }
            // An event that does not decode is left out, as if purged: a fetch that reaches
            // it fails with Storage and says why.
            let mut events: Vec<Event> = found
                .iter()
                .filter_map(|(id, json)| decode(*id, json).ok())
                .collect();
            events.sort_unstable_by_key(|e| e.id);
            self.deliver(from, upto, &events);
        }
    }

    /// Hands `events`, every event in `(after, upto]`, to every subscriber and moves the
    /// routed id to `upto`. Only the feed thread calls it, so calls never overlap.
    fn deliver(&self, after: i64, upto: i64, events: &[Event]) {
        let subscribers = {
            let mut s = self.state();
            // Moved together with taking the list: a new subscriber starts exactly after the
            // last batch it is not part of.
            s.routed = upto;
            s.subscribers.clone()
        };
        for (_, f) in &subscribers {
            f(&TailBatch {
                events,
                after,
                head: upto,
            });
        }
    }

    /// A discontinuity: the routed id becomes `at` (of `epoch`) and subscribers are told with
    /// an empty batch after `at`.
    fn restart(&self, epoch: u32, at: i64) {
        self.state().epoch = epoch;
        self.deliver(at, at, &[]);
    }
}

/// What the tail script answers: epoch, head, `upto`, and the events in `(from, upto]`.
type Tail = (Option<String>, i64, i64, Vec<(i64, Vec<u8>)>);

/// Reads, in one atomic step, the epoch, the head and the events after `from` (up to
/// [`CHUNK`] per lane: `upto` says how far the answer is complete).
fn read_tail(reader: &RedisStore, from: i64) -> Result<Tail> {
    reader.with_conn(|c| {
        let v: Vec<::redis::Value> = super::scripts::tail()
            .key(reader.keys.meta())
            .key(reader.keys.seq())
            .key(reader.keys.lanes())
            .arg(from)
            .arg(CHUNK)
            .invoke(c)?;
        let mut it = v.into_iter();
        let epoch = ::redis::from_redis_value(it.next().unwrap_or_default())?;
        let head = ::redis::from_redis_value(it.next().unwrap_or_default())?;
        let upto = ::redis::from_redis_value(it.next().unwrap_or_default())?;
        let mut events = Vec::new();
        while let (Some(id), Some(json)) = (it.next(), it.next()) {
            events.push((
                ::redis::from_redis_value(id)?,
                ::redis::from_redis_value(json)?,
            ));
        }
        Ok((epoch, head, upto, events))
    })
}
