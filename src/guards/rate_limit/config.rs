//! An action's limit ([`ActionLimit`]), the limiter's settings ([`LimiterConfig`]), and the
//! compiled form of an action that decisions use.

use std::sync::Arc;
use std::time::Duration;

use super::DEFAULT_CAPACITY;
use super::record::{FULL, UNITS_PER_MS};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::guards::{Fnv, ms};

/// The limit of one action, applied to each key separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionLimit {
    /// Requests allowed per period at full reputation (> 0).
    pub rate: u32,
    /// The period, in ms (> 0). `rate` per `period_ms` is the sustained rate.
    pub period_ms: u64,
    /// Requests allowed at once from a rested key (> 0).
    pub burst: u32,
    /// Reputation (‰) lost per refused request; 0 turns adaptation (and blocking) off.
    pub penalty_permille: u32,
    /// Allowance at zero reputation, as ‰ of the full one (1–1000).
    pub min_allowance_permille: u32,
    /// Time for reputation to recover from 0 to full, in ms (> 0).
    pub recovery_ms: u64,
    /// First DDoS block, in ms; 0 = never block.
    pub block_base_ms: u64,
    /// Longest block, in ms (blocks double up to it).
    pub block_max_ms: u64,
    /// Time without a block after which the repeat count starts again, in ms.
    pub block_forget_ms: u64,
}

impl ActionLimit {
    /// `rate` requests per `period`, all of them allowed at once from a rested key; adaptive
    /// with the default penalty (100 ‰ per refusal, so ten refusals in quick succession take
    /// reputation to 0), floor (250 ‰) and recovery (10 minutes); no blocking.
    pub fn new(rate: u32, period: Duration) -> ActionLimit {
        ActionLimit {
            rate,
            period_ms: ms(period),
            burst: rate,
            penalty_permille: 100,
            min_allowance_permille: 250,
            recovery_ms: 600_000,
            block_base_ms: 0,
            block_max_ms: 0,
            block_forget_ms: 0,
        }
    }

    /// `rate` requests per minute (see [`ActionLimit::new`]).
    pub fn per_minute(rate: u32) -> ActionLimit {
        ActionLimit::new(rate, Duration::from_secs(60))
    }

    /// Sets the burst (requests allowed at once).
    pub fn burst(mut self, burst: u32) -> ActionLimit {
        self.burst = burst;
        self
    }

    /// Sets the adaptation: reputation lost per refusal, allowance at zero reputation (‰ of the
    /// full one) and the time to recover from 0 to full.
    pub fn adaptive(
        mut self,
        penalty_permille: u32,
        min_allowance_permille: u32,
        recovery: Duration,
    ) -> ActionLimit {
        self.penalty_permille = penalty_permille;
        self.min_allowance_permille = min_allowance_permille;
        self.recovery_ms = ms(recovery);
        self
    }

    /// Turns adaptation off: the allowance never changes (and no key is ever blocked).
    pub fn fixed(mut self) -> ActionLimit {
        self.penalty_permille = 0;
        self.block_base_ms = 0;
        self
    }

    /// Blocks keys refused at zero reputation: for `base` the first time, doubling on each
    /// repeat up to `max`; the repeat count is forgotten after `forget` without a block.
    pub fn block(mut self, base: Duration, max: Duration, forget: Duration) -> ActionLimit {
        self.block_base_ms = ms(base);
        self.block_max_ms = ms(max).max(self.block_base_ms);
        self.block_forget_ms = ms(forget);
        self
    }

    fn validate(&self, name: &str) -> Result<()> {
        let bad = |what: &str| Err(Error::InvalidArgument(format!("limit {name:?}: {what}")));
        if self.rate == 0 || self.period_ms == 0 || self.burst == 0 {
            return bad("rate, period and burst must be positive");
        }
        // The TAT arithmetic stays far from overflow with these bounds (a year, a million).
        if self.period_ms > 366 * 86_400_000 || self.burst > 1_000_000 {
            return bad("period at most a year and burst at most 1,000,000");
        }
        let t = self.period_ms * UNITS_PER_MS / self.rate as u64;
        if t == 0 {
            return bad("rate too high for the 1/64 ms resolution");
        }
        // The TAT word holds 56 bits: keep the tolerance (burst × interval) to 2^50 units
        // (about 560 years), far from overflow whatever the clock says.
        if t * self.burst as u64 > 1 << 50 {
            return bad("burst × (period / rate) must stay under 500 years");
        }
        if self.penalty_permille > FULL as u32 {
            return bad("penalty_permille must be 0..=1000");
        }
        if !(1..=1000).contains(&self.min_allowance_permille) || self.recovery_ms == 0 {
            return bad("min_allowance_permille must be 1..=1000 and recovery_ms positive");
        }
        if self.block_base_ms > 0 && self.penalty_permille == 0 {
            return bad("blocking needs adaptation (penalty_permille > 0)");
        }
        Ok(())
    }
}

