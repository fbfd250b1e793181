//! The metrics' unit tests: saturation, buckets and quantiles, the recent window, gauges,
//! health verdicts, rendering, and shared files adding up.

use super::layout::{BUCKETS, bucket_upper};
use super::*;

#[test]
fn counters_and_latency_sums_saturate_instead_of_wrapping() {
    let m = Metrics::in_process(MetricsConfig::default());
    m.add(Counter::Deliveries, u64::MAX - 1);
    m.add(Counter::Deliveries, 5);
    m.add(Counter::Deliveries, u64::MAX);
    m.incr(Counter::Appends);
    m.add(Counter::Appends, u64::MAX);
    m.add(Counter::AppendErrors, u64::MAX);
    m.record_us(Histogram::Append, u64::MAX);
    m.record_us(Histogram::Append, u64::MAX);
    m.add_gauge(Gauge::Connections, i64::MAX);
    m.add_gauge(Gauge::Connections, i64::MAX);
    m.add_gauge(Gauge::ActiveWaits, i64::MIN);
    m.add_gauge(Gauge::ActiveWaits, -1);
    // Before: the counters wrapped to small numbers (2, 3), the sum to u64::MAX - 1, the
    // gauge to -2; and a debug build panicked summing the window.
    let s = m.snapshot();
    assert_eq!(s.counters["deliveries"].total, u64::MAX);
    assert_eq!(s.counters["deliveries"].window, u64::MAX);
    assert_eq!(s.counters["appends"].total, u64::MAX);
    let h = &s.histograms["append"];
    assert_eq!((h.count, h.sum_us, h.max_us), (2, u64::MAX, u64::MAX));
    assert_eq!(s.gauges["connections"], i64::MAX);
    assert_eq!(s.gauges["active_waits"], i64::MIN);
    // Everything failed: the verdict says so rather than overflowing.
    assert_eq!(s.health.status, HealthStatus::Degraded);
    assert!(
        s.to_prometheus()
            .contains("lmsrt_deliveries_total 18446744073709551615\n")
    );
}
use crate::clock::ManualClock;

const T0: i64 = 1_700_000_000_000;

fn metrics() -> (Metrics, ManualClock) {
    let clock = ManualClock::new(T0);
    let m = Metrics::in_process(MetricsConfig {
        clock: Arc::new(clock.clone()),
        ..MetricsConfig::default()
    });
    (m, clock)
}

#[test]
fn buckets_are_log_linear_and_tight() {
    for v in (0..5000u64).chain([1 << 20, (1 << 36) - 1, u64::MAX / 3]) {
        let b = bucket_of(v);
        assert!(b < BUCKETS);
        if v < 1 << 36 {
            assert!(bucket_upper(b) >= v, "{v}");
            assert!(b == 0 || bucket_upper(b - 1) < v, "{v}");
            assert!(bucket_upper(b) - v <= v / 16, "{v} within 1/16");
        }
    }
    for i in 1..BUCKETS {
        assert!(bucket_upper(i) > bucket_upper(i - 1));
    }
}

#[test]
fn quantiles_of_a_known_distribution() {
    let (m, _) = metrics();
    // 1..=1000 ms, one sample each.
    for ms in 1..=1000u64 {
        m.record(Histogram::Fetch, Duration::from_millis(ms));
    }
    let s = m.snapshot().histograms["fetch"];
    assert_eq!(s.count, 1000);
    assert_eq!(s.sum_us, 500_500_000);
    assert_eq!(s.max_us, 1_000_000);
    let w = s.window;
    assert_eq!((w.count, w.max_us), (1000, 1_000_000));
    for (got, want) in [
        (w.p50_us, 500_000),
        (w.p95_us, 950_000),
        (w.p99_us, 990_000),
    ] {
        assert!(got >= want && got <= want + want / 16, "{got} vs {want}");
    }
}

#[test]
fn window_forgets_old_samples_but_totals_do_not() {
    let (m, clock) = metrics();
    m.add(Counter::Appends, 5);
    m.record_us(Histogram::Append, 200_000);
    clock.advance_ms(30_000);
    m.incr(Counter::Appends);
    let s = m.snapshot();
    assert_eq!(
        s.counters["appends"],
        CounterValue {
            total: 6,
            window: 6
        }
    );
    assert_eq!(s.histograms["append"].window.count, 1);
    // A minute later only the second append is in the window...
    clock.advance_ms(35_000);
    let s = m.snapshot();
    assert_eq!(
        s.counters["appends"],
        CounterValue {
            total: 6,
            window: 1
        }
    );
    assert_eq!(s.histograms["append"].window.count, 0);
    assert_eq!(s.histograms["append"].count, 1);
    assert!((50_000..60_000).contains(&s.window_ms));
    // ...and after a long idle spell (the ring wrapped), none, and new data is clean.
    clock.advance_ms(3_600_000);
    m.incr(Counter::Fetches);
    let s = m.snapshot();
    assert_eq!(s.counters["appends"].window, 0);
    assert_eq!(s.counters["fetches"].window, 1);
    assert_eq!(s.counters["appends"].total, 6);
}

