//! [`EventStore`]: the event log over one SQLite file, shared by threads and processes.

mod conn;
mod fetch;
mod repair;
mod schema;
mod tail;
mod warm;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

pub use conn::Durability;
pub use repair::{CheckReport, MAX_PROBLEMS, SalvageReport, check_file, salvage_file};
pub use schema::SCHEMA_VERSION;
pub use tail::{Subscription, TailBatch};

use crate::clock::{Clock, SystemClock};
use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::event::{Event, NewEvent, validate_data, validate_event_type};
use crate::metrics::{Counter, Histogram, Metrics};
use crate::shm::ChangeSignal;

/// Most channels one fetch may name.
pub const MAX_CHANNELS: usize = 1024;
/// Most event types one fetch may filter on.
pub const MAX_TYPES: usize = 64;
/// Largest batch one fetch may ask for.
pub const MAX_LIMIT: usize = 1000;
/// Longest consumer name for [`EventStore::commit_cursor`].
pub const MAX_CONSUMER_LEN: usize = 255;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Most events in one [`EventStore::append_batch`].
pub const MAX_BATCH: usize = 10_000;
/// Idle read connections kept per store.
const MAX_IDLE_READERS: usize = 16;
/// Largest [`Config::max_data_bytes`] accepted: 16 MiB. A batch of [`MAX_LIMIT`] such events
/// is already 16 GiB; nothing a chat sends needs more.
pub const MAX_DATA_BYTES_LIMIT: usize = 16 * 1024 * 1024;
/// Longest TTL bound accepted ([`Config::min_ttl`], `default_ttl`, `max_ttl`): 100 years, in
/// ms. Expiry times are `i64` milliseconds; a longer TTL would overflow into the past.
pub const MAX_TTL_MS_LIMIT: u64 = 100 * 365_250 * 86_400;
/// Most rows per purge transaction ([`Config::purge_chunk`]): each holds the writer lock.
pub const MAX_PURGE_CHUNK: usize = 100_000;
/// Shortest and longest [`Config::purge_interval`], in ms: 10 ms to a day.
pub const PURGE_INTERVAL_MS_RANGE: (u64, u64) = (10, 86_400_000);

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

/// Settings for [`EventStore::open`].
#[derive(Debug, Clone)]
pub struct Config {
    /// What an acknowledged append survives.
    pub durability: Durability,
    /// Largest `data` accepted, in bytes (default 64 KiB).
    pub max_data_bytes: usize,
    /// Time to live of events appended without one (default 1 hour).
    pub default_ttl: Duration,
    /// Shortest TTL accepted (default 1 s).
    pub min_ttl: Duration,
    /// Longest TTL accepted (default 30 days).
    pub max_ttl: Duration,
    /// When set, a background thread purges expired events at this interval.
    pub purge_interval: Option<Duration>,
    /// Rows deleted per purge transaction: small enough that the write lock is held briefly.
    pub purge_chunk: usize,
    /// When a cursor is at most this many ids behind the head (the live tail), a fetch reads
    /// every row after it in one query; further behind (catch-up), it reads each channel and
    /// lane from the index with a limit, so its cost is bounded by the batch size rather than
    /// by how far behind the client is. Default 256 (see `benches/README.md`).
    pub live_tail_window: i64,
    /// The source of time for timestamps and expiry.
    pub clock: Arc<dyn Clock>,
    /// When set, every append, fetch and wait records its count, latency and store faults
    /// here (`appends`, `fetches`, `waits`, `wait_timeouts`, the `*_errors` counters and the
    /// `append`/`fetch`/`wait` histograms). Default `None`: a caller that records at its own
    /// level, as the daemon does per HTTP request, leaves it unset so nothing counts twice.
    /// Bad input (a typed validation error) is not a fault and is not counted as an error.
    pub metrics: Option<Arc<Metrics>>,
}

