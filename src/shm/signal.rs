//! The store's cross-process wake-up: a commit counter in shared memory and its futex.
//!
//! `<db>-lmsrt-signal` holds a 32-bit counter that every committed append bumps and then wakes
//! (in every process on the host); a reader that saw value `v` before looking at the database
//! sleeps until the counter differs from `v`. Bumping after the commit and reading before the
//! look is what makes a missed wake impossible: a commit the reader did not see bumped the
//! counter past `v`, so its wait returns at once.
//!
//! A process's own reader need not be woken by a commit whose events its writer already
//! handed it (the store's tail hand-off): that wake-up was, with one publisher, about a tenth
//! of the daemon's CPU per publish, between the waker's system call and the reader's thread
//! waking to find nothing to do. So each sleeper waits on the futex with a bit of its own
//! (`FUTEX_WAIT_BITSET`), and such a commit wakes every bit but its own signal's. The bit is
//! claimed with an open-file-description lock on one byte of the signal file, which the kernel
//! drops when the file is closed or the process dies, so a bit is never held by two live
//! sleepers and never leaked by a crash. With all 31 bits taken, a sleeper waits on every bit
//! and is woken by every commit, as is a sleeper or a waker of a version without bits (a plain
//! futex wait or wake is all bits).

use std::fs::File;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::futex::{futex_wait_bits, futex_wake_bits};
use super::region::{SharedRegion, sidecar};
use crate::error::Result;

/// The store's change signal: a counter in shared memory that every committed append bumps.
///
/// Writers bump it *after* their commit; readers read it *before* looking at the database. So a
/// reader that then sleeps on the value it read is woken by any commit it did not see.
#[derive(Debug)]
pub(crate) struct ChangeSignal {
    region: SharedRegion,
    /// This signal's wake bit, claimed at its first wait: one bit, or every bit when none was
    /// free; with the open file that holds the claim.
    bit: OnceLock<(u32, Option<File>)>,
}

const SIGNAL_LEN: usize = 4096;
const SEQ_OFFSET: usize = 64;
const COMMITS_OFFSET: usize = 128;
/// Byte `CLAIM_BASE + b` of the signal file is locked by the holder of wake bit `b` (1–31; bit
/// 0 is never claimed, so "every bit but one" always includes it). Past the mapped words, where
/// nothing is read or written: only the locks matter.
const CLAIM_BASE: u32 = 1 << 20;

impl ChangeSignal {
    /// Maps the signal file for the database at `db_path`.
    pub(crate) fn open(db_path: &Path) -> Result<ChangeSignal> {
        Ok(ChangeSignal {
            region: SharedRegion::open(sidecar(db_path, "-lmsrt-signal"), SIGNAL_LEN)?,
            bit: OnceLock::new(),
        })
    }

    /// The bits this signal's sleepers wait on: its own bit once claimed (claimed here at the
    /// first call), or every bit.
    fn wait_bits(&self) -> u32 {
        self.bit.get_or_init(|| claim_bit(self.region.path())).0
    }

    /// This signal's own bit if it has one (its sleepers wait on that alone), else 0.
    fn own_bit(&self) -> u32 {
        match self.bit.get() {
            Some(&(b, _)) if b.count_ones() == 1 => b,
            _ => 0,
        }
    }

    /// The current value of the change counter.
    pub(crate) fn current(&self) -> u32 {
        self.region.atomic_u32(SEQ_OFFSET).load(Ordering::Acquire)
    }

    /// Announces a commit to every process; returns how many commits the host has announced
    /// since the file was created. `handed`: this signal's own sleepers already have the
    /// commit's events (the tail hand-off), so only the other sleepers are woken.
    pub(crate) fn bump(&self, handed: bool) -> u64 {
        let w = self.region.atomic_u32(SEQ_OFFSET);
        w.fetch_add(1, Ordering::AcqRel);
        let commits = self
            .region
            .atomic_u64(COMMITS_OFFSET)
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let bits = if handed { !self.own_bit() } else { u32::MAX };
        futex_wake_bits(w, bits);
        commits
    }

    /// Wakes every sleeper without announcing a commit (used to stop a watcher).
    pub(crate) fn nudge(&self) {
        futex_wake_bits(self.region.atomic_u32(SEQ_OFFSET), u32::MAX);
    }

    /// Sleeps until the counter differs from `seen` or `timeout` passes (or, as any futex
    /// wait, spuriously). A change announced through this same signal with `handed` does not
    /// end the sleep.
    pub(crate) fn wait_change(&self, seen: u32, timeout: Duration) {
        let bits = self.wait_bits();
        futex_wait_bits(self.region.atomic_u32(SEQ_OFFSET), seen, bits, timeout);
    }
}

/// Claims a free wake bit of the signal file at `path`: `(1 << b, the file holding its lock)`,
/// or `(every bit, None)` when none is free or the kernel cannot say.
#[cfg(target_os = "linux")]
fn claim_bit(path: &Path) -> (u32, Option<File>) {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    else {
        return (u32::MAX, None);
    };
    for b in 1..32u32 {
        // SAFETY: `flock` is plain data; all-zero is a valid value, overwritten below.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = libc::off_t::from(CLAIM_BASE + b);
        fl.l_len = 1;
        // SAFETY: the descriptor belongs to `file`; `fl` is a valid `struct flock`. An
        // open-file-description lock: owned by this open file (not the process, so two
        // signals of one process hold two bits), dropped with it.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        if rc == 0 {
            return (1 << b, Some(file));
        }
    }
    (u32::MAX, None)
}

