//! [`EventStore`]: the event log, over one SQLite file shared by threads and processes (the
//! embedded default) or, with the `redis` feature, over Redis shared by hosts (`redis_store`;
//! design in `docs/redis.md`). This file holds the public type, the checks both engines share
//! and the dispatch to the engine (a plain enum: one predictable branch per call).
//!
//! The SQLite engine's parts, beside this file: `sqlite` (the engine itself), `config` (settings and their ranges), `request` (what a
//! fetch asks for and answers), `conn` (connection setup, error mapping), `writer_lock` (the
//! cross-process writer queue), `writer` (group commit, purge transactions), `warm` (WAL pages
//! read back before the lock), `fetch` (batch assembly), `tail` (waiters and subscribers),
//! `maintenance` (checkpoints, the purger thread), `schema` (DDL, migrations) and `repair`
//! (check and salvage).

mod config;
mod conn;
mod fetch;
mod location;
mod maintenance;
#[cfg(feature = "redis")]
mod redis_store;
#[cfg(feature = "redis")]
pub(crate) use redis_store::for_guards as redis_for_guards;
mod repair;
mod request;
mod schema;
mod sqlite;
mod tail;
mod warm;
mod writer;
mod writer_lock;

use std::path::Path;
use std::time::{Duration, Instant};

pub use config::{
    Config, MAX_DATA_BYTES_LIMIT, MAX_PURGE_CHUNK, MAX_TTL_MS_LIMIT, PURGE_INTERVAL_MS_RANGE,
};
pub use conn::Durability;
pub use location::StoreLocation;
pub use repair::{CheckReport, MAX_PROBLEMS, SalvageReport, check_file, salvage_file};
pub use request::{Batch, FetchRequest, MAX_CHANNELS, MAX_LIMIT, MAX_TYPES, Order};
pub use schema::SCHEMA_VERSION;
pub use tail::{Subscription, TailBatch};

use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::event::{Event, NewEvent, validate_data, validate_event_type};
use crate::metrics::{Counter, Histogram};
pub(crate) use sqlite::Shared;
use sqlite::SqliteStore;

/// Longest consumer name for [`EventStore::commit_cursor`].
pub const MAX_CONSUMER_LEN: usize = 255;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Most events in one [`EventStore::append_batch`].
pub const MAX_BATCH: usize = 10_000;

/// How many times this process has met a stored event that cannot be delivered and skipped it
/// as if it had expired (the batch that moves past it says `gap: true`).
///
/// Appends refuse such data (see [`validate_data`]), so a row
/// like that was written by an older version, by hand, or damaged: its data is not UTF-8 text,
/// not a JSON object, nested deeper than [`MAX_DATA_DEPTH`](crate::event::MAX_DATA_DEPTH) or
/// holds a lone surrogate escape. Each fetch that selects it and each tail reader that reads it
/// counts once, so this is a rate to watch (the daemon exports it), not a number of rows.
pub fn undeliverable_events_seen() -> u64 {
    fetch::undeliverable_seen()
}

/// How many store calls of this process met a damaged page of a database file
/// ([`Error::Corrupt`]), with SQLite's message for the latest one.
///
/// A damaged page does not heal: every fetch that reads it fails until the file is salvaged
/// (see [`salvage_file`]). The daemon reports a non-zero count in `/healthz` as `unavailable`.
pub fn corruption_seen() -> (u64, Option<String>) {
    conn::corruption_seen()
}

/// What this process saw of the engine under a store, since it opened the store
/// ([`EventStore::engine_stats`]). SQLite has no epoch changes and counts its faults per
/// operation in [`Config::metrics`], so for it the counters are 0 and the latencies `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Calls to the engine (Redis round trips, by callers and by background threads) that
    /// failed with [`Error::Storage`].
    pub errors: u64,
    /// Times the tail reader found a new epoch: Redis restarted empty, was flushed, or failed
    /// over to a replica without the store's data. Counted when a subscriber (the daemon's
    /// fan-out) keeps the tail reader running.
    pub epoch_changes: u64,
    /// Moving average of a successful round trip, in microseconds (`None`: none yet).
    pub latency_us: Option<u64>,
    /// The slowest successful round trip, in microseconds.
    pub latency_max_us: Option<u64>,
}

