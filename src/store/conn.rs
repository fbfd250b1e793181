//! Connection setup, error mapping and the cross-process writer lock.
//!
//! SQLite lets one writer in at a time and makes the others poll: its busy handler sleeps with
//! growing back-off (1, 2, 5, … 100 ms), so under contention from several processes an append
//! can stall for a second while the lock sat free most of that time. Writers here first take an
//! exclusive `flock` on a lock file beside the database. The kernel queues `flock` waiters and
//! wakes them when the holder releases (or dies: the lock goes with the file descriptor), so the
//! SQLite write lock is always free by the time a writer asks for it and nobody sleeps blind.
//! The busy handler stays as a safety net for writers that do not take the lock (the sqlite3
//! shell, a checkpoint in progress), with short sleeps instead of the default back-off.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode as SqliteCode, OpenFlags};

use crate::error::{Error, Result};
use crate::shm::{SharedRegion, futex_wait, futex_wake, sidecar};

/// How many commits (by all processes) between the passive checkpoints this library runs.
pub(crate) const CHECKPOINT_EVERY: u64 = 1000;

/// A WAL this many frames long (16 MiB of 4 KiB pages) starts a checkpoint whatever the commit
/// count (see `Shared::wal_grew`).
pub(crate) const CHECKPOINT_FRAMES: i64 = 4096;

/// Durability of an acknowledged append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Survives a crash of any process (WAL with `synchronous = NORMAL`): the default.
    #[default]
    ProcessCrash,
    /// Also survives power loss or an OS crash (`synchronous = FULL`: an fsync per commit).
    PowerLoss,
}

pub(crate) fn map_sqlite_error(e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(SqliteCode::DatabaseBusy) | Some(SqliteCode::DatabaseLocked) => {
            Error::Busy(e.to_string())
        }
        _ => Error::Storage(e.to_string()),
    }
}

/// Short sleeps for a bounded time: the lock is normally free (see the module docs), so a busy
/// answer means a non-cooperating writer or a checkpoint, both brief.
fn busy_handler(attempt: i32) -> bool {
    // About 2 s in all before giving up with Error::Busy.
    if attempt >= 4000 {
        return false;
    }
    std::thread::sleep(if attempt < 20 {
        Duration::from_micros(50)
    } else {
        Duration::from_micros(500)
    });
    true
}

/// Opens a connection to `path` with this library's settings.
pub(crate) fn open_connection(path: &Path, durability: Durability) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(map_sqlite_error)?;
    conn.busy_handler(Some(busy_handler))
        .map_err(map_sqlite_error)?;
    conn.set_prepared_statement_cache_capacity(256);
    // `rarray(?)` binds a list (channels, types, ids) as one parameter, so each query shape
    // has one SQL text and one cached statement whatever the list's length.
    rusqlite::vtab::array::load_module(&conn).map_err(map_sqlite_error)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(map_sqlite_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Storage(format!(
            "could not switch {} to WAL mode (got {mode:?}); is it on a network file system?",
            path.display()
        )));
    }
    let sync = match durability {
        Durability::ProcessCrash => "NORMAL",
        Durability::PowerLoss => "FULL",
    };
    // Checkpoints run outside the writer lock (see EventStore::start_checkpoint), so the
    // automatic one, which would run inside a commit while other processes wait, is off.
    // A WAL that a burst made long is cut back to 128 MiB when it starts over. The writer
    // that starts it over does the cutting (10–45 ms measured for a long WAL) with every other
    // writer waiting, so the limit sits above the 64 MiB at which a checkpoint finishes the
    // WAL under the lock (`WAL_LIMIT_FRAMES`): only an exceptional burst pays for it.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync};
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA journal_size_limit = 134217728;
         PRAGMA temp_store = MEMORY;
         PRAGMA foreign_keys = OFF;"
    ))
    .map_err(map_sqlite_error)?;
    Ok(conn)
}

