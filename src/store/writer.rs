//! The single writer connection, group commit, and the purge transaction.
//!
//! Group commit, leader/follower style: an appender queues its rows; if no commit is in
//! progress it becomes the leader, takes everything queued so far and commits it in one
//! transaction, then hands every queued caller its ids. Callers that arrive meanwhile queue up
//! for the next round. One fsync-free WAL commit then serves many threads, and nobody is
//! acknowledged before the transaction holding their rows has committed.
//!
//! The hand-offs cost more than the commits here: a queued caller watches its slot for a
//! moment (yielding the CPU) before it sleeps, a leader acknowledges a watching caller without
//! a system call, and a new leader gives the callers of the last group a moment to queue
//! again, inserting the rows of those already queued meanwhile. See
//! `benches/journal/2026-11-23-store-appends.md`.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::conn::{self, Durability, map_sqlite_error};
use super::warm::WalWarmer;
use super::writer_lock::WriterLock;
use crate::error::{Error, Result};
use crate::event::{Event, NewEvent, Priority};

/// A validated event with its computed fields.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) event: NewEvent,
    pub(crate) priority: Priority,
    pub(crate) timestamp: i64,
    pub(crate) expires_at: i64,
}

impl Row {
    /// The event as stored under `id` (what reading the row back would give: its data was
    /// checked when it was validated).
    fn to_event(&self, id: i64) -> Event {
        let e = &self.event;
        Event {
            id,
            event_type: e.event_type.clone(),
            priority: self.priority,
            channel_id: e.channel_id,
            message_id: e.message_id,
            thread_id: e.thread_id,
            user_id: e.user_id,
            data: e.data.clone(),
            timestamp: self.timestamp,
            expires_at: self.expires_at,
        }
    }
}

/// What one transaction added, handed to `on_commit`: every event with an id in
/// `(after, head]`, none other (the writer lock kept every other writer out meanwhile).
#[derive(Debug)]
pub(crate) struct Committed<'a> {
    /// The head (the id sequence) when the transaction began.
    pub(crate) after: i64,
    /// The last id the transaction gave (`after` when every row was an idempotent repeat).
    pub(crate) head: i64,
    group: &'a [(Arc<Caller>, Vec<Row>)],
    results: &'a [Result<Vec<i64>>],
}

impl Committed<'_> {
    /// The new events, ascending by id (rows that repeated an idempotency key get an older
    /// id and are not new).
    pub(crate) fn events(&self) -> Vec<Event> {
        let mut out = Vec::new();
        for ((_, rows), r) in self.group.iter().zip(self.results) {
            if let Ok(ids) = r {
                for (row, &id) in rows.iter().zip(ids) {
                    if id > self.after {
                        out.push(row.to_event(id));
                    }
                }
            }
        }
        out
    }
}

/// Where a queued caller stands.
#[derive(Debug)]
enum Turn {
    /// Queued behind a leader.
    Waiting,
    /// Promoted: commit everything queued.
    Lead,
    /// Committed (or failed) by a leader.
    Done(Result<Vec<i64>>),
}

#[derive(Debug)]
struct Caller {
    slot: Mutex<Slot>,
    cv: Condvar,
    /// Set (after `slot.turn`) once the turn is no longer `Waiting`, so a spinning caller can
    /// watch it without the lock.
    ready: AtomicBool,
}

#[derive(Debug)]
struct Slot {
    turn: Turn,
    /// The caller is blocked on `cv` (set and cleared under the lock).
    asleep: bool,
}

impl Caller {
    fn new(turn: Turn) -> Caller {
        Caller {
            ready: AtomicBool::new(!matches!(turn, Turn::Waiting)),
            slot: Mutex::new(Slot {
                turn,
                asleep: false,
            }),
            cv: Condvar::new(),
        }
    }

    fn set(&self, t: Turn) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.turn = t;
        self.ready.store(true, Ordering::Release);
        // A caller still spinning sees `ready`; only a sleeping one needs the (system call)
        // wake-up.
        if slot.asleep {
            self.cv.notify_one();
        }
    }

    /// Waits until the turn is not `Waiting` and takes it.
    ///
    /// A caller's turn usually comes within a commit or two (tens of microseconds). Sleeping
    /// on the condition variable costs a wake-up that, on this kind of virtual machine, often
    /// lands on an idle CPU and takes longer than the commit itself (with 8 appending threads
    /// the two CPUs were 57 % idle). So a caller first watches `ready` for a while, yielding
    /// the CPU between looks so the leader and the callers it acknowledges are never kept
    /// from running, and only then sleeps.
    fn wait(&self, spin: Duration) -> Turn {
        if !spin.is_zero() && !self.ready.load(Ordering::Acquire) {
            let deadline = Instant::now() + spin;
            'spin: loop {
                for _ in 0..16 {
                    std::thread::yield_now();
                    if self.ready.load(Ordering::Acquire) {
                        break 'spin;
                    }
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
        }
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        while matches!(slot.turn, Turn::Waiting) {
            slot.asleep = true;
            slot = self.cv.wait(slot).unwrap_or_else(|p| p.into_inner());
            slot.asleep = false;
        }
        std::mem::replace(&mut slot.turn, Turn::Waiting)
    }
}