/// The store operations [`Config::metrics`] observes.
#[derive(Clone, Copy)]
enum Op {
    Append,
    Fetch,
    Wait,
}

impl Op {
    fn metrics(self) -> (Counter, Counter, Histogram) {
        match self {
            Op::Append => (Counter::Appends, Counter::AppendErrors, Histogram::Append),
            Op::Fetch => (Counter::Fetches, Counter::FetchErrors, Histogram::Fetch),
            Op::Wait => (Counter::Waits, Counter::WaitErrors, Histogram::Wait),
        }
    }
}

/// The engine a store runs on.
// One per open store, moved rarely: the size of the larger variant costs nothing worth a box
// (which would add a pointer hop to every SQLite call).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Engine {
    Sqlite(SqliteStore),
    #[cfg(feature = "redis")]
    Redis(redis_store::RedisStore),
}

/// Runs `$body` with `$e` bound to whichever engine the store runs on. Both engines have the
/// same internal methods, so one body serves both.
macro_rules! on_engine {
    ($self:expr, $e:ident => $body:expr) => {
        match &$self.engine {
            Engine::Sqlite($e) => $body,
            #[cfg(feature = "redis")]
            Engine::Redis($e) => $body,
        }
    };
}

/// The event log: append, fetch, wait, purge. `Send + Sync`; share it between threads with an
/// `Arc`. Any number of processes may open the same file (or Redis) at once.
#[derive(Debug)]
pub struct EventStore {
    engine: Engine,
}

impl EventStore {
    /// Opens (creating or migrating) the store at `path`.
    ///
    /// Beside the file it keeps `<path>-lmsrt-writer` (the writer lock) and
    /// `<path>-lmsrt-signal` (the cross-process wake-up counter), plus SQLite's `-wal` and
    /// `-shm`. A file written by a newer schema is refused with [`Error::SchemaTooNew`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use lms_realtime::{Config, EventStore};
    /// let store = EventStore::open(dir.path().join("events.db"), Config::default()).unwrap();
    /// assert!(store.head_cursor().unwrap().lanes().iter().all(|p| *p == 0));
    /// ```
    pub fn open(path: impl AsRef<Path>, config: Config) -> Result<EventStore> {
        config.validate()?;
        Ok(EventStore {
            engine: Engine::Sqlite(SqliteStore::open(path.as_ref(), config)?),
        })
    }

    /// Opens the store at a Redis URL (`redis://`, `rediss://`, `redis+cluster://`,
    /// `rediss+cluster://`; see [`StoreLocation`] for their form and parameters),
    /// creating its keys on first use. Needs the `redis` feature; without it, or for anything
    /// that is not such a URL, [`Error::InvalidArgument`]. Redis unreachable:
    /// [`Error::Storage`].
    pub fn open_url(url: &str, config: Config) -> Result<EventStore> {
        match StoreLocation::parse(url)? {
            StoreLocation::Redis(url) => {
                EventStore::open_location(&StoreLocation::Redis(url), config)
            }
            StoreLocation::Path(_) => Err(Error::InvalidArgument(
                "expected a redis://, rediss://, redis+cluster:// or rediss+cluster:// URL".into(),
            )),
        }
    }

    /// Opens the store at `location`: a file path ([`open`](Self::open)) or a Redis URL
    /// ([`open_url`](Self::open_url)).
    pub fn open_location(location: &StoreLocation, config: Config) -> Result<EventStore> {
        match location {
            StoreLocation::Path(p) => EventStore::open(p, config),
            #[cfg(feature = "redis")]
            StoreLocation::Redis(url) => {
                config.validate()?;
                Ok(EventStore {
                    engine: Engine::Redis(redis_store::RedisStore::open(url, config)?),
                })
            }
            #[cfg(not(feature = "redis"))]
            StoreLocation::Redis(_) => Err(Error::InvalidArgument(
                "this build has no Redis support (cargo feature `redis`)".into(),
            )),
        }
    }