/// The exclusive writer lock shared by every process that opens the database.
///
/// `flock` is robust (the kernel drops it with the holder's descriptor) but not fair: the
/// process that just released it is on a CPU and re-takes it before the waiter the kernel woke
/// gets scheduled, so a busy process could starve the others for tens of milliseconds. The lock
/// file therefore also carries two words in shared memory: how many writers are blocked on the
/// lock, and how many times it has been taken. A writer that released the lock moments ago
/// while others were waiting first lets them take it, as many takes as there were waiters when
/// it released (a futex wait on the take counter, at most [`HANDOFF_WAIT`] without one), then
/// queues like everyone else. One take is not enough: two processes on one CPU could hand the
/// lock back and forth through fast same-CPU wake-ups while the waiters woken on the other CPU
/// lost every race (a 36 ms stall, traced with `sched_switch` on 2026-12-02).
///
/// A waiter is usually scheduled well within [`HANDOFF_WAIT`], but not always: on a loaded
/// machine a woken process can wait a scheduler slice or more. A courtesy wait that runs out
/// therefore asks the kernel whether a waiter is still alive before giving up. Each blocked
/// waiter holds a read lock (an open-file-description lock, independent of `flock`) on the
/// first byte of the lock file while it is counted, and the kernel drops it if the waiter dies.
/// * A live waiter gets up to [`HANDOFF_WAIT_LIVE`] in all. Until this rule, one courtesy wait
///   that ran out made the releasing process stop deferring for a second, and an append
///   waited behind a purge for up to 0.9 s (measured on a slow day, 2026-12-02).
/// * A count with no live waiter behind it was left by a waiter that died while blocked; it
///   is set back to zero, so it costs one [`HANDOFF_WAIT`] once.
/// * A live waiter that still does not take the lock (a stopped process) makes this process
///   stop deferring for [`DISTRUST`], so it cannot slow every commit down.
#[derive(Debug)]
pub(crate) struct WriterLock {
    file: File,
    path: PathBuf,
    shared: SharedRegion,
    local: Mutex<Handoff>,
    /// Threads of this process blocked in [`WriterLock::lock`] on this handle; the waiter mark
    /// is held while it is positive (marks belong to the open file, not the thread).
    blocked: Mutex<usize>,
}

/// How long a releasing writer defers to waiters before asking whether they are alive.
const HANDOFF_WAIT: Duration = Duration::from_millis(2);
/// Longest a releasing writer defers to a waiter that is alive but slow to be scheduled.
const HANDOFF_WAIT_LIVE: Duration = Duration::from_millis(20);
/// How long to stop deferring after a live waiter let a courtesy wait run out.
const DISTRUST: Duration = Duration::from_millis(100);
const WAITING_OFFSET: usize = 64;
const TAKES_OFFSET: usize = 128;
const LAST_LOOK_OFFSET: usize = 192;

/// A release with writers waiting: when, the take count then, and how many waited.
#[derive(Debug, Clone, Copy)]
struct Release {
    at: Instant,
    takes: u32,
    waiters: u32,
}

/// Most takes a releaser waits for (a bound on a corrupt or huge count).
const MAX_OWED: u32 = 64;

#[derive(Debug, Default)]
struct Handoff {
    /// When this lock was last released with other writers waiting.
    released_to_waiters: Option<Release>,
    distrust_until: Option<Instant>,
}

impl WriterLock {
    pub(crate) fn open(db_path: &Path) -> Result<WriterLock> {
        let path = sidecar(db_path, "-lmsrt-writer");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let shared = SharedRegion::open(&path, 4096)?;
        Ok(WriterLock {
            file,
            path,
            shared,
            local: Mutex::new(Handoff::default()),
            blocked: Mutex::new(0),
        })
    }

