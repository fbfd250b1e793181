//! Circuit breakers shared across processes: closed → open → half-open, with backoff.
//!
//! ## The state machine
//!
//! * **Closed**: calls go through and report their outcome. The breaker opens after
//!   `failure_threshold` consecutive failures, or when at least `min_requests` outcomes in the
//!   last `window_ms` include `failure_ratio_permille` ‰ or more failures.
//! * **Open**: calls are refused for the open period: `open_ms` the first time, doubled on each
//!   re-open, up to `max_open_ms`.
//! * **Half-open** (the open period is over): up to `half_open_probes` calls are admitted as
//!   probes. A success closes the breaker (and resets the backoff); a failure re-opens it with
//!   the doubled period. Probes whose outcome never comes (the caller died) free their places
//!   after `probe_timeout_ms`, so a half-open breaker never wedges.
//!
//! Outcomes reported while open (late answers to calls admitted before) change nothing. In
//! half-open, any success closes and any failure re-opens, probe or not: both are fresh
//! evidence.
//!
//! ## Client modes
//!
//! Each status carries the polling [`ClientMode`] it implies, following the plan's fallback
//! tiers: `long` (30 s waits) when closed and healthy, `medium` (10 s) when closed but failing
//! (at least half the consecutive threshold, or half the failure ratio over the window),
//! `short` (3 s) when half-open, `emergency` (1 s) when open, with a retry hint in ms.
//!
//! ## Storage and crash safety
//!
//! A breaker is a 128-byte record in `<db>-lmsrt-breakers` (or process memory), found by a
//! stable hash of its name:
//!
//! | word | contents |
//! | --- | --- |
//! | 0 | tag (0 = free) |
//! | 1 | check(8) · state(2) · backoff exponent(5) · n(7) · time(42 bits, ms) |
//! | 2–11 | failure window: 10 buckets of check(8) · bucket number(16) · failures(20) · outcomes(20) |
//!
//! The state word holds everything a transition changes: in closed, `n` is the consecutive
//! failure count and `time` when it last closed (older buckets are ignored); in open, `time` is
//! the end of the open period; in half-open, `n` is the probes admitted and `time` their
//! deadline. Every transition is one compare-and-swap of that word, so a process killed
//! anywhere leaves a valid state, and nothing waits on a dead process. The window buckets are
//! statistics, each updated by its own compare-and-swap.
//!
//! All breakers in one file share one [`BreakerConfig`]. Names should come from a fixed set
//! (`store`, `daemon`, …): a table with no free or idle record near a name's hash *fails open*
//! (the check allows, `tracked: false`), since a breaker that cannot be tracked must not become
//! an outage of its own. The default table holds 1,024 breakers.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

mod config;
mod record;
mod redis;
mod status;
#[cfg(test)]
mod tests;

pub use config::BreakerConfig;
pub use status::{BreakerState, BreakerStatus, ClientMode};

use record::{EXP_MAX, MAGIC, N_MAX, NBUCKETS, RECORD_WORDS, TIME_MASK, W_STATE, Word};

use super::stable_hash;
use crate::error::{Error, Result};
use crate::metrics::{Counter, Metrics};
use crate::shm::sidecar;
use crate::shm::table::{Table, check_of, tag_of};

/// Suffix of the shared table's file, appended to the database path.
pub const FILE_SUFFIX: &str = "-lmsrt-breakers";
/// Records in a default table.
pub const DEFAULT_CAPACITY: usize = 1024;