    /// The database file; for a store on Redis, its URL without the password.
    pub fn path(&self) -> &Path {
        on_engine!(self, e => e.path())
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &Config {
        on_engine!(self, e => e.config())
    }

    /// Appends one event and returns its id once it is committed.
    ///
    /// Concurrent appends from threads of one process share transactions (group commit);
    /// each caller returns only after its own event is durable.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = lms_realtime::EventStore::open(dir.path().join("e.db"), Default::default()).unwrap();
    /// use lms_realtime::NewEvent;
    /// let a = store.append(NewEvent::new("message_create", 1).idempotency_key("msg-9"))?;
    /// // A retry with the same key (say, after a PHP timeout) returns the same id.
    /// let b = store.append(NewEvent::new("message_create", 1).idempotency_key("msg-9"))?;
    /// assert_eq!(a, b);
    /// # Ok::<(), lms_realtime::Error>(())
    /// ```
    pub fn append(&self, event: NewEvent) -> Result<i64> {
        let ids = self.append_batch(vec![event])?;
        Ok(ids[0])
    }

    /// Appends events in one transaction, all or nothing, and returns their ids in order.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = lms_realtime::EventStore::open(dir.path().join("e.db"), Default::default()).unwrap();
    /// use lms_realtime::NewEvent;
    /// let ids = store.append_batch(vec![NewEvent::new("badge_update", 1), NewEvent::new("badge_update", 2)])?;
    /// assert_eq!(ids[1], ids[0] + 1);
    /// // One bad event refuses the whole batch.
    /// assert!(store.append_batch(vec![NewEvent::new("ok", 1), NewEvent::new("Bad!", 1)]).is_err());
    /// # Ok::<(), lms_realtime::Error>(())
    /// ```
    pub fn append_batch(&self, events: Vec<NewEvent>) -> Result<Vec<i64>> {
        self.observed(Op::Append, || self.append_batch_inner(events))
    }

    /// Runs `f`, recording it into [`Config::metrics`] when set.
    fn observed<T>(&self, op: Op, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let Some(m) = &self.config().metrics else {
            return f();
        };
        let (count, errors, latency) = op.metrics();
        let started = Instant::now();
        let r = f();
        m.incr(count);
        match &r {
            Ok(_) => m.record(latency, started.elapsed()),
            Err(e) if e.is_fault() => {
                m.incr(errors);
                if e.code() == crate::error::ErrorCode::Corrupt {
                    m.incr(Counter::CorruptReads);
                }
            }
            Err(_) => {}
        }
        r
    }

    fn append_batch_inner(&self, events: Vec<NewEvent>) -> Result<Vec<i64>> {
        self.check_open()?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        if events.len() > MAX_BATCH {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_BATCH} events per batch, not {}",
                events.len()
            )));
        }
        let config = self.config();
        let now = config.clock.now_ms();
        let rows = events
            .into_iter()
            .map(|e| validate(config, e, now))
            .collect::<Result<Vec<_>>>()?;
        on_engine!(self, e => e.append_rows(rows))
    }

    /// Fetches the next batch for `request` without waiting.
    pub fn fetch(&self, request: &FetchRequest) -> Result<Batch> {
        self.observed(Op::Fetch, || {
            self.check_open()?;
            let req = request.normalized()?;
            on_engine!(self, e => e.fetch(&req))
        })
    }

    /// Like [`fetch`](Self::fetch), but when nothing is pending, blocks until a matching event
    /// is appended (by any thread or process) or `timeout` passes; then returns an empty batch
    /// whose cursor is still valid.
    ///
    /// Blocking costs no CPU: waiters sleep on a condition variable, woken by one tail reader
    /// per store, which a futex in shared memory wakes on every commit on the host (on Redis:
    /// by a wake-up every append publishes, which reaches every host).
    pub fn wait(&self, request: &FetchRequest, timeout: Duration) -> Result<Batch> {
        let r = self.observed(Op::Wait, || {
            let req = request.normalized()?;
            on_engine!(self, e => e.wait(req, timeout))
        });
        if let (Some(m), Ok(b)) = (&self.config().metrics, &r)
            && b.events.is_empty()
            && !b.gap
            && !b.has_more
        {
            m.incr(Counter::WaitTimeouts);
        }
        r
    }

    /// Calls `f` with every event appended from now on (by any process; on Redis, by any
    /// host), in id order, once each, from the store's tail-reader thread (or, on SQLite, for
    /// an append through this store, from the appending thread, after the commit and before
    /// the append returns): the building block of a fan-out that serves many waiters from
    /// memory (the daemon). Calls never overlap. `f` must be quick and must not call back into
    /// the store. Dropping the returned [`Subscription`] removes it.
    ///
    /// A batch whose [`after`](TailBatch::after) is not the previous batch's head is a
    /// discontinuity: on Redis, the engine lost data (a new epoch, or a head gone back), and
    /// events the subscriber holds are stale (see [`TailBatch`]).
    ///
    /// Pair it with [`assemble`](Self::assemble) to build batches from the events received.
    /// Redis unreachable when the first subscriber comes: [`Error::Storage`].
    pub fn subscribe(
        &self,
        f: impl Fn(&TailBatch<'_>) + Send + Sync + 'static,
    ) -> Result<Subscription> {
        match &self.engine {
            Engine::Sqlite(e) => e.subscribe(f),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.subscribe(std::sync::Arc::new(f)),
        }
    }

    /// Builds the batch a [`fetch`](Self::fetch) of `request` would return, from events held in
    /// memory instead of the database.
    ///
    /// `events` must hold, ascending by id, every event with an id in `(floor, head]` of the
    /// requested channels, where `floor` is the lowest lane position of the request's cursor
    /// (a [`subscribe`](Self::subscribe) callback sees each such event exactly once; `head` is
    /// the last [`TailBatch::head`] received). Returns `None` when the cursor comes from another
    /// database file: fetch from the store instead, which reports the gap.
    pub fn assemble(
        &self,
        request: &FetchRequest,
        events: &[Event],
        head: i64,
    ) -> Result<Option<Batch>> {
        let req = request.normalized()?;
        Ok(fetch::assemble(
            &req,
            events,
            head,
            self.epoch(),
            self.config().clock.now_ms(),
        ))
    }

    /// This store's epoch (a random number chosen at creation, carried in cursors). On Redis
    /// it is the one last seen: a Redis that lost its data gets a new one.
    pub fn epoch(&self) -> u32 {
        on_engine!(self, e => e.epoch())
    }

    /// A cursor at the current end of the log: a page that renders state and then starts
    /// polling from here misses nothing committed after the render.
    pub fn head_cursor(&self) -> Result<Cursor> {
        self.check_open()?;
        let (epoch, head) = match &self.engine {
            Engine::Sqlite(e) => (e.epoch(), e.head_id()?),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.epoch_and_head()?,
        };
        Ok(Cursor {
            epoch: Some(epoch),
            lanes: [head; 4],
        })
    }

    /// Makes every event appended from now on, by any process, get an id greater than `past`;
    /// returns the head id afterwards (what [`head_cursor`](Self::head_cursor) then starts
    /// from: `past`, or the head as it was when that is already at or beyond `past`).
    ///
    /// Why it exists: the WordPress plugin can move between two backends, its own MySQL table
    /// and this store. Browsers keep polling with the `last_event_id` the old backend gave
    /// them, and that number must stay meaningful after the move: if this store handed out ids
    /// at or below it again, those clients would skip the new events as already seen. Before
    /// switching, the plugin calls this with the highest id the old backend ever issued.
    ///
    /// When the sequence is already at or beyond `past` nothing changes (calling it again, or
    /// with a smaller number, is harmless). The skipped ids are never assigned; no event was
    /// lost, so readers whose cursors are before the jump get the events after it with
    /// `gap: false`. An append retried with an idempotency key that was stored before the
    /// call still returns the earlier event's (smaller) id: that is the same event, not a new
    /// one.
    ///
    /// It runs in one write transaction under the writer lock that appends take (on Redis, in
    /// one script), so it is atomic and ordered with every concurrent append of every process:
    /// an append that commits before it keeps its id, one that commits after it gets an id
    /// above `past`.
    ///
    /// `past` must be 0 to `i64::MAX - 1` ([`Error::InvalidArgument`] otherwise, and nothing
    /// changes): at `i64::MAX` there would be no id left for the next event.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = lms_realtime::EventStore::open(dir.path().join("e.db"), Default::default()).unwrap();
    /// use lms_realtime::NewEvent;
    /// store.append(NewEvent::new("message_create", 1))?;
    /// assert_eq!(store.advance_ids(1000)?, 1000);
    /// assert_eq!(store.append(NewEvent::new("message_create", 1))?, 1001);
    /// // Already past it: nothing changes, the head comes back.
    /// assert_eq!(store.advance_ids(5)?, 1001);
    /// # Ok::<(), lms_realtime::Error>(())
    /// ```
    pub fn advance_ids(&self, past: i64) -> Result<i64> {
        self.check_open()?;
        if !(0..i64::MAX).contains(&past) {
            return Err(Error::InvalidArgument(format!(
                "advance_ids: past must be 0 to {}, not {past}",
                i64::MAX - 1
            )));
        }
        on_engine!(self, e => e.advance_ids(past))
    }

    /// Deletes up to `max_rows` expired events, in transactions of at most
    /// [`Config::purge_chunk`] rows so the write lock is never held for long. Returns how many
    /// were deleted. Clients whose cursors had not passed a purged event get `gap: true`.
    pub fn purge_expired(&self, max_rows: usize) -> Result<usize> {
        on_engine!(self, e => e.purge_expired(max_rows))
    }

    /// Stores `cursor` as the position of `consumer`, durably (the plan's `processed_by`).
    pub fn commit_cursor(&self, consumer: &str, cursor: &Cursor) -> Result<()> {
        self.check_open()?;
        check_consumer(consumer)?;
        on_engine!(self, e => e.commit_cursor(consumer, cursor))
    }

    /// The cursor last committed by `consumer`, if any.
    pub fn load_cursor(&self, consumer: &str) -> Result<Option<Cursor>> {
        self.check_open()?;
        check_consumer(consumer)?;
        let text: Option<String> = on_engine!(self, e => e.load_cursor(consumer))?;
        text.map(|t| Cursor::parse(&t)).transpose()
    }

    /// Closes the store: waiters return [`Error::Closed`] at once, background threads stop, and
    /// every later call fails with [`Error::Closed`]. Idempotent; dropping the store closes it.
    pub fn close(&self) {
        on_engine!(self, e => e.close())
    }

    /// The engine the store runs on: `"sqlite"` or `"redis"`.
    pub fn engine_name(&self) -> &'static str {
        match &self.engine {
            Engine::Sqlite(_) => "sqlite",
            #[cfg(feature = "redis")]
            Engine::Redis(_) => "redis",
        }
    }

    /// The engine's figures seen by this process (see [`EngineStats`]).
    pub fn engine_stats(&self) -> EngineStats {
        match &self.engine {
            Engine::Sqlite(_) => EngineStats::default(),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => e.engine_stats(),
        }
    }

    /// Whether [`close`](Self::close) has been called.
    pub fn is_closed(&self) -> bool {
        on_engine!(self, e => e.is_closed())
    }

    fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// The SQLite engine, for tests of its internals.
    #[cfg(test)]
    fn sqlite(&self) -> &SqliteStore {
        match &self.engine {
            Engine::Sqlite(e) => e,
            #[cfg(feature = "redis")]
            Engine::Redis(_) => panic!("not a SQLite store"),
        }
    }
}

