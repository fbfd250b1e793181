//! Fixed-size blocks of 64-bit atomics in a shared file or in process memory, and the
//! open-addressing record table the guards keep in them.
//!
//! * [`Words`]: a block whose word 0 holds a layout magic, shared (a file beside the database)
//!   or local (process memory), both run by the same code. The metrics use it directly.
//! * [`Table`]: a 64-byte header, then fixed-size records in an open-addressing hash table
//!   keyed by a stable 64-bit hash of the key. All-zero is a valid, empty state, so there is no
//!   initialisation step a crash could interrupt.
//! * [`Table::find_or_claim`]: the one loop that finds a key's record or claims one for it: a
//!   free record by a compare-and-swap of its tag from 0, else one whose owner's state is
//!   worth nothing (the guard says which: [`Occupant`]) by a compare-and-swap from the old tag.
//!   Words that carry state also carry a few check bits of the tag ([`check_of`]), so an update
//!   computed for the previous owner of a reused record fails its compare-and-swap instead of
//!   landing on the new owner, and a word left by that owner reads as zero to the new one.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::region::SharedRegion;
use crate::error::{Error, Result};

/// Record word 0: the owner's tag (0 = free).
pub(crate) const TAG_WORD: usize = 0;

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
const HEADER_WORDS: usize = 8;
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

/// How far [`Table::find_or_claim`] looks for a key, and how often it starts over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    /// Records examined from a key's hash position.
    pub(crate) window: usize,
    /// Looks in all: each one after the first follows a lost race for a reusable record, or a
    /// hand-over in progress in the window.
    pub(crate) rounds: usize,
}

/// What a record owned by another key is to a key looking for room, as the table's guard
/// judges it from the record's words and the owner's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Occupant {
    /// Its owner's state matters: leave it.
    Live,
    /// Its owner's state equals the all-zero one, so handing the record over loses nothing.
    Reusable,
    /// Being handed over right now, perhaps to the very key looking: let that finish (start the
    /// look over) rather than give the key a second record.
    Busy,
}

impl Table {
    /// The record holding `tag` within `window` records of its hash position, without claiming
    /// anything.
    pub(crate) fn find(&self, tag: u64, window: usize) -> Option<usize> {
        let start = tag as usize;
        for i in 0..window {
            let idx = start.wrapping_add(i);
            match self.record(idx)[TAG_WORD].load(Ordering::Acquire) {
                t if t == tag => return Some(idx),
                // Keys are never removed, so a key is never found past a free record.
                0 => return None,
                _ => {}
            }
        }
        None
    }

    /// The record holding `tag`, claiming one if the key is new: the first free record in the
    /// window, else the first one `occupant` calls [`Occupant::Reusable`], handed over by
    /// `take_over(record, old_tag, tag)` (which returns whether the record now belongs to
    /// `tag`; [`swap_tag`] unless the guard must fence the hand-over). `None` when the window
    /// has neither (the guard decides whether that fails open or closed).
    ///
    /// Memory ordering, one choice for every table: the tag is read with `Acquire` and
    /// claimed with an `AcqRel` compare-and-swap (`Acquire` when it fails). What must
    /// happen-before what:
    ///
    /// * A claimant's look at the old owner's words (judged reusable) and, for a fenced
    ///   hand-over, its locks on them, happen before its claim (the `Release` half); a process
    ///   that then finds the new tag (an `Acquire` load, or the `Acquire` of a failed
    ///   compare-and-swap that returns it) therefore sees those words as the claimant left
    ///   them or later, never an older state of the previous owner.
    /// * A claimant that finds the record taken (a failed compare-and-swap) reads the winner's
    ///   tag with `Acquire` for the same reason, before it uses the record as its own (the
    ///   winner may be its own key, claimed by another process).
    ///
    /// Nothing here needs a single total order across different words (`SeqCst`): the only
    /// cross-word protocol, a fenced hand-over against an acquirer's re-read of the tag, is
    /// ordered by the compare-and-swaps both make on the same state word (see `guards::slots`).
    pub(crate) fn find_or_claim(
        &self,
        tag: u64,
        probe: Probe,
        occupant: impl Fn(&[AtomicU64], u64) -> Occupant,
        take_over: impl Fn(&[AtomicU64], u64, u64) -> bool,
    ) -> Option<usize> {
        let start = tag as usize;
        for _ in 0..probe.rounds {
            let mut reusable = None;
            let mut busy = false;
            for i in 0..probe.window {
                let idx = start.wrapping_add(i);
                let rec = self.record(idx);
                let t = rec[TAG_WORD].load(Ordering::Acquire);
                if t == tag {
                    return Some(idx);
                }
                if t == 0 {
                    // Keys are never removed, so a key is never found past a free record.
                    match rec[TAG_WORD].compare_exchange(
                        0,
                        tag,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return Some(idx),
                        Err(t) if t == tag => return Some(idx),
                        Err(_) => continue,
                    }
                }
                match occupant(rec, t) {
                    Occupant::Busy => busy = true,
                    Occupant::Reusable if reusable.is_none() => reusable = Some((idx, t)),
                    Occupant::Reusable | Occupant::Live => {}
                }
            }
            if busy {
                std::thread::yield_now();
                continue;
            }
            // Every process picks the first reusable record, so racing claimants of one key
            // meet on the same record.
            let (idx, old) = reusable?;
            if take_over(self.record(idx), old, tag) {
                return Some(idx);
            }
        }
        None
    }
}

