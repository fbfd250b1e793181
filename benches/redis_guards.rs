//! The cost of one guard decision on Redis (`--guards redis`), beside the same decision on the
//! host's shared-memory table and in process, and beside a raw Redis round trip, on one
//! `redis-server` started here (loopback, free port, no persistence), in one run (#21: "measure
//! the decision cost").
//!
//! Criterion part, per operation:
//!
//! * `ping`: a raw `PING` on a connection of its own (the physical floor: one round trip);
//!   `evalsha_noop`: `EVALSHA` of `return 1` (the floor of any one-script decision).
//! * `limiter/{redis,shm,in_process}/allowed`: a decision over 10,000 rotating keys within
//!   their limit.
//! * `slots/{redis,shm}/acquire_release`: an acquisition and its release (two calls on
//!   Redis) over 1,000 rotating users.
//! * `breaker/{redis,shm}/check_closed` and `breaker/redis/record_success`.
//!
//! Each Redis bench also times a `PING` after every decision, alternately in the same loop, and
//! at the end the median ratio decision / `PING` over its samples is printed: robust to a busy
//! host where absolute figures are not. Then `redis-benchmark -t ping` (one client) on the same
//! server, for the record.
//!
//! `cargo bench --features redis --bench redis_guards` (needs `redis-server`).

#[cfg(feature = "redis")]
#[path = "../tests/redis_common/mod.rs"]
mod redis_common;

#[cfg(feature = "redis")]
mod run {
    use std::cell::RefCell;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use criterion::{Criterion, Throughput};
    use lms_realtime::guards::{
        ActionLimit, BreakerConfig, Breakers, LimiterConfig, RateLimiter, RedisGuards, Slots,
        SlotsConfig,
    };

    use super::redis_common::RedisServer;

    const KEYS: usize = 10_000;
    const USERS: usize = 1_000;

    fn limiter_config() -> LimiterConfig {
        LimiterConfig::default()
            .action("bench", ActionLimit::per_minute(1_000_000).burst(1_000_000))
    }

    fn slots_config() -> SlotsConfig {
        SlotsConfig {
            check_pid: false,
            ..SlotsConfig::default()
        }
    }

    /// Per Redis bench: the decision / PING ratio of each sample.
    type Ratios = RefCell<Vec<(String, Vec<f64>)>>;

