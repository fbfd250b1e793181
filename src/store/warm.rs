//! Reading evicted WAL pages back before the writer lock is taken.
//!
//! A WAL frame is 24 bytes of header plus a database page, so nearly every frame write covers
//! part of a file page, and a part-page write to a page that is no longer cached first reads it
//! from disk. SQLite starts the WAL over at its beginning after each complete checkpoint, so the
//! pages it writes next are old ones, written back long ago and free for the kernel to evict
//! (memory pressure, or proactive reclaim: this project's test VM runs a DAMON `pageout` scheme
//! that drops unmapped page cache, hot or not). That read then happens with the writer lock held
//! and every other writer waiting: traced on 2026-12-02 as 65–163 ms stalls of all 8 processes
//! of the `procs` benchmark, each starting with a 4 KiB read issued by the lock holder.
//!
//! So before taking the lock, a writer looks at the WAL past its last frame, as far as the next
//! [`AHEAD_US`] of commits at the rate it grows (at least [`MIN_WINDOW`], at most [`WINDOW`];
//! all of it just after the WAL started over), with `mincore` on a mapping that is never read
//! through, and asks the kernel to read back
//! any page it dropped (`POSIX_FADV_WILLNEED`), without waiting for the disk, so that a slow
//! read holds up nobody until a write needs that page. One writer on the host looks at a time,
//! at most once per [`EVERY`]: a word in the writer lock's shared file says when the last look
//! began. The last frame comes from the header of the WAL index (the `-shm` file), whose layout
//! is part of SQLite's documented file format. All of it is a hint: any failure leaves the
//! append to do what it did before.
//!
//! The same look keeps disk blocks allocated ahead of a growing WAL ([`ALLOCATE_AHEAD`], with
//! `fallocate(FALLOC_FL_KEEP_SIZE)`, so the file's size stays SQLite's). A frame written past
//! the allocated end makes ext4 reserve a block under the inode's block-map lock, which the
//! writeback of earlier frames holds while it converts their extents; on a file system mounted
//! with `discard` that conversion can free a block and wait for the disk's discard inside the
//! lock. Traced on 2026-12-02: single-row commits of 13–50 ms, three or so in the first seconds
//! of every fresh WAL, each an appender waiting in `ext4_da_get_block_prep` while a kworker
//! waited in `blkdev_issue_discard`. With blocks allocated ahead, none over 13 ms.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::shm::sidecar;

/// The most past the WAL's last frame to look. The WAL grows about 130 KiB per millisecond under
/// 8 saturating processes and about 400 KiB under one process's group commits, so this covers
/// the next 10–30 ms of commits at those rates.
const WINDOW: u64 = 4 << 20;
/// The least past the WAL's last frame to look: a look sizes its window by how fast the WAL
/// grew since this process's previous look ([`span`]), so that a steady chat's look checks
/// tens of pages, not a thousand. A look costs a page cache lookup per page (measured
/// 2026-12-07: the full window at 1,000 single-event commits a second was 4.5 % of the daemon's
/// CPU samples).
const MIN_WINDOW: u64 = 256 << 10;
/// How far ahead of the writer, in time at the measured rate, a look reaches: what the full
/// window gives at the peak rates above, and far more than a page takes to read back (a disk
/// read is 0.1–10 ms); the next look, at most [`EVERY`] later, reaches further.
const AHEAD_US: u64 = 30_000;
/// How long a page found cached (or asked for) is taken as still cached: a look within this of
/// this process's last whole look checks only the pages past what that look and the ones since
/// reached. At thousands of commits a second a look every [`EVERY`] then checks the WAL's growth
/// since the previous one, a few pages, instead of the whole window again (2.7 % of the
/// daemon's samples with 8 publishers); every page of the window is checked again at least this
/// often, so one evicted since is still read back well before the writer reaches it.
const RECHECK: Duration = Duration::from_millis(30);
/// Least time between two looks on the host: the page cache is shared, so one look serves every
/// process. A look costs a few system calls and a page cache lookup per page of the window
/// (measured: a look per commit cost 8 saturating processes 8 % of their throughput, a look
/// every 5 ms per process 1.5–5 %).
const EVERY: Duration = Duration::from_millis(2);
/// Address space reserved for the WAL mapping (never touched, so it costs no memory); a WAL
/// longer than this is looked at only up to here. Checkpoints keep it under about 100 MiB.
const MAP_LEN: usize = 256 << 20;
/// How far past the WAL's last frame disk blocks are kept allocated; allocation is topped up
/// when less than half of it is left.
const ALLOCATE_AHEAD: u64 = 16 << 20;
/// No blocks are allocated past this offset: SQLite's `journal_size_limit` for the store (see
/// `conn::open_connection`), so that a WAL cut back to it keeps no allocation beyond it.
const ALLOCATE_MAX: u64 = 128 << 20;
/// SQLite's WAL file header and frame header sizes, and the WAL index header's version.
const WAL_HEADER: u64 = 32;
const FRAME_HEADER: u64 = 24;
const WAL_INDEX_VERSION: u32 = 3_007_000;