/// Settings for [`RateLimiter::open`](super::RateLimiter::open) and
/// [`RateLimiter::in_process`](super::RateLimiter::in_process).
///
/// Processes sharing a table should open it with the same actions and limits: the table holds
/// each key's state, the limits come from the caller.
#[derive(Debug, Clone)]
pub struct LimiterConfig {
    /// Named limits. Default: `post` 20 per minute (burst 20), `poll` 180 per minute
    /// (burst 30: three connection slots re-polling every second in emergency mode stay
    /// inside it), `ip` 600 per minute (burst 100) with DDoS blocks of 1 minute doubling to
    /// 1 hour, forgotten after a day.
    pub actions: Vec<(String, ActionLimit)>,
    /// Records in the table (rounded up to a power of two, at least 64). Only the process that
    /// creates a shared table picks it; others use the file's.
    pub capacity: usize,
    /// The source of time.
    pub clock: Arc<dyn Clock>,
}

impl Default for LimiterConfig {
    fn default() -> LimiterConfig {
        LimiterConfig {
            actions: vec![
                ("post".into(), ActionLimit::per_minute(20)),
                ("poll".into(), ActionLimit::per_minute(180).burst(30)),
                (
                    "ip".into(),
                    ActionLimit::per_minute(600).burst(100).block(
                        Duration::from_secs(60),
                        Duration::from_secs(3600),
                        Duration::from_secs(86_400),
                    ),
                ),
            ],
            capacity: DEFAULT_CAPACITY,
            clock: Arc::new(SystemClock),
        }
    }
}

impl LimiterConfig {
    /// Adds an action, or replaces the limit of an existing one.
    pub fn action(mut self, name: impl Into<String>, limit: ActionLimit) -> LimiterConfig {
        let name = name.into();
        match self.actions.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = limit,
            None => self.actions.push((name, limit)),
        }
        self
    }

    /// Sets the clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> LimiterConfig {
        self.clock = clock;
        self
    }
}

impl LimiterConfig {
    /// The actions, checked (unique, non-empty names; limits in range) and compiled.
    pub(super) fn compile(&self) -> Result<Vec<Action>> {
        let mut out: Vec<Action> = Vec::new();
        for (name, limit) in &self.actions {
            if name.is_empty() || out.iter().any(|a| a.name == *name) {
                return Err(Error::InvalidArgument(format!(
                    "limit names must be unique and non-empty: {name:?}"
                )));
            }
            limit.validate(name)?;
            let mut prefix = Fnv::new();
            prefix.write(name.as_bytes());
            let t = limit.period_ms * UNITS_PER_MS / limit.rate as u64;
            out.push(Action {
                name: name.clone(),
                prefix,
                limit: *limit,
                t,
                tau: t * limit.burst as u64,
            });
        }
        Ok(out)
    }
}

/// An action as decisions use it: its limit, with the hash prefix of its name and the GCRA
/// interval and tolerance computed once.
#[derive(Debug)]
pub(super) struct Action {
    pub(super) name: String,
    pub(super) prefix: Fnv,
    pub(super) limit: ActionLimit,
    /// Emission interval T, in units.
    pub(super) t: u64,
    /// Tolerance burst·T, in units.
    pub(super) tau: u64,
}

impl Action {
    /// Allowance factor (‰) at a penalty.
    pub(super) fn factor(&self, penalty: u64) -> u64 {
        let min = self.limit.min_allowance_permille as u64;
        min + (FULL - min) * (FULL - penalty) / FULL
    }

    /// Cost of one request at a factor, in units (never more than the whole tolerance).
    pub(super) fn unit_cost(&self, factor: u64) -> u64 {
        (self.t * FULL).div_ceil(factor).min(self.tau)
    }
}