/// Hands a reusable record from tag `old` to tag `new` by one compare-and-swap of its tag
/// (ordered as in [`Table::find_or_claim`]). Returns whether the record now belongs to `new`
/// (claimed here, or by another process for the same key).
pub(crate) fn swap_tag(rec: &[AtomicU64], old: u64, new: u64) -> bool {
    match rec[TAG_WORD].compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => true,
        Err(t) => t == new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    const NEVER: fn(&[AtomicU64], u64) -> Occupant = |_, _| Occupant::Live;

    fn table() -> Table {
        Table::in_process(7, 2, 64).unwrap()
    }

    #[test]
    fn a_key_claims_a_free_record_once_and_finds_it_again() {
        let t = table();
        let probe = Probe {
            window: 4,
            rounds: 1,
        };
        assert_eq!(t.find(5, 4), None);
        let idx = t.find_or_claim(5, probe, NEVER, swap_tag).unwrap();
        assert_eq!(idx, 5, "the key's own hash position, when free");
        assert_eq!(t.find_or_claim(5, probe, NEVER, swap_tag), Some(idx));
        assert_eq!(t.find(5, 4), Some(idx));
        // A colliding key (same position modulo 64) takes the next free record. (Indexes are
        // returned unreduced; `record` takes them modulo the capacity.)
        assert_eq!(t.find_or_claim(69, probe, NEVER, swap_tag), Some(70));
        assert_eq!(t.find(69, 4), Some(70));
        assert_eq!(t.find(5, 4), Some(5), "the first key keeps its record");
    }

    #[test]
    fn a_full_window_reuses_the_first_reusable_record_or_gives_up() {
        let t = table();
        let probe = Probe {
            window: 4,
            rounds: 2,
        };
        for k in [1u64, 65, 129, 193] {
            t.find_or_claim(k, probe, NEVER, swap_tag).unwrap();
        }
        assert_eq!(
            t.find_or_claim(257, probe, NEVER, swap_tag),
            None,
            "no room"
        );
        assert_eq!(t.find(257, 4), None);
        let only_129 = |_: &[AtomicU64], owner: u64| {
            if owner == 129 || owner == 193 {
                Occupant::Reusable
            } else {
                Occupant::Live
            }
        };
        assert_eq!(t.find_or_claim(257, probe, only_129, swap_tag), Some(259));
        assert_eq!(t.find(129, 4), None, "the old owner lost its record");
        assert_eq!(t.find(257, 4), Some(259));
        assert_eq!(
            t.find(193, 4),
            Some(196),
            "the second reusable record was left alone"
        );
    }

    #[test]
    fn a_busy_window_is_looked_at_again_and_a_refused_hand_over_gives_up() {
        let t = table();
        let probe = Probe {
            window: 2,
            rounds: 3,
        };
        t.find_or_claim(1, probe, NEVER, swap_tag).unwrap();
        t.find_or_claim(65, probe, NEVER, swap_tag).unwrap();
        let looks = std::cell::Cell::new(0);
        let busy_then_reusable = |_: &[AtomicU64], _: u64| {
            looks.set(looks.get() + 1);
            if looks.get() <= 2 {
                Occupant::Busy
            } else {
                Occupant::Reusable
            }
        };
        let refuse = |_: &[AtomicU64], _: u64, _: u64| false;
        assert_eq!(
            t.find_or_claim(129, probe, busy_then_reusable, refuse),
            None
        );
        assert_eq!(
            looks.get(),
            6,
            "one busy round, then two refused hand-overs"
        );
    }
}
