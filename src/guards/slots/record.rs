//! How a user's record is found or claimed, and how an idle one changes hands: every lease
//! word locked around the swap of its tag (see the module docs), so an acquirer racing with the
//! hand-over notices and gives its lease back.

use std::sync::atomic::{AtomicU64, Ordering};

use super::lease::{is_free, is_live, next_generation, pack, pid_of};
use super::{MAX_SLOTS, Slots};
use crate::shm::table::{Occupant, Probe, TAG_WORD, swap_tag};

/// Records examined from a key's hash position, and looks after a lost race for an idle record
/// or while one nearby is being handed over.
pub(super) const PROBE: Probe = Probe {
    window: 16,
    rounds: 16,
};
/// How long a lock placed while handing a record over lasts, in seconds.
const LOCK_SECS: u64 = 2;

impl Slots {
    /// The record of key `tag`, claiming a free or idle one (every lease free) if the key is
    /// new; an idle record changes hands by [`hand_over`](Self::hand_over).
    pub(super) fn find_or_claim(&self, tag: u64, now: u64) -> Option<usize> {
        let occupant = |rec: &[AtomicU64], _owner: u64| {
            let mut words = [0u64; MAX_SLOTS as usize];
            for (w, word) in words.iter_mut().zip(&rec[1..]) {
                *w = word.load(Ordering::SeqCst);
            }
            if words.iter().any(|&w| pid_of(w) == 0 && is_live(w, now)) {
                // Locked: a hand-over is in progress.
                Occupant::Busy
            } else if words.iter().all(|&w| is_free(w, now)) {
                Occupant::Reusable
            } else {
                Occupant::Live
            }
        };
        let take_over = |rec: &[AtomicU64], old: u64, new: u64| self.hand_over(rec, old, new, now);
        self.table.find_or_claim(tag, PROBE, occupant, take_over)
    }

    /// Moves an idle record from key `old` to key `new`: lock every lease word, swap the tag,
    /// unlock. Returns whether the record now belongs to `new`.
    fn hand_over(&self, rec: &[AtomicU64], old: u64, new: u64, now: u64) -> bool {
        let lock = pack(0, next_generation(), now / 1000 + 1 + LOCK_SECS);
        let mut locked = 0;
        for word in &rec[1..] {
            let w = word.load(Ordering::SeqCst);
            if !is_free(w, now)
                || word
                    .compare_exchange(w, lock, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
            {
                break;
            }
            locked += 1;
        }
        // The tag changes as in every table (`shm::table::swap_tag`); the locks around the
        // swap are what keep an acquirer from taking a lease of the record meanwhile.
        let mine = locked == rec.len() - 1 && swap_tag(rec, old, new);
        for word in &rec[1..1 + locked] {
            let _ = word.compare_exchange(lock, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
        // Not swapped here (a lease was taken, or another process is handing the record over):
        // it may still have gone to this very key.
        mine || rec[TAG_WORD].load(Ordering::Acquire) == new
    }
}
