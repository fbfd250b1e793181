//! Shared memory beside the database file, and futex waits on it.
//!
//! Every process that opens a store maps the same small files next to the database. Words in
//! them are updated only with atomic operations, so a process killed at any instruction leaves
//! them consistent, and waiting on a word is a futex (Linux) on a shared file mapping: the kernel
//! keys it by inode and offset, so a wake in one process reaches sleepers in every other, with no
//! polling and no CPU while idle.
//!
//! On platforms without futexes, waits fall back to short sleeps.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use memmap2::MmapMut;

use crate::error::{Error, Result};

/// `<db><suffix>`: the path of a file kept beside the database.
pub(crate) fn sidecar(db_path: &Path, suffix: &str) -> PathBuf {
    let mut p = db_path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// A fixed-size file mapped shared into this process.
#[derive(Debug)]
pub struct SharedRegion {
    map: MmapMut,
    path: PathBuf,
}

impl SharedRegion {
    /// Maps `path`, creating it (zero-filled) or growing it to `len` bytes as needed, with
    /// disk blocks reserved for all of it before it is mapped.
    ///
    /// Zero is therefore every word's initial value; layouts are designed so that all-zero is a
    /// valid state.
    ///
    /// A full disk is an error here ([`Error::Storage`]), never later: a store to a page of a
    /// sparse file that the file system cannot back raises SIGBUS, which kills the process
    /// (a daemon, or a PHP worker on its first limiter check). A file created sparse by an
    /// older version gets its blocks reserved here too.
    pub fn open(path: impl AsRef<Path>, len: usize) -> Result<SharedRegion> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        reserve(&file, path, len as u64)?;
        // SAFETY: the file is only ever accessed through atomics by cooperating processes, and
        // it is never truncated below `len` (we only grow it), so the mapping stays valid; its
        // blocks are allocated, so no store to it can fault for want of space.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(&file) }
            .map_err(|e| Error::io(path, e))?;
        Ok(SharedRegion {
            map,
            path: path.to_owned(),
        })
    }

    /// The file behind the mapping.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The 32-bit atomic at `offset` (4-byte aligned, inside the mapping).
    pub fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset.is_multiple_of(4) && offset + 4 <= self.map.len(),
            "bad offset"
        );
        // SAFETY: in bounds and aligned (the mapping is page-aligned); the memory is shared and
        // only accessed atomically; the reference lives no longer than `self`, which owns the map.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU32) }
    }

    /// The 64-bit atomic at `offset` (8-byte aligned, inside the mapping).
    pub fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset.is_multiple_of(8) && offset + 8 <= self.map.len(),
            "bad offset"
        );
        // SAFETY: as in `atomic_u32`, with 8-byte alignment.
        unsafe { &*(self.map.as_ptr().add(offset) as *const AtomicU64) }
    }

    /// The whole mapping as 64-bit atomics (`len() / 8` of them), for tables that index words
    /// directly instead of computing byte offsets.
    pub fn atomic_u64_slice(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned, so 8-byte aligned; `len / 8` words lie inside it;
        // the memory is shared and only accessed atomically; the slice borrows `self`, which
        // owns the map.
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr() as *const AtomicU64, self.map.len() / 8)
        }
    }
}

/// Grows `file` to at least `len` bytes with every block of its first `len` allocated.
///
/// `fallocate` (mode 0) extends and allocates without touching data already there, so racing
/// openers, and processes already using the file, are safe; on a full disk it fails with
/// ENOSPC instead of leaving a hole.
#[cfg(target_os = "linux")]
fn reserve(file: &std::fs::File, path: &Path, len: u64) -> Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: a valid descriptor, opened for writing; the range starts at 0.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            // A file system that cannot allocate ahead: extend it sparse, as before (the
            // SIGBUS risk on a full disk stays with such file systems).
            Some(libc::EOPNOTSUPP) => return extend(file, path, len),
            _ => return Err(Error::io(path, err)),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn reserve(file: &std::fs::File, path: &Path, len: u64) -> Result<()> {
    extend(file, path, len)
}