impl Config {
    /// Checks every setting's range; [`EventStore::open`] calls it. Each refusal is
    /// [`Error::InvalidArgument`] naming the setting, its range and the value given.
    ///
    /// Ranges: `max_data_bytes` 1 to [`MAX_DATA_BYTES_LIMIT`]; `min_ttl`, `default_ttl`,
    /// `max_ttl` 1 ms to [`MAX_TTL_MS_LIMIT`] ms with `min_ttl <= default_ttl <= max_ttl`;
    /// `purge_interval` (when set) [`PURGE_INTERVAL_MS_RANGE`]; `purge_chunk` 1 to
    /// [`MAX_PURGE_CHUNK`]; `live_tail_window` 0 or more (`i64::MAX`: always the live-tail
    /// path).
    pub fn validate(&self) -> Result<()> {
        fn out_of_range(name: &str, range: &str, value: impl std::fmt::Display) -> Result<()> {
            Err(Error::InvalidArgument(format!(
                "config: {name} must be {range}, not {value}"
            )))
        }
        if !(1..=MAX_DATA_BYTES_LIMIT).contains(&self.max_data_bytes) {
            return out_of_range(
                "max_data_bytes",
                &format!("1 to {MAX_DATA_BYTES_LIMIT}"),
                self.max_data_bytes,
            );
        }
        for (name, ttl) in [
            ("min_ttl", self.min_ttl),
            ("default_ttl", self.default_ttl),
            ("max_ttl", self.max_ttl),
        ] {
            let ms = ttl.as_millis();
            if !(1..=u128::from(MAX_TTL_MS_LIMIT)).contains(&ms) {
                return out_of_range(
                    &format!("{name} (ms)"),
                    &format!("1 to {MAX_TTL_MS_LIMIT} (100 years)"),
                    ms,
                );
            }
        }
        // A default outside the bounds would refuse every append that gives no TTL.
        if !(self.min_ttl <= self.default_ttl && self.default_ttl <= self.max_ttl) {
            return Err(Error::InvalidArgument(format!(
                "config: expected min_ttl <= default_ttl <= max_ttl, not {} ms, {} ms, {} ms",
                self.min_ttl.as_millis(),
                self.default_ttl.as_millis(),
                self.max_ttl.as_millis()
            )));
        }
        if let Some(every) = self.purge_interval {
            let (lo, hi) = PURGE_INTERVAL_MS_RANGE;
            let ms = every.as_millis();
            if !(u128::from(lo)..=u128::from(hi)).contains(&ms) {
                return out_of_range(
                    "purge_interval (ms)",
                    &format!("{lo} to {hi} (0 or none: no background purge)"),
                    ms,
                );
            }
        }
        if !(1..=MAX_PURGE_CHUNK).contains(&self.purge_chunk) {
            return out_of_range(
                "purge_chunk",
                &format!("1 to {MAX_PURGE_CHUNK}"),
                self.purge_chunk,
            );
        }
        // No upper bound: a larger window only reads more rows per fetch (tests use i64::MAX
        // to force the live-tail path); a negative one means nothing.
        if self.live_tail_window < 0 {
            return out_of_range(
                "live_tail_window",
                &format!("0 to {}", i64::MAX),
                self.live_tail_window,
            );
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            durability: Durability::default(),
            max_data_bytes: 64 * 1024,
            default_ttl: Duration::from_secs(3600),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(30 * 86_400),
            purge_interval: None,
            purge_chunk: 500,
            live_tail_window: 256,
            clock: Arc::new(SystemClock),
            metrics: None,
        }
    }
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

/// Order of events in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Urgent lanes first, every pending lane gets a share (no starvation), append order within
    /// a lane; each lane keeps its own position in the cursor.
    #[default]
    Priority,
    /// The next N events by id, sorted by priority inside the batch only.
    Sequential,
}

impl std::str::FromStr for Order {
    type Err = Error;
    fn from_str(s: &str) -> Result<Order> {
        match s {
            "priority" => Ok(Order::Priority),
            "sequential" => Ok(Order::Sequential),
            _ => Err(Error::InvalidArgument(format!(
                "order must be \"priority\" or \"sequential\", not {s:?}"
            ))),
        }
    }
}

/// What to fetch: channels, optional filters, where to start, how many, in which order.
///
/// A cursor belongs to its request: resuming with other channels or filters may skip events
/// that the new filters match but the old ones did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Channels to read (1 to [`MAX_CHANNELS`], each > 0).
    pub channels: Vec<i64>,
    /// Only events of this thread.
    pub thread_id: Option<i64>,
    /// Only events of these types (empty: all).
    pub types: Vec<String>,
    /// Where to start.
    pub cursor: Cursor,
    /// Most events to return (1 to [`MAX_LIMIT`], default 50).
    pub limit: usize,
    /// Batch order.
    pub order: Order,
}