#[derive(Debug, Default)]
struct Queue {
    pending: VecDeque<(Arc<Caller>, Vec<Row>)>,
    leader_active: bool,
}

/// How long a queued caller watches for its turn before sleeping (see [`Caller::wait`]).
/// Measured with 8 threads: 100 µs and 1 ms gave about the same as 300 µs; 0 (sleep at once)
/// gave a fifth less.
const SPIN: Duration = Duration::from_micros(300);

/// Longest a leader waits for the callers of the previous group to queue again. It holds the
/// writer lock meanwhile (it is inserting rows), so this also bounds what the wait adds to
/// another process's wait for the lock.
const GATHER_MAX: Duration = Duration::from_micros(50);

#[derive(Debug)]
pub(crate) struct Writer {
    conn: Mutex<Connection>,
    lock: WriterLock,
    queue: Mutex<Queue>,
    /// How many callers are queued (`queue.pending.len()`, readable without the lock).
    queued: AtomicUsize,
    /// Size of the last committed group.
    last_group: AtomicUsize,
    warmer: WalWarmer,
}

impl Writer {
    pub(crate) fn new(conn: Connection, lock: WriterLock, path: &Path) -> Writer {
        Writer {
            conn: Mutex::new(conn),
            lock,
            warmer: WalWarmer::new(path),
            queue: Mutex::new(Queue::default()),
            queued: AtomicUsize::new(0),
            last_group: AtomicUsize::new(1),
        }
    }

    /// A writer of its own (for a background thread); `setup` runs on its connection first.
    pub(crate) fn open(
        path: &Path,
        durability: Durability,
        setup: impl FnOnce(&mut Connection) -> Result<()>,
    ) -> Result<Writer> {
        let mut c = conn::open_connection(path, durability)?;
        setup(&mut c)?;
        Ok(Writer::new(c, WriterLock::open(path)?, path))
    }

    /// Commits `rows` (with whatever else is queued) and returns their ids. `on_commit` runs
    /// once per transaction that committed rows, after it commits and before any of its
    /// callers is acknowledged, with what it added.
    ///
    /// Each caller waits on its own slot (watching it for a moment, then sleeping on its own
    /// condition variable), and a finishing leader promotes exactly one successor: no
    /// thundering herd when many threads append at once.
    pub(crate) fn submit(
        &self,
        rows: Vec<Row>,
        on_commit: &dyn Fn(&Committed<'_>),
    ) -> Result<Vec<i64>> {
        let me;
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let lead = !q.leader_active;
            q.leader_active = true;
            me = Arc::new(Caller::new(if lead { Turn::Lead } else { Turn::Waiting }));
            q.pending.push_back((me.clone(), rows));
            self.queued.store(q.pending.len(), Ordering::Release);
        }
        match me.wait(SPIN) {
            Turn::Done(r) => r,
            Turn::Lead => self.lead(&me, on_commit),
            Turn::Waiting => Err(Error::Internal("woken without a turn".into())),
        }
    }