/// Reads back the evicted pages ahead of the WAL's last frame (see the module docs).
#[derive(Debug)]
pub(crate) struct WalWarmer {
    wal_path: PathBuf,
    shm_path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    files: Option<Files>,
    /// This process's previous look: which WAL (inode, salt), its last frame's end, and when.
    previous: Option<Look>,
    /// How far this process's looks have checked, and when the last whole one was.
    checked: Option<Checked>,
}

/// The end of the range this process's looks have checked in a WAL (inode, salt), and when the
/// last look that checked all of its window began.
#[derive(Debug, Clone, Copy)]
struct Checked {
    ino: u64,
    salt: u32,
    end: u64,
    whole_at_us: u64,
}

#[derive(Debug, Clone, Copy)]
struct Look {
    ino: u64,
    /// The WAL header's first salt, which SQLite changes each time it starts the WAL over.
    salt: u32,
    front: u64,
    at_us: u64,
}

/// The WAL as last opened (its inode tells a WAL deleted and created again), its mapping, and
/// the WAL index.
#[derive(Debug)]
struct Files {
    wal: File,
    ino: u64,
    map: memmap2::MmapRaw,
    shm: File,
}

impl WalWarmer {
    pub(crate) fn new(db_path: &Path) -> WalWarmer {
        WalWarmer {
            wal_path: sidecar(db_path, "-wal"),
            shm_path: sidecar(db_path, "-shm"),
            state: Mutex::new(State::default()),
        }
    }

