//! Adaptive rate limiting: GCRA per key, a reputation that tightens it, and a DDoS block.
//!
//! ## The rule
//!
//! Each action (`post`, `poll`, `ip`, …) has an [`ActionLimit`]: `rate` requests per
//! `period_ms`, of which up to `burst` may come at once. It is enforced per `(action, key)` by
//! the generic cell rate algorithm: a key has a theoretical arrival time (TAT); a request of
//! cost `c` at time `now` is allowed when `max(TAT, now) + c·T − now ≤ burst·T` (with
//! `T = period / rate`), and then moves the TAT to `max(TAT, now) + c·T`. One word per key, one
//! compare-and-swap per allowed request, so every process on the host agrees exactly: eight
//! processes hammering one key are allowed exactly `burst` requests between them.
//!
//! ## Adaptive allowance
//!
//! A key also has a *reputation* from 0 to 1000 (‰). Each refused request costs it
//! `penalty_permille`; it recovers linearly with time, from 0 to full in `recovery_ms` (good
//! behaviour is simply not being refused). At reputation `r` a request costs `T / f` instead of
//! `T`, where `f = min + (1000 − min)·r/1000` ‰ and `min = min_allowance_permille`: a key that
//! keeps hitting the limit sees both its burst and its rate shrink to `min` of the configured
//! ones, and regains them as it behaves.
//!
//! ## DDoS guard
//!
//! With `block_base_ms > 0`, a key refused while its reputation is already 0 is blocked
//! outright for `block_base_ms`, doubled on each repeat (up to `block_max_ms`). A block expires
//! by itself; the repeat count is forgotten after `block_forget_ms` without a block. Blocked
//! decisions consume nothing and change nothing. The default `ip` action uses this.
//!
//! ## Storage and crash safety
//!
//! A key is a 32-byte record in an open-addressing table (`<db>-lmsrt-limits` for the shared
//! backend; process memory for [`RateLimiter::in_process`]):
//!
//! | word | contents |
//! | --- | --- |
//! | 0 | tag: the key's 64-bit hash (0 = free record) |
//! | 1 | check(8) · TAT (56 bits, in 1/64 ms since the Unix epoch) |
//! | 2 | check(8) · penalty (10 bits, 0–1000 = 1000 − reputation) · stamp (46 bits, ms) |
//! | 3 | check(8) · strikes (10 bits) · blocked-until (46 bits, ms) |
//!
//! Each word changes by one compare-and-swap and the three state words are independent facts
//! (any combination is a valid state), so a process killed anywhere leaves the record valid and
//! nobody waits for it. The check byte is the top byte of the tag: a word whose check byte is
//! not the owner's belongs to a previous owner of the record and reads as zero.
//!
//! ## A full table fails open
//!
//! A new key takes the first free record within 32 of its hash position, else the first
//! *stale* one (TAT in the past, reputation recovered, no block in force or remembered: a state
//! equal to all-zero, so nothing is lost). If none is free or stale the decision is allowed and
//! marked `tracked: false`, and the table's `untracked` count goes up. Failing open is
//! deliberate: a full table means more keys are active at once than were provisioned, and
//! refusing every new key would turn a sizing mistake into an outage for legitimate users,
//! while each of the keys already tracked (the heavy ones) stays limited. Size `capacity` well
//! above the number of keys active within one period (the default, 65,536 keys in 2 MiB, is).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::{Fnv, ms};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::metrics::{Counter, Metrics};
use crate::shm::sidecar;
use crate::shm::table::{Occupant, Probe, TAG_WORD, Table, check_of, swap_tag, tag_of};

/// Records in a default table.
pub const DEFAULT_CAPACITY: usize = 65_536;
/// Suffix of the shared table's file, appended to the database path.
pub const FILE_SUFFIX: &str = "-lmsrt-limits";

