//! [`Config`]: the settings of [`EventStore::open`](super::EventStore::open), and their ranges.

use std::sync::Arc;
use std::time::Duration;

use super::conn::Durability;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Largest [`Config::max_data_bytes`] accepted: 16 MiB. A batch of [`MAX_LIMIT`](super::MAX_LIMIT) such events
/// is already 16 GiB; nothing a chat sends needs more.
pub const MAX_DATA_BYTES_LIMIT: usize = 16 * 1024 * 1024;
/// Longest TTL bound accepted ([`Config::min_ttl`], `default_ttl`, `max_ttl`): 100 years, in
/// ms. Expiry times are `i64` milliseconds; a longer TTL would overflow into the past.
pub const MAX_TTL_MS_LIMIT: u64 = 100 * 365_250 * 86_400;
/// Most rows per purge transaction ([`Config::purge_chunk`]): each holds the writer lock.
pub const MAX_PURGE_CHUNK: usize = 100_000;
/// Shortest and longest [`Config::purge_interval`], in ms: 10 ms to a day.
pub const PURGE_INTERVAL_MS_RANGE: (u64, u64) = (10, 86_400_000);

/// Settings for [`EventStore::open`](super::EventStore::open).
#[derive(Debug, Clone)]
pub struct Config {
    /// What an acknowledged append survives.
    pub durability: Durability,
    /// Largest `data` accepted, in bytes (default 64 KiB).
    pub max_data_bytes: usize,
    /// Time to live of events appended without one (default 1 hour).
    pub default_ttl: Duration,
    /// Shortest TTL accepted (default 1 s).
    pub min_ttl: Duration,
    /// Longest TTL accepted (default 30 days).
    pub max_ttl: Duration,
    /// When set, a background thread purges expired events at this interval.
    pub purge_interval: Option<Duration>,
    /// Rows deleted per purge transaction: small enough that the write lock is held briefly.
    pub purge_chunk: usize,
    /// When a cursor is at most this many ids behind the head (the live tail), a fetch reads
    /// every row after it in one query; further behind (catch-up), it reads each channel and
    /// lane from the index with a limit, so its cost is bounded by the batch size rather than
    /// by how far behind the client is. Default 256 (see `benches/README.md`).
    pub live_tail_window: i64,
    /// The source of time for timestamps and expiry.
    pub clock: Arc<dyn Clock>,
    /// When set, every append, fetch and wait records its count, latency and store faults
    /// here (`appends`, `fetches`, `waits`, `wait_timeouts`, the `*_errors` counters and the
    /// `append`/`fetch`/`wait` histograms). Default `None`: a caller that records at its own
    /// level, as the daemon does per HTTP request, leaves it unset so nothing counts twice.
    /// Bad input (a typed validation error) is not a fault and is not counted as an error.
    pub metrics: Option<Arc<Metrics>>,
}

impl Config {
    /// Checks every setting's range; [`EventStore::open`](super::EventStore::open) calls it. Each refusal is
    /// [`Error::InvalidArgument`] naming the setting, its range and the value given.
    ///
    /// Ranges: `max_data_bytes` 1 to [`MAX_DATA_BYTES_LIMIT`]; `min_ttl`, `default_ttl`,
    /// `max_ttl` 1 ms to [`MAX_TTL_MS_LIMIT`] ms with `min_ttl <= default_ttl <= max_ttl`;
    /// `purge_interval` (when set) [`PURGE_INTERVAL_MS_RANGE`]; `purge_chunk` 1 to
    /// [`MAX_PURGE_CHUNK`]; `live_tail_window` 0 or more (`i64::MAX`: always the live-tail
    /// path).
    pub fn validate(&self) -> Result<()> {
        fn out_of_range(name: &str, range: &str, value: impl std::fmt::Display) -> Result<()> {
            Err(Error::InvalidArgument(format!(
                "config: {name} must be {range}, not {value}"
            )))
        }
        if !(1..=MAX_DATA_BYTES_LIMIT).contains(&self.max_data_bytes) {
            return out_of_range(
                "max_data_bytes",
                &format!("1 to {MAX_DATA_BYTES_LIMIT}"),
                self.max_data_bytes,
            );
        }
        for (name, ttl) in [
            ("min_ttl", self.min_ttl),
            ("default_ttl", self.default_ttl),
            ("max_ttl", self.max_ttl),
        ] {
            let ms = ttl.as_millis();
            if !(1..=u128::from(MAX_TTL_MS_LIMIT)).contains(&ms) {
                return out_of_range(
                    &format!("{name} (ms)"),
                    &format!("1 to {MAX_TTL_MS_LIMIT} (100 years)"),
                    ms,
                );
            }
        }
        // A default outside the bounds would refuse every append that gives no TTL.
        if !(self.min_ttl <= self.default_ttl && self.default_ttl <= self.max_ttl) {
            return Err(Error::InvalidArgument(format!(
                "config: expected min_ttl <= default_ttl <= max_ttl, not {} ms, {} ms, {} ms",
                self.min_ttl.as_millis(),
                self.default_ttl.as_millis(),
                self.max_ttl.as_millis()
            )));
        }
        if let Some(every) = self.purge_interval {
            let (lo, hi) = PURGE_INTERVAL_MS_RANGE;
            let ms = every.as_millis();
            if !(u128::from(lo)..=u128::from(hi)).contains(&ms) {
                return out_of_range(
                    "purge_interval (ms)",
                    &format!("{lo} to {hi} (0 or none: no background purge)"),
                    ms,
                );
            }
        }
        if !(1..=MAX_PURGE_CHUNK).contains(&self.purge_chunk) {
            return out_of_range(
                "purge_chunk",
                &format!("1 to {MAX_PURGE_CHUNK}"),
                self.purge_chunk,
            );
        }
        // No upper bound: a larger window only reads more rows per fetch (tests use i64::MAX
        // to force the live-tail path); a negative one means nothing.
        if self.live_tail_window < 0 {
            return out_of_range(
                "live_tail_window",
                &format!("0 to {}", i64::MAX),
                self.live_tail_window,
            );
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            durability: Durability::default(),
            max_data_bytes: 64 * 1024,
            default_ttl: Duration::from_secs(3600),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(30 * 86_400),
            purge_interval: None,
            purge_chunk: 500,
            live_tail_window: 256,
            clock: Arc::new(SystemClock),
            metrics: None,
        }
    }
}
