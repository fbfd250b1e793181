//! The Prometheus text exposition of a snapshot.

use std::fmt::Write as _;

use super::{Counter, Gauge, HealthStatus, Histogram, Snapshot};

impl Snapshot {
    /// The snapshot in the Prometheus text exposition format (version 0.0.4): counters as
    /// `lmsrt_<name>_total`, gauges as `lmsrt_<name>`, histograms as summaries
    /// `lmsrt_<name>_latency_seconds` with window quantiles and cumulative sum and count, plus
    /// `lmsrt_healthy` (1 or 0).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        for &c in Counter::ALL {
            let n = c.name();
            let _ = writeln!(out, "# HELP lmsrt_{n}_total {}", c.help());
            let _ = writeln!(out, "# TYPE lmsrt_{n}_total counter");
            let _ = writeln!(out, "lmsrt_{n}_total {}", self.counters[n].total);
        }
        for &g in Gauge::ALL {
            let n = g.name();
            let _ = writeln!(out, "# HELP lmsrt_{n} {}", g.help());
            let _ = writeln!(out, "# TYPE lmsrt_{n} gauge");
            let _ = writeln!(out, "lmsrt_{n} {}", self.gauges[n]);
        }
        let secs = |us: u64| us as f64 / 1e6;
        for &h in Histogram::ALL {
            let n = h.name();
            let v = &self.histograms[n];
            let _ = writeln!(
                out,
                "# HELP lmsrt_{n}_latency_seconds {} Quantiles over the last minute.",
                h.help()
            );
            let _ = writeln!(out, "# TYPE lmsrt_{n}_latency_seconds summary");
            for (q, us) in [
                ("0.5", v.window.p50_us),
                ("0.95", v.window.p95_us),
                ("0.99", v.window.p99_us),
            ] {
                if v.window.count == 0 {
                    let _ = writeln!(out, "lmsrt_{n}_latency_seconds{{quantile=\"{q}\"}} NaN");
                } else {
                    let _ = writeln!(
                        out,
                        "lmsrt_{n}_latency_seconds{{quantile=\"{q}\"}} {}",
                        secs(us)
                    );
                }
            }
            let _ = writeln!(out, "lmsrt_{n}_latency_seconds_sum {}", secs(v.sum_us));
            let _ = writeln!(out, "lmsrt_{n}_latency_seconds_count {}", v.count);
            let _ = writeln!(
                out,
                "# HELP lmsrt_{n}_latency_max_seconds Largest {n} latency over the last minute."
            );
            let _ = writeln!(out, "# TYPE lmsrt_{n}_latency_max_seconds gauge");
            let _ = writeln!(
                out,
                "lmsrt_{n}_latency_max_seconds {}",
                secs(v.window.max_us)
            );
        }
        let _ = writeln!(
            out,
            "# HELP lmsrt_healthy 1 when within every alert line, 0 when degraded."
        );
        let _ = writeln!(out, "# TYPE lmsrt_healthy gauge");
        let _ = writeln!(
            out,
            "lmsrt_healthy {}",
            u8::from(self.health.status == HealthStatus::Ok)
        );
        out
    }
}