/// A set of named circuit breakers, shared by every process on the host (or local to this one).
///
/// `Send + Sync`; no method blocks.
///
/// ```
/// use std::sync::Arc;
/// use lms_realtime::clock::ManualClock;
/// use lms_realtime::guards::{BreakerConfig, BreakerState, Breakers, ClientMode};
///
/// let clock = ManualClock::new(1_700_000_000_000);
/// let b = Breakers::in_process(BreakerConfig::default().clock(Arc::new(clock.clone())))?;
/// for _ in 0..5 {
///     b.record_failure("store")?;
/// }
/// let s = b.check("store")?;
/// assert!(!s.allowed);
/// assert_eq!((s.state, s.mode, s.retry_after_ms), (BreakerState::Open, ClientMode::Emergency, 5_000));
/// clock.advance_ms(5_000);
/// assert!(b.check("store")?.probe); // half-open: one probe goes through
/// b.record_success("store")?;
/// assert_eq!(b.check("store")?.mode, ClientMode::Long);
/// # Ok::<(), lms_realtime::Error>(())
/// ```
#[derive(Debug)]
pub struct Breakers {
    table: Table,
    config: BreakerConfig,
    bucket_ms: u64,
    metrics: Option<Arc<Metrics>>,
    /// The Redis backend, when shared through Redis; `table` is then its host-local fallback.
    #[cfg(feature = "redis")]
    redis: Option<Arc<crate::guards::RedisGuards>>,
}

impl Breakers {
    /// Opens the breakers shared by every process using the database at `db_path`, in
    /// `<db_path>-lmsrt-breakers` (created zero-filled if missing).
    pub fn open(db_path: impl AsRef<Path>, config: BreakerConfig) -> Result<Breakers> {
        config.validate()?;
        let path = sidecar(db_path.as_ref(), FILE_SUFFIX);
        let table = Table::open_shared(&path, MAGIC, RECORD_WORDS, config.capacity)?;
        Ok(Self::new(table, config))
    }

    /// Breakers private to this process, with the same semantics.
    pub fn in_process(config: BreakerConfig) -> Result<Breakers> {
        config.validate()?;
        let table = Table::in_process(MAGIC, RECORD_WORDS, config.capacity)?;
        Ok(Self::new(table, config))
    }

