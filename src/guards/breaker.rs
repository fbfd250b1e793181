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

use serde::Serialize;

use super::stable_hash;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::metrics::{Counter, Metrics};
use crate::shm::sidecar;
use crate::shm::table::{Occupant, Probe, Table, check_of, swap_tag, tag_of};

/// Suffix of the shared table's file, appended to the database path.
pub const FILE_SUFFIX: &str = "-lmsrt-breakers";
/// Records in a default table.
pub const DEFAULT_CAPACITY: usize = 1024;

const MAGIC: u64 = u64::from_le_bytes(*b"LMSRBRK1");
const RECORD_WORDS: usize = 16;
const W_STATE: usize = 1;
const W_BUCKETS: usize = 2;
const NBUCKETS: u64 = 10;
/// Records examined from a name's hash position, and looks after a lost race for an idle one.
const PROBE: Probe = Probe {
    window: 16,
    rounds: 4,
};
const TIME_MASK: u64 = (1 << 42) - 1;
const N_MAX: u64 = 127;
const EXP_MAX: u64 = 31;
const COUNT_MAX: u64 = (1 << 20) - 1;

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// A limited number of probe calls go through.
    HalfOpen,
}

impl BreakerState {
    /// `"closed"`, `"open"` or `"half_open"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// How clients should poll, from the plan's fallback tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientMode {
    /// Long-poll with 30 s waits: all is well.
    Long,
    /// 10 s waits: failures are showing.
    Medium,
    /// Poll every 3 s: recovering (half-open).
    Short,
    /// Poll every 1 s: the breaker is open.
    Emergency,
}

impl ClientMode {
    /// The wait (or polling interval) of the mode, in ms: 30,000, 10,000, 3,000 or 1,000.
    pub fn wait_ms(self) -> u64 {
        match self {
            ClientMode::Long => 30_000,
            ClientMode::Medium => 10_000,
            ClientMode::Short => 3_000,
            ClientMode::Emergency => 1_000,
        }
    }

    /// `"long"`, `"medium"`, `"short"` or `"emergency"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientMode::Long => "long",
            ClientMode::Medium => "medium",
            ClientMode::Short => "short",
            ClientMode::Emergency => "emergency",
        }
    }
}

/// Settings shared by every breaker of a [`Breakers`] set.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker (1–127). Default 5.
    pub failure_threshold: u32,
    /// Failure ratio (‰) over the window that opens a closed breaker; 0 = judge consecutive
    /// failures only. Default 500.
    pub failure_ratio_permille: u32,
    /// Outcomes needed in the window before the ratio is judged (≥ 1). Default 20.
    pub min_requests: u32,
    /// The window for the ratio, in ms (≥ 10). Default 10,000.
    pub window_ms: u64,
    /// First open period, in ms (> 0). Default 5,000.
    pub open_ms: u64,
    /// Longest open period, in ms. Default 120,000.
    pub max_open_ms: u64,
    /// Probes admitted at once when half-open (1–127). Default 1.
    pub half_open_probes: u32,
    /// Time after which an unanswered probe frees its place, in ms (> 0). Default 10,000.
    pub probe_timeout_ms: u64,
    /// Records in the table (rounded up to a power of two, at least 64). Only the creator of a
    /// shared table picks it.
    pub capacity: usize,
    /// The source of time.
    pub clock: Arc<dyn Clock>,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 5,
            failure_ratio_permille: 500,
            min_requests: 20,
            window_ms: 10_000,
            open_ms: 5_000,
            max_open_ms: 120_000,
            half_open_probes: 1,
            probe_timeout_ms: 10_000,
            capacity: DEFAULT_CAPACITY,
            clock: Arc::new(SystemClock),
        }
    }
}

impl BreakerConfig {
    /// Sets the clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> BreakerConfig {
        self.clock = clock;
        self
    }

    fn validate(&self) -> Result<()> {
        let ok = (1..=N_MAX as u32).contains(&self.failure_threshold)
            && self.failure_ratio_permille <= 1000
            && self.min_requests >= 1
            && self.window_ms >= NBUCKETS
            && self.open_ms > 0
            && self.max_open_ms >= self.open_ms
            && self.max_open_ms <= TIME_MASK / 2
            && (1..=N_MAX as u32).contains(&self.half_open_probes)
            && self.probe_timeout_ms > 0
            && self.probe_timeout_ms <= TIME_MASK / 2;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "breaker config out of range: {self:?}"
            )))
        }
    }
}