    /// Commits everything queued, promotes the next leader, acknowledges the group.
    fn lead(&self, me: &Arc<Caller>, on_commit: &dyn Fn(&Committed<'_>)) -> Result<Vec<i64>> {
        // If committing panics, the next caller must still be promoted, or every later
        // append would queue forever.
        let promote = Promote(self);
        let mut group: Vec<(Arc<Caller>, Vec<Row>)> = Vec::new();
        let mut after = 0;
        let outcome = self.with_write_tx(|tx| {
            // Read under the writer lock: the rows inserted below are exactly the events
            // with ids in (after, the sequence at commit].
            after = super::fetch::head_id(tx)?;
            // The callers just acknowledged are about to append again; a leader that committed
            // at once would mostly commit alone while they are still being scheduled. When the
            // last group was shared, keep taking callers as they queue (inserting their rows
            // meanwhile, so the wait does the group's work) until as many as it had are in, or
            // for at most GATHER_MAX.
            let expect = self.last_group.load(Ordering::Relaxed);
            let deadline = Instant::now() + GATHER_MAX;
            let mut results = Vec::new();
            loop {
                // `queued` spares the queue's lock while nobody new has queued.
                let taken = if group.is_empty() || self.queued.load(Ordering::Acquire) > 0 {
                    self.take_queued()
                } else {
                    Vec::new()
                };
                // Into the group first: if an insert fails, every caller taken must still
                // get the error.
                let first = group.len();
                group.extend(taken);
                for (_, rows) in &group[first..] {
                    results.push(insert_caller(tx, rows)?);
                }
                let more = group.len() > first;
                if group.len() >= expect || Instant::now() >= deadline {
                    break;
                }
                if !more {
                    std::thread::yield_now();
                }
            }
            Ok(results)
        });
        self.last_group.store(group.len().max(1), Ordering::Relaxed);
        let results = match outcome {
            Ok(results) => results,
            Err(e) => {
                if group.is_empty() {
                    // Failed before taking anyone (the writer lock): fail those queued now,
                    // this leader among them, as a commit of them would have.
                    group = self.take_queued();
                }
                group.iter().map(|_| Err(clone_error(&e))).collect()
            }
        };
        if results.iter().any(|r| r.is_ok()) {
            let head = results
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .flatten()
                .fold(after, |h, &id| h.max(id));
            on_commit(&Committed {
                after,
                head,
                group: &group,
                results: &results,
            });
        }
        drop(promote);
        let mut mine = None;
        for ((caller, _), r) in group.iter().zip(results) {
            if Arc::ptr_eq(caller, me) {
                mine = Some(r);
            } else {
                caller.set(Turn::Done(r));
            }
        }
        mine.unwrap_or_else(|| Err(Error::Internal("leader lost its own request".into())))
    }

    /// Takes every queued caller.
    fn take_queued(&self) -> Vec<(Arc<Caller>, Vec<Row>)> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        self.queued.store(0, Ordering::Release);
        q.pending.drain(..).collect()
    }