impl FetchRequest {
    /// A request for `channels` from the start of the log, 50 events, priority order.
    pub fn new(channels: impl IntoIterator<Item = i64>) -> FetchRequest {
        FetchRequest {
            channels: channels.into_iter().collect(),
            thread_id: None,
            types: Vec::new(),
            cursor: Cursor::START,
            limit: 50,
            order: Order::Priority,
        }
    }

    /// Sets the cursor.
    pub fn cursor(mut self, cursor: Cursor) -> Self {
        self.cursor = cursor;
        self
    }

    /// Sets the limit.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Sets the order.
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Only events of `thread_id`.
    pub fn thread(mut self, thread_id: i64) -> Self {
        self.thread_id = Some(thread_id);
        self
    }

    /// Only events of these types.
    pub fn types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Checks the request and returns it with channels and types sorted and de-duplicated.
    pub(crate) fn normalized(&self) -> Result<FetchRequest> {
        if self.channels.is_empty() || self.channels.len() > MAX_CHANNELS {
            return Err(Error::InvalidArgument(format!(
                "a fetch names 1 to {MAX_CHANNELS} channels, not {}",
                self.channels.len()
            )));
        }
        if let Some(c) = self.channels.iter().find(|c| **c <= 0) {
            return Err(Error::InvalidChannel(*c));
        }
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(Error::InvalidArgument(format!(
                "limit must be 1 to {MAX_LIMIT}, not {}",
                self.limit
            )));
        }
        if self.types.len() > MAX_TYPES {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_TYPES} event types per fetch"
            )));
        }
        for t in &self.types {
            validate_event_type(t)?;
        }
        let mut r = self.clone();
        r.channels.sort_unstable();
        r.channels.dedup();
        r.types.sort_unstable();
        r.types.dedup();
        Ok(r)
    }
}

/// One fetch's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Batch {
    /// The events, in the request's order.
    pub events: Vec<Event>,
    /// Pass this back to get what comes next.
    pub cursor: Cursor,
    /// True when an event this client would have received expired or was purged before it
    /// was fetched (or the cursor came from another database): resynchronise from the source
    /// of truth.
    pub gap: bool,
    /// True when more matching events are waiting: fetch again without waiting.
    pub has_more: bool,
}

/// State shared with the background threads (tail watcher, purger).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) path: PathBuf,
    pub(crate) durability: Durability,
    pub(crate) signal: ChangeSignal,
    pub(crate) closed: AtomicBool,
    /// A background checkpoint is running.
    pub(crate) checkpointing: AtomicBool,
    /// Frames in the WAL after the last commit by one of this process's writer connections
    /// (SQLite's WAL hook reports the count for the whole file, whoever wrote the frames).
    wal_frames: AtomicI64,
    /// `wal_frames` when the WAL's length last started a checkpoint.
    checkpoint_mark: AtomicI64,
}

