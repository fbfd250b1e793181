//! What a breaker answers: its state, the polling mode it implies for clients, and the status
//! returned by every call.

use serde::Serialize;

use crate::error::{Error, Result};

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

/// A breaker's state as seen now, and the answer to a [`Breakers::check`](super::Breakers::check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BreakerStatus {
    /// The state (an open breaker whose period is over reads as half-open).
    pub state: BreakerState,
    /// Whether the call may go ahead (for [`Breakers::status`](super::Breakers::status): whether a check would admit one).
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