    /// Blocks until this process holds the lock. Released when the guard drops.
    pub(crate) fn lock(&self) -> Result<WriterLockGuard<'_>> {
        let takes = self.shared.atomic_u32(TAKES_OFFSET);
        let waiting = self.shared.atomic_u32(WAITING_OFFSET);
        {
            let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let trusted = local.distrust_until.is_none_or(|t| now >= t);
            if let Some(r) = local.released_to_waiters.take()
                && trusted
                && now < r.at + HANDOFF_WAIT
            {
                // Every take is progress and restarts the clock: only a waiter that does not
                // take the lock in time ends the courtesy.
                let (mut progress_at, mut last) = (r.at, r.takes);
                let mut deadline = r.at + HANDOFF_WAIT;
                let mut asked = false;
                loop {
                    let t = takes.load(Ordering::Acquire);
                    if t.wrapping_sub(r.takes) >= r.waiters.min(MAX_OWED) {
                        break; // each writer waiting at the release had its turn
                    }
                    let now = Instant::now();
                    if t != last {
                        (progress_at, last) = (now, t);
                        deadline = now + HANDOFF_WAIT;
                        asked = false;
                    }
                    if waiting.load(Ordering::Acquire) == 0 {
                        break; // nobody waits any more (the last of them holds it now)
                    }
                    if now < deadline {
                        futex_wait(takes, t, deadline - now);
                        continue;
                    }
                    if asked {
                        local.distrust_until = Some(now + DISTRUST);
                        break;
                    }
                    asked = true;
                    let counted = waiting.load(Ordering::Acquire);
                    if counted == 0 {
                        break; // the waiters gave up or took and released it meanwhile
                    }
                    if waiter_alive(&self.file) {
                        deadline = progress_at + HANDOFF_WAIT_LIVE;
                        continue;
                    }
                    // Every counted waiter is dead: a waiter marks itself before it counts
                    // itself and unmarks after, so a live one would have been seen, and one
                    // that came or went since changed the count and fails the exchange.
                    let _ =
                        waiting.compare_exchange(counted, 0, Ordering::AcqRel, Ordering::Acquire);
                    break;
                }
            }
        }
        // Free: take it without counting as a waiter (no extra system calls).
        if try_flock(&self.file, &self.path)? {
            return Ok(self.taken());
        }
        self.mark_blocked(true);
        waiting.fetch_add(1, Ordering::AcqRel);
        let locked = flock(&self.file, &self.path, true);
        // Saturating: a count reset by a releaser (see above) must not wrap.
        let _ = waiting.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| w.checked_sub(1));
        self.mark_blocked(false);
        locked?;
        Ok(self.taken())
    }

    /// Runs `work` with the lock taken, but holds the lock at most `budget` (all of it with
    /// `None`). Work that outlasts the budget runs on without the lock; the flag says whether it
    /// finished while the lock was held.
    ///
    /// For work that only *benefits* from excluding writers and stays correct alongside them,
    /// such as the checkpoint's last pass: there the lock makes the quiet instant in which the
    /// WAL can start over, but the pass itself is an ordinary passive checkpoint. Its fsyncs
    /// wait for the disk's cache flush, which on a shared virtual disk usually takes well under
    /// a millisecond but sometimes 100 ms (traced on 2026-12-02, with every writer waiting).
    pub(crate) fn run_locked<T: Send>(
        &self,
        budget: Option<Duration>,
        work: impl FnOnce() -> T + Send,
    ) -> Result<(T, bool)> {
        let Some(budget) = budget else {
            let _held = self.lock()?;
            return Ok((work(), true));
        };
        // Shared with the worker rather than moved into it, so that a thread that fails to
        // start leaves the work here.
        let slot = Mutex::new(Some(work));
        let take = || slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        std::thread::scope(|s| {
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            // Started before the lock is taken, so the lock is not held while a thread starts.
            let spawned = std::thread::Builder::new()
                .name("lmsrt-locked-pass".into())
                .spawn_scoped(s, move || {
                    go_rx.recv().ok()?; // no go: taking the lock failed
                    let out = take().map(|w| w());
                    let _ = done_tx.send(());
                    out
                });
            let Ok(worker) = spawned else {
                // No thread to spare: do the work here, holding the lock throughout.
                let _held = self.lock()?;
                let w = take().expect("a thread that failed to start took nothing");
                return Ok((w(), true));
            };
            let held = match self.lock() {
                Ok(g) => g,
                Err(e) => {
                    drop(go_tx);
                    let _ = worker.join();
                    return Err(e);
                }
            };
            let _ = go_tx.send(());
            let in_time = done_rx.recv_timeout(budget).is_ok();
            drop(held);
            let out = worker
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            Ok((out.expect("the worker ran after its go"), in_time))
        })
    }

    /// When a writer on the host last began looking for evicted WAL pages (see
    /// [`super::warm::WalWarmer::warm`]); kept here, in the file every writer maps.
    pub(crate) fn last_wal_look(&self) -> &std::sync::atomic::AtomicU64 {
        self.shared.atomic_u64(LAST_LOOK_OFFSET)
    }

    fn taken(&self) -> WriterLockGuard<'_> {
        let takes = self.shared.atomic_u32(TAKES_OFFSET);
        takes.fetch_add(1, Ordering::AcqRel);
        futex_wake(takes);
        WriterLockGuard(self)
    }

    /// Counts a thread of this process in (or out of) the blocked waiters of this handle, and
    /// holds the waiter mark while any is.
    ///
    /// The mark is best effort: if the kernel refuses it (a kernel without open-file-description
    /// locks), a releaser may take this waiter for dead and stop deferring to it, which costs
    /// fairness, never correctness.
    fn mark_blocked(&self, blocked: bool) {
        let mut n = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        if blocked {
            *n += 1;
            if *n == 1 {
                set_waiter_mark(&self.file, true);
            }
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                set_waiter_mark(&self.file, false);
            }
        }
    }
}

