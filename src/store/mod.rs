//! [`EventStore`]: the event log over one SQLite file, shared by threads and processes.
//!
//! The store's parts, beside this file: `config` (settings and their ranges), `request` (what a
//! fetch asks for and answers), `conn` (connection setup, error mapping), `writer_lock` (the
//! cross-process writer queue), `writer` (group commit, purge transactions), `warm` (WAL pages
//! read back before the lock), `fetch` (batch assembly), `tail` (waiters and subscribers),
//! `maintenance` (checkpoints, the purger thread), `schema` (DDL, migrations) and `repair`
//! (check and salvage).

mod config;
mod conn;
mod fetch;
mod maintenance;
mod repair;
mod request;
mod schema;
mod tail;
mod warm;
mod writer;
mod writer_lock;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

pub use config::{
    Config, MAX_DATA_BYTES_LIMIT, MAX_PURGE_CHUNK, MAX_TTL_MS_LIMIT, PURGE_INTERVAL_MS_RANGE,
};
pub use conn::Durability;
pub use repair::{CheckReport, MAX_PROBLEMS, SalvageReport, check_file, salvage_file};
pub use request::{Batch, FetchRequest, MAX_CHANNELS, MAX_LIMIT, MAX_TYPES, Order};
pub use schema::SCHEMA_VERSION;
pub use tail::{Subscription, TailBatch};

use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::event::{Event, NewEvent, validate_data, validate_event_type};
use crate::metrics::{Counter, Histogram};
use crate::shm::ChangeSignal;

/// Longest consumer name for [`EventStore::commit_cursor`].
pub const MAX_CONSUMER_LEN: usize = 255;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Most events in one [`EventStore::append_batch`].
pub const MAX_BATCH: usize = 10_000;
/// Idle read connections kept per store.
const MAX_IDLE_READERS: usize = 16;

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
        let lock = writer_lock::WriterLock::open(&path)?;
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
        self.writer.submit(rows, &|c| {
            // Before the bump: this process's tail reader, woken by it, then finds them
            // routed and need not read them back.
            self.tail.hand_off(c.after, c.head, || c.events());
            self.announce_commit();
        })
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

    /// Calls `f` with every event appended from now on (by any process), in id order, once
    /// each, from the store's tail-reader thread (or, for an append through this store, from
    /// the appending thread, after the commit and before the append returns): the building
    /// block of a fan-out that serves many waiters from memory (the daemon). Calls never
    /// overlap. `f` must be quick and must not call back into the store. Dropping the returned
    /// [`Subscription`] removes it.
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
            maintenance::pause_after_chunk(started.elapsed());
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
}

impl Drop for EventStore {
    fn drop(&mut self) {
        self.close();
    }
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
