//! The report: publish rate, delivery latency percentiles, loss and duplicates, the server's
//! memory and CPU, printed as text and gathered into the `--json` summary.

use serde_json::{Value, json};

use crate::Args;
use crate::client::Seen;
use crate::publishers::Published;
use crate::server::proc_usage;

/// The percentiles the generator reports, in ms, of sorted latencies in µs.
const REPORTED: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("max", 1.0),
];

/// A delivery later than this after its publish is counted late (#20: "none late").
const LATE_US: u32 = 1_000_000;

/// The [`REPORTED`] percentiles as text.
fn pcts_text(sorted: &[u32]) -> String {
    REPORTED
        .iter()
        .map(|(name, p)| format!("{name} {:.2} ms", pct(sorted, *p)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The [`REPORTED`] percentiles as a JSON object (`p999` for p99.9).
fn pcts_json(sorted: &[u32]) -> serde_json::Value {
    REPORTED
        .iter()
        .map(|(name, p)| (name.replace('.', ""), serde_json::json!(pct(sorted, *p))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The `p` quantile (nearest rank) of sorted latencies in µs, in ms.
fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

/// Reports what the publishers did; sorts their request latencies.
pub(crate) fn publishing(p: &mut Published, summary: &mut Value) {
    let (n, secs, failed) = (p.acked.len(), p.secs, p.failed);
    println!(
        "published {n} events in {secs:.2} s ({:.0}/s), {failed} failed",
        n as f64 / secs
    );
    summary["published"] = json!(n);
    summary["publish_failed"] = json!(failed);
    summary["publish_per_s"] = json!(n as f64 / secs);
    let lat = &mut p.request_latencies_us;
    if !lat.is_empty() {
        lat.sort_unstable();
        println!(
            "publish request latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            pct(lat, 0.5),
            pct(lat, 0.99),
            pct(lat, 1.0)
        );
        summary["publish_p50_ms"] = json!(pct(lat, 0.5));
        summary["publish_p99_ms"] = json!(pct(lat, 0.99));
    }
}

/// When publishing ran for a while (steady, saturate, publish), for the delivery rate.
pub(crate) struct PublishSpan {
    /// The first publish, in µs since the epoch.
    pub(crate) started_us: i64,
    /// How long the publishers ran.
    pub(crate) secs: f64,
    /// The latest delivery read by a client, in µs since the epoch.
    pub(crate) last_receipt_us: i64,
}

/// Reports what the clients saw. With `measured` (clients were polling while events were
/// published), also delivery latency and loss and duplicates: client `i` must have received
/// every acknowledged event of its channel exactly once.
pub(crate) fn deliveries(
    a: &Args,
    seen_all: &[Seen],
    published: &[u64],
    measured: bool,
    span: Option<PublishSpan>,
    summary: &mut Value,
) {
    let mut by_channel: Vec<Vec<u64>> = vec![Vec::new(); a.channels];
    for &seq in published {
        by_channel[(seq % a.channels as u64) as usize].push(seq);
    }
    let (mut expected, mut lost, mut dups, mut polls, mut errors) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut gaps = 0u64;
    let mut lat: Vec<u32> = Vec::new();
    let mut arrival_lat: Vec<u32> = Vec::new();
    for (i, s) in seen_all.iter().enumerate() {
        polls += s.polls;
        errors += s.errors;
        gaps += s.gaps;
        for &seq in &by_channel[i % a.channels] {
            expected += 1;
            match s
                .counts
                .get((seq / a.channels as u64) as usize)
                .copied()
                .unwrap_or(0)
            {
                0 => lost += 1,
                1 => {}
                n => dups += u64::from(n - 1),
            }
        }
        lat.extend_from_slice(&s.latencies_us);
        arrival_lat.extend_from_slice(&s.arrival_latencies_us);
    }
    lat.sort_unstable();
    arrival_lat.sort_unstable();
    let delivered = lat.len() as u64;
    // Sorted: the late ones are the tail.
    let late = (lat.len() - lat.partition_point(|l| *l <= LATE_US)) as u64;
    println!("clients: {polls} requests, {errors} errors, {gaps} gap events");
    if !measured {
        return;
    }
    println!(
        "delivery latency: {} ({delivered} deliveries)",
        pcts_text(&lat)
    );
    println!(
        "delivery latency to the client's socket: {}",
        pcts_text(&arrival_lat)
    );
    summary["latency_ms"] = pcts_json(&lat);
    summary["arrival_latency_ms"] = pcts_json(&arrival_lat);
    println!(
        "loss {lost} of {expected} ({:.3}%), duplicates {dups}, late (> 1 s) {late}; \
         {polls} requests, {errors} errors",
        if expected > 0 {
            lost as f64 * 100.0 / expected as f64
        } else {
            0.0
        }
    );
    if let Some(span) = span {
        // From the first publish to the last delivery (deliveries may trail the publisher).
        let secs = ((span.last_receipt_us - span.started_us) as f64 / 1e6).max(span.secs);
        println!(
            "deliveries/s: {:.0} ({delivered} from the first publish to the last delivery, {secs:.2} s)",
            delivered as f64 / secs
        );
        summary["deliveries_per_s"] = json!(delivered as f64 / secs);
    }
    summary["expected"] = json!(expected);
    summary["lost"] = json!(lost);
    summary["duplicates"] = json!(dups);
    summary["late"] = json!(late);
    summary["gaps"] = json!(gaps);
    summary["polls"] = json!(polls);
    summary["errors"] = json!(errors);
}

/// Reports the server's (RSS MiB, PSS MiB, CPU % of one core) during the run, and the
/// generator's own RSS.
pub(crate) fn usage((rss_mb, pss_mb, cpu_pct): (f64, f64, f64), summary: &mut Value) {
    summary["server_rss_mb"] = json!(rss_mb);
    summary["server_pss_mb"] = json!(pss_mb);
    summary["server_cpu_pct"] = json!(cpu_pct);
    println!(
        "server: RSS {rss_mb:.1} MiB (PSS {pss_mb:.1} MiB), CPU {cpu_pct:.0}% of one core during the run"
    );
    if let Some((rss, _)) = proc_usage(std::process::id()) {
        println!("loadgen: RSS {:.1} MiB", rss as f64 / 1024.0);
    }
}
