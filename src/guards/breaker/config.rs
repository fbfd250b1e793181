//! The settings shared by every breaker of a set ([`BreakerConfig`]).

use std::sync::Arc;

use super::DEFAULT_CAPACITY;
use super::record::{N_MAX, NBUCKETS, TIME_MASK};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};

/// Settings shared by every breaker of a [`Breakers`](super::Breakers) set.
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

    pub(super) fn validate(&self) -> Result<()> {
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
