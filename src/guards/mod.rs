//! Guards shared across processes: rate limits, circuit breakers, connection slots, rollout.
//!
//! PHP-FPM runs many short-lived worker processes beside the long-poll daemon, so any guard
//! whose state must agree across them lives in a small file mapped shared next to the database
//! (never in the database itself: a decision must not compete with appends for SQLite's write
//! lock). Each guard also has an in-process backend with the same code and semantics, for the
//! daemon's hot path and for tests.
//!
//! | guard | file beside `<db>` | what a record holds |
//! | --- | --- | --- |
//! | [`RateLimiter`] | `<db>-lmsrt-limits` | one key: GCRA arrival time, reputation, DDoS block |
//! | [`Breakers`] | `<db>-lmsrt-breakers` | one breaker: state word, failure window |
//! | [`Slots`] | `<db>-lmsrt-slots` | one user: up to 15 leases (holder pid + expiry) |
//! | [`Rollout`] | none (a pure function of its settings) | |
//!
//! ## How the shared tables stay consistent
//!
//! * Every table is a fixed-size file: a 64-byte header, then fixed-size records in an
//!   open-addressing hash table keyed by a stable 64-bit hash of the key (see
//!   [`stable_hash`]). The file starts zero-filled and all-zero is a valid, empty state, so
//!   there is no initialisation step a crash could interrupt.
//! * Records are never locked. Every field that must change together is packed into one 64-bit
//!   word and changed with a single compare-and-swap, so a process killed between any two
//!   instructions leaves every word either before or after its update, and no other process
//!   ever waits on it. Where a record has several words (a limiter key has three), the words are
//!   independent facts and any combination is a valid state; each module says why.
//! * A record is claimed by a compare-and-swap of its key tag from 0 (or from a stale key whose
//!   state has decayed to the all-zero equivalent). Words that carry state also carry a few
//!   check bits of the tag, so an update computed for the previous owner of a reused record
//!   fails its compare-and-swap instead of landing on the new owner.
//! * A table that is full (no free or stale record within a key's probe window) fails open for
//!   rate limits and breakers and closed for connection slots; each module says why.

pub mod breaker;
pub mod rate_limit;
pub mod rollout;
pub mod slots;

pub use breaker::{BreakerConfig, BreakerState, BreakerStatus, Breakers, ClientMode};
pub use rate_limit::{ActionLimit, Decision, LimiterConfig, RateLimiter};
pub use rollout::{Cohort, Rollout};
pub use slots::{Lease, OnFull, Slots, SlotsConfig};

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::shm::SharedRegion;

/// A stable 64-bit hash of a sequence of byte strings: FNV-1a over the parts, each followed by
/// a 0xFF separator (a byte that never occurs in UTF-8, so `("ab","c")` and `("a","bc")`
/// differ), finished with the MurmurHash3 64-bit finaliser for well-spread low and high bits.
///
/// The result is part of the on-disk format (table positions) and of rollout cohorts, so it
/// never changes between versions; tests pin known values.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h = Fnv::new();
    for p in parts {
        h.write(p);
    }
    h.finish()
}

/// Incremental form of [`stable_hash`], so a common prefix (an action name) is hashed once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub(crate) fn new() -> Fnv {
        Fnv(Self::OFFSET)
    }

    /// Adds one part (and its separator).
    pub(crate) fn write(&mut self, part: &[u8]) {
        let mut h = self.0;
        for &b in part {
            h ^= b as u64;
            h = h.wrapping_mul(Self::PRIME);
        }
        h ^= 0xFF;
        self.0 = h.wrapping_mul(Self::PRIME);
    }

    /// The finished hash.
    pub(crate) fn finish(self) -> u64 {
        fmix64(self.0)
    }
}

/// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The tag stored for a key: its hash, with 0 (the empty marker) mapped to 1.
pub(crate) fn tag_of(hash: u64) -> u64 {
    if hash == 0 { 1 } else { hash }
}

/// The 8 check bits of a tag carried by a record's state words.
#[inline]
pub(crate) fn check_of(tag: u64) -> u64 {
    tag >> 56
}

/// Words in a table's header; records start after it.
pub(crate) const HEADER_WORDS: usize = 8;
/// Header word 0: the layout magic (0 until the first opener writes it).
const H_MAGIC: usize = 0;
/// Header word 1: the record count (0 until the first opener writes it).
const H_CAPACITY: usize = 1;
/// Largest record count accepted from a file or a configuration.
pub(crate) const MAX_CAPACITY: usize = 1 << 22;

/// Where a block of shared words lives: a file mapped shared, or process memory.
#[derive(Debug)]
enum Backing {
    Shared(SharedRegion),
    Local(Box<[AtomicU64]>),
}

/// A fixed-size block of 64-bit atomics whose word 0 holds a layout magic, in a shared file or
/// in process memory. Both backends run the same code.
#[derive(Debug)]
pub(crate) struct Words {
    backing: Backing,
}

impl Words {
    /// Maps (creating if needed) `len` words of the file at `path`, checking its layout magic
    /// (written by the first opener; a file with another magic is refused).
    pub(crate) fn open_shared(path: &Path, magic: u64, len: usize) -> Result<Words> {
        let region = SharedRegion::open(path, len * 8)?;
        let words = region.atomic_u64_slice();
        match words[H_MAGIC].compare_exchange(0, magic, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {}
            Err(found) if found == magic => {}
            Err(found) => {
                return Err(bad_file(
                    path,
                    format!("layout {found:#018x}, expected {magic:#018x}"),
                ));
            }
        }
        Ok(Words {
            backing: Backing::Shared(region),
        })
    }