/// Extends `file` to `len` bytes (sparse, zero-filled) if it is shorter.
fn extend(file: &std::fs::File, path: &Path, len: u64) -> Result<()> {
    let cur = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if cur < len {
        // Racing processes all extend to the same length; extension zero-fills.
        file.set_len(len).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Sleeps while `word` holds `expected`, for at most `timeout`. Returns early when woken by
/// [`futex_wake`] (from any process mapping the same file) or if the word already differs.
/// Spurious returns are possible; callers re-check their condition.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    futex_wait_bits(word, expected, u32::MAX, timeout);
}

/// Wakes every sleeper in [`futex_wait`] on `word`, in every process.
pub fn futex_wake(word: &AtomicU32) {
    futex_wake_bits(word, u32::MAX);
}

/// [`futex_wait`] for the wakes whose bits meet `bits` (nonzero): a waker that knows whom it
/// wants to wake wakes only them, not every sleeper on the word.
pub fn futex_wait_bits(word: &AtomicU32, expected: u32, bits: u32, timeout: Duration) {
    #[cfg(target_os = "linux")]
    {
        // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline.
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let nanos = now.tv_nsec as u64 + u64::from(timeout.subsec_nanos());
        let secs = (timeout.as_secs().min(i32::MAX as u64) + nanos / 1_000_000_000) as libc::time_t;
        let deadline = libc::timespec {
            tv_sec: now.tv_sec.saturating_add(secs),
            tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `word` is a valid, aligned u32 for the duration of the call; not the private
        // variant, because the mapping is shared between processes.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT_BITSET,
                expected,
                &deadline as *const libc::timespec,
                std::ptr::null::<u32>(),
                bits.max(1),
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = bits;
        if word.load(Ordering::Acquire) == expected {
            std::thread::sleep(timeout.min(Duration::from_millis(1)));
        }
    }
}

/// Wakes the sleepers in [`futex_wait_bits`] on `word` whose bits meet `bits`, in every process.
pub fn futex_wake_bits(word: &AtomicU32, bits: u32) {
    #[cfg(target_os = "linux")]
    // SAFETY: `word` is a valid, aligned u32; waking has no memory effects.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE_BITSET,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            bits.max(1),
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (word, bits);
}

/// The store's change signal: a counter in shared memory that every committed append bumps.
///
/// Writers bump it *after* their commit; readers read it *before* looking at the database. So a
/// reader that then sleeps on the value it read is woken by any commit it did not see.
#[derive(Debug)]
pub struct ChangeSignal {
    region: SharedRegion,
}

const SIGNAL_LEN: usize = 4096;
const SEQ_OFFSET: usize = 64;
const COMMITS_OFFSET: usize = 128;

impl ChangeSignal {
    /// Maps the signal file for the database at `db_path`.
    pub fn open(db_path: &Path) -> Result<ChangeSignal> {
        Ok(ChangeSignal {
            region: SharedRegion::open(sidecar(db_path, "-lmsrt-signal"), SIGNAL_LEN)?,
        })
    }

    /// The current value of the change counter.
    pub fn current(&self) -> u32 {
        self.region.atomic_u32(SEQ_OFFSET).load(Ordering::Acquire)
    }

    /// Announces a commit to every process; returns how many commits the host has announced
    /// since the file was created.
    pub fn bump(&self) -> u64 {
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
    pub fn nudge(&self) {
        futex_wake(self.region.atomic_u32(SEQ_OFFSET));
    }

    /// Sleeps until the counter differs from `seen` or `timeout` passes.
    pub fn wait_change(&self, seen: u32, timeout: Duration) {
        futex_wait(self.region.atomic_u32(SEQ_OFFSET), seen, timeout);
    }

    /// The path of the signal file.
    pub fn path(&self) -> &Path {
        self.region.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn two_mappings_share_words_and_wake_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let a = ChangeSignal::open(&db).unwrap();
        let b = ChangeSignal::open(&db).unwrap();
        let seen = b.current();
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            while b.current() == seen && start.elapsed() < Duration::from_secs(10) {
                b.wait_change(seen, Duration::from_secs(10));
            }
            b.current()
        });
        std::thread::sleep(Duration::from_millis(20));
        a.bump();
        assert_eq!(t.join().unwrap(), seen.wrapping_add(1));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_region_is_backed_by_disk_blocks_before_it_is_mapped() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        // A sparse file as an older version left it: reserved when opened again.
        std::fs::File::create(&path)
            .unwrap()
            .set_len(64 * 1024)
            .unwrap();
        let len = 1 << 20;
        let r = SharedRegion::open(&path, len).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), len as u64);
        assert!(
            meta.blocks() * 512 >= len as u64,
            "{} bytes allocated of {len}",
            meta.blocks() * 512
        );
        drop(r);
    }

    #[test]
    fn wait_returns_at_once_when_the_value_differs() {
        let dir = tempfile::tempdir().unwrap();
        let s = ChangeSignal::open(&dir.path().join("y.db")).unwrap();
        let seen = s.current();
        s.bump();
        // Would sleep for an hour if the stale value were not noticed.
        s.wait_change(seen, Duration::from_secs(3600));
    }
}