    fn new(table: Table, config: BreakerConfig) -> Breakers {
        Breakers {
            table,
            bucket_ms: config.window_ms / NBUCKETS,
            config,
            metrics: None,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// Breakers shared through Redis by every host of a site (see `guards::redis`): one script
    /// call per check or outcome. While Redis is unreachable they run on a table local to this
    /// process, so the store breaker still opens on a store that fails (on Redis, the same
    /// outage) instead of failing open.
    #[cfg(feature = "redis")]
    pub fn on_redis(
        guards: Arc<crate::guards::RedisGuards>,
        config: BreakerConfig,
    ) -> Result<Breakers> {
        let mut b = Self::in_process(config)?;
        b.redis = Some(guards);
        Ok(b)
    }

    /// Counts checks and openings into `metrics` (`breaker_allowed`, `breaker_rejected`,
    /// `breaker_opened`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Breakers {
        self.metrics = Some(metrics);
        self
    }

    /// The shared table's file (`None` for in-process breakers).
    pub fn path(&self) -> Option<&Path> {
        self.table.path()
    }

    /// Asks whether a call guarded by breaker `name` may go ahead. In half-open this admits a
    /// probe (if a place is free): the caller must then report the outcome with
    /// [`record_success`](Self::record_success) or [`record_failure`](Self::record_failure).
    pub fn check(&self, name: &str) -> Result<BreakerStatus> {
        let s = self.remote(name, redis::Op::Check);
        self.checked(name, s)
    }

    /// [`check`](Self::check) once Redis answered `s` (`None`: not on Redis, or it failed).
    fn checked(&self, name: &str, s: Option<BreakerStatus>) -> Result<BreakerStatus> {
        let s = match s {
            Some(s) => s,
            None => self.with_record(name, |rec, tag, now| self.check_in(rec, tag, now, true))?,
        };
        if let Some(m) = &self.metrics {
            m.incr(if s.allowed {
                Counter::BreakerAllowed
            } else {
                Counter::BreakerRejected
            });
        }
        Ok(s)
    }

    /// The breaker's status without admitting anything.
    pub fn status(&self, name: &str) -> Result<BreakerStatus> {
        if let Some(s) = self.remote(name, redis::Op::Status) {
            return Ok(s);
        }
        self.with_record(name, |rec, tag, now| self.check_in(rec, tag, now, false))
    }

    /// Reports a successful call: resets the consecutive failures; closes a half-open breaker.
    pub fn record_success(&self, name: &str) -> Result<BreakerStatus> {
        self.record(name, false)
    }

    /// Reports a failed call: may open a closed breaker, re-opens a half-open one.
    pub fn record_failure(&self, name: &str) -> Result<BreakerStatus> {
        self.record(name, true)
    }

    /// Closes the breaker and forgets its failures and backoff.
    pub fn reset(&self, name: &str) -> Result<BreakerStatus> {
        if let Some(s) = self.remote(name, redis::Op::Reset) {
            return Ok(s);
        }
        self.with_record(name, |rec, tag, now| {
            let check = check_of(tag);
            let w = Word {
                time: now,
                ..Word::ZERO
            };
            rec[W_STATE].store(w.encode(check), Ordering::Release);
            self.check_in(rec, tag, now, false)
        })
    }

    /// Opens the breaker for `duration_ms` (an operator's switch), keeping its backoff.
    pub fn force_open(&self, name: &str, duration_ms: u64) -> Result<BreakerStatus> {
        let duration_ms = duration_ms.min(TIME_MASK / 2);
        if let Some(s) = self.remote(name, redis::Op::ForceOpen(duration_ms)) {
            return Ok(s);
        }
        self.with_record(name, |rec, tag, now| {
            let check = check_of(tag);
            loop {
                let cur = rec[W_STATE].load(Ordering::Acquire);
                let w = Word::decode(cur, check);
                let next = Word {
                    state: BreakerState::Open,
                    n: 0,
                    time: now + duration_ms,
                    ..w
                };
                if rec[W_STATE]
                    .compare_exchange(cur, next.encode(check), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    break;
                }
            }
            self.check_in(rec, tag, now, false)
        })
    }

    fn with_record(
        &self,
        name: &str,
        f: impl FnOnce(&[AtomicU64], u64, u64) -> BreakerStatus,
    ) -> Result<BreakerStatus> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("breaker name is empty".into()));
        }
        let now = (self.config.clock.now_ms().max(0) as u64).min(TIME_MASK / 2);
        let tag = tag_of(stable_hash(&[name.as_bytes()]));
        Ok(match self.find_or_claim(tag, now) {
            Some(idx) => f(self.table.record(idx), tag, now),
            None => BreakerStatus {
                state: BreakerState::Closed,
                allowed: true,
                probe: false,
                mode: ClientMode::Long,
                retry_after_ms: 0,
                consecutive_failures: 0,
                window_requests: 0,
                window_failures: 0,
                open_period_ms: self.config.open_ms,
                tracked: false,
            },
        })
    }

    fn open_period(&self, exp: u64) -> u64 {
        self.config
            .open_ms
            .checked_shl(exp as u32)
            .filter(|p| p >> exp == self.config.open_ms)
            .unwrap_or(u64::MAX)
            .min(self.config.max_open_ms)
    }

    /// What a breaker in state `w` answers at `now`, with `requests` and `failures` in its
    /// window, before any probe is admitted (shared by every backend).
    fn status_of(&self, w: &Word, now: u64, requests: u64, failures: u64) -> BreakerStatus {
        let mut s = BreakerStatus {
            state: w.state,
            allowed: true,
            probe: false,
            mode: ClientMode::Long,
            retry_after_ms: 0,
            consecutive_failures: 0,
            window_requests: requests,
            window_failures: failures,
            open_period_ms: self.open_period(w.exp),
            tracked: true,
        };
        match w.state {
            BreakerState::Closed => {
                s.consecutive_failures = w.n as u32;
                if self.stressed(w, requests, failures) {
                    s.mode = ClientMode::Medium;
                }
                return s;
            }
            BreakerState::Open if now < w.time => {
                s.allowed = false;
                s.mode = ClientMode::Emergency;
                s.retry_after_ms = w.time - now;
                return s;
            }
            _ => {}
        }
        // Half-open (or open with its period over, which is half-open with no probes).
        s.state = BreakerState::HalfOpen;
        s.mode = ClientMode::Short;
        if probes_taken(w, now).1 >= self.config.half_open_probes as u64 {
            s.allowed = false;
            s.retry_after_ms = w.time - now;
        }
        s
    }

    fn check_in(&self, rec: &[AtomicU64], tag: u64, now: u64, admit: bool) -> BreakerStatus {
        let check = check_of(tag);
        loop {
            let cur = rec[W_STATE].load(Ordering::Acquire);
            let w = Word::decode(cur, check);
            let (requests, failures) = self.window(rec, check, now, &w);
            let mut s = self.status_of(&w, now, requests, failures);
            if !admit || s.state != BreakerState::HalfOpen || !s.allowed {
                return s;
            }
            let (expired, taken) = probes_taken(&w, now);
            let next = Word {
                state: BreakerState::HalfOpen,
                exp: w.exp,
                n: taken + 1,
                time: if expired {
                    now + self.config.probe_timeout_ms
                } else {
                    w.time
                },
            };
            if rec[W_STATE]
                .compare_exchange(cur, next.encode(check), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                s.probe = true;
                return s;
            }
        }
    }

    fn stressed(&self, w: &Word, requests: u64, failures: u64) -> bool {
        let c = &self.config;
        (w.n > 0 && w.n * 2 >= c.failure_threshold as u64)
            || (c.failure_ratio_permille > 0
                && requests >= c.min_requests as u64
                && failures * 2000 >= requests * c.failure_ratio_permille as u64)
    }

    fn record(&self, name: &str, failed: bool) -> Result<BreakerStatus> {
        let s = self.remote(name, redis::Op::outcome(failed));
        self.recorded(name, failed, s)
    }

    /// [`record`](Self::record) once Redis answered `s` (`None`: not on Redis, or it failed).
    fn recorded(
        &self,
        name: &str,
        failed: bool,
        s: Option<BreakerStatus>,
    ) -> Result<BreakerStatus> {
        if let Some(s) = s {
            return Ok(s);
        }
        self.with_record(name, |rec, tag, now| {
            let check = check_of(tag);
            self.add_to_window(rec, check, now, failed);
            loop {
                let cur = rec[W_STATE].load(Ordering::Acquire);
                let w = Word::decode(cur, check);
                let next = match w.state {
                    BreakerState::Open if now < w.time => None,
                    BreakerState::Closed if !failed => (w.n > 0).then_some(Word { n: 0, ..w }),
                    BreakerState::Closed => {
                        let n = (w.n + 1).min(N_MAX);
                        let (requests, failures) = self.window(rec, check, now, &w);
                        let c = &self.config;
                        let trip = n >= c.failure_threshold as u64
                            || (c.failure_ratio_permille > 0
                                && requests >= c.min_requests as u64
                                && failures * 1000 >= requests * c.failure_ratio_permille as u64);
                        Some(if trip {
                            Word {
                                state: BreakerState::Open,
                                exp: 0,
                                n: 0,
                                time: now + self.open_period(0),
                            }
                        } else {
                            Word { n, ..w }
                        })
                    }
                    // Half-open, or open with its period over.
                    _ if failed => {
                        let exp = (w.exp + 1).min(EXP_MAX);
                        Some(Word {
                            state: BreakerState::Open,
                            exp,
                            n: 0,
                            time: now + self.open_period(exp),
                        })
                    }
                    _ => Some(Word {
                        time: now,
                        ..Word::ZERO
                    }),
                };
                let Some(next) = next else { break };
                if rec[W_STATE]
                    .compare_exchange(cur, next.encode(check), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    if next.state == BreakerState::Open
                        && let Some(m) = &self.metrics
                    {
                        m.incr(Counter::BreakerOpened);
                    }
                    break;
                }
            }
            self.check_in(rec, tag, now, false)
        })
    }
}

/// For a breaker past its open period: whether the probes' deadline has passed (or none were
/// admitted yet), and the probes admitted that still count.
fn probes_taken(w: &Word, now: u64) -> (bool, u64) {
    let expired = w.state == BreakerState::Open || now >= w.time;
    (expired, if expired { 0 } else { w.n })
}