const MAGIC: u64 = u64::from_le_bytes(*b"LMSRLIM1");
const RECORD_WORDS: usize = 4;
const W_TAT: usize = 1;
const W_REP: usize = 2;
const W_BLOCK: usize = 3;
/// Header word counting decisions made untracked because the table was full.
const H_UNTRACKED: usize = 2;
/// Records examined from a key's hash position, and looks after a lost race for a stale one.
const PROBE: Probe = Probe {
    window: 32,
    rounds: 4,
};
/// TAT resolution: 1/64 ms.
const UNITS_PER_MS: u64 = 64;
const PAYLOAD_MASK: u64 = (1 << 56) - 1;
const STAMP_BITS: u32 = 46;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;
const SMALL_MASK: u64 = (1 << 10) - 1;
const FULL: u64 = 1000;

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

/// Settings for [`RateLimiter::open`] and [`RateLimiter::in_process`].
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

/// The answer to one rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// The key's current allowance: requests a rested key could make at once at its present
    /// reputation (the configured burst at full reputation).
    pub limit: u32,
    /// Requests of cost 1 that would be allowed right after this decision.
    pub remaining: u32,
    /// When refused, ms until a retry can succeed (the `Retry-After`); 0 when allowed.
    pub retry_after_ms: u64,
    /// Ms until the key's allowance is full again.
    pub reset_after_ms: u64,
    /// The key's reputation, 0–1000 ‰.
    pub reputation_permille: u32,
    /// Refused by the DDoS guard: the key is blocked for `retry_after_ms`.
    pub blocked: bool,
    /// False when the table was full and the decision was allowed without tracking the key.
    pub tracked: bool,
}

impl Decision {
    /// `Ok(self)` when allowed, else [`Error::RateLimited`] with the retry delay.
    pub fn into_result(self) -> Result<Decision> {
        if self.allowed {
            Ok(self)
        } else {
            Err(Error::RateLimited {
                retry_after_ms: self.retry_after_ms,
            })
        }
    }
}

/// Counts about a limiter's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LimiterStats {
    /// Records in the table.
    pub capacity: usize,
    /// Records holding a key (current or stale).
    pub used: usize,
    /// Decisions allowed untracked because the table was full, since the file was created.
    pub untracked: u64,
}

#[derive(Debug)]
struct Action {
    name: String,
    prefix: Fnv,
    limit: ActionLimit,
    /// Emission interval T, in units.
    t: u64,
    /// Tolerance burst·T, in units.
    tau: u64,
}

impl Action {
    /// Allowance factor (‰) at a penalty.
    fn factor(&self, penalty: u64) -> u64 {
        let min = self.limit.min_allowance_permille as u64;
        min + (FULL - min) * (FULL - penalty) / FULL
    }

    /// Cost of one request at a factor, in units (never more than the whole tolerance).
    fn unit_cost(&self, factor: u64) -> u64 {
        (self.t * FULL).div_ceil(factor).min(self.tau)
    }
}

/// A rate limiter over a table shared by every process on the host, or local to this process.
///
/// `Send + Sync`; decisions take no lock. See the [module docs](self) for the rule.
///
/// ```
/// use std::sync::Arc;
/// use lms_realtime::clock::ManualClock;
/// use lms_realtime::guards::{LimiterConfig, RateLimiter};
///
/// let clock = ManualClock::new(1_700_000_000_000);
/// let limiter = RateLimiter::in_process(LimiterConfig::default().clock(Arc::new(clock.clone())))?;
/// for _ in 0..20 {
///     assert!(limiter.check("post", "user-7")?.allowed);
/// }
/// let d = limiter.check("post", "user-7")?;
/// assert!(!d.allowed);
/// assert_eq!(d.retry_after_ms, 3_000); // 20 per minute: one more every 3 s
/// assert!(limiter.check("post", "user-8")?.allowed); // keys are independent
/// # Ok::<(), lms_realtime::Error>(())
/// ```
#[derive(Debug)]
pub struct RateLimiter {
    table: Table,
    actions: Vec<Action>,
    clock: Arc<dyn Clock>,
    /// Longest recovery and block memory of the configured actions: a record idle for longer
    /// is certainly stale whatever action it belongs to.
    max_recovery_ms: u64,
    max_forget_ms: u64,
    metrics: Option<Arc<Metrics>>,
}

