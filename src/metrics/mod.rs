//! Host-wide metrics: counters, gauges and latency histograms that every process adds into.
//!
//! PHP workers live for one request, so their figures cannot stay in process memory: every
//! process maps `<db>-lmsrt-metrics` and adds into the same atomic words, and a snapshot (from
//! any process) reads the host-wide view. Recording is a handful of uncontended atomic adds and
//! one clock read; nothing allocates, locks or makes a system call.
//!
//! ## What is kept
//!
//! * **Counters** ([`Counter`]): cumulative totals since the file was created (Prometheus
//!   counters), plus the same counts over the recent window (about the last minute).
//! * **Gauges** ([`Gauge`]): one signed value each, set or adjusted by whoever owns it. A
//!   process killed between an increment and its decrement leaves the gauge off, so owners of
//!   long-lived gauges (the daemon) should [`Metrics::set_gauge`] absolute values.
//! * **Latency histograms** ([`Histogram`]): cumulative count and sum, and over the recent
//!   window log-linear buckets (16 per power of two, so quantiles are within 1/16 of the true
//!   value) from which p50, p95, p99 and the maximum are read.
//!
//! ## Who records
//!
//! An [`EventStore`](crate::EventStore) opened with [`Config::metrics`](crate::store::Config::metrics)
//! records its own appends, fetches and waits (counts, latencies, store faults). The daemon
//! records per HTTP request instead (and leaves that setting unset, so nothing counts twice);
//! PHP records through `LmsRealtime\Metrics` (the WordPress plugin does, per AJAX call). The
//! guards record their decisions when given a `Metrics`.
//!
//! ## The recent window
//!
//! Time is cut into 10-second epochs. The words for an epoch live in one of 8 ring slots,
//! stamped with the epoch number; the window is the current epoch and the 5 before it (50 to
//! 60 s). Each recorder also stamps and clears the *next* epoch's slot ahead of time (it holds
//! data 7 epochs old that no window reads), so the epoch change never races with recording.
//! Only after a fully idle epoch does the first recorder clear a slot lazily, which may drop
//! the few samples racing with it; a process killed while clearing leaves at most one slot's
//! worth of stale counts, which ages out of the window. That is the one multi-word update in
//! these files, and its worst case is a slightly wrong minute of statistics.
//!
//! ## Health
//!
//! [`Snapshot::health`] turns `degraded` past the plan's alert lines, over the recent window:
//! append or fetch p99 latency above 100 ms, or an error rate (failed appends, fetches and
//! waits over all of them) above 5%. Each is judged only with at least 20 samples, so one slow
//! request on an idle host does not raise the alarm. Wait and delivery latencies are reported
//! but not judged (a long-poll lasts up to 30 s by design). The reasons say which line was
//! crossed and by how much.
//!
//! It turns `unavailable` when a store call met a damaged page of the database file
//! (`corrupt_reads`) in the recent window: no retry gets a reader past it, so the operator has
//! to check and salvage the file (see the README).
//!
//! ```
//! use std::time::Duration;
//! use lms_realtime::metrics::{Counter, Histogram, Metrics, MetricsConfig};
//!
//! let m = Metrics::in_process(MetricsConfig::default());
//! m.incr(Counter::Appends);
//! m.record(Histogram::Append, Duration::from_micros(250));
//! let snap = m.snapshot();
//! assert_eq!(snap.counters["appends"].total, 1);
//! assert!(snap.to_prometheus().contains("lmsrt_appends_total 1"));
//! assert_eq!(snap.health.status, lms_realtime::metrics::HealthStatus::Ok);
//! ```

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod health;
mod layout;
mod names;
mod prometheus;
mod snapshot;
#[cfg(test)]
mod tests;

pub use health::{Health, HealthStatus, HealthThresholds};
pub use names::{Counter, Gauge, Histogram};
pub use snapshot::{CounterValue, HistogramValue, LatencySummary, Snapshot};

use layout::{
    COUNTERS, EPOCH_MS, GAUGES, HIST_CUM, HIST_CUM_WORDS, MAGIC, SLOT_COUNTERS, SLOT_HIST_WORDS,
    SLOT_HISTS, SLOT_WORDS, TOTAL_WORDS, bucket_of, slot_offset,
};

use crate::clock::{Clock, SystemClock};
use crate::error::Result;
use crate::shm::sidecar;
use crate::shm::table::Words;

/// Suffix of the shared metrics file, appended to the database path.
pub const FILE_SUFFIX: &str = "-lmsrt-metrics";

/// Settings for [`Metrics::open`] and [`Metrics::in_process`].
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// The source of time (for the recent window).
    pub clock: Arc<dyn Clock>,
    /// Alert lines for the health verdict.
    pub thresholds: HealthThresholds,
}

impl Default for MetricsConfig {
    fn default() -> MetricsConfig {
        MetricsConfig {
            clock: Arc::new(SystemClock),
            thresholds: HealthThresholds::default(),
        }
    }
}

/// Counters, gauges and histograms shared by every process on the host (or local to this one).
///
/// `Send + Sync`; every method takes `&self` and never blocks.
#[derive(Debug)]
pub struct Metrics {
    words: Words,
    clock: Arc<dyn Clock>,
    thresholds: HealthThresholds,
}

