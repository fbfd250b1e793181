//! Adaptive allowance and the DDoS guard (see the module docs): a refusal lowers the key's
//! reputation, which recovers with time, and a refusal at zero reputation blocks the key for a
//! period that doubles on each repeat.

use std::sync::atomic::{AtomicU64, Ordering};

use super::RateLimiter;
use super::config::Action;
use super::record::{FULL, SMALL_MASK, W_BLOCK, W_REP, pack_small, unpack_small};
use crate::shm::table::{TAG_WORD, check_of};

impl RateLimiter {
    /// Lowers the reputation after a refusal; returns whether it was already zero (`None` if
    /// the record no longer belongs to the key).
    pub(super) fn penalise(
        &self,
        rec: &[AtomicU64],
        tag: u64,
        now: u64,
        a: &Action,
    ) -> Option<bool> {
        let check = check_of(tag);
        loop {
            let w = rec[W_REP].load(Ordering::Acquire);
            if w >> 56 != check && rec[TAG_WORD].load(Ordering::Acquire) != tag {
                return None;
            }
            let p = decayed(w, check, now, a.limit.recovery_ms);
            let np = (p + a.limit.penalty_permille as u64).min(FULL);
            if rec[W_REP]
                .compare_exchange_weak(
                    w,
                    pack_small(check, np, now),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                return Some(p >= FULL);
            }
        }
    }

    /// Starts a block (unless one is already in force); returns its end.
    pub(super) fn block(&self, rec: &[AtomicU64], tag: u64, now: u64, a: &Action) -> Option<u64> {
        let check = check_of(tag);
        loop {
            let w = rec[W_BLOCK].load(Ordering::Acquire);
            if w >> 56 != check && rec[TAG_WORD].load(Ordering::Acquire) != tag {
                return None;
            }
            let (strikes, until) = unpack_small(w, check);
            if until > now {
                return Some(until);
            }
            let prev = if now - until >= a.limit.block_forget_ms {
                0
            } else {
                strikes
            };
            let n = (prev + 1).min(SMALL_MASK);
            let dur = a
                .limit
                .block_base_ms
                .checked_shl((n - 1) as u32)
                .filter(|d| d >> (n - 1) == a.limit.block_base_ms)
                .unwrap_or(u64::MAX)
                .min(a.limit.block_max_ms);
            let end = now + dur;
            if rec[W_BLOCK]
                .compare_exchange_weak(
                    w,
                    pack_small(check, n, end),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                return Some(end);
            }
        }
    }
}

/// The penalty in a reputation word, decayed to `now`.
pub(super) fn decayed(w: u64, check: u64, now: u64, recovery_ms: u64) -> u64 {
    let (p, stamp) = unpack_small(w, check);
    if p == 0 {
        return 0;
    }
    let recovered = (now.saturating_sub(stamp) as u128 * FULL as u128 / recovery_ms as u128)
        .min(FULL as u128) as u64;
    p.saturating_sub(recovered)
}
