//! A breaker's record in the table (see the module docs): the state word, the failure window
//! in ten buckets, and when a record is idle, so another breaker may take it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{BreakerState, Breakers};
use crate::shm::table::{Occupant, Probe, check_of, swap_tag};

/// The table's layout (header word 0).
pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"LMSRBRK1");
/// Words per record: the tag, the state word, the window buckets and spares.
pub(super) const RECORD_WORDS: usize = 16;
/// The state word: check(8) · state(2) · backoff exponent(5) · n(7) · time(42).
pub(super) const W_STATE: usize = 1;
/// The failure window: `NBUCKETS` words from here, check(8) · bucket(16) · failures(20) ·
/// outcomes(20).
pub(super) const W_BUCKETS: usize = 2;
pub(super) const NBUCKETS: u64 = 10;
/// Records examined from a name's hash position, and looks after a lost race for an idle one.
pub(super) const PROBE: Probe = Probe {
    window: 16,
    rounds: 4,
};
/// Field limits of the state and bucket words.
pub(super) const TIME_MASK: u64 = (1 << 42) - 1;
pub(super) const N_MAX: u64 = 127;
pub(super) const EXP_MAX: u64 = 31;
pub(super) const COUNT_MAX: u64 = (1 << 20) - 1;

/// The decoded state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Word {
    pub(super) state: BreakerState,
    pub(super) exp: u64,
    pub(super) n: u64,
    pub(super) time: u64,
}

impl Word {
    pub(super) const ZERO: Word = Word {
        state: BreakerState::Closed,
        exp: 0,
        n: 0,
        time: 0,
    };

    pub(super) fn decode(w: u64, check: u64) -> Word {
        if w >> 56 != check {
            return Word::ZERO;
        }
        Word {
            state: match (w >> 54) & 3 {
                1 => BreakerState::Open,
                2 => BreakerState::HalfOpen,
                _ => BreakerState::Closed,
            },
            exp: (w >> 49) & EXP_MAX,
            n: (w >> 42) & N_MAX,
            time: w & TIME_MASK,
        }
    }

    pub(super) fn encode(self, check: u64) -> u64 {
        let s = match self.state {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        };
        (check << 56)
            | (s << 54)
            | ((self.exp & EXP_MAX) << 49)
            | ((self.n & N_MAX) << 42)
            | (self.time & TIME_MASK)
    }
}

impl Breakers {
    /// Outcomes and failures in the window, counting only buckets since the breaker last
    /// closed.
    pub(super) fn window(&self, rec: &[AtomicU64], check: u64, now: u64, w: &Word) -> (u64, u64) {
        let current = now / self.bucket_ms;
        let since = if w.state == BreakerState::Closed {
            w.time / self.bucket_ms
        } else {
            current + 1 // not judged outside closed; report nothing stale
        };
        let (mut requests, mut failures) = (0, 0);
        for i in 0..NBUCKETS as usize {
            let b = rec[W_BUCKETS + i].load(Ordering::Relaxed);
            if b >> 56 != check {
                continue;
            }
            let age = current.wrapping_sub((b >> 40) & 0xFFFF) & 0xFFFF;
            // (A stamp from a clock far ahead can look recent modulo 2^16 near time zero.)
            if age >= NBUCKETS || current.checked_sub(age).is_none_or(|b| b < since) {
                continue;
            }
            requests += b & COUNT_MAX;
            failures += (b >> 20) & COUNT_MAX;
        }
        (requests, failures)
    }

    pub(super) fn add_to_window(&self, rec: &[AtomicU64], check: u64, now: u64, failed: bool) {
        let current = now / self.bucket_ms;
        let word = &rec[W_BUCKETS + (current % NBUCKETS) as usize];
        let stamp = (check << 56) | ((current & 0xFFFF) << 40);
        let f = failed as u64;
        loop {
            let b = word.load(Ordering::Relaxed);
            let next = if b & !((1 << 40) - 1) == stamp {
                let requests = ((b & COUNT_MAX) + 1).min(COUNT_MAX);
                let failures = (((b >> 20) & COUNT_MAX) + f).min(COUNT_MAX);
                stamp | (failures << 20) | requests
            } else {
                stamp | (f << 20) | 1
            };
            if word
                .compare_exchange_weak(b, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// The record of breaker `tag`, claiming a free or idle one if the breaker is new. An idle
    /// record's words read as a fresh breaker whether or not the check bytes happen to match,
    /// so handing it over loses nothing.
    pub(super) fn find_or_claim(&self, tag: u64, now: u64) -> Option<usize> {
        let occupant = |rec: &[AtomicU64], owner: u64| {
            if self.is_idle(rec, owner, now) {
                Occupant::Reusable
            } else {
                Occupant::Live
            }
        };
        self.table.find_or_claim(tag, PROBE, occupant, swap_tag)
    }

    /// Closed, no consecutive failures, no failures in the window: the all-zero equivalent.
    fn is_idle(&self, rec: &[AtomicU64], tag: u64, now: u64) -> bool {
        let check = check_of(tag);
        let w = Word::decode(rec[W_STATE].load(Ordering::Acquire), check);
        w.state == BreakerState::Closed && w.n == 0 && self.window(rec, check, now, &w).1 == 0
    }
}