    /// Starts reading back the evicted pages of the window; returns how many. Does nothing when a look
    /// began less than [`EVERY`] ago on the host, as `last_look` (microseconds of the system's
    /// monotonic clock, shared by every process) says, or another thread of this process is at it.
    pub(crate) fn warm(&self, last_look: &AtomicU64) -> usize {
        let Ok(mut guard) = self.state.try_lock() else {
            return 0;
        };
        let st = &mut *guard;
        let (now, last) = (monotonic_us(), last_look.load(Ordering::Relaxed));
        // A time ahead of the clock is from before a reboot (the file outlives it): stale.
        let recent = last <= now && now - last < EVERY.as_micros() as u64;
        if recent
            || last_look
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return 0;
        }
        let Some((files, (front, salt), meta)) = self.look(&mut st.files) else {
            return 0;
        };
        allocate_ahead(&files.wal, front, meta.blocks() * 512);
        let this = Look {
            ino: meta.ino(),
            salt,
            front,
            at_us: now,
        };
        let (start, end) = window(front, meta.len(), span(st.previous, this));
        st.previous = Some(this);
        if start >= end {
            return 0;
        }
        let (start, whole) = unchecked_from(st.checked, this, start);
        // Carried on only within the same WAL (`unchecked_from` says so when not whole).
        let kept = st.checked.filter(|_| !whole);
        st.checked = Some(Checked {
            ino: this.ino,
            salt,
            end: kept.map_or(end, |c| c.end.max(end)),
            whole_at_us: kept.map_or(now, |c| c.whole_at_us),
        });
        if start >= end {
            return 0;
        }
        // Ask for each run of missing pages to be read, without waiting for the disk: a look
        // that read them itself (as this did at first) blocked on a slow read, and so did every
        // writer looking after it, since a page being read counts as missing until it is in.
        // Traced on 2026-12-02: all 8 processes held 127 ms on one read that way.
        let page = page_size();
        let missing = missing_pages(&files.map, start, end);
        let mut asked = 0;
        let mut i = 0;
        while i < missing.len() {
            if !missing[i] {
                i += 1;
                continue;
            }
            let run = missing[i..].iter().take_while(|m| **m).count();
            // SAFETY: a valid descriptor; the advice only starts reads into the page cache.
            let rc = unsafe {
                libc::posix_fadvise(
                    files.wal.as_raw_fd(),
                    (start + i as u64 * page) as libc::off_t,
                    (run as u64 * page) as libc::off_t,
                    libc::POSIX_FADV_WILLNEED,
                )
            };
            if rc == 0 {
                asked += run;
            }
            i += run;
        }
        asked
    }

    /// The open files, where the WAL's last frame ends (and its salt), and the WAL's metadata.
    fn look<'a>(
        &self,
        open: &'a mut Option<Files>,
    ) -> Option<(&'a Files, (u64, u32), std::fs::Metadata)> {
        let meta = std::fs::metadata(&self.wal_path).ok()?;
        if open.as_ref().is_none_or(|f| f.ino != meta.ino()) {
            *open = None;
            // Writable to allocate blocks; without write access the look only reads back.
            let wal = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.wal_path)
                .or_else(|_| File::open(&self.wal_path))
                .ok()?;
            let ino = wal.metadata().ok()?.ino();
            let map = memmap2::MmapOptions::new()
                .len(MAP_LEN)
                .map_raw_read_only(&wal)
                .ok()?;
            let shm = File::open(&self.shm_path).ok()?;
            *open = Some(Files { wal, ino, map, shm });
        }
        let files = open.as_ref()?;
        let front = last_frame_end(&files.shm)?;
        Some((files, front, meta))
    }
}

/// How far past the last frame a look at `now` reaches: the WAL's growth over [`AHEAD_US`] at
/// its rate since `previous`, within [`MIN_WINDOW`]..=[`WINDOW`]; all of [`WINDOW`] without a
/// previous look at the same WAL, or when the WAL started over since (a new salt: the moment
/// old, maybe evicted pages lie ahead).
fn span(previous: Option<Look>, now: Look) -> u64 {
    match previous {
        Some(p)
            if (p.ino, p.salt) == (now.ino, now.salt)
                && now.front >= p.front
                && now.at_us > p.at_us =>
        {
            let grown = now.front - p.front;
            (grown.saturating_mul(AHEAD_US) / (now.at_us - p.at_us)).clamp(MIN_WINDOW, WINDOW)
        }
        _ => WINDOW,
    }
}

/// Where a look at `now` whose window starts at `start` (page-aligned) begins to check, and
/// whether that is the whole window: past what the looks since the last whole one checked in
/// the same WAL, if that whole look is under [`RECHECK`] old.
fn unchecked_from(checked: Option<Checked>, now: Look, start: u64) -> (u64, bool) {
    match checked {
        Some(c)
            if (c.ino, c.salt) == (now.ino, now.salt)
                && now.at_us >= c.whole_at_us
                && now.at_us - c.whole_at_us < RECHECK.as_micros() as u64 =>
        {
            let page = page_size();
            (start.max(c.end / page * page), false)
        }
        _ => (start, true),
    }
}

/// The page-aligned byte range of a WAL of `len` bytes to look at, given where its last frame
/// ends and how far past it to reach; empty when there is nothing past it.
fn window(front: u64, len: u64, span: u64) -> (u64, u64) {
    let page = page_size();
    let end = (front + span).min(len).min(MAP_LEN as u64);
    (front / page * page, end)
}

