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

use serde::Serialize;

mod adaptive;
mod config;
mod outcome;
mod record;
#[cfg(feature = "redis")]
mod redis;
#[cfg(test)]
mod tests;

pub use config::{ActionLimit, LimiterConfig};

use adaptive::decayed;
use config::Action;
use outcome::Outcome;
use record::{
    FULL, H_UNTRACKED, MAGIC, PAYLOAD_MASK, PROBE, RECORD_WORDS, UNITS_PER_MS, W_BLOCK, W_REP,
    W_TAT, unpack_small,
};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::metrics::{Counter, Metrics};
use crate::shm::sidecar;
use crate::shm::table::{TAG_WORD, Table, check_of, tag_of};

/// Records in a default table.
pub const DEFAULT_CAPACITY: usize = 65_536;
/// Suffix of the shared table's file, appended to the database path.
pub const FILE_SUFFIX: &str = "-lmsrt-limits";

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
    /// The Redis backend, when shared through Redis; `table` is then its host-local fallback.
    #[cfg(feature = "redis")]
    redis: Option<Arc<crate::guards::RedisGuards>>,
}

impl RateLimiter {
    /// Opens the limiter shared by every process using the database at `db_path`; its table
    /// lives in `<db_path>-lmsrt-limits` (created zero-filled if missing).
    pub fn open(db_path: impl AsRef<Path>, config: LimiterConfig) -> Result<RateLimiter> {
        let path = sidecar(db_path.as_ref(), FILE_SUFFIX);
        let actions = config.compile()?;
        let table = Table::open_shared(&path, MAGIC, RECORD_WORDS, config.capacity)?;
        Ok(Self::new(table, actions, config))
    }

    /// A limiter private to this process, with the same semantics (for the daemon's hot path
    /// and for tests).
    pub fn in_process(config: LimiterConfig) -> Result<RateLimiter> {
        let actions = config.compile()?;
        let table = Table::in_process(MAGIC, RECORD_WORDS, config.capacity)?;
        Ok(Self::new(table, actions, config))
    }

    /// A limiter shared through Redis by every host of a site (see `guards::redis`): one
    /// script call per decision. While Redis is unreachable it decides on a table local to this
    /// process (limits per host instead of per site, never an outage of their own).
    #[cfg(feature = "redis")]
    pub fn on_redis(
        guards: Arc<crate::guards::RedisGuards>,
        config: LimiterConfig,
    ) -> Result<RateLimiter> {
        let mut l = Self::in_process(config)?;
        l.redis = Some(guards);
        Ok(l)
    }

    /// Counts decisions into `metrics` (`limiter_allowed`, `limiter_denied`, `limiter_blocked`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> RateLimiter {
        self.metrics = Some(metrics);
        self
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
            #[cfg(feature = "redis")]
            redis: None,
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
        self.count(&d);
        Ok(d)
    }

    /// [`check`](Self::check), awaited: with the limits in Redis the call does not hold the
    /// caller's thread (the daemon's serving threads).
    #[cfg(all(feature = "redis", feature = "daemon"))]
    pub(crate) async fn check_async(&self, action: &str, key: &str) -> Result<Decision> {
        let a = self.action(action, key, 1)?;
        let shared = match &self.redis {
            Some(r) => self.run_on_redis_async(r, a, key, 1, redis::CONSUME).await,
            None => None,
        };
        let d = match shared {
            Some(o) => a.decision(&o),
            None => self.decide_local(a, key, 1, true),
        };
        self.count(&d);
        Ok(d)
    }

    fn count(&self, d: &Decision) {
        if let Some(m) = &self.metrics {
            m.incr(if d.allowed {
                Counter::LimiterAllowed
            } else if d.blocked {
                Counter::LimiterBlocked
            } else {
                Counter::LimiterDenied
            });
        }
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
        #[cfg(feature = "redis")]
        if let Some(r) = &self.redis {
            self.run_on_redis(r, a, key, 1, redis::RESET);
        }
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

    /// Counts about the table (for a limiter on Redis: its host-local fallback table).
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

    /// The shared table's file (`None` for an in-process limiter or one on Redis).
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
        #[cfg(feature = "redis")]
        if let Some(r) = &self.redis {
            let mode = if consume { redis::CONSUME } else { redis::PEEK };
            if let Some(o) = self.run_on_redis(r, a, key, cost, mode) {
                return a.decision(&o);
            }
        }
        self.decide_local(a, key, cost, consume)
    }

    /// A decision on this host's table.
    fn decide_local(&self, a: &Action, key: &str, cost: u32, consume: bool) -> Decision {
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
        let mut o = Outcome::read(now, penalty);
        if until > now {
            o.block_until = until;
            o.pre_blocked = true;
            return Some(a.decision(&o));
        }
        let one = a.unit_cost(a.factor(penalty));

        // GCRA: the linearisation point is the compare-and-swap of the TAT word.
        let now_u = now * UNITS_PER_MS;
        let c = (one * cost as u64).min(a.tau);
        (o.allowed, o.tat_after, o.retry_units) = loop {
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

        if !o.allowed && consume && a.limit.penalty_permille > 0 {
            let Some(was_zero) = self.penalise(rec, tag, now, a) else {
                return Some(a.decision(&o));
            };
            o.penalty_after = decayed(
                rec[W_REP].load(Ordering::Acquire),
                check,
                now,
                a.limit.recovery_ms,
            );
            if was_zero
                && a.limit.block_base_ms > 0
                && let Some(until) = self.block(rec, tag, now, a)
            {
                o.block_until = until;
            }
        }
        Some(a.decision(&o))
    }
}
