//! The cross-process writer lock: a fair queue of writers in front of an exclusive `flock`.
//!
//! SQLite lets one writer in at a time and makes the others poll: its busy handler sleeps with
//! growing back-off (1, 2, 5, … 100 ms), so under contention from several processes an append
//! can stall for a second while the lock sat free most of that time. Writers here first take an
//! exclusive `flock` on a lock file beside the database. The kernel queues `flock` waiters and
//! wakes them when the holder releases (or dies: the lock goes with the file descriptor), so the
//! SQLite write lock is always free by the time a writer asks for it and nobody sleeps blind.
//! [`WriterLock`] says how writers queue for their turn before they take it.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::shm::{SharedRegion, futex_wait_bits, futex_wake_bits, sidecar};

/// The exclusive writer lock shared by every process that opens the database.
///
/// `flock` is robust (the kernel drops it with the holder's descriptor) but not fair: the kernel
/// grants a free lock to whoever asks first, and the process that just released it is on a CPU
/// and often asks again before the waiter the kernel woke has run. So writers queue for their
/// turn first, in shared memory beside the lock file, and take the `flock` only when their turn
/// has come:
///
/// * A writer takes a ticket (a shared counter). When the shared "serving" word reaches it, the
///   turn is its own; it takes the `flock` (free by then) and writes. Releasing the `flock`, it
///   passes the turn to the next ticket and wakes that writer alone (a futex wait on the bit of
///   its ticket), so one release wakes one process, in the order they came.
/// * A ticket can be held up. Its writer may have died while it waited, died holding the lock
///   (the kernel released the `flock`, but nobody passed the turn on), or been stopped. A waiter
///   that sees no progress for [`HANDOFF_WAIT`] and finds the `flock` free asks the kernel
///   whether the ticket's owner is alive: each sleeping waiter holds a read lock (an
///   open-file-description lock, independent of `flock`, dropped with the process) on a byte
///   of the lock file chosen by its ticket. A dead owner's ticket is skipped at once, a live
///   one's after [`HANDOFF_WAIT_LIVE`] in all. A writer whose ticket was skipped takes a new
///   one.
///
/// * The words live in a file that outlives every process, so they can be left in any state:
///   a crash, an edit, a file of garbage. A waiter that finds a dead ticket being served skips
///   it and every dead ticket after it up to the first marked one (or its own) at once, so a
///   turn a million tickets behind costs one look, not a million; a fresh ticket found more
///   than [`MARK_SLOTS`] behind the turn (impossible in a sound queue: the turn only moves to
///   tickets handed out, or one past) brings the turn back to it. Whatever the words hold, the
///   queue is sound again within one [`HANDOFF_WAIT`] of the next writer.
/// * Every wait is bounded: a writer that has not got the lock after [`LOCK_WAIT_MAX`] in all
///   (a live process holding it that long, or one outside the queue) gives up with
///   [`Error::Busy`], as the C header promises, instead of blocking without limit.
///
/// The tickets only order the writers; the `flock` still keeps them apart. A mistake in the
/// order (a ticket skipped while its owner was about to take the lock, a process of an older
/// version that takes the `flock` directly) costs fairness, never exclusion.
///
/// Measured (`cargo bench --bench latency -- procs`, 16 runs each on 2026-12-02): 8 processes
/// appending back to back waited 6.0–7.5 ms at the 99th percentile with the `flock` race and the
/// courtesy waits that tried to tame it, 3.0–5.5 ms (median 3.7) with tickets, for 8 % of the
/// throughput; 20–27 % on a slower spell (the next writer must be scheduled before the lock is
/// used again, and its page cache is stale from the others' commits).
///
/// Tickets are per handle and thread: two threads taking the lock through one handle at once
/// cannot see each other's marks, and may skip each other's turn (never break exclusion). The
/// store takes it through one handle per writer connection, one thread at a time.
#[derive(Debug)]
pub(crate) struct WriterLock {
    file: File,
    path: PathBuf,
    shared: SharedRegion,
    /// [`LOCK_WAIT_MAX`], shorter in tests that wait it out.
    wait_max: Duration,
}

