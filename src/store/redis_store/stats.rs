//! What this process saw of Redis, for [`EventStore::engine_stats`](crate::EventStore::engine_stats):
//! calls that failed, epochs the tail reader moved to, and the round trip's latency. Shared by a
//! store and its companions (tail thread, purger), so the figures cover all their calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::EngineStats;

/// Weight of the newest round trip in the moving average, as a shift: 1/8, so one slow call
/// shows without one call ruling it.
const EWMA_SHIFT: u32 = 3;

#[derive(Debug, Default)]
pub(super) struct Stats {
    errors: AtomicU64,
    epoch_changes: AtomicU64,
    /// Moving average of successful round trips, in µs (0: none yet).
    latency_us: AtomicU64,
    latency_max_us: AtomicU64,
}

impl Stats {
    /// A call that failed with [`Error::Storage`](crate::Error::Storage).
    pub(super) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The tail reader found a new epoch (Redis lost its data).
    pub(super) fn epoch_change(&self) {
        self.epoch_changes.fetch_add(1, Ordering::Relaxed);
    }

    /// A successful round trip that took `took`.
    pub(super) fn round_trip(&self, took: Duration) {
        // At least 1 µs, so a recorded call never reads as "none yet".
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency_max_us.fetch_max(us, Ordering::Relaxed);
        // A lost update between racing threads costs one sample of an average: no lock for it.
        let old = self.latency_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            us
        } else {
            old - (old >> EWMA_SHIFT) + (us >> EWMA_SHIFT)
        };
        self.latency_us.store(new.max(1), Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> EngineStats {
        let latency = self.latency_us.load(Ordering::Relaxed);
        EngineStats {
            errors: self.errors.load(Ordering::Relaxed),
            epoch_changes: self.epoch_changes.load(Ordering::Relaxed),
            latency_us: (latency > 0).then_some(latency),
            latency_max_us: (latency > 0).then(|| self.latency_max_us.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_follows_round_trips_and_the_maximum_keeps_the_slowest() {
        let s = Stats::default();
        assert_eq!(s.snapshot().latency_us, None, "no round trip yet");
        s.round_trip(Duration::from_micros(800));
        assert_eq!(s.snapshot().latency_us, Some(800));
        for _ in 0..100 {
            s.round_trip(Duration::from_micros(80));
        }
        let got = s.snapshot();
        assert!(
            (80..=100).contains(&got.latency_us.unwrap()),
            "the average moved to the recent calls: {got:?}"
        );
        assert_eq!(got.latency_max_us, Some(800));
        s.error();
        s.epoch_change();
        let got = s.snapshot();
        assert_eq!((got.errors, got.epoch_changes), (1, 1));
    }
}