/// Keeps [`ALLOCATE_AHEAD`] of disk blocks allocated past `front` (up to [`ALLOCATE_MAX`]),
/// given how much the WAL has allocated; the file's size does not change. Blocks allocated
/// this way read as zeros until written, and SQLite never reads past the frames it wrote.
fn allocate_ahead(wal: &File, front: u64, allocated: u64) {
    let want = (front + ALLOCATE_AHEAD).min(ALLOCATE_MAX);
    if allocated >= want || allocated >= front + ALLOCATE_AHEAD / 2 {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: a valid descriptor; KEEP_SIZE only allocates blocks past the data. A file system
    // that cannot (EOPNOTSUPP) or a read-only descriptor (EBADF) changes nothing.
    unsafe {
        libc::fallocate(
            wal.as_raw_fd(),
            libc::FALLOC_FL_KEEP_SIZE,
            allocated as libc::off_t,
            (want - allocated) as libc::off_t,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = wal;
}

/// Where the WAL's last committed frame ends, and the WAL's first salt (a new one each time the
/// WAL starts over), from the WAL index header; `None` when the index is not initialised (or
/// not what this code knows).
///
/// Read with `pread`, not through a mapping: SQLite truncates the index file when it rebuilds
/// it, and a mapping read past the end would raise SIGBUS.
fn last_frame_end(shm: &File) -> Option<(u64, u32)> {
    let mut h = [0u8; 36];
    shm.read_exact_at(&mut h, 0).ok()?;
    let word = |at: usize| u32::from_ne_bytes(h[at..at + 4].try_into().expect("4 bytes"));
    let (version, initialised) = (word(0), h[12]);
    if version != WAL_INDEX_VERSION || initialised != 1 {
        return None;
    }
    let page = match u16::from_ne_bytes([h[14], h[15]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    Some((
        WAL_HEADER + u64::from(word(16)) * (page + FRAME_HEADER),
        word(32),
    ))
}

/// For each page of `[start, end)` of the mapped file (`start` page-aligned), whether the
/// kernel has it cached; all present if it cannot say.
fn missing_pages(map: &memmap2::MmapRaw, start: u64, end: u64) -> Vec<bool> {
    let page = page_size();
    let n = (end - start).div_ceil(page) as usize;
    let mut resident = vec![1u8; n];
    // SAFETY: `[start, end)` lies inside the mapping (callers clamp `end` to its length);
    // mincore only asks the kernel about those pages and never touches their memory, so it is
    // sound even past the end of the file.
    let rc = unsafe {
        libc::mincore(
            map.as_ptr().add(start as usize).cast_mut().cast(),
            (end - start) as usize,
            resident.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return vec![false; n];
    }
    resident.iter().map(|r| r & 1 == 0).collect()
}

/// Microseconds of `CLOCK_MONOTONIC`, one clock for every process on the host.
fn monotonic_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    /// A WAL of several MiB that has just started over: its last frame is near the beginning
    /// and the old pages after it were written back and then evicted (as reclaim would).
    fn restarted_wal_with_evicted_pages(db: &Path) -> Connection {
        let c = Connection::open(db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (b BLOB);",
        )
        .unwrap();
        for _ in 0..400 {
            c.execute("INSERT INTO t VALUES (zeroblob(3000))", [])
                .unwrap();
        }
        c.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
            .unwrap();
        // The next writer starts the WAL over.
        c.execute("INSERT INTO t VALUES (1)", []).unwrap();
        let wal = File::open(WalWarmer::new(db).wal_path).unwrap();
        wal.sync_all().unwrap();
        // SAFETY: a valid descriptor; the advice only drops clean cached pages.
        let rc = unsafe { libc::posix_fadvise(wal.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
        c
    }

    /// A warmer for a fresh database whose WAL is as [`restarted_wal_with_evicted_pages`] leaves
    /// it, with what must outlive it.
    fn warmer_over_evicted_wal() -> (tempfile::TempDir, Connection, WalWarmer) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("w.db");
        let c = restarted_wal_with_evicted_pages(&db);
        let w = WalWarmer::new(&db);
        (dir, c, w)
    }

    fn missing_in_window(w: &WalWarmer) -> usize {
        let mut st = w.state.lock().unwrap();
        let (files, (front, _), meta) = w.look(&mut st.files).expect("a WAL to look at");
        let (start, end) = window(front, meta.len(), WINDOW);
        assert!(
            end - start >= WINDOW / 2,
            "the WAL has pages past its last frame"
        );
        missing_pages(&files.map, start, end)
            .into_iter()
            .filter(|m| *m)
            .count()
    }

    #[test]
    fn evicted_pages_past_the_last_frame_are_read_back() {
        let (_dir, _c, w) = warmer_over_evicted_wal();
        let before = missing_in_window(&w);
        assert!(
            before > 0,
            "eviction left every page cached: nothing to test"
        );
        assert_eq!(w.warm(&AtomicU64::new(0)), before);
        // The reads run in the background; they land in milliseconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while missing_in_window(&w) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the pages never came back"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_window_follows_the_wals_growth_and_is_whole_after_a_restart() {
        let look = |ino, front, at_us| Look {
            ino,
            salt: 7,
            front,
            at_us,
        };
        let first = look(1, 1 << 20, 1_000_000);
        assert_eq!(span(None, first), WINDOW, "no rate yet");
        // Idle, or a chat's trickle: the floor.
        assert_eq!(span(Some(first), look(1, 1 << 20, 1_002_000)), MIN_WINDOW);
        assert_eq!(
            span(Some(first), look(1, (1 << 20) + 8192, 1_002_000)),
            MIN_WINDOW
        );
        // 20 KiB per millisecond: 30 ms of it; 200 KiB per millisecond would be more than all.
        let medium = look(1, (1 << 20) + 40 * 1024, 1_002_000);
        assert_eq!(span(Some(first), medium), 600 * 1024);
        let fast = look(1, (1 << 20) + 400 * 1024, 1_002_000);
        assert_eq!(span(Some(first), fast), WINDOW);
        // The WAL started over (a new salt, even once past the old front), or is another file:
        // the whole window.
        let restarted = Look {
            salt: 8,
            ..look(1, 2 << 20, 1_002_000)
        };
        assert_eq!(span(Some(first), restarted), WINDOW);
        assert_eq!(span(Some(first), look(1, 4096, 1_002_000)), WINDOW);
        assert_eq!(span(Some(first), look(2, 2 << 20, 1_002_000)), WINDOW);
        // A clock that did not move says nothing about the rate.
        assert_eq!(span(Some(first), look(1, 2 << 20, 1_000_000)), WINDOW);
    }

    #[test]
    fn a_look_checks_only_past_what_was_checked_until_the_next_whole_look() {
        let page = page_size();
        let now = |salt, at_us| Look {
            ino: 1,
            salt,
            front: 100 * page,
            at_us,
        };
        let checked = Checked {
            ino: 1,
            salt: 7,
            end: 160 * page + 100,
            whole_at_us: 1_000_000,
        };
        // Nothing checked yet: the whole window.
        assert_eq!(
            unchecked_from(None, now(7, 1_000_000), 100 * page),
            (100 * page, true)
        );
        // 2 ms after a whole look: only past the checked end (rounded down to its page).
        assert_eq!(
            unchecked_from(Some(checked), now(7, 1_002_000), 100 * page),
            (160 * page, false)
        );
        // A window that starts past it (the writer overtook the checks): from the window.
        assert_eq!(
            unchecked_from(Some(checked), now(7, 1_002_000), 170 * page),
            (170 * page, false)
        );
        // RECHECK after the whole look, after the WAL started over (a new salt), or with a
        // clock that went back: the whole window again.
        let late = 1_000_000 + RECHECK.as_micros() as u64;
        assert_eq!(
            unchecked_from(Some(checked), now(7, late), 100 * page),
            (100 * page, true)
        );
        assert_eq!(
            unchecked_from(Some(checked), now(8, 1_002_000), 100 * page),
            (100 * page, true)
        );
        assert_eq!(
            unchecked_from(Some(checked), now(7, 999_000), 100 * page),
            (100 * page, true)
        );
    }

    #[test]
    fn the_salt_read_from_the_index_changes_when_the_wal_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("w.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (b BLOB);")
            .unwrap();
        let shm = File::open(WalWarmer::new(&db).shm_path).unwrap();
        c.execute("INSERT INTO t VALUES (1)", []).unwrap();
        let (front, salt) = last_frame_end(&shm).unwrap();
        c.execute("INSERT INTO t VALUES (2)", []).unwrap();
        let (later, same) = last_frame_end(&shm).unwrap();
        assert!(later > front);
        assert_eq!(same, salt, "the same WAL, grown");
        c.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
            .unwrap();
        c.execute("INSERT INTO t VALUES (3)", []).unwrap();
        let (_, new) = last_frame_end(&shm).unwrap();
        assert_ne!(new, salt, "the WAL started over");
    }

    #[test]
    fn one_look_per_interval_on_the_host() {
        let (_dir, _c, w) = warmer_over_evicted_wal();
        // Another process began a look a moment ago.
        let last_look = AtomicU64::new(monotonic_us());
        assert_eq!(w.warm(&last_look), 0);
        assert!(missing_in_window(&w) > 0);
        // Once the interval is over, this one looks and says so.
        let before = monotonic_us();
        last_look.store(before - EVERY.as_micros() as u64, Ordering::Relaxed);
        assert!(w.warm(&last_look) > 0);
        assert!(last_look.load(Ordering::Relaxed) >= before);
    }

    #[test]
    fn blocks_are_kept_allocated_ahead_of_a_growing_wal() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("w.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (b BLOB);",
        )
        .unwrap();
        let w = WalWarmer::new(&db);
        let shm = File::open(&w.shm_path).unwrap();
        let grow = |rows: usize| {
            for _ in 0..rows {
                c.execute("INSERT INTO t VALUES (zeroblob(3000))", [])
                    .unwrap();
            }
        };
        grow(10);
        let before = std::fs::metadata(&w.wal_path).unwrap();
        assert!(
            before.blocks() * 512 < ALLOCATE_AHEAD,
            "allocated before any look"
        );
        w.warm(&AtomicU64::new(0));
        let (front, _) = last_frame_end(&shm).unwrap();
        let after = std::fs::metadata(&w.wal_path).unwrap();
        assert_eq!(
            after.len(),
            before.len(),
            "the WAL's size is SQLite's to change"
        );
        assert!(after.blocks() * 512 >= front + ALLOCATE_AHEAD);
        // Past half of it, the next look tops it up.
        grow(ALLOCATE_AHEAD as usize / 2 / 4096 + 100);
        w.warm(&AtomicU64::new(0));
        let (front, _) = last_frame_end(&shm).unwrap();
        let topped = std::fs::metadata(&w.wal_path).unwrap();
        assert!(topped.blocks() * 512 >= front + ALLOCATE_AHEAD);
        // SQLite writes over the allocated blocks and reads back what it wrote.
        grow(100);
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let rows: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 10 + ALLOCATE_AHEAD as i64 / 2 / 4096 + 100 + 100);
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }

    #[test]
    fn no_wal_or_an_uninitialised_index_is_nothing_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("w.db");
        let w = WalWarmer::new(&db);
        assert_eq!(w.warm(&AtomicU64::new(0)), 0); // no files at all
        std::fs::write(&w.wal_path, vec![0u8; 1 << 20]).unwrap();
        std::fs::write(&w.shm_path, [0u8; 7]).unwrap(); // shorter than a header
        assert_eq!(w.warm(&AtomicU64::new(0)), 0);
        std::fs::write(&w.shm_path, [0u8; 4096]).unwrap(); // not initialised
        assert_eq!(w.warm(&AtomicU64::new(0)), 0);
    }
}