impl Metrics {
    /// Opens the metrics shared by every process using the database at `db_path`, in
    /// `<db_path>-lmsrt-metrics` (created zero-filled if missing).
    pub fn open(db_path: impl AsRef<Path>, config: MetricsConfig) -> Result<Metrics> {
        let path = sidecar(db_path.as_ref(), FILE_SUFFIX);
        Ok(Metrics {
            words: Words::open_shared(&path, MAGIC, TOTAL_WORDS)?,
            clock: config.clock,
            thresholds: config.thresholds,
        })
    }

    /// Metrics private to this process.
    pub fn in_process(config: MetricsConfig) -> Metrics {
        Metrics {
            words: Words::in_process(MAGIC, TOTAL_WORDS),
            clock: config.clock,
            thresholds: config.thresholds,
        }
    }

    /// The shared file (`None` for in-process metrics).
    pub fn path(&self) -> Option<&Path> {
        self.words.path()
    }

    /// Adds 1 to a counter.
    #[inline]
    pub fn incr(&self, c: Counter) {
        self.add(c, 1);
    }

    /// Adds `n` to a counter. Counters saturate at `u64::MAX` rather than wrap: a counter
    /// that wrapped to a small number would read as a reset (or a huge negative rate) to
    /// every consumer, and anyone can add any `n` through the C ABI.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        let w = self.words.get();
        saturating_add(&w[COUNTERS + c as usize], n);
        let slot = self.current_slot(w);
        saturating_add(&w[slot + SLOT_COUNTERS + c as usize], n);
    }

    /// Sets a gauge.
    pub fn set_gauge(&self, g: Gauge, value: i64) {
        self.words.get()[GAUGES + g as usize].store(value as u64, Ordering::Relaxed);
    }

    /// Adds `delta` (possibly negative) to a gauge, saturating at `i64::MIN` and `i64::MAX`.
    pub fn add_gauge(&self, g: Gauge, delta: i64) {
        let _ = self.words.get()[GAUGES + g as usize].fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            |v| Some((v as i64).saturating_add(delta) as u64),
        );
    }

    /// Records one latency.
    #[inline]
    pub fn record(&self, h: Histogram, latency: Duration) {
        self.record_us(h, latency.as_micros().min(u64::MAX as u128) as u64);
    }

    /// Records one latency in microseconds.
    #[inline]
    pub fn record_us(&self, h: Histogram, us: u64) {
        let w = self.words.get();
        let cum = HIST_CUM + h as usize * HIST_CUM_WORDS;
        saturating_add(&w[cum], 1);
        // The sum is what a huge latency (any `us` through the C ABI) could wrap.
        saturating_add(&w[cum + 1], us);
        let hist = self.current_slot(w) + SLOT_HISTS + h as usize * SLOT_HIST_WORDS;
        saturating_add(&w[hist + 1 + bucket_of(us)], 1);
        // The maximum changes rarely: read first so the common case writes nothing.
        if us > w[hist].load(Ordering::Relaxed) {
            w[hist].fetch_max(us, Ordering::Relaxed);
        }
        if us > w[cum + 2].load(Ordering::Relaxed) {
            w[cum + 2].fetch_max(us, Ordering::Relaxed);
        }
    }

    /// The word offset of the current epoch's ring slot, rotating the ring when needed.
    #[inline]
    fn current_slot(&self, w: &[AtomicU64]) -> usize {
        let epoch = self.epoch();
        let slot = slot_offset(epoch);
        let next = slot_offset(epoch + 1);
        if w[slot].load(Ordering::Relaxed) != epoch || w[next].load(Ordering::Relaxed) != epoch + 1
        {
            self.rotate(w, epoch);
        }
        slot
    }

    #[cold]
    fn rotate(&self, w: &[AtomicU64], epoch: u64) {
        for e in [epoch, epoch + 1] {
            let at = slot_offset(e);
            let stamp = w[at].load(Ordering::Acquire);
            // Only move a slot forward: a process whose clock lags must not wipe fresh data.
            if stamp < e
                && w[at]
                    .compare_exchange(stamp, e, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                for word in &w[at + 1..at + SLOT_WORDS] {
                    word.store(0, Ordering::Relaxed);
                }
            }
        }
    }

    fn epoch(&self) -> u64 {
        // Epoch 0 never occurs, so a zero stamp always means "never used".
        self.clock.now_ms().max(0) as u64 / EPOCH_MS + 1
    }
}

/// Adds `n` to `word`, stopping at `u64::MAX`. The common case is one `fetch_add`; only a sum
/// that wrapped is corrected, with a compare-and-swap loop that pins it at the maximum (a
/// reader may see the wrapped value for that instant; no add is lost below the maximum).
#[inline]
fn saturating_add(word: &AtomicU64, n: u64) {
    let before = word.fetch_add(n, Ordering::Relaxed);
    if before.checked_add(n).is_none() {
        saturating_fix(word);
    }
}

#[cold]
fn saturating_fix(word: &AtomicU64) {
    // Everything added since the wrap belongs above the maximum too.
    let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |_| Some(u64::MAX));
}