    /// `len` zeroed words in process memory, with the magic in word 0.
    pub(crate) fn in_process(magic: u64, len: usize) -> Words {
        // Zeroed by the allocator rather than written: pages of a large table that no key
        // ever touches are never made resident (the daemon sizes tables for its peak).
        let words = zeroed_words(len.max(1));
        words[H_MAGIC].store(magic, Ordering::Relaxed);
        Words {
            backing: Backing::Local(words),
        }
    }

    /// All the words.
    #[inline]
    pub(crate) fn get(&self) -> &[AtomicU64] {
        match &self.backing {
            Backing::Shared(r) => r.atomic_u64_slice(),
            Backing::Local(b) => b,
        }
    }

    /// The file behind shared words.
    pub(crate) fn path(&self) -> Option<&Path> {
        match &self.backing {
            Backing::Shared(r) => Some(r.path()),
            Backing::Local(_) => None,
        }
    }
}

/// `len` (> 0) zeroed atomics, zeroed by the allocator (`calloc`-style).
fn zeroed_words(len: usize) -> Box<[AtomicU64]> {
    let layout = std::alloc::Layout::array::<AtomicU64>(len).expect("table size fits in memory");
    // SAFETY: `layout` has a non-zero size (len > 0); the result is checked for NULL; all-zero
    // bytes are a valid `AtomicU64`; the box frees it with the same layout (a slice of `len`
    // atomics allocated by the global allocator).
    unsafe {
        let p = std::alloc::alloc_zeroed(layout).cast::<AtomicU64>();
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, len))
    }
}

/// A fixed-size table of records of `record_words` 64-bit atomics after a small header.
#[derive(Debug)]
pub(crate) struct Table {
    words: Words,
    record_words: usize,
    capacity: usize,
}

impl Table {
    /// Maps (creating if needed) the table file at `path`.
    ///
    /// The first opener fixes the layout (`magic`) and the record count; later openers use the
    /// count found in the file whatever they asked for, so every process indexes alike.
    pub(crate) fn open_shared(
        path: &Path,
        magic: u64,
        record_words: usize,
        capacity: usize,
    ) -> Result<Table> {
        let capacity = Self::check_capacity(capacity)?;
        let mut words = Words::open_shared(path, magic, Self::len(record_words, capacity))?;
        let stored = match words.get()[H_CAPACITY].compare_exchange(
            0,
            capacity as u64,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => capacity,
            Err(found) => found as usize,
        };
        if stored != capacity {
            if !stored.is_power_of_two() || stored > MAX_CAPACITY {
                return Err(bad_file(path, format!("record count {stored}")));
            }
            words = Words::open_shared(path, magic, Self::len(record_words, stored))?;
        }
        Ok(Table {
            words,
            record_words,
            capacity: stored,
        })
    }

    /// A table in process memory.
    pub(crate) fn in_process(magic: u64, record_words: usize, capacity: usize) -> Result<Table> {
        let capacity = Self::check_capacity(capacity)?;
        let words = Words::in_process(magic, Self::len(record_words, capacity));
        words.get()[H_CAPACITY].store(capacity as u64, Ordering::Relaxed);
        Ok(Table {
            words,
            record_words,
            capacity,
        })
    }

    fn check_capacity(capacity: usize) -> Result<usize> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(Error::InvalidArgument(format!(
                "table capacity {capacity}: expected 1..={MAX_CAPACITY}"
            )));
        }
        // At least one probe window, and a power of two so positions are a mask away.
        Ok(capacity.next_power_of_two().max(64))
    }

    fn len(record_words: usize, capacity: usize) -> usize {
        HEADER_WORDS + record_words * capacity
    }

    #[inline]
    fn words(&self) -> &[AtomicU64] {
        self.words.get()
    }

    /// Header word `i` (2..8 are free for the table's owner).
    #[inline]
    pub(crate) fn header(&self, i: usize) -> &AtomicU64 {
        debug_assert!((2..HEADER_WORDS).contains(&i));
        &self.words()[i]
    }

    /// The words of record `idx` (taken modulo the capacity).
    #[inline]
    pub(crate) fn record(&self, idx: usize) -> &[AtomicU64] {
        let start = HEADER_WORDS + (idx & (self.capacity - 1)) * self.record_words;
        &self.words()[start..start + self.record_words]
    }

    /// Number of records.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The file behind a shared table.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.words.path()
    }
}

fn bad_file(path: &Path, what: String) -> Error {
    Error::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a table this version understands: {what}"),
        ),
    )
}

/// Milliseconds of a duration, saturating.
pub(crate) fn ms(d: std::time::Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_is_pinned() {
        // These values are part of the on-disk format and of rollout cohorts: never change them.
        assert_eq!(stable_hash(&[]), fmix64(Fnv::OFFSET));
        assert_eq!(stable_hash(&[b"post", b"42"]), 0xc497_f38e_f01f_7f22);
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
        let mut f = Fnv::new();
        f.write(b"post");
        f.write(b"42");
        assert_eq!(f.finish(), stable_hash(&[b"post", b"42"]));
    }

    #[test]
    fn shared_table_keeps_the_first_capacity_and_refuses_other_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        let a = Table::open_shared(&p, 7, 4, 100).unwrap();
        assert_eq!(a.capacity(), 128);
        let b = Table::open_shared(&p, 7, 4, 4096).unwrap();
        assert_eq!(b.capacity(), 128, "later openers adopt the file's capacity");
        a.record(5)[1].store(99, Ordering::Relaxed);
        assert_eq!(b.record(5)[1].load(Ordering::Relaxed), 99);
        let e = Table::open_shared(&p, 8, 4, 128).unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::Io);
        assert!(Table::in_process(7, 4, 0).is_err());
    }
}
