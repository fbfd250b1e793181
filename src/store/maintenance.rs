//! A store's upkeep: WAL checkpoints (started after commits) and the background purger.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::writer_lock::WriterLock;
use super::{Shared, SqliteStore, conn, writer};
use crate::error::{Error, Result};

impl Shared {
    /// Keeps `wal_frames` current after every commit on `conn`, one of this process's
    /// writer connections.
    pub(super) fn watch_wal(self: &Arc<Shared>, conn: &mut Connection) -> Result<()> {
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
    pub(super) fn wal_grew(&self) -> bool {
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

impl SqliteStore {
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
    pub(super) fn start_checkpoint(&self) {
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

    pub(super) fn start_purger(&self, every: Duration) -> Result<()> {
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

/// Between purge transactions, pause as long as the last one took (capped). Pausing caps the
/// purge at half the write lock's time. Before writers were served in ticket order, a purger that
/// re-locked at once won the `flock` race against the writers just woken, and an append waited
/// out many chunks (measured: 136 ms); the queue now puts those writers first, and the pause
/// still leaves room for the appends that arrive during a chunk.
pub(super) fn pause_after_chunk(took: Duration) {
    std::thread::sleep(took.clamp(Duration::from_micros(200), Duration::from_millis(5)));
}

/// A WAL this long (64 MiB of 4 KiB pages) is finished under the writer lock whatever is left.
pub(super) const WAL_LIMIT_FRAMES: i64 = 16_384;

fn checkpoint(shared: &Shared) -> Result<()> {
    /// Frames left for a locked pass in the ordinary case: about a megabyte, a few
    /// milliseconds of copying.
    const LOCKED_PASS_MAX_FRAMES: i64 = 256;
    /// Longest the last pass holds the writer lock, while the WAL is shorter than
    /// [`WAL_HARD_LIMIT_FRAMES`] (see [`WriterLock::run_locked`]). Measured under 8
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
    // A pass copies the frames that were in the WAL when it began: `left == 0` says nothing
    // of what writers committed meanwhile, and the next writer starts the WAL over only if
    // every frame has been copied. So the WAL counts as done only when a pass finds no frame
    // the one before it had not seen. (Stopping at the first `left == 0` let the WAL start
    // over only at `WAL_LIMIT_FRAMES`: under steady appends it cycled through 64 MiB.)
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(1));
        let Some((now, l)) = pass()? else {
            return Ok(());
        };
        // A WAL shorter than before has started over meanwhile.
        if now < log || (now == log && l == 0) {
            return Ok(());
        }
        (log, left) = (now, l);
    }
    // Under sustained writes there is no quiet instant: one thread appending grew the WAL by
    // about 1 GB/s, until the kernel's dirty-page throttling cut appends to under a third. So
    // the rest is finished under the writer lock, and a long WAL whatever is left.
    let finish = left <= LOCKED_PASS_MAX_FRAMES || log >= WAL_LIMIT_FRAMES;
    if !finish {
        // A burst (a purge, a bulk append) is still running: try again at the next interval
        // rather than stall every writer behind a long copy.
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
    let lock = WriterLock::open(&shared.path)?;
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