    /// Runs `f` in an immediate write transaction, holding the cross-process writer lock.
    pub(crate) fn with_write_tx<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        // Outside the lock, so that a page the kernel dropped is read back while others write.
        self.warmer.warm(self.lock.last_wal_look());
        let _g = self.lock.lock()?;
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(map_sqlite_error)?;
        let out = f(&tx)?;
        tx.commit().map_err(map_sqlite_error)?;
        Ok(out)
    }

    /// Raises the id sequence of `lmsrt_events` (its AUTOINCREMENT row in `sqlite_sequence`) to
    /// at least `past`, in one write transaction under the cross-process writer lock, so it
    /// is ordered with every append of every process: an append that commits before it keeps
    /// its id, one that commits after it gets an id above `past`. Returns the sequence after the
    /// transaction and whether it changed.
    ///
    /// SQLite gives a new row `max(seq, largest id in the table) + 1`, so a raised `seq` is all
    /// it takes. The table has no `sqlite_sequence` row until its first insert, and the table
    /// has no unique constraint on `name`: the row is updated when it exists and inserted
    /// only when it does not, never duplicated.
    pub(crate) fn advance_ids(&self, past: i64) -> Result<(i64, bool)> {
        self.with_write_tx(|tx| {
            let seq: Option<i64> = tx
                .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'lmsrt_events'")
                .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
                .map_err(map_sqlite_error)?;
            let current = seq.unwrap_or(0);
            if current >= past {
                return Ok((current, false));
            }
            let sql = if seq.is_some() {
                "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'lmsrt_events'"
            } else {
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('lmsrt_events', ?1)"
            };
            tx.execute(sql, [past]).map_err(map_sqlite_error)?;
            Ok((past, true))
        })
    }

    /// Deletes up to `max` rows that expired at or before `now`, recording each one (id,
    /// channel, lane, thread, type) so fetches can report the gap exactly. Returns how many
    /// rows were deleted.
    pub(crate) fn purge_chunk(&self, now: i64, max: usize) -> Result<usize> {
        self.with_write_tx(|tx| {
            // The record is copied from the row itself, so it carries exactly what a fetch
            // filters on (a type that is not text stays as it is, matching no filter).
            type Victim = (i64, i64, i64, Option<i64>, rusqlite::types::Value);
            let victims: Vec<Victim> = {
                let mut s = tx
                    .prepare_cached(
                        "SELECT id, channel_id, priority, thread_id, event_type FROM lmsrt_events
                         WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
                    )
                    .map_err(map_sqlite_error)?;
                s.query_map(params![now, max as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .map_err(map_sqlite_error)?
                .collect::<rusqlite::Result<_>>()
                .map_err(map_sqlite_error)?
            };
            if victims.is_empty() {
                return Ok(0);
            }
            let mut spans: std::collections::HashMap<(i64, i64), (i64, i64)> =
                std::collections::HashMap::new();
            {
                // OR IGNORE: ids are never reused, so a record with the same id can only be
                // this event's own.
                let mut keep = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO lmsrt_purged_events
                             (id, channel_id, priority, thread_id, event_type)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .map_err(map_sqlite_error)?;
                let mut del = tx
                    .prepare_cached("DELETE FROM lmsrt_events WHERE id = ?1")
                    .map_err(map_sqlite_error)?;
                for (id, ch, pr, thread, ty) in &victims {
                    keep.execute(params![id, ch, pr, thread, ty])
                        .map_err(map_sqlite_error)?;
                    del.execute([id]).map_err(map_sqlite_error)?;
                    let e = spans.entry((*ch, *pr)).or_insert((*id, *id));
                    e.0 = e.0.min(*id);
                    e.1 = e.1.max(*id);
                }
            }
            // The interval, for processes still running version 1 code (see `schema::V2`).
            // `exact_lo`/`exact_hi` follow it only while they still match it: once a version
            // 1 process has widened it (recording nothing else), they stay behind, and
            // version 2 readers treat the whole interval as a gap.
            let mut up = tx
                .prepare_cached(
                    "INSERT INTO lmsrt_purged (channel_id, priority, lo, hi, exact_lo, exact_hi)
                     VALUES (?1, ?2, ?3, ?4, ?3, ?4)
                     ON CONFLICT (channel_id, priority) DO UPDATE
                     SET lo = min(lo, excluded.lo), hi = max(hi, excluded.hi),
                         exact_lo = CASE WHEN lo IS exact_lo AND hi IS exact_hi
                                    THEN min(lo, excluded.lo) ELSE exact_lo END,
                         exact_hi = CASE WHEN lo IS exact_lo AND hi IS exact_hi
                                    THEN max(hi, excluded.hi) ELSE exact_hi END",
                )
                .map_err(map_sqlite_error)?;
            for ((ch, pr), (lo, hi)) in spans {
                up.execute(params![ch, pr, lo, hi])
                    .map_err(map_sqlite_error)?;
            }
            let head = super::fetch::head_id(tx)?;
            fold_purged(tx, head - PURGED_EXACT_IDS)?;
            Ok(victims.len())
        })
    }
}

/// How far behind the head (in ids) a purged event keeps its exact record. Older records are
/// folded into their lane's interval (`lmsrt_purged.folded_hi`), which bounds
/// `lmsrt_purged_events` to this many rows (ids are unique; some 50 MB at worst). Only a
/// cursor this far behind can then be told of a gap it was not owed (as every cursor could
/// before schema version 2): a resync, never a loss.
pub(crate) const PURGED_EXACT_IDS: i64 = 1_000_000;

/// Folds the exact purge records with ids at or below `upto` into their lanes' intervals.
/// When there are none (the usual case) this is one seek on the rowid.
pub(crate) fn fold_purged(tx: &Connection, upto: i64) -> Result<()> {
    if upto <= 0 {
        return Ok(());
    }
    let spans: Vec<(i64, i64, i64, i64)> = {
        let mut s = tx
            .prepare_cached(
                "SELECT channel_id, priority, min(id), max(id) FROM lmsrt_purged_events
                 WHERE id <= ?1 GROUP BY channel_id, priority",
            )
            .map_err(map_sqlite_error)?;
        s.query_map([upto], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(map_sqlite_error)?
            .collect::<rusqlite::Result<_>>()
            .map_err(map_sqlite_error)?
    };
    if spans.is_empty() {
        return Ok(());
    }
    // The purge that recorded them widened the interval to cover them, so raising
    // `folded_hi` is enough; the insert is for a row removed by hand.
    let mut up = tx
        .prepare_cached(
            "INSERT INTO lmsrt_purged (channel_id, priority, lo, hi, exact_lo, exact_hi, folded_hi)
             VALUES (?1, ?2, ?3, ?4, ?3, ?4, ?4)
             ON CONFLICT (channel_id, priority) DO UPDATE
             SET folded_hi = max(coalesce(folded_hi, excluded.folded_hi), excluded.folded_hi)",
        )
        .map_err(map_sqlite_error)?;
    for (ch, pr, lo, hi) in spans {
        up.execute(params![ch, pr, lo, hi])
            .map_err(map_sqlite_error)?;
    }
    tx.prepare_cached("DELETE FROM lmsrt_purged_events WHERE id <= ?1")
        .and_then(|mut s| s.execute([upto]))
        .map_err(map_sqlite_error)?;
    Ok(())
}

/// Hands leadership to the first queued caller, or stands the leader down.
struct Promote<'a>(&'a Writer);

impl Drop for Promote<'_> {
    fn drop(&mut self) {
        let mut q = self.0.queue.lock().unwrap_or_else(|p| p.into_inner());
        match q.pending.front() {
            Some((next, _)) => next.set(Turn::Lead),
            None => q.leader_active = false,
        }
    }
}

