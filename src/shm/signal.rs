//! The store's cross-process wake-up: a commit counter in shared memory and its futex.
//!
//! `<db>-lmsrt-signal` holds a 32-bit counter that every committed append bumps and then wakes
//! (in every process on the host); a reader that saw value `v` before looking at the database
//! sleeps until the counter differs from `v`. Bumping after the commit and reading before the
//! look is what makes a missed wake impossible: a commit the reader did not see bumped the
//! counter past `v`, so its wait returns at once.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::futex::{futex_wait, futex_wake};
use super::region::{SharedRegion, sidecar};
use crate::error::Result;

/// The store's change signal: a counter in shared memory that every committed append bumps.
///
/// Writers bump it *after* their commit; readers read it *before* looking at the database. So a
/// reader that then sleeps on the value it read is woken by any commit it did not see.
#[derive(Debug)]
pub(crate) struct ChangeSignal {
    region: SharedRegion,
}

const SIGNAL_LEN: usize = 4096;
const SEQ_OFFSET: usize = 64;
const COMMITS_OFFSET: usize = 128;

impl ChangeSignal {
    /// Maps the signal file for the database at `db_path`.
    pub(crate) fn open(db_path: &Path) -> Result<ChangeSignal> {
        Ok(ChangeSignal {
            region: SharedRegion::open(sidecar(db_path, "-lmsrt-signal"), SIGNAL_LEN)?,
        })
    }

    /// The current value of the change counter.
    pub(crate) fn current(&self) -> u32 {
        self.region.atomic_u32(SEQ_OFFSET).load(Ordering::Acquire)
    }

    /// Announces a commit to every process; returns how many commits the host has announced
    /// since the file was created.
    pub(crate) fn bump(&self) -> u64 {
        let w = self.region.atomic_u32(SEQ_OFFSET);
        w.fetch_add(1, Ordering::AcqRel);
        let commits = self
            .region
            .atomic_u64(COMMITS_OFFSET)
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        futex_wake(w);
        commits
    }

    /// Wakes sleepers without announcing a commit (used to stop a watcher).
    pub(crate) fn nudge(&self) {
        futex_wake(self.region.atomic_u32(SEQ_OFFSET));
    }

    /// Sleeps until the counter differs from `seen` or `timeout` passes.
    pub(crate) fn wait_change(&self, seen: u32, timeout: Duration) {
        futex_wait(self.region.atomic_u32(SEQ_OFFSET), seen, timeout);
    }
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
        assert_eq!(a.bump(), 1, "the first commit announced through this file");
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
        s.bump();
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
