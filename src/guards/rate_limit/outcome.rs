//! What one decision found, in raw numbers, and the [`Decision`] made from them: the two steps
//! every backend shares (the shared-memory table reaches the numbers by compare-and-swaps, Redis
//! by its script; both answer through [`Action::decision`]).

use super::Decision;
use super::config::Action;
use super::record::{FULL, UNITS_PER_MS};

/// The raw result of one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Outcome {
    /// The decision's time, ms.
    pub(super) now: u64,
    pub(super) allowed: bool,
    /// The TAT after the decision (units; the unchanged one when refused or peeked).
    pub(super) tat_after: u64,
    /// When refused by the GCRA: units until a retry can succeed.
    pub(super) retry_units: u64,
    /// The penalty (‰) the decision was judged at, and the one after it (higher if refused).
    pub(super) penalty_read: u64,
    pub(super) penalty_after: u64,
    /// The end of a DDoS block in force after the decision (0: none).
    pub(super) block_until: u64,
    /// Refused by a block already in force: nothing else was looked at.
    pub(super) pre_blocked: bool,
}

impl Outcome {
    /// A refusal at `penalty`, nothing looked at yet; the backend fills in the rest.
    pub(super) fn read(now: u64, penalty: u64) -> Outcome {
        Outcome {
            now,
            allowed: false,
            tat_after: 0,
            retry_units: 0,
            penalty_read: penalty,
            penalty_after: penalty,
            block_until: 0,
            pre_blocked: false,
        }
    }
}

impl Action {
    /// The answer to a decision that came to `o`.
    pub(super) fn decision(&self, o: &Outcome) -> Decision {
        let one = self.unit_cost(self.factor(o.penalty_read));
        let limit = (self.tau / one) as u32;
        let blocked_for = o.block_until.saturating_sub(o.now);
        if o.pre_blocked {
            return Decision {
                allowed: false,
                limit,
                remaining: 0,
                retry_after_ms: blocked_for,
                reset_after_ms: blocked_for,
                reputation_permille: (FULL - o.penalty_read) as u32,
                blocked: true,
                tracked: true,
            };
        }
        let now_u = o.now * UNITS_PER_MS;
        let mut d = Decision {
            allowed: o.allowed,
            limit,
            remaining: ((now_u + self.tau).saturating_sub(o.tat_after) / one) as u32,
            retry_after_ms: o.retry_units.div_ceil(UNITS_PER_MS),
            reset_after_ms: o.tat_after.saturating_sub(now_u).div_ceil(UNITS_PER_MS),
            reputation_permille: (FULL - o.penalty_after) as u32,
            blocked: false,
            tracked: true,
        };
        if o.block_until > 0 {
            d.blocked = true;
            d.retry_after_ms = blocked_for;
            d.reset_after_ms = d.reset_after_ms.max(blocked_for);
        }
        d
    }
}
