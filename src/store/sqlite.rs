//! The SQLite engine behind [`EventStore`](super::EventStore): one database file shared by the
//! threads and processes of a host. The public methods, and what they promise, are documented
//! on `EventStore`; this file only implements them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Batch, Config, Durability, FetchRequest, SCHEMA_VERSION, Subscription, TailBatch, conn, fetch,
    maintenance, schema, tail, writer, writer_lock,
};
use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::shm::ChangeSignal;

/// Idle read connections kept per store.
const MAX_IDLE_READERS: usize = 16;

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
    pub(super) wal_frames: AtomicI64,
    /// `wal_frames` when the WAL's length last started a checkpoint.
    pub(super) checkpoint_mark: AtomicI64,
}

/// The event log over one SQLite file.
#[derive(Debug)]
pub(crate) struct SqliteStore {
    pub(super) shared: Arc<Shared>,
    pub(super) config: Config,
    epoch: u32,
    writer: writer::Writer,
    readers: Mutex<Vec<Connection>>,
    tail: tail::Tail,
    pub(super) purger: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(super) checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SqliteStore {
    pub(crate) fn open(path: &Path, config: Config) -> Result<SqliteStore> {
        let path = path.to_path_buf();
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
        let store = SqliteStore {
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

    pub(crate) fn path(&self) -> &Path {
        &self.shared.path
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Commits validated rows (group commit) and returns their ids.
    pub(crate) fn append_rows(&self, rows: Vec<writer::Row>) -> Result<Vec<i64>> {
        self.check_open()?;
        self.writer.submit(rows, &|c| {
            // Before the bump: this process's tail reader, woken by it, then finds them
            // routed and need not read them back.
            let handed = self.tail.hand_off(c.after, c.head, || c.events());
            self.announce_commit(handed);
        })
    }

    /// After a commit that moved the head: wakes the tail readers of every process (but this
    /// one's when `handed`: it has the events already), and starts a checkpoint when one is due.
    fn announce_commit(&self, handed: bool) {
        let commits = self.shared.signal.bump(handed);
        if commits.is_multiple_of(conn::CHECKPOINT_EVERY) || self.shared.wal_grew() {
            self.start_checkpoint();
        }
    }

    /// `req` is normalized.
    pub(crate) fn fetch(&self, req: &FetchRequest) -> Result<Batch> {
        self.check_open()?;
        let now = self.config.clock.now_ms();
        self.with_reader(|c| fetch::fetch(c, req, self.epoch, now, self.config.live_tail_window))
    }

    /// `req` is normalized.
    pub(crate) fn wait(&self, mut req: FetchRequest, timeout: Duration) -> Result<Batch> {
        let deadline = Instant::now() + timeout;
        self.check_open()?;
        let registration = self.tail.register(&req, || self.head_id())?;
        loop {
            let batch = self.fetch(&req)?;
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

    pub(crate) fn subscribe(
        &self,
        f: impl Fn(&TailBatch<'_>) + Send + Sync + 'static,
    ) -> Result<Subscription> {
        self.check_open()?;
        self.tail.subscribe(Arc::new(f), || self.head_id())
    }

    pub(crate) fn head_id(&self) -> Result<i64> {
        self.check_open()?;
        self.with_reader(fetch::head_id)
    }

    /// `past` is checked.
    pub(crate) fn advance_ids(&self, past: i64) -> Result<i64> {
        self.check_open()?;
        let (head, raised) = self.writer.advance_ids(past)?;
        if raised {
            // The head moved without an event: tail readers (the daemon's fan-out) learn the
            // new head now rather than at their next safety-net look.
            self.announce_commit(false);
        }
        Ok(head)
    }

    pub(crate) fn purge_expired(&self, max_rows: usize) -> Result<usize> {
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

    /// `consumer` is checked.
    pub(crate) fn commit_cursor(&self, consumer: &str, cursor: &Cursor) -> Result<()> {
        self.check_open()?;
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

    /// `consumer` is checked.
    pub(crate) fn load_cursor(&self, consumer: &str) -> Result<Option<String>> {
        self.check_open()?;
        self.with_reader(|c| {
            c.prepare_cached("SELECT cursor FROM lmsrt_cursors WHERE consumer = ?1")
                .and_then(|mut s| s.query_row([consumer], |r| r.get(0)).optional())
                .map_err(conn::map_sqlite_error)
        })
    }

    pub(crate) fn close(&self) {
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

    pub(crate) fn is_closed(&self) -> bool {
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

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}