/// A breaker's state as seen now, and the answer to a [`Breakers::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BreakerStatus {
    /// The state (an open breaker whose period is over reads as half-open).
    pub state: BreakerState,
    /// Whether the call may go ahead (for [`Breakers::status`]: whether a check would admit one).
    pub allowed: bool,
    /// The call was admitted as a half-open probe: report its outcome.
    pub probe: bool,
    /// The polling mode clients should use.
    pub mode: ClientMode,
    /// When refused, ms until a call may be admitted again; 0 when allowed.
    pub retry_after_ms: u64,
    /// Consecutive failures (closed state).
    pub consecutive_failures: u32,
    /// Outcomes reported in the window (since the breaker last closed).
    pub window_requests: u64,
    /// Failures among them.
    pub window_failures: u64,
    /// The open period the breaker is in, or would use next, in ms.
    pub open_period_ms: u64,
    /// False when the table was full and the breaker is not tracked (always allowed).
    pub tracked: bool,
}

impl BreakerStatus {
    /// `Ok(self)` when allowed, else [`Error::CircuitOpen`] naming the breaker.
    pub fn into_result(self, name: &str) -> Result<BreakerStatus> {
        if self.allowed {
            Ok(self)
        } else {
            Err(Error::CircuitOpen {
                name: name.to_owned(),
                retry_after_ms: self.retry_after_ms,
            })
        }
    }
}

/// The decoded state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word {
    state: BreakerState,
    exp: u64,
    n: u64,
    time: u64,
}

impl Word {
    const ZERO: Word = Word {
        state: BreakerState::Closed,
        exp: 0,
        n: 0,
        time: 0,
    };

