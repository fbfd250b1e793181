//! A key's record in the limiter's table: its word layout (see the module docs), the packing
//! of its state words, and when a record is stale, so another key may take it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::RateLimiter;
use crate::shm::table::{Occupant, Probe, check_of, swap_tag};

/// The table's layout (header word 0).
pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"LMSRLIM1");
/// Words per record: the tag, then the three state words below.
pub(super) const RECORD_WORDS: usize = 4;
pub(super) const W_TAT: usize = 1;
pub(super) const W_REP: usize = 2;
pub(super) const W_BLOCK: usize = 3;
/// Header word counting decisions made untracked because the table was full.
pub(super) const H_UNTRACKED: usize = 2;
/// Records examined from a key's hash position, and looks after a lost race for a stale one.
pub(super) const PROBE: Probe = Probe {
    window: 32,
    rounds: 4,
};
/// TAT resolution: 1/64 ms.
pub(super) const UNITS_PER_MS: u64 = 64;
/// The TAT word's payload, below the check byte.
pub(super) const PAYLOAD_MASK: u64 = (1 << 56) - 1;
/// A small word's time field (ms), and its 10-bit value field above it.
pub(super) const STAMP_BITS: u32 = 46;
pub(super) const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;
pub(super) const SMALL_MASK: u64 = (1 << 10) - 1;
/// Full reputation, and the scale of penalties and allowance factors (‰).
pub(super) const FULL: u64 = 1000;

impl RateLimiter {
    /// The record holding `tag`, claiming a free or stale one if the key is new.
    pub(super) fn find_or_claim(&self, tag: u64, now: u64) -> Option<usize> {
        let occupant = |rec: &[AtomicU64], owner: u64| {
            if self.is_stale(rec, owner, now) {
                Occupant::Reusable
            } else {
                Occupant::Live
            }
        };
        self.table.find_or_claim(tag, PROBE, occupant, swap_tag)
    }

    /// Whether a record's state equals the all-zero one, so handing it to another key loses
    /// nothing.
    fn is_stale(&self, rec: &[AtomicU64], tag: u64, now: u64) -> bool {
        let check = check_of(tag);
        let w = rec[W_TAT].load(Ordering::Acquire);
        if w >> 56 == check && w & PAYLOAD_MASK > now * UNITS_PER_MS {
            return false;
        }
        let r = rec[W_REP].load(Ordering::Acquire);
        if r >> 56 == check {
            let (p, stamp) = ((r >> STAMP_BITS) & SMALL_MASK, r & STAMP_MASK);
            if p > 0 && now.saturating_sub(stamp) < self.max_recovery_ms {
                return false;
            }
        }
        let (strikes, until) = unpack_small(rec[W_BLOCK].load(Ordering::Acquire), check);
        until <= now && (strikes == 0 || now - until >= self.max_forget_ms)
    }
}

/// `check(8) · value(10) · time(46)`.
pub(super) fn pack_small(check: u64, value: u64, time_ms: u64) -> u64 {
    (check << 56) | ((value & SMALL_MASK) << STAMP_BITS) | (time_ms & STAMP_MASK)
}

/// The `(value, time)` of a word, or zeros if it belongs to another key.
pub(super) fn unpack_small(w: u64, check: u64) -> (u64, u64) {
    if w >> 56 != check {
        return (0, 0);
    }
    ((w >> STAMP_BITS) & SMALL_MASK, w & STAMP_MASK)
}