    /// Times `iters` runs of `op`, each followed by a `PING` timed apart; records the ratio
    /// of the two totals under `name` and returns the decisions' total.
    fn with_ping(
        ratios: &Ratios,
        name: &str,
        con: &mut redis::Connection,
        iters: u64,
        mut op: impl FnMut(),
    ) -> Duration {
        let (mut spent, mut pinged) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..iters {
            let t = Instant::now();
            op();
            let u = Instant::now();
            let _: String = redis::cmd("PING").query(con).unwrap();
            spent += u - t;
            pinged += u.elapsed();
        }
        let mut r = ratios.borrow_mut();
        let ratio = spent.as_secs_f64() / pinged.as_secs_f64();
        match r.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => v.push(ratio),
            None => r.push((name.to_owned(), vec![ratio])),
        }
        spent
    }

    pub fn main() {
        let server = RedisServer::start();
        let url = server.url();
        let raw_url = url.split('?').next().unwrap().to_owned();
        let client = redis::Client::open(raw_url.as_str()).unwrap();
        let mut ping_con = client.get_connection().unwrap();
        let mut con = client.get_connection().unwrap();
        let guards = Arc::new(RedisGuards::open(&url).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("g.db");

        let limiters = [
            (
                "redis",
                RateLimiter::on_redis(guards.clone(), limiter_config()).unwrap(),
            ),
            ("shm", RateLimiter::open(&db, limiter_config()).unwrap()),
            (
                "in_process",
                RateLimiter::in_process(limiter_config()).unwrap(),
            ),
        ];
        let slots = [
            (
                "redis",
                Slots::on_redis(guards.clone(), slots_config()).unwrap(),
            ),
            ("shm", Slots::open(&db, slots_config()).unwrap()),
        ];
        let breakers = [
            (
                "redis",
                Breakers::on_redis(guards.clone(), BreakerConfig::default()).unwrap(),
            ),
            (
                "shm",
                Breakers::open(&db, BreakerConfig::default()).unwrap(),
            ),
        ];
        let keys: Vec<String> = (0..KEYS).map(|i| format!("user-{i}")).collect();
        let ratios: Ratios = RefCell::default();

        let mut c = Criterion::default()
            .configure_from_args()
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        let mut g = c.benchmark_group("redis_guards");
        g.throughput(Throughput::Elements(1));
        g.bench_function("ping", |b| {
            b.iter(|| {
                let _: String = redis::cmd("PING").query(&mut con).unwrap();
            })
        });
        let noop = redis::Script::new("return 1");
        g.bench_function("evalsha_noop", |b| {
            b.iter_custom(|n| {
                with_ping(&ratios, "evalsha_noop", &mut ping_con, n, || {
                    let _: i64 = noop.invoke(&mut con).unwrap();
                })
            })
        });
        for (name, l) in &limiters {
            let id = format!("limiter/{name}/allowed");
            let mut i = 0;
            let mut decide = || {
                i = (i + 1) % KEYS;
                let d = l.check("bench", &keys[i]).unwrap();
                assert!(d.allowed && d.tracked);
            };
            g.bench_function(&id, |b| {
                if *name == "redis" {
                    b.iter_custom(|n| with_ping(&ratios, &id, &mut ping_con, n, &mut decide))
                } else {
                    b.iter(&mut decide)
                }
            });
        }
        for (name, s) in &slots {
            let id = format!("slots/{name}/acquire_release");
            let mut i = 0;
            let mut decide = || {
                i = (i + 1) % USERS;
                let l = s.acquire(&keys[i]).unwrap();
                assert!(s.release(&l));
            };
            g.bench_function(&id, |b| {
                if *name == "redis" {
                    b.iter_custom(|n| with_ping(&ratios, &id, &mut ping_con, n, &mut decide))
                } else {
                    b.iter(&mut decide)
                }
            });
        }
        for (name, br) in &breakers {
            let id = format!("breaker/{name}/check_closed");
            let mut decide = || assert!(br.check("store").unwrap().allowed);
            g.bench_function(&id, |b| {
                if *name == "redis" {
                    b.iter_custom(|n| with_ping(&ratios, &id, &mut ping_con, n, &mut decide))
                } else {
                    b.iter(&mut decide)
                }
            });
        }
        let (_, br) = &breakers[0];
        g.bench_function("breaker/redis/record_success", |b| {
            b.iter_custom(|n| {
                with_ping(
                    &ratios,
                    "breaker/redis/record_success",
                    &mut ping_con,
                    n,
                    || {
                        br.record_success("store").unwrap();
                    },
                )
            })
        });
        g.finish();
        assert_eq!(guards.errors(), 0, "a Redis call failed during the bench");

        println!("\nmedian ratio to a PING timed alternately in the same loop:");
        for (name, mut v) in ratios.into_inner() {
            v.sort_by(|a, b| a.total_cmp(b));
            println!("  {name:<36} {:.2} ({} samples)", v[v.len() / 2], v.len());
        }
        let port = raw_url
            .rsplit(':')
            .next()
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        let out = std::process::Command::new("redis-benchmark")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                port,
                "-t",
                "ping",
                "-n",
                "20000",
                "-c",
                "1",
                "-q",
            ])
            .output();
        match out {
            // Its progress lines end in '\r'; the summaries say "requests per second".
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .split(['\r', '\n'])
                .filter(|l| l.contains("requests per second"))
                .for_each(|l| println!("redis-benchmark -c 1 (same server): {}", l.trim())),
            Err(e) => println!("redis-benchmark not run: {e}"),
        }
    }
}

#[cfg(feature = "redis")]
fn main() {
    run::main();
}

#[cfg(not(feature = "redis"))]
fn main() {
    eprintln!(
        "redis_guards needs the `redis` feature: cargo bench --features redis --bench redis_guards"
    );
}
