//! The single writer connection, group commit, and the purge transaction.
//!
//! Group commit, leader/follower style: an appender queues its rows; if no commit is in
//! progress it becomes the leader, takes everything queued so far and commits it in one
//! transaction, then hands every queued caller its ids. Callers that arrive meanwhile queue up
//! for the next round. One fsync-free WAL commit then serves many threads, and nobody is
//! acknowledged before the transaction holding their rows has committed.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::conn::{self, Durability, WriterLock, map_sqlite_error};
use crate::error::{Error, Result};
use crate::event::{NewEvent, Priority};

/// A validated event with its computed fields.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) event: NewEvent,
    pub(crate) priority: Priority,
    pub(crate) timestamp: i64,
    pub(crate) expires_at: i64,
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
    turn: Mutex<Turn>,
    cv: Condvar,
}

impl Caller {
    fn set(&self, t: Turn) {
        *self.turn.lock().unwrap_or_else(|p| p.into_inner()) = t;
        self.cv.notify_one();
    }
}

#[derive(Debug, Default)]
struct Queue {
    pending: VecDeque<(Arc<Caller>, Vec<Row>)>,
    leader_active: bool,
}

#[derive(Debug)]
pub(crate) struct Writer {
    conn: Mutex<Connection>,
    lock: WriterLock,
    queue: Mutex<Queue>,
    /// Size of the last committed group.
    last_group: AtomicUsize,
}

impl Writer {
    pub(crate) fn new(conn: Connection, lock: WriterLock) -> Writer {
        Writer {
            conn: Mutex::new(conn),
            lock,
            queue: Mutex::new(Queue::default()),
            last_group: AtomicUsize::new(1),
        }
    }

    /// A writer of its own (for a background thread).
    pub(crate) fn open(path: &Path, durability: Durability) -> Result<Writer> {
        Ok(Writer::new(
            conn::open_connection(path, durability)?,
            WriterLock::open(path)?,
        ))
    }

    /// Commits `rows` (with whatever else is queued) and returns their ids. `on_commit` runs
    /// once per transaction, after it commits and before any of its callers is acknowledged.
    ///
    /// Each caller sleeps on its own condition variable, and a finishing leader wakes exactly
    /// one successor: no thundering herd when many threads append at once.
    pub(crate) fn submit(&self, rows: Vec<Row>, on_commit: &dyn Fn()) -> Result<Vec<i64>> {
        let me = Arc::new(Caller {
            turn: Mutex::new(Turn::Waiting),
            cv: Condvar::new(),
        });
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.pending.push_back((me.clone(), rows));
            if !q.leader_active {
                q.leader_active = true;
                *me.turn.lock().unwrap_or_else(|p| p.into_inner()) = Turn::Lead;
            }
        }
        let mut turn = me.turn.lock().unwrap_or_else(|p| p.into_inner());
        while matches!(*turn, Turn::Waiting) {
            turn = me.cv.wait(turn).unwrap_or_else(|p| p.into_inner());
        }
        if let Turn::Done(_) = &*turn {
            let Turn::Done(r) = std::mem::replace(&mut *turn, Turn::Waiting) else {
                unreachable!()
            };
            return r;
        }
        drop(turn);
        self.lead(&me, on_commit)
    }

    /// Commits everything queued, promotes the next leader, acknowledges the group.
    fn lead(&self, me: &Arc<Caller>, on_commit: &dyn Fn()) -> Result<Vec<i64>> {
        // The callers just acknowledged are about to append again; a new leader that commits
        // at once would mostly commit alone while they are still being scheduled. When the
        // last group was shared, give them one turn of the CPU to join this one.
        if self.last_group.load(Ordering::Relaxed) > 1 {
            std::thread::yield_now();
        }
        let group: Vec<(Arc<Caller>, Vec<Row>)> = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.pending.drain(..).collect()
        };
        // If committing panics, the next caller must still be promoted, or every later
        // append would queue forever.
        let promote = Promote(self);
        self.last_group.store(group.len(), Ordering::Relaxed);
        let results = self.commit_group(&group);
        if results.iter().any(|r| r.is_ok()) {
            on_commit();
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

    fn commit_group(&self, group: &[(Arc<Caller>, Vec<Row>)]) -> Vec<Result<Vec<i64>>> {
        let outcome = self.with_write_tx(|tx| {
            let mut results = Vec::with_capacity(group.len());
            for (_, rows) in group {
                // Only an idempotency conflict fails one caller alone; such callers get a
                // savepoint so their rows can be undone without undoing the others'.
                let keyed = rows.iter().any(|r| r.event.idempotency_key.is_some());
                if !keyed {
                    results.push(Ok(insert_rows(tx, rows)?));
                    continue;
                }
                tx.execute_batch("SAVEPOINT lmsrt_caller")
                    .map_err(map_sqlite_error)?;
                match insert_rows(tx, rows) {
                    Ok(ids) => {
                        tx.execute_batch("RELEASE lmsrt_caller")
                            .map_err(map_sqlite_error)?;
                        results.push(Ok(ids));
                    }
                    Err(e @ Error::IdempotencyConflict(_)) => {
                        tx.execute_batch("ROLLBACK TO lmsrt_caller; RELEASE lmsrt_caller")
                            .map_err(map_sqlite_error)?;
                        results.push(Err(e));
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(results)
        });
        match outcome {
            Ok(results) => results,
            Err(e) => group.iter().map(|_| Err(clone_error(&e))).collect(),
        }
    }

    /// Runs `f` in an immediate write transaction, holding the cross-process writer lock.
    pub(crate) fn with_write_tx<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let _g = self.lock.lock()?;
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(map_sqlite_error)?;
        let out = f(&tx)?;
        tx.commit().map_err(map_sqlite_error)?;
        Ok(out)
    }

    /// Deletes up to `max` rows that expired at or before `now`, recording what was removed per
    /// channel and lane so fetches can report the gap. Returns how many rows were deleted.
    pub(crate) fn purge_chunk(&self, now: i64, max: usize) -> Result<usize> {
        self.with_write_tx(|tx| {
            let victims: Vec<(i64, i64, i64)> = {
                let mut s = tx
                    .prepare_cached(
                        "SELECT id, channel_id, priority FROM lmsrt_events
                         WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
                    )
                    .map_err(map_sqlite_error)?;
                s.query_map(params![now, max as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
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
                let mut del = tx
                    .prepare_cached("DELETE FROM lmsrt_events WHERE id = ?1")
                    .map_err(map_sqlite_error)?;
                for (id, ch, pr) in &victims {
                    del.execute([id]).map_err(map_sqlite_error)?;
                    let e = spans.entry((*ch, *pr)).or_insert((*id, *id));
                    e.0 = e.0.min(*id);
                    e.1 = e.1.max(*id);
                }
            }
            let mut up = tx
                .prepare_cached(
                    "INSERT INTO lmsrt_purged (channel_id, priority, lo, hi) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (channel_id, priority) DO UPDATE
                     SET lo = min(lo, excluded.lo), hi = max(hi, excluded.hi)",
                )
                .map_err(map_sqlite_error)?;
            for ((ch, pr), (lo, hi)) in spans {
                up.execute(params![ch, pr, lo, hi])
                    .map_err(map_sqlite_error)?;
            }
            Ok(victims.len())
        })
    }
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
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::Closed => Error::Closed,
        other => Error::Internal(other.to_string()),
    }
}
