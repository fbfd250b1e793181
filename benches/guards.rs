//! Benches of the guards and metrics, against the issue's targets, plus a custom harness for
//! "appends are unaffected by limiter traffic".
//!
//! Criterion part (per operation, `SystemClock`, so every figure includes a clock read):
//!
//! * `limiter/{shared,in_process}/allowed`: decisions over 10,000 rotating keys that stay
//!   within their limit; `…/denied`: one exhausted key (the refusal path also lowers the
//!   reputation); `limiter/shared/allowed_2_threads`: two threads on the shared table.
//!   Targets: shared ≥ 500,000/s, in-process ≥ 5,000,000/s.
//! * `breaker/check_closed`, `breaker/check_open`, `breaker/record_success`: target checks
//!   ≥ 1,000,000/s.
//! * `slots/acquire_release`: one acquire and one release over 1,000 rotating users: target
//!   ≥ 100,000/s.
//! * `metrics/{incr,record_us}` on the shared file: target ≤ 100 ns per event.
//!
//! Custom part (`append_p99`): `EventStore::append` latencies alone and with a thread making
//! shared-limiter decisions at the same time (paced at 500,000/s, then flat out), in alternating
//! rounds of the same run; prints per phase the pooled p50/p99 and its ratio to the phase
//! without limiter traffic, and the median over rounds of the same ratio taken round by round.
//! A control phase spins a thread with the paced phase's duty cycle but makes no decisions, to
//! separate plain CPU competition (two cores) from anything specific to the limiter.
//!
//! Run: `cargo bench --bench guards` (a filter argument selects criterion benches by name;
//! `append_p99` selects the custom part).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use lms_realtime::guards::{
    ActionLimit, BreakerConfig, Breakers, LimiterConfig, RateLimiter, Slots, SlotsConfig,
};
use lms_realtime::metrics::{Counter, Histogram, Metrics, MetricsConfig};
use lms_realtime::{Config, EventStore, NewEvent};

const KEYS: usize = 10_000;

fn limiter_config() -> LimiterConfig {
    LimiterConfig::default().action("bench", ActionLimit::per_minute(1_000_000).burst(1_000_000))
}

fn keys(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn bench_limiter(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let shared = Arc::new(RateLimiter::open(dir.path().join("l.db"), limiter_config()).unwrap());
    let local = RateLimiter::in_process(limiter_config()).unwrap();
    let keys = keys(KEYS, "user-");
    let mut g = c.benchmark_group("limiter");
    g.throughput(Throughput::Elements(1));
    for (name, l) in [("shared", &*shared), ("in_process", &local)] {
        let mut i = 0;
        g.bench_function(format!("{name}/allowed"), |b| {
            b.iter(|| {
                i = (i + 1) % KEYS;
                let d = l.check("bench", &keys[i]).unwrap();
                debug_assert!(d.allowed);
                d
            })
        });
        let refused = (0..1_000).any(|_| !l.check("post", "spammer").unwrap().allowed);
        assert!(refused, "`post` (20 per minute) never refused the spammer");
        g.bench_function(format!("{name}/denied"), |b| {
            b.iter(|| l.check("post", "spammer").unwrap())
        });
    }
    let keys = Arc::new(keys);
    g.bench_function("shared/allowed_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let threads: Vec<_> = (0..2)
                .map(|t| {
                    let (l, keys) = (shared.clone(), keys.clone());
                    std::thread::spawn(move || {
                        for i in 0..iters.div_ceil(2) as usize {
                            std::hint::black_box(
                                l.check("bench", &keys[(i * 2 + t) % KEYS]).unwrap(),
                            );
                        }
                    })
                })
                .collect();
            threads.into_iter().for_each(|t| t.join().unwrap());
            start.elapsed()
        })
    });
    g.finish();
}

fn bench_breaker(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let b = Breakers::open(dir.path().join("b.db"), BreakerConfig::default()).unwrap();
    b.force_open("down", 3_600_000).unwrap();
    let mut g = c.benchmark_group("breaker");
    g.throughput(Throughput::Elements(1));
    g.bench_function("check_closed", |bn| bn.iter(|| b.check("store").unwrap()));
    g.bench_function("check_open", |bn| bn.iter(|| b.check("down").unwrap()));
    g.bench_function("record_success", |bn| {
        bn.iter(|| b.record_success("store").unwrap())
    });
    g.finish();
}

fn bench_slots(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let s = Slots::open(dir.path().join("s.db"), SlotsConfig::default()).unwrap();
    let users = keys(1_000, "user-");
    let mut g = c.benchmark_group("slots");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("acquire_release", |b| {
        b.iter(|| {
            i = (i + 1) % users.len();
            let l = s.acquire(&users[i]).unwrap();
            assert!(s.release(&l));
        })
    });
    g.finish();
}