/// Checks one event against `config` and stamps it with its times and priority: what both
/// engines store.
fn validate(config: &Config, e: NewEvent, now: i64) -> Result<writer::Row> {
    validate_event_type(&e.event_type)?;
    if e.channel_id <= 0 {
        return Err(Error::InvalidChannel(e.channel_id));
    }
    validate_data(&e.data, config.max_data_bytes)?;
    let ttl = e.ttl.unwrap_or(config.default_ttl);
    if ttl < config.min_ttl || ttl > config.max_ttl {
        return Err(Error::InvalidTtl {
            ttl_ms: ttl.as_millis().min(i64::MAX as u128) as i64,
            min_ms: config.min_ttl.as_millis() as i64,
            max_ms: config.max_ttl.as_millis() as i64,
        });
    }
    if let Some(k) = &e.idempotency_key
        && (k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY_LEN)
    {
        return Err(Error::InvalidArgument(format!(
            "an idempotency key is 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes"
        )));
    }
    let priority = e.effective_priority();
    Ok(writer::Row {
        expires_at: now.saturating_add(ttl.as_millis() as i64),
        timestamp: now,
        priority,
        event: e,
    })
}

fn check_consumer(consumer: &str) -> Result<()> {
    if consumer.is_empty() || consumer.len() > MAX_CONSUMER_LEN {
        return Err(Error::InvalidArgument(format!(
            "a consumer name is 1 to {MAX_CONSUMER_LEN} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