/// Inserts one caller's rows. Only an idempotency conflict fails one caller alone; such
/// callers get a savepoint so their rows can be undone without undoing the others'. Any other
/// error fails the whole transaction.
fn insert_caller(tx: &Connection, rows: &[Row]) -> Result<Result<Vec<i64>>> {
    let keyed = rows.iter().any(|r| r.event.idempotency_key.is_some());
    if !keyed {
        return Ok(Ok(insert_rows(tx, rows)?));
    }
    tx.execute_batch("SAVEPOINT lmsrt_caller")
        .map_err(map_sqlite_error)?;
    match insert_rows(tx, rows) {
        Ok(ids) => {
            tx.execute_batch("RELEASE lmsrt_caller")
                .map_err(map_sqlite_error)?;
            Ok(Ok(ids))
        }
        Err(e @ Error::IdempotencyConflict(_)) => {
            tx.execute_batch("ROLLBACK TO lmsrt_caller; RELEASE lmsrt_caller")
                .map_err(map_sqlite_error)?;
            Ok(Err(e))
        }
        Err(e) => Err(e),
    }
}

fn insert_rows(tx: &Connection, rows: &[Row]) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(rows.len());
    let mut ins = tx
        .prepare_cached(
            "INSERT INTO lmsrt_events (event_type, priority, channel_id, message_id, thread_id,
                                       user_id, data, timestamp, expires_at, idem_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(map_sqlite_error)?;
    for row in rows {
        let e = &row.event;
        if let Some(key) = &e.idempotency_key
            && let Some(id) = existing_for_key(tx, key, row)?
        {
            ids.push(id);
            continue;
        }
        ins.execute(params![
            e.event_type,
            row.priority.as_u8(),
            e.channel_id,
            e.message_id,
            e.thread_id,
            e.user_id,
            e.data,
            row.timestamp,
            row.expires_at,
            e.idempotency_key,
        ])
        .map_err(map_sqlite_error)?;
        ids.push(tx.last_insert_rowid());
    }
    Ok(ids)
}

/// The id of the event already stored under `key`, if it is the same event; an error if the key
/// was used for a different one.
fn existing_for_key(tx: &Connection, key: &str, row: &Row) -> Result<Option<i64>> {
    let mut s = tx
        .prepare_cached(
            "SELECT id, event_type, priority, channel_id, message_id, thread_id, user_id, data
             FROM lmsrt_events WHERE idem_key = ?1",
        )
        .map_err(map_sqlite_error)?;
    type Stored = (i64, String, u8, i64, Option<i64>, Option<i64>, i64, String);
    let found: Option<Stored> = s
        .query_row([key], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .optional()
        .map_err(map_sqlite_error)?;
    let Some((id, ty, pr, ch, msg, th, user, data)) = found else {
        return Ok(None);
    };
    let e = &row.event;
    let same = ty == e.event_type
        && pr == row.priority.as_u8()
        && ch == e.channel_id
        && msg == e.message_id
        && th == e.thread_id
        && user == e.user_id
        && data == e.data;
    if same {
        Ok(Some(id))
    } else {
        Err(Error::IdempotencyConflict(key.to_owned()))
    }
}

/// Errors are not `Clone` (they can hold an `io::Error`); a group failure is reported to every
/// caller with the same code and message.
fn clone_error(e: &Error) -> Error {
    match e {
        Error::Busy(m) => Error::Busy(m.clone()),
        Error::Storage(m) => Error::Storage(m.clone()),
        Error::Corrupt(m) => Error::Corrupt(m.clone()),
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::Closed => Error::Closed,
        other => Error::Internal(other.to_string()),
    }
}