impl RateLimiter {
    /// Opens the limiter shared by every process using the database at `db_path`; its table
    /// lives in `<db_path>-lmsrt-limits` (created zero-filled if missing).
    pub fn open(db_path: impl AsRef<Path>, config: LimiterConfig) -> Result<RateLimiter> {
        let path = sidecar(db_path.as_ref(), FILE_SUFFIX);
        let actions = Self::actions(&config)?;
        let table = Table::open_shared(&path, MAGIC, RECORD_WORDS, config.capacity)?;
        Ok(Self::new(table, actions, config))
    }

    /// A limiter private to this process, with the same semantics (for the daemon's hot path
    /// and for tests).
    pub fn in_process(config: LimiterConfig) -> Result<RateLimiter> {
        let actions = Self::actions(&config)?;
        let table = Table::in_process(MAGIC, RECORD_WORDS, config.capacity)?;
        Ok(Self::new(table, actions, config))
    }

    /// Counts decisions into `metrics` (`limiter_allowed`, `limiter_denied`, `limiter_blocked`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> RateLimiter {
        self.metrics = Some(metrics);
        self
    }

    fn actions(config: &LimiterConfig) -> Result<Vec<Action>> {
        let mut out: Vec<Action> = Vec::new();
        for (name, limit) in &config.actions {
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

    fn new(table: Table, actions: Vec<Action>, config: LimiterConfig) -> RateLimiter {
        let max_recovery_ms = actions
            .iter()
            .map(|a| a.limit.recovery_ms)
            .max()
            .unwrap_or(0);
        let max_forget_ms = actions
            .iter()
            .map(|a| a.limit.block_forget_ms)
            .max()
            .unwrap_or(0);
        RateLimiter {
            table,
            actions,
            clock: config.clock,
            max_recovery_ms,
            max_forget_ms,
            metrics: None,
        }
    }

    /// Decides one request of `action` by `key` (a user id, an IP…), consuming allowance when
    /// allowed. An unknown action or an empty key is [`Error::InvalidArgument`].
    pub fn check(&self, action: &str, key: &str) -> Result<Decision> {
        self.check_cost(action, key, 1)
    }

    /// Like [`check`](Self::check) for a request worth `cost` (1..=burst) ordinary ones.
    pub fn check_cost(&self, action: &str, key: &str, cost: u32) -> Result<Decision> {
        let a = self.action(action, key, cost)?;
        let d = self.decide(a, key, cost, true);
        if let Some(m) = &self.metrics {
            m.incr(if d.allowed {
                Counter::LimiterAllowed
            } else if d.blocked {
                Counter::LimiterBlocked
            } else {
                Counter::LimiterDenied
            });
        }
        Ok(d)
    }

    /// What [`check`](Self::check) would answer now, without consuming anything or counting a
    /// refusal.
    pub fn peek(&self, action: &str, key: &str) -> Result<Decision> {
        let a = self.action(action, key, 1)?;
        Ok(self.decide(a, key, 1, false))
    }

    /// Forgets a key's state (allowance, reputation, block), e.g. when an administrator
    /// unblocks it.
    pub fn reset(&self, action: &str, key: &str) -> Result<()> {
        let a = self.action(action, key, 1)?;
        let tag = self.tag(a, key);
        if let Some(idx) = self.table.find(tag, PROBE.window) {
            let rec = self.table.record(idx);
            let zero = check_of(tag) << 56;
            for w in [W_TAT, W_REP, W_BLOCK] {
                rec[w].store(zero, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Counts about the table.
    pub fn stats(&self) -> LimiterStats {
        let used = (0..self.table.capacity())
            .filter(|&i| self.table.record(i)[TAG_WORD].load(Ordering::Relaxed) != 0)
            .count();
        LimiterStats {
            capacity: self.table.capacity(),
            used,
            untracked: self.table.header(H_UNTRACKED).load(Ordering::Relaxed),
        }
    }

    /// The shared table's file (`None` for an in-process limiter).
    pub fn path(&self) -> Option<&Path> {
        self.table.path()
    }

    /// The configured limit of an action.
    pub fn limit(&self, action: &str) -> Option<ActionLimit> {
        self.actions
            .iter()
            .find(|a| a.name == action)
            .map(|a| a.limit)
    }

    fn action(&self, action: &str, key: &str, cost: u32) -> Result<&Action> {
        let a = self
            .actions
            .iter()
            .find(|a| a.name == action)
            .ok_or_else(|| {
                Error::InvalidArgument(format!("unknown rate-limit action {action:?}"))
            })?;
        if key.is_empty() {
            return Err(Error::InvalidArgument("rate-limit key is empty".into()));
        }
        if cost == 0 || cost > a.limit.burst {
            return Err(Error::InvalidArgument(format!(
                "cost {cost}: expected 1..={} for {action:?}",
                a.limit.burst
            )));
        }
        Ok(a)
    }

    fn tag(&self, a: &Action, key: &str) -> u64 {
        let mut h = a.prefix;
        h.write(key.as_bytes());
        tag_of(h.finish())
    }

    fn decide(&self, a: &Action, key: &str, cost: u32, consume: bool) -> Decision {
        let now = self.clock.now_ms().max(0) as u64;
        let tag = self.tag(a, key);
        for _ in 0..4 {
            let Some(idx) = self.find_or_claim(tag, now) else {
                break;
            };
            // `None`: the record was handed to another key under us (only a stale record can
            // be); look again.
            if let Some(d) = self.decide_in(self.table.record(idx), tag, a, now, cost, consume) {
                return d;
            }
        }
        if consume {
            self.table
                .header(H_UNTRACKED)
                .fetch_add(1, Ordering::Relaxed);
        }
        Decision {
            allowed: true,
            limit: a.limit.burst,
            remaining: a.limit.burst - cost,
            retry_after_ms: 0,
            reset_after_ms: 0,
            reputation_permille: FULL as u32,
            blocked: false,
            tracked: false,
        }
    }

    fn decide_in(
        &self,
        rec: &[AtomicU64],
        tag: u64,
        a: &Action,
        now: u64,
        cost: u32,
        consume: bool,
    ) -> Option<Decision> {
        let check = check_of(tag);
        // The DDoS block, then the reputation: both only read here.
        let (_, until) = unpack_small(rec[W_BLOCK].load(Ordering::Acquire), check);
        let penalty = decayed(
            rec[W_REP].load(Ordering::Acquire),
            check,
            now,
            a.limit.recovery_ms,
        );
        let factor = a.factor(penalty);
        let one = a.unit_cost(factor);
        let limit = (a.tau / one) as u32;
        let reputation_permille = (FULL - penalty) as u32;
        if until > now {
            return Some(Decision {
                allowed: false,
                limit,
                remaining: 0,
                retry_after_ms: until - now,
                reset_after_ms: until - now,
                reputation_permille,
                blocked: true,
                tracked: true,
            });
        }

        // GCRA: the linearisation point is the compare-and-swap of the TAT word.
        let now_u = now * UNITS_PER_MS;
        let c = (one * cost as u64).min(a.tau);
        let (allowed, tat_after, retry_units) = loop {
            let w = rec[W_TAT].load(Ordering::Acquire);
            let tat = if w >> 56 == check {
                w & PAYLOAD_MASK
            } else if rec[TAG_WORD].load(Ordering::Acquire) == tag {
                0 // left by the record's previous (stale) owner
            } else {
                return None;
            };
            let base = tat.max(now_u);
            let new_tat = base + c;
            if new_tat - now_u > a.tau {
                break (false, base, new_tat - a.tau - now_u);
            }
            if !consume {
                break (true, base, 0);
            }
            let nw = (check << 56) | (new_tat & PAYLOAD_MASK);
            if rec[W_TAT]
                .compare_exchange_weak(w, nw, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                break (true, new_tat, 0);
            }
        };

        let mut decision = Decision {
            allowed,
            limit,
            remaining: ((now_u + a.tau).saturating_sub(tat_after) / one) as u32,
            retry_after_ms: retry_units.div_ceil(UNITS_PER_MS),
            reset_after_ms: (tat_after - now_u).div_ceil(UNITS_PER_MS),
            reputation_permille,
            blocked: false,
            tracked: true,
        };
        if !allowed && consume && a.limit.penalty_permille > 0 {
            let Some(was_zero) = self.penalise(rec, tag, now, a) else {
                return Some(decision);
            };
            decision.reputation_permille = (FULL
                - decayed(
                    rec[W_REP].load(Ordering::Acquire),
                    check,
                    now,
                    a.limit.recovery_ms,
                )) as u32;
            if was_zero
                && a.limit.block_base_ms > 0
                && let Some(until) = self.block(rec, tag, now, a)
            {
                decision.blocked = true;
                decision.retry_after_ms = until - now;
                decision.reset_after_ms = decision.reset_after_ms.max(until - now);
            }
        }
        Some(decision)
    }

    /// Lowers the reputation after a refusal; returns whether it was already zero (`None` if
    /// the record no longer belongs to the key).
    fn penalise(&self, rec: &[AtomicU64], tag: u64, now: u64, a: &Action) -> Option<bool> {
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
    fn block(&self, rec: &[AtomicU64], tag: u64, now: u64, a: &Action) -> Option<u64> {
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

    /// The record holding `tag`, claiming a free or stale one if the key is new.
    fn find_or_claim(&self, tag: u64, now: u64) -> Option<usize> {
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
fn pack_small(check: u64, value: u64, time_ms: u64) -> u64 {
    (check << 56) | ((value & SMALL_MASK) << STAMP_BITS) | (time_ms & STAMP_MASK)
}

/// The `(value, time)` of a word, or zeros if it belongs to another key.
fn unpack_small(w: u64, check: u64) -> (u64, u64) {
    if w >> 56 != check {
        return (0, 0);
    }
    ((w >> STAMP_BITS) & SMALL_MASK, w & STAMP_MASK)
}

/// The penalty in a reputation word, decayed to `now`.
fn decayed(w: u64, check: u64, now: u64, recovery_ms: u64) -> u64 {
    let (p, stamp) = unpack_small(w, check);
    if p == 0 {
        return 0;
    }
    let recovered = (now.saturating_sub(stamp) as u128 * FULL as u128 / recovery_ms as u128)
        .min(FULL as u128) as u64;
    p.saturating_sub(recovered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const T0: i64 = 1_700_000_000_000;

    fn limiter(actions: &[(&str, ActionLimit)]) -> (RateLimiter, ManualClock) {
        let clock = ManualClock::new(T0);
        let mut config = LimiterConfig {
            actions: Vec::new(),
            ..LimiterConfig::default()
        }
        .clock(Arc::new(clock.clone()));
        for (n, l) in actions {
            config = config.action(*n, *l);
        }
        (RateLimiter::in_process(config).unwrap(), clock)
    }

    fn allowed(l: &RateLimiter, action: &str, key: &str, n: usize) -> usize {
        (0..n)
            .filter(|_| l.check(action, key).unwrap().allowed)
            .count()
    }

    #[test]
    fn burst_then_steady_rate() {
        let (l, clock) = limiter(&[("post", ActionLimit::per_minute(20).fixed())]);
        let first = l.check("post", "u").unwrap();
        assert_eq!(
            (first.allowed, first.limit, first.remaining),
            (true, 20, 19)
        );
        assert_eq!(first.reset_after_ms, 3_000);
        assert_eq!(allowed(&l, "post", "u", 30), 19);
        let d = l.check("post", "u").unwrap();
        assert_eq!(
            (d.allowed, d.remaining, d.retry_after_ms),
            (false, 0, 3_000)
        );
        assert_eq!(d.reset_after_ms, 60_000);
        clock.advance_ms(2_999);
        assert!(!l.check("post", "u").unwrap().allowed);
        clock.advance_ms(1);
        assert!(l.check("post", "u").unwrap().allowed);
        assert!(!l.check("post", "u").unwrap().allowed);
        // A full period of rest restores the whole burst, no more.
        clock.advance_ms(600_000);
        assert_eq!(allowed(&l, "post", "u", 100), 20);
    }

    #[test]
    fn keys_and_actions_are_independent() {
        let (l, _) = limiter(&[
            ("post", ActionLimit::per_minute(2).fixed()),
            ("poll", ActionLimit::per_minute(3).fixed()),
        ]);
        assert_eq!(allowed(&l, "post", "a", 10), 2);
        assert_eq!(allowed(&l, "post", "b", 10), 2);
        assert_eq!(allowed(&l, "poll", "a", 10), 3);
    }

    #[test]
    fn cost_and_peek() {
        let (l, _) = limiter(&[("x", ActionLimit::per_minute(10).fixed())]);
        let d = l.check_cost("x", "k", 4).unwrap();
        assert_eq!((d.allowed, d.remaining), (true, 6));
        let p = l.peek("x", "k").unwrap();
        assert_eq!((p.allowed, p.remaining), (true, 6));
        assert!(!l.check_cost("x", "k", 7).unwrap().allowed);
        assert!(l.check_cost("x", "k", 6).unwrap().allowed);
        assert!(!l.peek("x", "k").unwrap().allowed);
        assert!(l.check_cost("x", "k", 11).is_err());
        assert!(l.check_cost("x", "k", 0).is_err());
        assert!(l.check("nope", "k").is_err());
        assert!(l.check("x", "").is_err());
        let e = l.check("x", "k").unwrap().into_result().unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::RateLimited);
    }

    #[test]
    fn refusals_tighten_and_time_restores() {
        // 10 per minute, each refusal costs 200 ‰, floor 500 ‰, full recovery in 100 s.
        let limit = ActionLimit::per_minute(10).adaptive(200, 500, Duration::from_secs(100));
        let (l, clock) = limiter(&[("post", limit)]);
        assert_eq!(allowed(&l, "post", "u", 10), 10);
        // Five refusals: reputation 1000 → 0.
        for expected in [800, 600, 400, 200, 0] {
            let d = l.check("post", "u").unwrap();
            assert!(!d.allowed);
            assert_eq!(d.reputation_permille, expected);
        }
        // After a full period of rest the allowance is half the burst, at half the rate.
        clock.advance_ms(60_000);
        let d = l.peek("post", "u").unwrap();
        assert_eq!(d.reputation_permille, 600);
        assert_eq!(d.limit, 8, "factor 800 ‰ at reputation 600 ‰");
        // Recovery continues while the key behaves: after 100 s more it is whole again.
        clock.advance_ms(100_000);
        let d = l.peek("post", "u").unwrap();
        assert_eq!((d.reputation_permille, d.limit), (1000, 10));
        assert_eq!(allowed(&l, "post", "u", 20), 10);
    }

    #[test]
    fn zero_reputation_halves_the_rate() {
        let limit = ActionLimit::per_minute(10).adaptive(1000, 500, Duration::from_secs(3600));
        let (l, clock) = limiter(&[("post", limit)]);
        assert_eq!(allowed(&l, "post", "u", 11), 10);
        // Reputation is now 0 (one refusal at 1000 ‰): a request costs 12 s instead of 6 s.
        clock.advance_ms(6_000);
        let d = l.check("post", "u").unwrap();
        assert!(!d.allowed);
        assert_eq!(d.limit, 5);
        clock.advance_ms(6_000);
        assert!(l.check("post", "u").unwrap().allowed);
    }

    #[test]
    fn repeat_offenders_are_blocked_for_growing_periods() {
        let limit = ActionLimit::per_minute(5)
            .adaptive(500, 200, Duration::from_secs(600))
            .block(
                Duration::from_secs(60),
                Duration::from_secs(300),
                Duration::from_secs(3600),
            );
        let (l, clock) = limiter(&[("ip", limit)]);
        assert_eq!(allowed(&l, "ip", "10.0.0.1", 5), 5);
        // Two refusals take reputation to 0; the third starts a one-minute block.
        assert!(!l.check("ip", "10.0.0.1").unwrap().blocked);
        assert!(!l.check("ip", "10.0.0.1").unwrap().blocked);
        let d = l.check("ip", "10.0.0.1").unwrap();
        assert!(d.blocked && !d.allowed);
        assert_eq!(d.retry_after_ms, 60_000);
        // While blocked nothing passes, even after the rate would allow it.
        clock.advance_ms(59_999);
        let d = l.check("ip", "10.0.0.1").unwrap();
        assert!(d.blocked);
        assert_eq!(d.retry_after_ms, 1);
        // The block expires by itself; the key then has its (reduced) allowance.
        clock.advance_ms(1);
        assert!(l.check("ip", "10.0.0.1").unwrap().allowed);
        // Still at low reputation: the next violations re-block at once, for twice as long.
        let mut d = l.check("ip", "10.0.0.1").unwrap();
        while !d.blocked {
            d = l.check("ip", "10.0.0.1").unwrap();
        }
        assert_eq!(d.retry_after_ms, 120_000);
        clock.advance_ms(120_000);
        let mut d = l.check("ip", "10.0.0.1").unwrap();
        while !d.blocked {
            d = l.check("ip", "10.0.0.1").unwrap();
        }
        assert_eq!(d.retry_after_ms, 240_000);
        clock.advance_ms(240_000);
        let mut d = l.check("ip", "10.0.0.1").unwrap();
        while !d.blocked {
            d = l.check("ip", "10.0.0.1").unwrap();
        }
        assert_eq!(d.retry_after_ms, 300_000, "capped at block_max");
        // Other keys were never affected; an administrator can unblock.
        assert!(l.check("ip", "10.0.0.2").unwrap().allowed);
        l.reset("ip", "10.0.0.1").unwrap();
        assert!(l.check("ip", "10.0.0.1").unwrap().allowed);
        assert_eq!(l.peek("ip", "10.0.0.1").unwrap().reputation_permille, 1000);
    }

    #[test]
    fn block_repeat_count_is_forgotten() {
        let limit = ActionLimit::per_minute(1)
            .adaptive(1000, 1000, Duration::from_secs(1))
            .block(
                Duration::from_secs(10),
                Duration::from_secs(1000),
                Duration::from_secs(100),
            );
        let (l, clock) = limiter(&[("ip", limit)]);
        let strike = |l: &RateLimiter| {
            let mut d = l.check("ip", "k").unwrap();
            while !d.blocked {
                d = l.check("ip", "k").unwrap();
            }
            d.retry_after_ms
        };
        assert_eq!(strike(&l), 10_000);
        clock.advance_ms(10_000);
        assert_eq!(strike(&l), 20_000);
        clock.advance_ms(20_000 + 100_000);
        assert_eq!(strike(&l), 10_000, "a quiet spell resets the escalation");
    }

    #[test]
    fn full_table_evicts_stale_keys_then_fails_open() {
        let clock = ManualClock::new(T0);
        let config = LimiterConfig {
            actions: vec![("a".into(), ActionLimit::per_minute(1).fixed())],
            capacity: 64,
            clock: Arc::new(clock.clone()),
        };
        let l = RateLimiter::in_process(config).unwrap();
        // 64 keys fill the table (each now owes a minute).
        let keys: Vec<String> = (0..2000).map(|i| format!("k{i}")).collect();
        let mut tracked = 0;
        for k in &keys {
            if l.check("a", k).unwrap().tracked {
                tracked += 1;
            }
        }
        assert_eq!(tracked, 64);
        let s = l.stats();
        assert_eq!((s.used, s.untracked), (64, 2000 - 64));
        // An untracked key is allowed (fail open)...
        let d = l.check("a", "new").unwrap();
        assert!(d.allowed && !d.tracked);
        // ...tracked keys stay limited...
        let tracked_key = keys
            .iter()
            .find(|k| !l.peek("a", k).unwrap().allowed)
            .unwrap();
        assert!(!l.check("a", tracked_key).unwrap().allowed);
        // ...and once the old keys are rested, new keys take their records.
        clock.advance_ms(60_000);
        let d = l.check("a", "new").unwrap();
        assert!(d.tracked);
        assert!(!l.check("a", "new").unwrap().allowed);
    }

    #[test]
    fn threads_share_one_budget_exactly() {
        let (l, _) = limiter(&[("post", ActionLimit::per_minute(1000))]);
        let l = Arc::new(l);
        let total: usize = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || allowed(&l, "post", "hot", 2000))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(total, 1000);
    }

    #[test]
    fn shared_tables_agree_between_handles() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let clock = ManualClock::new(T0);
        let config = LimiterConfig::default().clock(Arc::new(clock.clone()));
        let a = RateLimiter::open(&db, config.clone()).unwrap();
        let b = RateLimiter::open(&db, config).unwrap();
        assert_eq!(allowed(&a, "post", "u", 15), 15);
        assert_eq!(allowed(&b, "post", "u", 15), 5);
        assert!(a.path().unwrap().ends_with("x.db-lmsrt-limits"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// A fixed limit never allows more than `burst + elapsed × rate / period` requests, and
        /// a refusal's retry hint is exact to the millisecond.
        #[test]
        fn fixed_limits_are_exact(
            gaps in proptest::collection::vec(0i64..10_000, 1..400),
            rate in 1u32..50,
            burst in 1u32..20,
        ) {
            let (l, clock) = limiter(&[("a", ActionLimit::per_minute(rate).burst(burst).fixed())]);
            let t_ms = 60_000.0 / rate as f64;
            let mut allowed = 0u64;
            let mut elapsed = 0i64;
            for gap in gaps {
                clock.advance_ms(gap);
                elapsed += gap;
                let d = l.check("a", "k").unwrap();
                if d.allowed {
                    allowed += 1;
                }
                let bound = burst as f64 + elapsed as f64 / t_ms;
                proptest::prop_assert!(allowed as f64 <= bound + 1e-9, "{} > {}", allowed, bound);
                // A retry at the hint succeeds, a millisecond earlier it would not (peeks).
                if !d.allowed {
                    let r = d.retry_after_ms as i64;
                    proptest::prop_assert!(r > 0);
                    clock.advance_ms(r - 1);
                    proptest::prop_assert!(!l.peek("a", "k").unwrap().allowed);
                    clock.advance_ms(1);
                    proptest::prop_assert!(l.peek("a", "k").unwrap().allowed);
                    clock.advance_ms(-r);
                }
            }
        }

        /// The shared and in-process backends run the same code: any sequence of checks and
        /// clock moves gets identical decisions from both.
        #[test]
        fn shared_and_in_process_backends_decide_alike(
            ops in proptest::collection::vec((0usize..3, 0usize..4, 0i64..4_000), 1..300)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let clock = ManualClock::new(T0);
            let tiny = ActionLimit::per_minute(3)
                .adaptive(300, 200, Duration::from_secs(30))
                .block(Duration::from_secs(1), Duration::from_secs(8), Duration::from_secs(60));
            let config = LimiterConfig {
                capacity: 64,
                ..LimiterConfig::default()
            }
            .action("tiny", tiny)
            .clock(Arc::new(clock.clone()));
            let shared = RateLimiter::open(dir.path().join("p.db"), config.clone()).unwrap();
            let local = RateLimiter::in_process(config).unwrap();
            for (action, key, advance) in ops {
                clock.advance_ms(advance);
                let (a, k) = (["post", "ip", "tiny"][action], format!("k{key}"));
                proptest::prop_assert_eq!(shared.check(a, &k).unwrap(), local.check(a, &k).unwrap());
            }
        }
    }

    #[test]
    fn invalid_limits_are_refused() {
        for bad in [
            ActionLimit::per_minute(0),
            ActionLimit::per_minute(10).burst(0),
            ActionLimit::per_minute(10).adaptive(10, 0, Duration::from_secs(1)),
            ActionLimit::per_minute(10).adaptive(1001, 10, Duration::from_secs(1)),
            ActionLimit::per_minute(10).fixed().block(
                Duration::from_secs(1),
                Duration::from_secs(1),
                Duration::from_secs(1),
            ),
        ] {
            let config = LimiterConfig::default().action("x", bad);
            assert!(RateLimiter::in_process(config).is_err(), "{bad:?}");
        }
        let config = LimiterConfig::default().action("", ActionLimit::per_minute(1));
        assert!(RateLimiter::in_process(config).is_err());
        let huge = ActionLimit::new(1, Duration::from_secs(300 * 86_400)).burst(1_000_000);
        assert!(RateLimiter::in_process(LimiterConfig::default().action("x", huge)).is_err());
    }
}