fn bench_metrics(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::open(dir.path().join("m.db"), MetricsConfig::default()).unwrap();
    let mut g = c.benchmark_group("metrics");
    g.throughput(Throughput::Elements(1));
    g.bench_function("incr", |b| b.iter(|| m.incr(Counter::LimiterAllowed)));
    let mut v = 0u64;
    g.bench_function("record_us", |b| {
        b.iter(|| {
            v = (v + 7919) % 200_000;
            m.record_us(Histogram::Fetch, v)
        })
    });
    g.bench_function("snapshot", |b| b.iter(|| m.snapshot()));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_limiter, bench_breaker, bench_slots, bench_metrics
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Decisions between two pacing checks: at 500,000/s, 100 µs of work-and-sleep, so the thread
/// never holds a core for long (a longer burst, such as 1,000 decisions, preempts the appending
/// thread for its whole length whenever the scheduler wakes it on the appender's core).
const PACE_BATCH: usize = 50;

/// How hard the limiter thread works during a phase.
#[derive(Clone, Copy)]
enum Load {
    /// No second thread.
    None,
    /// Limiter decisions at this rate per second.
    Paced(u64),
    /// Limiter decisions as fast as one thread can.
    FlatOut,
    /// The control: the same duty cycle as `Paced(rate)`, spinning for the given ns per
    /// "decision" instead of deciding, to tell CPU competition from anything the limiter does.
    Spin(u64, u64),
}

/// Appends `n` events, timing each, while the limiter thread (if any) makes decisions.
/// Returns the sorted latencies and the decisions per second achieved.
fn phase(
    store: &EventStore,
    limiter: &Arc<RateLimiter>,
    load: Load,
    n: usize,
) -> (Vec<Duration>, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let hammer = match load {
        Load::None => None,
        Load::Paced(_) | Load::FlatOut | Load::Spin(..) => {
            let (l, stop, done) = (limiter.clone(), stop.clone(), done.clone());
            Some(std::thread::spawn(move || {
                let keys = keys(KEYS, "poller-");
                let start = Instant::now();
                let mut count = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if let Load::Spin(_, ns) = load {
                        let t = Instant::now();
                        while t.elapsed().as_nanos() < (ns * PACE_BATCH as u64) as u128 {
                            std::hint::spin_loop();
                        }
                        count += PACE_BATCH as u64;
                    } else {
                        for _ in 0..PACE_BATCH {
                            count += 1;
                            std::hint::black_box(
                                l.check("poll", &keys[count as usize % KEYS]).unwrap(),
                            );
                        }
                    }
                    if let Load::Paced(rate) | Load::Spin(rate, _) = load {
                        let due = Duration::from_secs_f64(count as f64 / rate as f64);
                        if let Some(ahead) = due.checked_sub(start.elapsed()) {
                            std::thread::sleep(ahead);
                        }
                    }
                }
                done.store(count, Ordering::Relaxed);
                start.elapsed()
            }))
        }
    };
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let e = NewEvent::new("message_create", 1 + (i % 50) as i64)
            .message_id(i as i64)
            .user_id(7)
            .data(r#"{"text":"hello there, this is a chat message"}"#);
        let t = Instant::now();
        store.append(e).unwrap();
        lat.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let rate = hammer.map_or(0.0, |h| {
        let elapsed = h.join().unwrap();
        done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
    });
    lat.sort();
    (lat, rate)
}

fn append_p99() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let store = EventStore::open(&db, Config::default()).unwrap();
    let limiter = Arc::new(RateLimiter::open(&db, LimiterConfig::default()).unwrap());
    const N: usize = 10_000;
    const ROUNDS: usize = 24;
    // Warm up the store and the page cache.
    phase(&store, &limiter, Load::None, 5_000);
    // The cost of one decision on this table, for the CPU-only control.
    let ns = {
        let (_, rate) = phase(&store, &limiter, Load::FlatOut, 2_000);
        (1e9 / rate) as u64
    };
    let loads = [
        ("alone", Load::None),
        ("limiter 500k/s", Load::Paced(500_000)),
        ("limiter flat out", Load::FlatOut),
        ("spin control", Load::Spin(500_000, ns)),
    ];
    // Per phase: all latencies, each round's p99, each round's decision rate.
    type Results = (Vec<Duration>, Vec<Duration>, Vec<f64>);
    let mut results: Vec<Results> = vec![(Vec::new(), Vec::new(), Vec::new()); loads.len()];
    // Alternate the phases so drift in the machine's load hits them alike.
    for _ in 0..ROUNDS {
        for (i, (_, load)) in loads.iter().enumerate() {
            let (lat, rate) = phase(&store, &limiter, *load, N);
            results[i].1.push(percentile(&lat, 0.99));
            results[i].0.extend(lat);
            results[i].2.push(rate);
        }
    }
    println!(
        "\nappend_p99: {ROUNDS} rounds x {N} appends per phase, phases interleaved; one decision = {ns} ns"
    );
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    // Round by round, each phase's p99 over the same round's phase without limiter traffic:
    // pairs phases that ran seconds apart, so slower drift in the machine's load cancels out.
    let paired: Vec<Vec<f64>> = results
        .iter()
        .map(|(_, round_p99, _)| {
            let mut r: Vec<f64> = round_p99
                .iter()
                .zip(&results[0].1)
                .map(|(p, base)| p.as_secs_f64() / base.as_secs_f64())
                .collect();
            r.sort_by(f64::total_cmp);
            r
        })
        .collect();
    let base_p99 = {
        let mut all = results[0].0.clone();
        all.sort();
        percentile(&all, 0.99)
    };
    for (i, (name, _)) in loads.iter().enumerate() {
        let (all, _, rates) = &mut results[i];
        all.sort();
        let (p50, p99) = (percentile(all, 0.50), percentile(all, 0.99));
        let rate = rates.iter().sum::<f64>() / rates.len() as f64;
        println!(
            "  {name:<17} p50 {:>6.1} us | p99 {:>6.1} us (x{:.3}) | median paired round ratio x{:.3} | limiter {:>9.0} decisions/s",
            us(p50),
            us(p99),
            p99.as_secs_f64() / base_p99.as_secs_f64(),
            paired[i][paired[i].len() / 2],
            rate,
        );
    }
}

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    if filter != "append_p99" {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    if filter.is_empty() || filter == "append_p99" {
        append_p99();
    }
}