#[cfg(not(target_os = "linux"))]
fn claim_bit(_path: &Path) -> (u32, Option<File>) {
    (u32::MAX, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Long enough for a loaded machine, short enough that a broken wake fails the test rather
    /// than hanging it.
    const BOUND: Duration = Duration::from_secs(10);

    #[test]
    fn a_bump_through_one_mapping_wakes_a_sleeper_on_another() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let a = ChangeSignal::open(&db).unwrap();
        let b = ChangeSignal::open(&db).unwrap();
        let seen = b.current();
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            while b.current() == seen && start.elapsed() < BOUND {
                b.wait_change(seen, BOUND);
            }
            b.current()
        });
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            a.bump(false),
            1,
            "the first commit announced through this file"
        );
        assert_eq!(
            t.join().unwrap(),
            seen.wrapping_add(1),
            "the sleeper did not see the bump within {BOUND:?}"
        );
    }

    #[test]
    fn wait_returns_at_once_when_the_value_differs() {
        let dir = tempfile::tempdir().unwrap();
        let s = ChangeSignal::open(&dir.path().join("y.db")).unwrap();
        let seen = s.current();
        s.bump(false);
        // A stale value must be noticed before sleeping: the wait is given far longer than the
        // bound, and must return well within it. The wait runs on its own thread so that a
        // regression fails here, after the bound, instead of hanging the test run.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let start = Instant::now();
            s.wait_change(seen, Duration::from_secs(3600));
            let _ = tx.send(start.elapsed());
        });
        let took = rx
            .recv_timeout(BOUND)
            .unwrap_or_else(|_| panic!("wait_change slept on a stale value for over {BOUND:?}"));
        assert!(took < BOUND, "wait_change took {took:?} on a stale value");
    }

    /// A commit handed to this signal's own sleeper wakes every other sleeper but not it; an
    /// ordinary one wakes it.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_handed_commit_wakes_the_other_sleepers_only() {
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("h.db");
        let own = Arc::new(ChangeSignal::open(&db).unwrap());
        let other = Arc::new(ChangeSignal::open(&db).unwrap());
        let sleep = |s: Arc<ChangeSignal>| {
            let (tx, rx) = std::sync::mpsc::channel();
            let seen = s.current();
            std::thread::spawn(move || {
                s.wait_change(seen, BOUND);
                let _ = tx.send(());
            });
            rx
        };
        let own_woken = sleep(own.clone());
        let other_woken = sleep(other.clone());
        // Both asleep on their own bits by then (a bit is claimed before its first sleep).
        std::thread::sleep(Duration::from_millis(100));
        assert_ne!(own.own_bit(), 0);
        assert_ne!(other.own_bit(), 0);
        assert_ne!(own.own_bit(), other.own_bit(), "two open signals, two bits");
        own.bump(true);
        other_woken
            .recv_timeout(BOUND)
            .expect("the other sleeper was woken");
        // Its own sleeper sleeps on (a spurious futex return is possible but rare; it waits up
        // to 10 s).
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            own_woken.try_recv().is_err(),
            "the handed commit woke its own sleeper"
        );
        own.bump(false);
        own_woken
            .recv_timeout(BOUND)
            .expect("an ordinary commit wakes every sleeper");
    }

    /// Bits are claimed one per open signal, 31 at most; a closed one's bit is free again, and
    /// past 31 a signal waits on every bit.
    #[cfg(target_os = "linux")]
    #[test]
    fn wake_bits_are_unique_and_freed_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("b.db");
        let signals: Vec<ChangeSignal> =
            (0..32).map(|_| ChangeSignal::open(&db).unwrap()).collect();
        let bits: Vec<u32> = signals.iter().map(|s| s.wait_bits()).collect();
        let mut own: Vec<u32> = bits[..31].to_vec();
        assert!(
            own.iter().all(|b| b.count_ones() == 1 && *b != 1),
            "{own:?}"
        );
        own.sort_unstable();
        own.dedup();
        assert_eq!(own.len(), 31, "each bit held once");
        assert_eq!(bits[31], u32::MAX, "none left: every bit");
        assert_eq!(signals[31].own_bit(), 0);
        drop(signals);
        let again = ChangeSignal::open(&db).unwrap();
        assert_eq!(
            again.wait_bits(),
            1 << 1,
            "the bits are free again once closed"
        );
    }

    #[test]
    fn a_wait_on_an_unchanged_value_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let s = ChangeSignal::open(&dir.path().join("z.db")).unwrap();
        let start = Instant::now();
        s.wait_change(s.current(), Duration::from_millis(30));
        let took = start.elapsed();
        assert!(took < BOUND, "a 30 ms wait took {took:?}");
        assert_eq!(s.current(), 0, "nothing was announced");
    }
}
