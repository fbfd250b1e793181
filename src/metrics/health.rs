//! The health verdict (see the module docs): the alert lines, and how a snapshot is judged
//! against them.

use serde::Serialize;

use super::{Counter, Histogram, Metrics, Snapshot};

/// The alert lines of [`Snapshot::health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthThresholds {
    /// Append and fetch p99 above this (ms) is degraded. Default 100.
    pub p99_ms: u64,
    /// An error rate above this (‰) is degraded. Default 50 (5%).
    pub error_rate_permille: u32,
    /// Fewest samples in the window for a line to be judged. Default 20.
    pub min_samples: u64,
}

impl Default for HealthThresholds {
    fn default() -> HealthThresholds {
        HealthThresholds {
            p99_ms: 100,
            error_rate_permille: 50,
            min_samples: 20,
        }
    }
}

/// The health verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Within every alert line.
    Ok,
    /// Past at least one alert line (see the reasons).
    Degraded,
    /// The store cannot serve: a damaged page was met in the recent window.
    Unavailable,
}

impl HealthStatus {
    /// `"ok"`, `"degraded"` or `"unavailable"`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unavailable => "unavailable",
        }
    }
}

/// Whether the host is within its alert lines, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The verdict.
    pub status: HealthStatus,
    /// One sentence per alert line crossed (empty when ok).
    pub reasons: Vec<String>,
}

impl Metrics {
    /// The health verdict alone (see [`Snapshot::health`]).
    pub fn health(&self) -> Health {
        self.snapshot().health
    }
}

impl Snapshot {
    pub(super) fn judge(&mut self, t: &HealthThresholds) {
        let win = |c: Counter| self.counters[c.name()].window;
        // u128: the counters saturate at u64::MAX, and their sums and products must not wrap.
        let sum = |cs: [Counter; 3]| cs.iter().map(|c| u128::from(win(*c))).sum::<u128>();
        let ops = sum([Counter::Appends, Counter::Fetches, Counter::Waits]);
        let errors = sum([
            Counter::AppendErrors,
            Counter::FetchErrors,
            Counter::WaitErrors,
        ]);
        let secs = self.window_ms / 1000;
        let mut reasons = Vec::new();
        let corrupt = win(Counter::CorruptReads);
        if corrupt > 0 {
            // First, and above every latency line: readers cannot get past a damaged page,
            // and only the operator can fix it.
            reasons.push(format!(
                "the store is corrupt: {corrupt} store calls met a damaged page in the last \
                 {secs} s; run `lms-longpolld --check` and salvage the file"
            ));
        }
        if ops > 0 {
            let rate = errors as f64 / ops as f64;
            self.error_rate = Some(rate);
            if ops >= u128::from(t.min_samples)
                && errors * 1000 > ops * u128::from(t.error_rate_permille)
            {
                reasons.push(format!(
                    "error rate {:.1}% is above {:.1}% ({errors} of {ops} appends, fetches and \
                     waits failed in the last {secs} s)",
                    rate * 100.0,
                    t.error_rate_permille as f64 / 10.0,
                ));
            }
        }
        for h in [Histogram::Append, Histogram::Fetch] {
            let s = self.histograms[h.name()].window;
            if s.count >= t.min_samples && u128::from(s.p99_us) > u128::from(t.p99_ms) * 1000 {
                reasons.push(format!(
                    "{} p99 latency {:.1} ms is above {} ms ({} samples in the last {secs} s)",
                    h.name(),
                    s.p99_us as f64 / 1000.0,
                    t.p99_ms,
                    s.count,
                ));
            }
        }
        self.health = Health {
            status: if corrupt > 0 {
                HealthStatus::Unavailable
            } else if reasons.is_empty() {
                HealthStatus::Ok
            } else {
                HealthStatus::Degraded
            },
            reasons,
        };
    }
}