/// Longest a writer waits for the lock (its turn, then the `flock`) before it answers
/// [`Error::Busy`]. Well above what a sound queue takes (a commit is milliseconds, a
/// checkpoint's locked pass holds at most its budget), so only a wedged or hostile holder
/// reaches it.
pub(crate) const LOCK_WAIT_MAX: Duration = Duration::from_secs(10);

/// How long a waiter lets the ticket being served make no progress before it asks whether the
/// ticket's owner is alive.
const HANDOFF_WAIT: Duration = Duration::from_millis(2);
/// Longest a waiter lets a live owner of the ticket being served go without taking the lock (a
/// process scheduled late on a loaded machine, or a stopped one) before it skips the ticket.
const HANDOFF_WAIT_LIVE: Duration = Duration::from_millis(20);
const LAST_LOOK_OFFSET: usize = 192;
/// The next ticket to hand out.
const NEXT_OFFSET: usize = 256;
/// The ticket whose turn it is.
const SERVING_OFFSET: usize = 320;
/// Ticket `t` is marked alive by a read lock on byte `MARK_BASE + t % MARK_SLOTS`.
const MARK_BASE: u32 = 1;
const MARK_SLOTS: u32 = 65_536;

/// How a wait for a ticket's turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// The ticket is being served.
    Mine,
    /// The ticket was skipped while its owner was away: take another.
    Skipped,
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
            wait_max: LOCK_WAIT_MAX,
        })
    }

    fn next(&self) -> &AtomicU32 {
        self.shared.atomic_u32(NEXT_OFFSET)
    }

    fn serving(&self) -> &AtomicU32 {
        self.shared.atomic_u32(SERVING_OFFSET)
    }

    /// Blocks until this process holds the lock, after every writer that asked before it, or
    /// answers [`Error::Busy`] after [`LOCK_WAIT_MAX`]. Released when the guard drops.
    pub(crate) fn lock(&self) -> Result<WriterLockGuard<'_>> {
        let deadline = Instant::now() + self.wait_max;
        loop {
            if Instant::now() >= deadline {
                return Err(self.busy());
            }
            let ticket = self.next().fetch_add(1, Ordering::SeqCst);
            self.repair_turn_ahead(ticket);
            let mut marked = false;
            let turn = self.wait_turn(ticket, &mut marked, deadline);
            if marked && !matches!(turn, Ok(Turn::Mine)) {
                set_ticket_mark(&self.file, ticket, false);
            }
            if turn? == Turn::Skipped {
                continue;
            }
            let locked = self.flock_by(deadline);
            // The mark stays until the `flock` is held, so that a waiter checking on this ticket
            // sees either the mark or the lock taken.
            if marked {
                set_ticket_mark(&self.file, ticket, false);
            }
            if let Err(e) = locked {
                self.pass_turn(ticket);
                return Err(e);
            }
            return Ok(WriterLockGuard { lock: self, ticket });
        }
    }

    fn busy(&self) -> Error {
        Error::Busy(format!(
            "the writer lock {} was not granted within {:?}",
            self.path.display(),
            self.wait_max
        ))
    }

    /// A fresh ticket far behind the turn means damaged words (see the type's docs): the turn
    /// goes back to this ticket, and the writers that take tickets after it queue behind it.
    /// A ticket a little behind is left to be skipped (it may be this writer's own, skipped in
    /// the instant before it looked), which costs a few more tickets at most.
    fn repair_turn_ahead(&self, ticket: u32) {
        let serving = self.serving();
        let s = serving.load(Ordering::SeqCst);
        let behind = s.wrapping_sub(ticket);
        if behind > MARK_SLOTS && behind <= u32::MAX / 2 {
            let _ = serving.compare_exchange(s, ticket, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    /// Takes the `flock` once the turn is ours. It is free then unless a process outside the
    /// queue (an older version, or a writer skipped while it was slow) holds it; that rare case
    /// is polled with short sleeps, since a blocking `flock` cannot be given a deadline.
    fn flock_by(&self, deadline: Instant) -> Result<()> {
        let mut pause = Duration::from_micros(50);
        loop {
            if try_flock(&self.file, &self.path)? {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.busy());
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }

    /// Waits until `ticket` is served or skipped, or `deadline` passes ([`Error::Busy`]). Sets
    /// `marked` when it marks the ticket alive (the caller clears the mark).
    fn wait_turn(&self, ticket: u32, marked: &mut bool, deadline: Instant) -> Result<Turn> {
        let serving = self.serving();
        let mut last = serving.load(Ordering::SeqCst);
        let mut progress_at = Instant::now();
        let mut patience = HANDOFF_WAIT;
        loop {
            let s = serving.load(Ordering::SeqCst);
            match ticket.wrapping_sub(s) {
                0 => return Ok(Turn::Mine),
                ahead if ahead > u32::MAX / 2 => return Ok(Turn::Skipped),
                _ => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.busy());
            }
            if s != last {
                (last, progress_at, patience) = (s, now, HANDOFF_WAIT);
            }
            if now < progress_at + patience {
                if !*marked {
                    set_ticket_mark(&self.file, ticket, true);
                    *marked = true;
                }
                let until = (progress_at + patience).min(deadline);
                futex_wait_bits(serving, s, ticket_bit(ticket), until - now);
                continue;
            }
            // Ticket `s` made no progress for a while. A held lock is progress (a long commit,
            // a checkpoint's last pass): its holder passes the turn on when it is done.
            if !try_flock(&self.file, &self.path)? {
                (progress_at, patience) = (now, HANDOFF_WAIT);
                continue;
            }
            let alive = patience < HANDOFF_WAIT_LIVE && ticket_alive(&self.file, s);
            // A waiter keeps its mark until it holds the `flock`, so every live waiter after
            // `s` (one that has slept at least once) shows in the marks looked at here; one that
            // took its ticket an instant ago and has not marked it yet may be skipped, and
            // queues again (fairness, never exclusion).
            let to = if alive {
                s
            } else {
                first_marked(&self.file, s.wrapping_add(1), ticket)
            };
            flock(&self.file, &self.path, false)?;
            if alive {
                patience = HANDOFF_WAIT_LIVE;
                continue;
            }
            // Dead, or alive and still not taking it: skip it and the dead tickets after it, as
            // their releases would have. Only one of the waiters that decided so moves the turn.
            self.advance_turn(s, to);
        }
    }

    /// Passes the turn from `ticket` to the next one, unless it was skipped meanwhile.
    fn pass_turn(&self, ticket: u32) {
        self.advance_turn(ticket, ticket.wrapping_add(1));
    }

    /// Moves the turn from `from` to `to` (a later ticket), unless it moved meanwhile, and
    /// wakes the writer of `to`.
    fn advance_turn(&self, from: u32, to: u32) {
        let serving = self.serving();
        if serving
            .compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
            // Nobody took a ticket since: no one to wake, no system call. A waiter that takes
            // one after this look sees `serving` already moved on (both sides are SeqCst).
            && self.next().load(Ordering::SeqCst) != to
        {
            futex_wake_bits(serving, ticket_bit(to));
        }
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
}

/// Holds the writer lock; dropping it releases the lock and passes the turn on.
pub(crate) struct WriterLockGuard<'a> {
    lock: &'a WriterLock,
    ticket: u32,
}

impl Drop for WriterLockGuard<'_> {
    fn drop(&mut self) {
        let _ = flock(&self.lock.file, &self.lock.path, false);
        self.lock.pass_turn(self.ticket);
    }
}

/// The futex bit a waiter for `ticket` sleeps on: a release wakes the next ticket's writer and,
/// with more than 32 waiters, the few that share its bit.
fn ticket_bit(ticket: u32) -> u32 {
    1 << (ticket % 32)
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

/// A ticket's mark: a read lock on one byte of the lock file, owned by the open file (so it is
/// independent of `flock` and of the POSIX locks SQLite holds on other files) and dropped by the
/// kernel when the process dies. Returns the lock type the kernel reports (for F_OFD_GETLK).
#[cfg(target_os = "linux")]
fn ticket_lock_op(
    file: &File,
    ticket: u32,
    cmd: libc::c_int,
    ty: libc::c_int,
) -> std::io::Result<libc::c_int> {
    use std::os::fd::AsRawFd;
    // SAFETY: `flock` is plain data; all-zero is a valid value that is overwritten below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = ty as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = libc::off_t::from(MARK_BASE + ticket % MARK_SLOTS);
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

/// Marks `ticket` as waited for by a live process (or clears the mark). Best effort: a mark the
/// kernel refuses makes the waiter look dead, which costs it its place in the queue, never the
/// lock's exclusion.
#[cfg(target_os = "linux")]
fn set_ticket_mark(file: &File, ticket: u32, on: bool) {
    let ty = if on { libc::F_RDLCK } else { libc::F_UNLCK };
    let _ = ticket_lock_op(file, ticket, libc::F_OFD_SETLK, ty);
}

/// Whether another open file marks `ticket`: its waiter is alive. When the kernel cannot say,
/// the waiter is taken as alive (it then gets [`HANDOFF_WAIT_LIVE`], no more).
#[cfg(target_os = "linux")]
fn ticket_alive(file: &File, ticket: u32) -> bool {
    ticket_lock_op(file, ticket, libc::F_OFD_GETLK, libc::F_WRLCK)
        .map_or(true, |ty| ty != libc::F_UNLCK)
}

/// Whether another open file marks any of the `n` tickets from `from` (`n` at most
/// [`MARK_SLOTS`]; the marks of a run that wraps around the slots take two looks).
#[cfg(target_os = "linux")]
fn any_marked(file: &File, from: u32, n: u32) -> bool {
    let slot = from % MARK_SLOTS;
    let first = n.min(MARK_SLOTS - slot);
    let look = |start: u32, len: u32| len > 0 && ticket_range_marked(file, start, len);
    look(slot, first) || look(0, n - first)
}

/// Whether another open file holds a mark on any of `len` slots from `slot`. When the kernel
/// cannot say, they are taken as marked (their tickets are then looked at one by one).
#[cfg(target_os = "linux")]
fn ticket_range_marked(file: &File, slot: u32, len: u32) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: `flock` is plain data; all-zero is a valid value that is overwritten below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = libc::off_t::from(MARK_BASE + slot);
    fl.l_len = libc::off_t::from(len);
    loop {
        // SAFETY: the descriptor belongs to `file`; `fl` is a valid `struct flock` that the
        // call reads and writes.
        let rc = unsafe {
            libc::fcntl(
                file.as_raw_fd(),
                libc::F_OFD_GETLK,
                &mut fl as *mut libc::flock,
            )
        };
        if rc == 0 {
            return fl.l_type != libc::F_UNLCK as libc::c_short;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return true;
        }
    }
}

/// The first ticket from `from` up to (not including) `to` that a live waiter marks, or `to`
/// when none does. A binary search over range looks, so a run of a million dead tickets costs
/// some twenty system calls. Tickets more than [`MARK_SLOTS`] before `to` are taken as dead:
/// their marks would share slots with later tickets, and that many waiters is not a real queue
/// (only damaged words make such a run).
#[cfg(target_os = "linux")]
fn first_marked(file: &File, from: u32, to: u32) -> u32 {
    let span = to.wrapping_sub(from);
    let (from, span) = if span > MARK_SLOTS {
        (to.wrapping_sub(MARK_SLOTS), MARK_SLOTS)
    } else {
        (from, span)
    };
    if span == 0 || !any_marked(file, from, span) {
        return to;
    }
    // The shortest run from `from` with a mark in it ends at the first marked ticket.
    let (mut lo, mut hi) = (1, span);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if any_marked(file, from, mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    from.wrapping_add(lo - 1)
}

/// Without marks to look at, skip one ticket at a time (each dead one costs
/// [`HANDOFF_WAIT_LIVE`]; damaged words then still cost a while, bounded by [`LOCK_WAIT_MAX`]).
#[cfg(not(target_os = "linux"))]
fn first_marked(_file: &File, from: u32, _to: u32) -> u32 {
    from
}

#[cfg(not(target_os = "linux"))]
fn set_ticket_mark(_file: &File, _ticket: u32, _on: bool) {}

/// Without open-file-description locks a waiter cannot be checked: take it as alive (a dead one
/// then costs [`HANDOFF_WAIT_LIVE`] once).
#[cfg(not(target_os = "linux"))]
fn ticket_alive(_file: &File, _ticket: u32) -> bool {
    true
}

#[cfg(all(test, target_os = "linux"))]
mod tests;