pub(crate) struct WriterLockGuard<'a>(&'a WriterLock);

impl Drop for WriterLockGuard<'_> {
    fn drop(&mut self) {
        let lock = self.0;
        let waiters = lock
            .shared
            .atomic_u32(WAITING_OFFSET)
            .load(Ordering::Acquire);
        if waiters > 0 {
            let takes = lock.shared.atomic_u32(TAKES_OFFSET).load(Ordering::Acquire);
            lock.local
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .released_to_waiters = Some(Release {
                at: Instant::now(),
                takes,
                waiters,
            });
        }
        let _ = flock(&lock.file, &lock.path, false);
    }
}

#[cfg(unix)]
fn flock(file: &File, path: &Path, exclusive: bool) -> Result<()> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_UN
    };
    flock_op(file, path, op).map(|_| ())
}

/// Takes the lock if it is free; `false` if another holder has it.
#[cfg(unix)]
fn try_flock(file: &File, path: &Path) -> Result<bool> {
    flock_op(file, path, libc::LOCK_EX | libc::LOCK_NB)
}

#[cfg(unix)]
fn flock_op(file: &File, path: &Path, op: libc::c_int) -> Result<bool> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: the descriptor belongs to `file`, which outlives the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if op & libc::LOCK_NB != 0 => return Ok(false),
            _ => return Err(Error::io(path, err)),
        }
    }
}

#[cfg(not(unix))]
fn flock(_file: &File, _path: &Path, _exclusive: bool) -> Result<()> {
    // Without flock, SQLite's own locking (with the busy handler above) still serializes writers.
    Ok(())
}

#[cfg(not(unix))]
fn try_flock(_file: &File, _path: &Path) -> Result<bool> {
    Ok(true)
}