#[test]
fn gauges_set_and_add() {
    let (m, _) = metrics();
    m.set_gauge(Gauge::Connections, 10);
    m.add_gauge(Gauge::Connections, -3);
    m.add_gauge(Gauge::ActiveWaits, 2);
    let s = m.snapshot();
    assert_eq!(s.gauges["connections"], 7);
    assert_eq!(s.gauges["active_waits"], 2);
}

#[test]
fn health_turns_degraded_past_the_alert_lines_and_says_why() {
    let (m, clock) = metrics();
    // Healthy traffic: 100 fast appends, 2 errors (2%).
    for _ in 0..100 {
        m.incr(Counter::Appends);
        m.record(Histogram::Append, Duration::from_millis(3));
    }
    m.add(Counter::AppendErrors, 2);
    let h = m.health();
    assert_eq!(h.status, HealthStatus::Ok, "{:?}", h.reasons);
    assert_eq!(m.snapshot().error_rate, Some(0.02));
    // Errors past 5%.
    m.add(Counter::AppendErrors, 5);
    let h = m.health();
    assert_eq!(h.status, HealthStatus::Degraded);
    assert_eq!(h.reasons.len(), 1);
    assert!(
        h.reasons[0].starts_with("error rate 7.0% is above 5.0%"),
        "{}",
        h.reasons[0]
    );
    // Once the window has moved on, healthy again.
    clock.advance_ms(61_000);
    assert_eq!(m.health().status, HealthStatus::Ok);
    // Slow fetches: p99 above 100 ms.
    for i in 0..100 {
        m.incr(Counter::Fetches);
        let ms = if i < 97 { 5 } else { 250 };
        m.record(Histogram::Fetch, Duration::from_millis(ms));
    }
    let h = m.health();
    assert_eq!(h.status, HealthStatus::Degraded);
    assert!(
        h.reasons[0].starts_with("fetch p99 latency 25"),
        "{}",
        h.reasons[0]
    );
    // Waits are long by design and are not judged.
    clock.advance_ms(61_000);
    for _ in 0..100 {
        m.incr(Counter::Waits);
        m.record(Histogram::Wait, Duration::from_secs(30));
    }
    assert_eq!(m.health().status, HealthStatus::Ok);
}

#[test]
fn too_few_samples_are_not_judged() {
    let (m, _) = metrics();
    m.incr(Counter::Appends);
    m.incr(Counter::AppendErrors);
    m.record(Histogram::Append, Duration::from_secs(2));
    let s = m.snapshot();
    assert_eq!(s.error_rate, Some(1.0));
    assert_eq!(s.health.status, HealthStatus::Ok);
}

#[test]
fn json_and_prometheus_render_everything() {
    let (m, _) = metrics();
    m.incr(Counter::LimiterDenied);
    m.record_us(Histogram::Delivery, 1500);
    let s = m.snapshot();
    let v: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
    assert_eq!(v["counters"]["limiter_denied"]["total"], 1);
    assert_eq!(v["histograms"]["delivery"]["window"]["p99_us"], 1500);
    assert_eq!(v["health"]["status"], "ok");
    let text = s.to_prometheus();
    assert!(
        text.contains("# TYPE lmsrt_limiter_denied_total counter\nlmsrt_limiter_denied_total 1\n")
    );
    assert!(text.contains("lmsrt_delivery_latency_seconds{quantile=\"0.99\"} 0.0015\n"));
    assert!(text.contains("lmsrt_append_latency_seconds{quantile=\"0.5\"} NaN\n"));
    assert!(text.contains("lmsrt_delivery_latency_seconds_count 1\n"));
    assert!(text.ends_with("lmsrt_healthy 1\n"));
    // Every sample line belongs to a declared family.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split([' ', '{']).next().unwrap();
        let family = name.trim_end_matches("_sum").trim_end_matches("_count");
        assert!(text.contains(&format!("# TYPE {family} ")), "{line}");
    }
    for c in Counter::ALL {
        assert_eq!(Counter::from_name(c.name()), Some(*c));
        assert_eq!(Counter::from_id(c.id()), Some(*c));
    }
}

#[test]
fn shared_files_add_up_across_handles() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let a = Metrics::open(&db, MetricsConfig::default()).unwrap();
    let b = Metrics::open(&db, MetricsConfig::default()).unwrap();
    a.incr(Counter::Deliveries);
    b.add(Counter::Deliveries, 2);
    b.record_us(Histogram::Wait, 10);
    let s = a.snapshot();
    assert_eq!(s.counters["deliveries"].total, 3);
    assert_eq!(s.histograms["wait"].window.count, 1);
    assert!(a.path().unwrap().ends_with("m.db-lmsrt-metrics"));
}
