//! Reading the host-wide figures: [`Metrics::snapshot`] and what it returns.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::layout::{
    BUCKETS, COUNTERS, EPOCH_MS, GAUGES, HIST_CUM, HIST_CUM_WORDS, RING, SLOT_COUNTERS,
    SLOT_HIST_WORDS, SLOT_HISTS, SLOT_WORDS, SLOTS, WINDOW_EPOCHS, bucket_upper,
};
use super::{Counter, Gauge, Health, HealthStatus, Histogram, Metrics};

impl Metrics {
    /// Reads every figure, host-wide, with the health verdict.
    pub fn snapshot(&self) -> Snapshot {
        let w = self.words.get();
        let now = self.clock.now_ms();
        let epoch = self.epoch();
        let live: Vec<usize> = (0..SLOTS)
            .map(|i| RING + i * SLOT_WORDS)
            .filter(|&at| {
                let e = w[at].load(Ordering::Acquire);
                e <= epoch && e + WINDOW_EPOCHS > epoch
            })
            .collect();
        let window_start = (epoch.saturating_sub(WINDOW_EPOCHS)) * EPOCH_MS;
        let window_ms = (now.max(0) as u64).saturating_sub(window_start);

        let mut counters = BTreeMap::new();
        for &c in Counter::ALL {
            let window = live
                .iter()
                .map(|at| w[at + SLOT_COUNTERS + c as usize].load(Ordering::Relaxed))
                .fold(0u64, u64::saturating_add);
            counters.insert(
                c.name(),
                CounterValue {
                    total: w[COUNTERS + c as usize].load(Ordering::Relaxed),
                    window,
                },
            );
        }
        let gauges = Gauge::ALL
            .iter()
            .map(|&g| {
                (
                    g.name(),
                    w[GAUGES + g as usize].load(Ordering::Relaxed) as i64,
                )
            })
            .collect();
        let mut histograms = BTreeMap::new();
        for &h in Histogram::ALL {
            let cum = HIST_CUM + h as usize * HIST_CUM_WORDS;
            let mut buckets = vec![0u64; BUCKETS];
            let mut max = 0;
            for at in &live {
                let hist = at + SLOT_HISTS + h as usize * SLOT_HIST_WORDS;
                max = max.max(w[hist].load(Ordering::Relaxed));
                for (b, sum) in buckets.iter_mut().enumerate() {
                    *sum = sum.saturating_add(w[hist + 1 + b].load(Ordering::Relaxed));
                }
            }
            histograms.insert(
                h.name(),
                HistogramValue {
                    count: w[cum].load(Ordering::Relaxed),
                    sum_us: w[cum + 1].load(Ordering::Relaxed),
                    max_us: w[cum + 2].load(Ordering::Relaxed),
                    window: LatencySummary::from_buckets(&buckets, max),
                },
            );
        }
        let mut snap = Snapshot {
            taken_at_ms: now,
            window_ms,
            counters,
            gauges,
            histograms,
            error_rate: None,
            health: Health {
                status: HealthStatus::Ok,
                reasons: Vec::new(),
            },
        };
        snap.judge(&self.thresholds);
        snap
    }
}

/// One counter in a [`Snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CounterValue {
    /// Since the metrics file was created.
    pub total: u64,
    /// Over the recent window.
    pub window: u64,
}

/// Latency quantiles over the recent window, in µs (upper bounds of their buckets, so at most
/// 1/16 above the true value, and never above the maximum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// Samples in the window.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

impl LatencySummary {
    pub(super) fn from_buckets(buckets: &[u64], max: u64) -> LatencySummary {
        // Saturating throughout: the words saturate at u64::MAX (see `Metrics::add`).
        let count: u64 = buckets.iter().fold(0, |a, b| a.saturating_add(*b));
        let q = |p: f64| -> u64 {
            if count == 0 {
                return 0;
            }
            let rank = ((p * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (i, &n) in buckets.iter().enumerate() {
                seen = u64::saturating_add(seen, n);
                if seen >= rank {
                    return bucket_upper(i).min(max);
                }
            }
            max
        };
        LatencySummary {
            count,
            p50_us: q(0.50),
            p95_us: q(0.95),
            p99_us: q(0.99),
            max_us: max,
        }
    }
}

/// One histogram in a [`Snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HistogramValue {
    /// Samples since the file was created.
    pub count: u64,
    /// Sum of those samples, in µs.
    pub sum_us: u64,
    /// Largest of those samples, in µs.
    pub max_us: u64,
    /// Quantiles over the recent window.
    pub window: LatencySummary,
}

/// Every figure at one moment, host-wide. Serialises to the JSON of [`Snapshot::to_json`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// When it was taken (ms since the Unix epoch).
    pub taken_at_ms: i64,
    /// Length of the recent window the `window` figures cover, in ms (50–60 s).
    pub window_ms: u64,
    /// Counters by name.
    pub counters: BTreeMap<&'static str, CounterValue>,
    /// Gauges by name.
    pub gauges: BTreeMap<&'static str, i64>,
    /// Latency histograms by name.
    pub histograms: BTreeMap<&'static str, HistogramValue>,
    /// Failed appends, fetches and waits over all of them in the window (0–1), if any ran.
    pub error_rate: Option<f64>,
    /// The verdict.
    pub health: Health,
}

impl Snapshot {
    /// The snapshot as a JSON object (for the WordPress admin page and `/healthz`).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a snapshot always serialises")
    }
}