/// The waiter mark: a read lock on byte 0 of the lock file, owned by the open file (so it is
/// independent of `flock` and of the POSIX locks SQLite holds on other files) and dropped by the
/// kernel when the process dies. Returns the lock type the kernel reports (for F_OFD_GETLK).
#[cfg(target_os = "linux")]
fn waiter_lock_op(file: &File, cmd: libc::c_int, ty: libc::c_int) -> std::io::Result<libc::c_int> {
    use std::os::fd::AsRawFd;
    // SAFETY: `flock` is plain data; all-zero is a valid value that is overwritten below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = ty as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 1;
    loop {
        // SAFETY: the descriptor belongs to `file`; `fl` is a valid `struct flock` that the
        // call reads and (for F_OFD_GETLK) writes.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
        if rc == 0 {
            return Ok(fl.l_type as libc::c_int);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(target_os = "linux")]
fn set_waiter_mark(file: &File, on: bool) {
    let ty = if on { libc::F_RDLCK } else { libc::F_UNLCK };
    let _ = waiter_lock_op(file, libc::F_OFD_SETLK, ty);
}

/// Whether another open file holds the waiter mark: a waiter, alive. When the kernel cannot
/// say, the waiter is taken as alive (the releaser then defers a little longer, no more).
#[cfg(target_os = "linux")]
fn waiter_alive(file: &File) -> bool {
    waiter_lock_op(file, libc::F_OFD_GETLK, libc::F_WRLCK).map_or(true, |ty| ty != libc::F_UNLCK)
}

#[cfg(not(target_os = "linux"))]
fn set_waiter_mark(_file: &File, _on: bool) {}

/// Without open-file-description locks a count cannot be checked: take the waiter as alive
/// (a dead one then costs one [`DISTRUST`] period at a time, as before).
#[cfg(not(target_os = "linux"))]
fn waiter_alive(_file: &File) -> bool {
    true
}

/// Flushes the database file and the WAL of `conn` to disk through SQLite's own file handles.
///
/// A passive checkpoint syncs the database file only when it finishes with nothing left to
/// copy, which never happens while writers keep committing: every page the unlocked passes
/// copied stayed dirty until the locked pass's sync, which then took 16–30 ms with every
/// writer waiting. Syncing first, outside the lock, leaves that sync only the last pages.
/// SQLite's handles are used rather than a file opened here, because closing any other
/// descriptor of the database would drop this process's POSIX locks on it.
pub(crate) fn sync_files(conn: &Connection) -> Result<()> {
    use rusqlite::ffi;
    for op in [
        ffi::SQLITE_FCNTL_FILE_POINTER,
        ffi::SQLITE_FCNTL_JOURNAL_POINTER,
    ] {
        let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
        // SAFETY: `conn` is open for the duration of the call; both opcodes write one
        // `sqlite3_file*` (owned by the connection, valid while it is open and unused by any
        // other thread, since `Connection` is not `Sync`) into the pointer they are given.
        let rc = unsafe {
            ffi::sqlite3_file_control(conn.handle(), c"main".as_ptr(), op, (&raw mut file).cast())
        };
        if rc != ffi::SQLITE_OK {
            return Err(Error::Storage(format!("file control {op} failed ({rc})")));
        }
        // A WAL not opened yet by this connection has no methods: nothing to sync.
        // SAFETY: a non-null `file` points to the connection's live `sqlite3_file`.
        let sync = unsafe { file.as_ref() }
            .and_then(|f| unsafe { f.pMethods.as_ref() })
            .and_then(|m| m.xSync);
        if let Some(sync) = sync {
            // SAFETY: as above; xSync is the file's own method, called on its own file.
            let rc = unsafe { sync(file, ffi::SQLITE_SYNC_NORMAL) };
            if rc != ffi::SQLITE_OK {
                return Err(Error::Storage(format!(
                    "fsync before checkpoint failed ({rc})"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn waiting(lock: &WriterLock) -> u32 {
        lock.shared
            .atomic_u32(WAITING_OFFSET)
            .load(Ordering::Acquire)
    }

    /// Takes and releases `lock` while the shared count says `n` writers wait, counts `took`
    /// takes by them (as their own takes would), then takes it again: that take is the
    /// courtesy wait under test.
    fn release_to_counted_waiters_and_retake(lock: &WriterLock, n: u32, took: u32) {
        drop(lock.lock().unwrap());
        lock.shared
            .atomic_u32(WAITING_OFFSET)
            .fetch_add(n, Ordering::AcqRel);
        drop(lock.lock().unwrap()); // released while they "wait"
        lock.shared
            .atomic_u32(TAKES_OFFSET)
            .fetch_add(took, Ordering::AcqRel);
        drop(lock.lock().unwrap());
    }

    fn release_to_a_counted_waiter_and_retake(lock: &WriterLock) {
        release_to_counted_waiters_and_retake(lock, 1, 0);
    }

    /// Whether a releaser stopped deferring after `n` live writers waited at its release and
    /// `took` of them took the lock.
    fn distrusted_after(n: u32, took: u32) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("e.db");
        let lock = WriterLock::open(&db).unwrap();
        let waiter = WriterLock::open(&db).unwrap();
        waiter.mark_blocked(true); // so the waiters count as alive
        release_to_counted_waiters_and_retake(&lock, n, took);
        waiter.mark_blocked(false);
        lock.local.lock().unwrap().distrust_until.is_some()
    }

    #[test]
    fn a_releaser_defers_until_every_writer_waiting_at_its_release_had_a_turn() {
        assert!(
            distrusted_after(2, 1),
            "one take of the two owed ended the courtesy"
        );
    }

    #[test]
    fn a_releaser_goes_on_once_every_waiter_had_a_turn() {
        assert!(!distrusted_after(2, 2));
    }

    #[test]
    fn a_blocked_waiter_is_seen_alive_until_it_has_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("e.db");
        let a = WriterLock::open(&db).unwrap();
        let b = Arc::new(WriterLock::open(&db).unwrap());
        assert!(!waiter_alive(&a.file));
        let held = a.lock().unwrap();
        let (got_tx, got_rx) = std::sync::mpsc::channel();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = {
            let b = b.clone();
            std::thread::spawn(move || {
                let g = b.lock().unwrap();
                got_tx.send(()).unwrap();
                rx.recv().unwrap(); // hold until told
                drop(g);
            })
        };
        // A waiter marks itself before it counts itself.
        while waiting(&a) == 0 {
            std::thread::yield_now();
        }
        assert!(waiter_alive(&a.file));
        drop(held);
        // Once it holds the lock it is no longer a waiter.
        got_rx.recv().unwrap();
        assert_eq!(waiting(&a), 0);
        assert!(!waiter_alive(&a.file));
        tx.send(()).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn a_count_left_by_a_dead_waiter_is_cleared_by_the_next_courtesy_wait() {
        let dir = tempfile::tempdir().unwrap();
        let lock = WriterLock::open(&dir.path().join("e.db")).unwrap();
        // A waiter killed while blocked leaves its count and loses its mark (the kernel drops
        // it with the process): a count with no mark.
        release_to_a_counted_waiter_and_retake(&lock);
        assert_eq!(waiting(&lock), 0);
        let local = lock.local.lock().unwrap();
        assert!(
            local.distrust_until.is_none(),
            "a dead waiter is not a reason to stop deferring to live ones"
        );
    }

    #[test]
    fn a_live_waiter_that_never_takes_the_lock_ends_the_courtesy() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("e.db");
        let lock = WriterLock::open(&db).unwrap();
        // Another handle marked as a blocked waiter that never takes the lock (a stopped
        // process): its count is not touched, and this handle stops deferring for a while.
        let stopped = WriterLock::open(&db).unwrap();
        stopped.mark_blocked(true);
        release_to_a_counted_waiter_and_retake(&lock);
        assert_eq!(waiting(&lock), 1, "a live waiter's count stays");
        assert!(lock.local.lock().unwrap().distrust_until.is_some());
        stopped.mark_blocked(false);
        assert!(!waiter_alive(&lock.file));
    }

    /// Runs work under `budget` that reports when it starts and then waits up to `patience` to
    /// hear that another writer took the lock (another thread tries once the work started).
    /// Returns whether the work heard it, and whether it finished with the lock held.
    fn other_writer_during_locked_work(budget: Duration, patience: Duration) -> (bool, bool) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("e.db");
        let (a, b) = (
            WriterLock::open(&db).unwrap(),
            WriterLock::open(&db).unwrap(),
        );
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (took_tx, took_rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(move || {
                started_rx.recv().unwrap();
                let _g = b.lock().unwrap();
                let _ = took_tx.send(());
            });
            a.run_locked(Some(budget), move || {
                started_tx.send(()).unwrap();
                took_rx.recv_timeout(patience).is_ok()
            })
            .unwrap()
        })
    }

    #[test]
    fn work_that_outlasts_its_budget_goes_on_without_the_lock() {
        // The work cannot finish (for a minute) until another writer has had the lock, so it
        // hears of it only if the lock was let go at the budget.
        let (heard, in_time) =
            other_writer_during_locked_work(Duration::from_millis(10), Duration::from_secs(60));
        assert!(heard, "the lock was held past the budget");
        assert!(!in_time);
    }

    #[test]
    fn work_within_its_budget_holds_the_lock_throughout() {
        let (heard, in_time) =
            other_writer_during_locked_work(Duration::from_secs(60), Duration::from_millis(300));
        assert!(
            !heard,
            "another writer took the lock while the work held it"
        );
        assert!(in_time);
    }

    #[test]
    fn work_runs_once_and_returns_its_value_when_the_lock_is_held_throughout() {
        let dir = tempfile::tempdir().unwrap();
        let lock = WriterLock::open(&dir.path().join("e.db")).unwrap();
        let runs = std::sync::atomic::AtomicU32::new(0);
        for budget in [None, Some(Duration::from_secs(60))] {
            let (v, in_time) = lock
                .run_locked(budget, || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    42
                })
                .unwrap();
            assert_eq!((v, in_time), (42, true));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
