//! The tail of a Redis store, for [`EventStore::subscribe`](crate::EventStore::subscribe) (the
//! daemon's fan-out): every event appended by any host, in id order, once each.
//!
//! One thread per store holds a subscription to the wake-up channel every append publishes its
//! new head on, and reads the events past the last id it routed. Ids are one dense `INCR`'d
//! sequence, so it reads them by id from the events hash (`HMGET` of the next ids), in one
//! atomic pipeline with the epoch and the head: what it hands over is a snapshot, never half of
//! a batch append. A missed message costs nothing lasting: any read reads up to the head, the
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

use ::redis::Value;

use super::wake::{Heard, keep_listening};
use super::{RedisStore, decode, parse_epoch};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::store::tail::{Subscribers, TailCallback};
use crate::store::{Subscription, TailBatch};

/// Ids read per round trip.
const CHUNK: i64 = 1024;
/// The longest the thread goes without reading, while wake-ups keep coming whose heads it
/// has read (a flushed Redis reusing ids under a new epoch shows up in a read, not in them).
const SAFETY_NET: Duration = Duration::from_millis(250);
/// Epoch changes one catch-up follows before it gives up until the next wake-up (a Redis
/// flushed again and again must not keep the thread spinning).
const MAX_RESTARTS: u32 = 4;
/// Empty chunks in a row after which the thread asks Redis where the next event is instead
/// of reading on: ids skipped by `advance_ids` leave a range with no event at all.
const EMPTY_CHUNKS_BEFORE_SKIP: i64 = 4;

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
        let mut empty_chunks = 0;
        let mut restarts = 0;
        loop {
            let (from, epoch) = {
                let s = self.state();
                (s.routed, s.epoch)
            };
            let ids: Vec<i64> = (from + 1..=from.saturating_add(CHUNK)).collect();
            let (now_epoch, head, found): (Option<String>, Option<i64>, Vec<Option<Vec<u8>>>) =
                reader.with_conn(|c| {
                    ::redis::pipe()
                        .atomic()
                        .hget(reader.keys.meta(), "epoch")
                        .get(reader.keys.seq())
                        .cmd("HMGET")
                        .arg(reader.keys.events())
                        .arg(&ids)
                        .query(c)
                })?;
            let now_epoch = match now_epoch {
                Some(e) => parse_epoch(&e)?,
                // Redis lost everything and nobody has appended yet: the epoch starts now.
                None => reader.refresh_epoch()?,
            };
            let head = head.unwrap_or(0);
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
            let mut events = Vec::new();
            for (id, json) in ids.iter().zip(found) {
                // An event that does not decode is left out, as if purged: a fetch that
                // reaches it fails with Storage and says why.
                if let Some(e) = json.and_then(|j| decode(*id, &j).ok()) {
                    events.push(e);
                }
            }
            let mut upto = head.min(from.saturating_add(CHUNK));
            if events.is_empty() {
                empty_chunks += 1;
                if empty_chunks >= EMPTY_CHUNKS_BEFORE_SKIP && head - upto > CHUNK {
                    upto = next_event_after(reader, upto)?
                        .map_or(head, |n| n - 1)
                        .min(head);
                }
            } else {
                empty_chunks = 0;
            }
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

/// The smallest event id above `after` still in the events hash, if any. Scans the hash's
/// fields: only for a range of ids with no event at all (skipped by `advance_ids`), which
/// reading id by id would take a round trip per [`CHUNK`] ids to cross.
fn next_event_after(reader: &RedisStore, after: i64) -> Result<Option<i64>> {
    let fields: Vec<Value> =
        reader.with_conn(|c| ::redis::cmd("HKEYS").arg(reader.keys.events()).query(c))?;
    Ok(fields
        .iter()
        .filter_map(|v| match v {
            Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse::<i64>().ok(),
            _ => None,
        })
        .filter(|id| *id > after)
        .min())
}