impl Shared {
    /// Keeps `wal_frames` current after every commit on `conn`, one of this process's
    /// writer connections.
    fn watch_wal(self: &Arc<Shared>, conn: &mut Connection) -> Result<()> {
        let shared = Arc::downgrade(self);
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, frames| {
            if let Some(s) = shared.upgrade() {
                s.wal_frames.store(i64::from(frames), Ordering::Relaxed);
            }
            Ok(())
        }))
        .map_err(conn::map_sqlite_error)
    }

    /// True once per [`conn::CHECKPOINT_FRAMES`] the WAL has grown since the last time this
    /// said so (or since it started over).
    ///
    /// The commit count alone misses bulk writes: 30 batches of 10,000 rows are 30 commits
    /// and grew the WAL past 100 MiB before any checkpoint, and the writer that then started
    /// it over spent 43 ms cutting the file back to `journal_size_limit` with every other
    /// writer waiting behind it.
    fn wal_grew(&self) -> bool {
        let frames = self.wal_frames.load(Ordering::Relaxed);
        let mark = self.checkpoint_mark.load(Ordering::Relaxed);
        // A WAL shorter than the mark has started over since.
        let due = frames >= conn::CHECKPOINT_FRAMES
            && (frames < mark || frames >= mark + conn::CHECKPOINT_FRAMES);
        due && self
            .checkpoint_mark
            .compare_exchange(mark, frames, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// The event log: append, fetch, wait, purge. `Send + Sync`; share it between threads with an
/// `Arc`. Any number of processes may open the same file at once.
#[derive(Debug)]
pub struct EventStore {
    shared: Arc<Shared>,
    config: Config,
    epoch: u32,
    writer: writer::Writer,
    readers: Mutex<Vec<Connection>>,
    tail: tail::Tail,
    purger: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
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
        let path = path.as_ref().to_path_buf();
        config.validate()?;
        let lock = conn::WriterLock::open(&path)?;
        let signal = ChangeSignal::open(&path)?;
        let mut wconn = conn::open_connection(&path, config.durability)?;
        let epoch = {
            let _g = lock.lock()?;
            if schema::version(&wconn)? == SCHEMA_VERSION {
                schema::read_epoch(&wconn)?
            } else {
                let tx = wconn
                    .unchecked_transaction()
                    .map_err(conn::map_sqlite_error)?;
                let epoch = schema::migrate(&tx)?;
                tx.commit().map_err(conn::map_sqlite_error)?;
                epoch
            }
        };
        let shared = Arc::new(Shared {
            path,
            durability: config.durability,
            signal,
            closed: AtomicBool::new(false),
            checkpointing: AtomicBool::new(false),
            wal_frames: AtomicI64::new(0),
            checkpoint_mark: AtomicI64::new(0),
        });
        shared.watch_wal(&mut wconn)?;
        let store = EventStore {
            writer: writer::Writer::new(wconn, lock, &shared.path),
            readers: Mutex::new(Vec::new()),
            tail: tail::Tail::new(shared.clone()),
            shared,
            config,
            epoch,
            purger: Mutex::new(None),
            checkpointer: Mutex::new(None),
        };
        if let Some(every) = store.config.purge_interval {
            store.start_purger(every)?;
        }
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &Config {
        &self.config
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
        let Some(m) = &self.config.metrics else {
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
        let now = self.config.clock.now_ms();
        let rows = events
            .into_iter()
            .map(|e| self.validate(e, now))
            .collect::<Result<Vec<_>>>()?;
        self.writer.submit(rows, &|| self.announce_commit())
    }

    /// After a commit that moved the head: wakes the tail readers of every process, and starts
    /// a checkpoint when one is due.
    fn announce_commit(&self) {
        let commits = self.shared.signal.bump();
        if commits.is_multiple_of(conn::CHECKPOINT_EVERY) || self.shared.wal_grew() {
            self.start_checkpoint();
        }
    }

    fn validate(&self, e: NewEvent, now: i64) -> Result<writer::Row> {
        validate_event_type(&e.event_type)?;
        if e.channel_id <= 0 {
            return Err(Error::InvalidChannel(e.channel_id));
        }
        validate_data(&e.data, self.config.max_data_bytes)?;
        let ttl = e.ttl.unwrap_or(self.config.default_ttl);
        if ttl < self.config.min_ttl || ttl > self.config.max_ttl {
            return Err(Error::InvalidTtl {
                ttl_ms: ttl.as_millis().min(i64::MAX as u128) as i64,
                min_ms: self.config.min_ttl.as_millis() as i64,
                max_ms: self.config.max_ttl.as_millis() as i64,
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

    /// Fetches the next batch for `request` without waiting.
    pub fn fetch(&self, request: &FetchRequest) -> Result<Batch> {
        self.observed(Op::Fetch, || self.fetch_inner(request))
    }

    fn fetch_inner(&self, request: &FetchRequest) -> Result<Batch> {
        self.check_open()?;
        let req = request.normalized()?;
        let now = self.config.clock.now_ms();
        self.with_reader(|c| fetch::fetch(c, &req, self.epoch, now, self.config.live_tail_window))
    }

    /// Like [`fetch`](Self::fetch), but when nothing is pending, blocks until a matching event
    /// is appended (by any thread or process) or `timeout` passes; then returns an empty batch
    /// whose cursor is still valid.
    ///
    /// Blocking costs no CPU: waiters sleep on a condition variable, woken by one tail reader
    /// per store, which a futex in shared memory wakes on every commit on the host.
    pub fn wait(&self, request: &FetchRequest, timeout: Duration) -> Result<Batch> {
        let r = self.observed(Op::Wait, || self.wait_inner(request, timeout));
        if let (Some(m), Ok(b)) = (&self.config.metrics, &r)
            && b.events.is_empty()
            && !b.gap
            && !b.has_more
        {
            m.incr(Counter::WaitTimeouts);
        }
        r
    }

    fn wait_inner(&self, request: &FetchRequest, timeout: Duration) -> Result<Batch> {
        let deadline = Instant::now() + timeout;
        let mut req = request.normalized()?;
        self.check_open()?;
        let registration = self.tail.register(&req, || self.head_id())?;
        loop {
            let now = self.config.clock.now_ms();
            let batch = self.with_reader(|c| {
                fetch::fetch(c, &req, self.epoch, now, self.config.live_tail_window)
            })?;
            if !batch.events.is_empty() || batch.gap || batch.has_more {
                return Ok(batch);
            }
            registration.set_lanes(batch.cursor.lanes());
            req.cursor = batch.cursor;
            if !registration.sleep_until(deadline) {
                self.check_open()?;
                return Ok(batch);
            }
            self.check_open()?;
        }
    }

    /// Calls `f` with every event appended from now on (by any process), in id order, from the
    /// store's tail-reader thread: the building block of a fan-out that serves many waiters from
    /// memory (the daemon). `f` must be quick and must not call back into the store. Dropping
    /// the returned [`Subscription`] removes it.
    ///
    /// Pair it with [`assemble`](Self::assemble) to build batches from the events received.
    pub fn subscribe(
        &self,
        f: impl Fn(&TailBatch<'_>) + Send + Sync + 'static,
    ) -> Result<Subscription> {
        self.check_open()?;
        self.tail.subscribe(Arc::new(f), || self.head_id())
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
            self.epoch,
            self.config.clock.now_ms(),
        ))
    }

    /// This database file's epoch (a random number chosen at creation, carried in cursors).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// A cursor at the current end of the log: a page that renders state and then starts
    /// polling from here misses nothing committed after the render.
    pub fn head_cursor(&self) -> Result<Cursor> {
        self.check_open()?;
        let head = self.head_id()?;
        Ok(Cursor {
            epoch: Some(self.epoch),
            lanes: [head; 4],
        })
    }

    fn head_id(&self) -> Result<i64> {
        self.with_reader(fetch::head_id)
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
    /// It runs in one write transaction under the writer lock that appends take, so it is
    /// atomic and ordered with every concurrent append of every process: an append that
    /// commits before it keeps its id, one that commits after it gets an id above `past`.
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
        let (head, raised) = self.writer.advance_ids(past)?;
        if raised {
            // The head moved without an event: tail readers (the daemon's fan-out) learn the
            // new head now rather than at their next safety-net look.
            self.announce_commit();
        }
        Ok(head)
    }

    /// Deletes up to `max_rows` expired events, in transactions of at most
    /// [`Config::purge_chunk`] rows so the write lock is never held for long. Returns how many
    /// were deleted. Clients whose cursors had not passed a purged event get `gap: true`.
    pub fn purge_expired(&self, max_rows: usize) -> Result<usize> {
        self.check_open()?;
        let mut total = 0;
        while total < max_rows {
            let chunk = self.config.purge_chunk.min(max_rows - total);
            let now = self.config.clock.now_ms();
            let started = Instant::now();
            let n = self.writer.purge_chunk(now, chunk)?;
            if self.shared.wal_grew() {
                self.start_checkpoint();
            }
            total += n;
            if n < chunk || total >= max_rows {
                break;
            }
            pause_after_chunk(started.elapsed());
        }
        Ok(total)
    }

    /// Stores `cursor` as the position of `consumer`, durably (the plan's `processed_by`).
    pub fn commit_cursor(&self, consumer: &str, cursor: &Cursor) -> Result<()> {
        self.check_open()?;
        check_consumer(consumer)?;
        let now = self.config.clock.now_ms();
        let text = cursor.to_string();
        self.writer.with_write_tx(|tx| {
            tx.execute(
                "INSERT INTO lmsrt_cursors (consumer, cursor, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (consumer) DO UPDATE SET cursor = excluded.cursor,
                                                      updated_at = excluded.updated_at",
                params![consumer, text, now],
            )
            .map(|_| ())
            .map_err(conn::map_sqlite_error)
        })
    }

    /// The cursor last committed by `consumer`, if any.
    pub fn load_cursor(&self, consumer: &str) -> Result<Option<Cursor>> {
        self.check_open()?;
        check_consumer(consumer)?;
        let text: Option<String> = self.with_reader(|c| {
            c.prepare_cached("SELECT cursor FROM lmsrt_cursors WHERE consumer = ?1")
                .and_then(|mut s| s.query_row([consumer], |r| r.get(0)).optional())
                .map_err(conn::map_sqlite_error)
        })?;
        text.map(|t| Cursor::parse(&t)).transpose()
    }

    /// Closes the store: waiters return [`Error::Closed`] at once, background threads stop, and
    /// every later call fails with [`Error::Closed`]. Idempotent; dropping the store closes it.
    pub fn close(&self) {
        if self.shared.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.tail.shutdown();
        for t in [&self.purger, &self.checkpointer] {
            if let Some(h) = t.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = h.join();
            }
        }
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Whether [`close`](Self::close) has been called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Runs `f` on a pooled read connection. Connections are created on demand, so concurrent
    /// fetches from many threads never queue behind one another.
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => conn::open_connection(&self.shared.path, self.config.durability)?,
        };
        let out = f(&conn);
        if !self.is_closed() {
            let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
            // A burst of concurrent fetches (hundreds of waiters starting at once) must not
            // leave hundreds of idle connections behind.
            if pool.len() < MAX_IDLE_READERS {
                pool.push(conn);
            }
        }
        out
    }

    /// Every [`conn::CHECKPOINT_EVERY`] commits on the host, and whenever the WAL has grown by
    /// [`conn::CHECKPOINT_FRAMES`] (bulk appends, purges), the committing process copies the
    /// WAL back into the database in a background thread, so no append waits for it.
    ///
    /// Two passes: a passive checkpoint outside the writer lock does the bulk of the copying
    /// (and its fsyncs) while writers carry on; a second one under the writer lock then finishes
    /// the few frames written meanwhile, after the files were synced outside the lock (see
    /// [`conn::sync_files`]). Only a checkpoint that leaves the WAL fully copied lets
    /// the next writer start the WAL over; without the second pass, under steady writes the WAL
    /// would grow for ever (and every append would pay for the file system zeroing new blocks).
    /// The second pass holds the lock for a bounded time only (about 10 ms): its fsyncs wait on
    /// the disk's cache flush, which now and then takes 100 ms on a shared virtual disk, and a
    /// pass that runs over goes on without the lock, leaving the WAL's restart to a later
    /// checkpoint (see `checkpoint`).
    fn start_checkpoint(&self) {
        if self.shared.checkpointing.swap(true, Ordering::SeqCst) {
            return;
        }
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("lmsrt-checkpoint".into())
            .spawn(move || {
                let _ = checkpoint(&shared);
                shared.checkpointing.store(false, Ordering::SeqCst);
            });
        match spawned {
            Ok(h) => {
                let mut slot = self.checkpointer.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(old) = slot.replace(h) {
                    let _ = old.join(); // finished: `checkpointing` was clear
                }
            }
            Err(_) => self.shared.checkpointing.store(false, Ordering::SeqCst),
        }
    }

    fn start_purger(&self, every: Duration) -> Result<()> {
        let shared = self.shared.clone();
        let chunk = self.config.purge_chunk;
        let clock = self.config.clock.clone();
        let handle = std::thread::Builder::new()
            .name("lmsrt-purger".into())
            .spawn(move || {
                let Ok(w) =
                    writer::Writer::open(&shared.path, shared.durability, |c| shared.watch_wal(c))
                else {
                    return;
                };
                let mut next = Instant::now() + every;
                while !shared.closed.load(Ordering::SeqCst) {
                    let now = Instant::now();
                    if now < next {
                        // Short naps so close() does not wait a whole interval.
                        std::thread::sleep((next - now).min(Duration::from_millis(50)));
                        continue;
                    }
                    next = now + every;
                    while !shared.closed.load(Ordering::SeqCst) {
                        let started = Instant::now();
                        let purged = w.purge_chunk(clock.now_ms(), chunk);
                        // This thread is the one writing; it checkpoints in line.
                        if shared.wal_grew() && !shared.checkpointing.swap(true, Ordering::SeqCst) {
                            let _ = checkpoint(&shared);
                            shared.checkpointing.store(false, Ordering::SeqCst);
                        }
                        match purged {
                            Ok(n) if n == chunk => pause_after_chunk(started.elapsed()),
                            _ => break,
                        }
                    }
                }
            })
            .map_err(|e| Error::io(&self.shared.path, e))?;
        *self.purger.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(())
    }
}

impl Drop for EventStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Between purge transactions, pause as long as the last one took (capped). Pausing caps the
/// purge at half the write lock's time. Before writers were served in ticket order, a purger that
/// re-locked at once won the `flock` race against the writers just woken, and an append waited
/// out many chunks (measured: 136 ms); the queue now puts those writers first, and the pause
/// still leaves room for the appends that arrive during a chunk.
fn pause_after_chunk(took: Duration) {
    std::thread::sleep(took.clamp(Duration::from_micros(200), Duration::from_millis(5)));
}

fn checkpoint(shared: &Shared) -> Result<()> {
    /// Frames left for a locked pass in the ordinary case: about a megabyte, a few
    /// milliseconds of copying.
    const LOCKED_PASS_MAX_FRAMES: i64 = 256;
    /// A WAL this long (64 MiB of 4 KiB pages) is finished under the lock whatever is left.
    const WAL_LIMIT_FRAMES: i64 = 16_384;
    /// Longest the last pass holds the writer lock, while the WAL is shorter than
    /// [`WAL_HARD_LIMIT_FRAMES`] (see [`conn::WriterLock::run_locked`]). Measured under 8
    /// saturating processes: 0.9 ms median, 3.2 ms p99, 14.5 ms worst of 295 passes.
    const LOCKED_PASS_BUDGET: Duration = Duration::from_millis(10);
    /// A WAL this long (96 MiB) is finished under the lock however long that takes, so a disk
    /// whose flushes stay slow cannot let it grow past `journal_size_limit`.
    const WAL_HARD_LIMIT_FRAMES: i64 = 24_576;
    let c = conn::open_connection(&shared.path, shared.durability)?;
    let pass = || passive_pass(&c);
    // Writers keep adding frames while we copy; a few more unlocked passes, a moment apart,
    // usually catch a quiet instant and finish without taking the lock at all.
    let Some((mut log, mut left)) = pass()? else {
        return Ok(());
    };
    for _ in 0..8 {
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
        let Some(p) = pass()? else { return Ok(()) };
        (log, left) = p;
    }
    // A pass copies the frames that were in the WAL when it began. If a writer committed
    // meanwhile, the WAL is still in use, and the next writer starts it over only once every
    // frame has been copied. Under sustained writes there is no quiet instant: one thread
    // appending grew the WAL by about 1 GB/s, until the kernel's dirty-page throttling cut
    // appends to under a third. So a long WAL is finished under the writer lock, whatever is left.
    let finish = (left > 0 && left <= LOCKED_PASS_MAX_FRAMES) || log >= WAL_LIMIT_FRAMES;
    if !finish {
        // Nothing left, or a burst (a purge, a bulk append) is still running: try again at
        // the next interval rather than stall every writer behind a long copy.
        return Ok(());
    }
    // The locked pass syncs and copies whatever is not yet synced and copied. So sync, then copy
    // what came during the sync, unlocked, until little comes: each round syncs only what the
    // last one let in. Under a purge on a slow disk a sync took 60–200 ms, the frames written
    // meanwhile made the locked pass take 30–35 ms, and with these rounds it took 1–10 ms.
    for _ in 0..4 {
        conn::sync_files(&c)?;
        let Some((now, _)) = pass()? else {
            return Ok(());
        };
        // A WAL that started over meanwhile is shorter than before: little to do either way.
        let fresh = now - log;
        log = now;
        if fresh <= LOCKED_PASS_MAX_FRAMES {
            break;
        }
    }
    // A pass that outlasts its budget goes on as an ordinary passive one, alongside the
    // writers; the WAL then starts over after a later checkpoint instead of this one.
    let lock = conn::WriterLock::open(&shared.path)?;
    let budget = (log < WAL_HARD_LIMIT_FRAMES).then_some(LOCKED_PASS_BUDGET);
    let ((last, c), _in_time) = lock.run_locked(budget, move || (passive_pass(&c), c))?;
    drop(c); // closed after the lock is released
    last.map(|_| ())
}

/// One passive checkpoint pass: the frames in the WAL when it began, and those of them not yet
/// copied; `None` when another process is checkpointing (SQLite lets one in at a time): that
/// one finishes the job, and this one would only sync and lock for nothing.
fn passive_pass(c: &Connection) -> Result<Option<(i64, i64)>> {
    c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        let (busy, log, copied) = (
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        );
        Ok((busy == 0).then_some((log, log - copied)))
    })
    .map_err(conn::map_sqlite_error)
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