    fn decode(w: u64, check: u64) -> Word {
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

    fn encode(self, check: u64) -> u64 {
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
        }
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
        let s = self.with_record(name, |rec, tag, now| self.check_in(rec, tag, now, true))?;
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

    fn check_in(&self, rec: &[AtomicU64], tag: u64, now: u64, admit: bool) -> BreakerStatus {
        let check = check_of(tag);
        loop {
            let cur = rec[W_STATE].load(Ordering::Acquire);
            let w = Word::decode(cur, check);
            let (requests, failures) = self.window(rec, check, now, &w);
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
                    if self.stressed(&w, requests, failures) {
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
            let expired = w.state == BreakerState::Open || now >= w.time;
            let taken = if expired { 0 } else { w.n };
            if taken >= self.config.half_open_probes as u64 {
                s.allowed = false;
                s.retry_after_ms = w.time - now;
                return s;
            }
            if !admit {
                return s;
            }
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

    /// Outcomes and failures in the window, counting only buckets since the breaker last
    /// closed.
    fn window(&self, rec: &[AtomicU64], check: u64, now: u64, w: &Word) -> (u64, u64) {
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

    fn add_to_window(&self, rec: &[AtomicU64], check: u64, now: u64, failed: bool) {
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
    fn find_or_claim(&self, tag: u64, now: u64) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const T0: i64 = 1_700_000_000_000;

    fn breakers(f: impl FnOnce(&mut BreakerConfig)) -> (Breakers, ManualClock) {
        let clock = ManualClock::new(T0);
        let mut c = BreakerConfig::default().clock(Arc::new(clock.clone()));
        f(&mut c);
        (Breakers::in_process(c).unwrap(), clock)
    }

    #[test]
    fn consecutive_failures_open_and_success_resets_the_count() {
        let (b, _) = breakers(|_| {});
        for _ in 0..4 {
            b.record_failure("db").unwrap();
        }
        assert_eq!(b.status("db").unwrap().mode, ClientMode::Medium);
        b.record_success("db").unwrap();
        let s = b.status("db").unwrap();
        assert_eq!((s.state, s.consecutive_failures), (BreakerState::Closed, 0));
        for _ in 0..4 {
            b.record_failure("db").unwrap();
        }
        assert!(b.check("db").unwrap().allowed);
        let s = b.record_failure("db").unwrap();
        assert_eq!(
            (s.state, s.allowed, s.mode),
            (BreakerState::Open, false, ClientMode::Emergency)
        );
        let e = b.check("db").unwrap().into_result("db").unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::CircuitOpen);
        // Other breakers are untouched.
        assert_eq!(b.check("other").unwrap().mode, ClientMode::Long);
    }

    #[test]
    fn failure_ratio_over_the_window_opens() {
        let (b, _) = breakers(|c| c.failure_threshold = 100);
        // Alternate outcomes: 50% failures, never two in a row.
        for i in 0..19 {
            if i % 2 == 0 {
                b.record_failure("x").unwrap();
            } else {
                b.record_success("x").unwrap();
            }
        }
        let s = b.status("x").unwrap();
        assert_eq!((s.window_requests, s.window_failures), (19, 10));
        assert_eq!(s.state, BreakerState::Closed, "below min_requests");
        assert_eq!(b.record_failure("x").unwrap().state, BreakerState::Open);

        // 30% failures: not enough to open, but past half the ratio: medium mode.
        let (b, _) = breakers(|c| c.failure_threshold = 100);
        for i in 0..20 {
            if i % 10 < 3 {
                b.record_failure("y").unwrap();
            } else {
                b.record_success("y").unwrap();
            }
        }
        let s = b.status("y").unwrap();
        assert_eq!(
            (s.state, s.mode, s.window_failures),
            (BreakerState::Closed, ClientMode::Medium, 6)
        );
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let (b, clock) = breakers(|c| c.failure_threshold = 100);
        for _ in 0..10 {
            b.record_failure("y").unwrap();
            b.record_success("y").unwrap();
        }
        assert_eq!(b.status("y").unwrap().window_requests, 20);
        clock.advance_ms(10_000);
        let s = b.record_failure("y").unwrap();
        assert_eq!((s.state, s.window_requests), (BreakerState::Closed, 1));
    }

    #[test]
    fn open_period_doubles_on_each_reopen_up_to_the_cap() {
        let (b, clock) = breakers(|c| {
            c.failure_threshold = 1;
            c.open_ms = 1_000;
            c.max_open_ms = 5_000;
        });
        let s = b.record_failure("x").unwrap();
        assert_eq!((s.retry_after_ms, s.open_period_ms), (1_000, 1_000));
        let mut wait = 1_000;
        for expected in [2_000, 4_000, 5_000, 5_000] {
            clock.advance_ms(wait);
            let p = b.check("x").unwrap();
            assert!(p.allowed && p.probe);
            assert_eq!(
                (p.state, p.mode),
                (BreakerState::HalfOpen, ClientMode::Short)
            );
            let s = b.record_failure("x").unwrap();
            assert_eq!((s.state, s.retry_after_ms), (BreakerState::Open, expected));
            clock.advance_ms(expected as i64 - 1);
            assert!(!b.check("x").unwrap().allowed);
            wait = 1;
        }
        clock.advance_ms(wait);
        assert!(b.check("x").unwrap().probe);
        // A success closes and resets the backoff.
        let s = b.record_success("x").unwrap();
        assert_eq!(
            (s.state, s.mode, s.open_period_ms),
            (BreakerState::Closed, ClientMode::Long, 1_000)
        );
        let s = b.record_failure("x").unwrap();
        assert_eq!((s.state, s.retry_after_ms), (BreakerState::Open, 1_000));
    }

    #[test]
    fn half_open_admits_limited_probes_and_frees_lost_ones() {
        let (b, clock) = breakers(|c| {
            c.failure_threshold = 1;
            c.half_open_probes = 2;
            c.probe_timeout_ms = 4_000;
        });
        b.record_failure("x").unwrap();
        clock.advance_ms(5_000);
        let st = b.status("x").unwrap();
        assert_eq!(
            (st.state, st.allowed, st.mode),
            (BreakerState::HalfOpen, true, ClientMode::Short)
        );
        assert!(b.check("x").unwrap().probe);
        assert!(b.check("x").unwrap().probe);
        let s = b.check("x").unwrap();
        assert!(!s.allowed && !s.probe);
        assert_eq!((s.state, s.retry_after_ms), (BreakerState::HalfOpen, 4_000));
        // The probes' holders vanish: after the probe timeout new probes are admitted.
        clock.advance_ms(4_000);
        assert!(b.check("x").unwrap().probe);
        assert_eq!(b.record_success("x").unwrap().state, BreakerState::Closed);
    }

    #[test]
    fn late_outcomes_while_open_change_nothing_and_closing_forgets_old_failures() {
        let (b, clock) = breakers(|c| c.failure_threshold = 3);
        for _ in 0..3 {
            b.record_failure("x").unwrap();
        }
        b.record_success("x").unwrap();
        b.record_failure("x").unwrap();
        let s = b.status("x").unwrap();
        assert_eq!((s.state, s.retry_after_ms), (BreakerState::Open, 5_000));
        clock.advance_ms(5_000);
        assert!(b.check("x").unwrap().probe);
        b.record_success("x").unwrap();
        // Closing forgets the failures that opened it: only the closing success is counted.
        let s = b.status("x").unwrap();
        assert_eq!((s.state, s.consecutive_failures), (BreakerState::Closed, 0));
        assert_eq!((s.window_requests, s.window_failures), (1, 0));
        b.record_failure("x").unwrap();
        assert_eq!(b.status("x").unwrap().state, BreakerState::Closed);
    }

    #[test]
    fn clocks_near_zero_and_clocks_that_disagree_are_harmless() {
        let clock = ManualClock::new(0);
        let b =
            Breakers::in_process(BreakerConfig::default().clock(Arc::new(clock.clone()))).unwrap();
        // A process whose clock is far ahead writes a bucket; ours, near zero, reads it.
        clock.set_ms(65_530_000);
        b.record_failure("x").unwrap();
        clock.set_ms(3_000);
        let s = b.status("x").unwrap();
        assert_eq!(s.window_requests, 0);
        b.record_success("x").unwrap();
        assert_eq!(b.status("x").unwrap().state, BreakerState::Closed);
    }

    #[test]
    fn operator_switches() {
        let (b, clock) = breakers(|_| {});
        let s = b.force_open("x", 60_000).unwrap();
        assert_eq!((s.state, s.retry_after_ms), (BreakerState::Open, 60_000));
        clock.advance_ms(1_000);
        assert_eq!(b.reset("x").unwrap().state, BreakerState::Closed);
        assert!(b.check("x").unwrap().allowed);
        assert!(b.check("").is_err());
    }

    #[test]
    fn shared_file_is_seen_by_other_handles() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("b.db");
        let clock = ManualClock::new(T0);
        let cfg = BreakerConfig::default().clock(Arc::new(clock.clone()));
        let a = Breakers::open(&db, cfg.clone()).unwrap();
        let b = Breakers::open(&db, cfg).unwrap();
        for _ in 0..5 {
            a.record_failure("store").unwrap();
        }
        assert_eq!(b.check("store").unwrap().state, BreakerState::Open);
        assert!(a.path().unwrap().ends_with("b.db-lmsrt-breakers"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// The shared and in-process backends decide alike for any sequence of checks,
        /// outcomes and clock moves.
        #[test]
        fn shared_and_in_process_backends_agree(
            ops in proptest::collection::vec((0usize..2, 0u8..3, 0i64..3_000), 1..300)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let clock = ManualClock::new(T0);
            let config = BreakerConfig {
                failure_threshold: 3,
                min_requests: 5,
                open_ms: 1_000,
                max_open_ms: 8_000,
                half_open_probes: 2,
                probe_timeout_ms: 2_000,
                capacity: 64,
                ..BreakerConfig::default()
            }
            .clock(Arc::new(clock.clone()));
            let shared = Breakers::open(dir.path().join("p.db"), config.clone()).unwrap();
            let local = Breakers::in_process(config).unwrap();
            for (name, op, advance) in ops {
                clock.advance_ms(advance);
                let name = ["a", "b"][name];
                let run = |b: &Breakers| match op {
                    0 => b.check(name).unwrap(),
                    1 => b.record_success(name).unwrap(),
                    _ => b.record_failure(name).unwrap(),
                };
                proptest::prop_assert_eq!(run(&shared), run(&local));
            }
        }
    }

    #[test]
    fn state_word_round_trips() {
        for state in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            let w = Word {
                state,
                exp: 31,
                n: 127,
                time: TIME_MASK,
            };
            assert_eq!(Word::decode(w.encode(0xAB), 0xAB), w);
            assert_eq!(Word::decode(w.encode(0xAB), 0xAC), Word::ZERO);
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        for f in [
            (|c: &mut BreakerConfig| c.failure_threshold = 0) as fn(&mut BreakerConfig),
            |c| c.failure_threshold = 200,
            |c| c.half_open_probes = 0,
            |c| c.max_open_ms = 1,
            |c| c.window_ms = 1,
        ] {
            let mut c = BreakerConfig::default();
            f(&mut c);
            assert!(Breakers::in_process(c).is_err());
        }
    }
}
