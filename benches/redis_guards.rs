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
//! * `{limiter,slots,breaker}/cluster/…`: the same decisions on a 3-master Redis Cluster
//!   started here too (`redis+cluster://`: each key's decision goes to its slot's master), and
//!   `ping_round_robin/cluster`, a raw `PING` to each of its masters in turn (the floor of
//!   calls spread over three servers on this machine).
//!
//! Each single-node Redis bench also times a `PING` after every decision, alternately in the
//! same loop, and at the end the median ratio decision / `PING` over its samples is printed:
//! robust to a busy host where absolute figures are not. Each cluster bench times the same
//! decision on the single node alternately instead, by blocks of 10 (ratio cluster / one node,
//! median over the blocks), and the Redis commands per decision are counted on both (`INFO`).
//! Then `redis-benchmark -t ping` (one client) on the single server, for the record.
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

    use super::redis_common::{RedisCluster, RedisServer};

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

    /// Records one ratio under `name`.
    fn record(ratios: &Ratios, name: &str, ratio: f64) {
        let mut r = ratios.borrow_mut();
        match r.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => v.push(ratio),
            None => r.push((name.to_owned(), vec![ratio])),
        }
    }

    /// Times `iters` runs of `op`, each followed by a `PING` on `con` timed apart; records the
    /// ratio of the two totals under `name` and returns the decisions' total.
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
        record(ratios, name, spent.as_secs_f64() / pinged.as_secs_f64());
        spent
    }

    /// Cluster decisions alternate with the single node's by this many, and each block's ratio
    /// is one sample: per call, the 2 cores would measure four redis-server processes' wake-ups
    /// rather than the decisions; over a whole criterion sample, one burst of the other
    /// helpers' load would land on one side only. The median over the blocks shrugs off both.
    const BLOCK: u64 = 10;

    /// Times `iters` runs of `op` (on the cluster) and as many of `peer` (the same decision on
    /// the single node), alternately by [`BLOCK`]; records each block's ratio under `name` and
    /// returns `op`'s total.
    fn against_one_node(
        ratios: &Ratios,
        name: &str,
        iters: u64,
        mut op: impl FnMut(),
        mut peer: impl FnMut(),
    ) -> Duration {
        let mut spent = Duration::ZERO;
        let mut done = 0;
        while done < iters {
            let k = BLOCK.min(iters - done);
            let t = Instant::now();
            (0..k).for_each(|_| op());
            let u = Instant::now();
            (0..k).for_each(|_| peer());
            spent += u - t;
            record(
                ratios,
                name,
                (u - t).as_secs_f64() / u.elapsed().as_secs_f64(),
            );
            done += k;
        }
        spent
    }

    /// Commands the servers have processed (`INFO stats`), summed.
    fn commands(servers: &[RedisServer]) -> u64 {
        servers
            .iter()
            .map(|s| {
                s.cli(&["INFO", "stats"])
                    .lines()
                    .find_map(|l| l.strip_prefix("total_commands_processed:"))
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .expect("INFO stats has total_commands_processed")
            })
            .sum()
    }

    /// Redis commands per run of `op` over `n` runs, on `servers`.
    fn commands_per(servers: &[RedisServer], n: usize, mut op: impl FnMut(usize)) -> f64 {
        let before = commands(servers);
        (0..n).for_each(&mut op);
        // Less the `INFO` of `before` on each server.
        (commands(servers) - before - servers.len() as u64) as f64 / n as f64
    }

    pub fn main() {
        let server = RedisServer::start();
        let url = server.url();
        let raw_url = url.split('?').next().unwrap().to_owned();
        let client = redis::Client::open(raw_url.as_str()).unwrap();
        let mut ping_con = client.get_connection().unwrap();
        let mut con = client.get_connection().unwrap();
        let guards = Arc::new(RedisGuards::open(&url).unwrap());
        let cluster = RedisCluster::start();
        let on_cluster = Arc::new(RedisGuards::open(&cluster.url()).unwrap());
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
            (
                "cluster",
                RateLimiter::on_redis(on_cluster.clone(), limiter_config()).unwrap(),
            ),
        ];
        let slots = [
            (
                "redis",
                Slots::on_redis(guards.clone(), slots_config()).unwrap(),
            ),
            ("shm", Slots::open(&db, slots_config()).unwrap()),
            (
                "cluster",
                Slots::on_redis(on_cluster.clone(), slots_config()).unwrap(),
            ),
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
            (
                "cluster",
                Breakers::on_redis(on_cluster.clone(), BreakerConfig::default()).unwrap(),
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
        // The cluster's floor on this machine: one PING to each of its three masters in turn
        // (each call wakes another redis-server process), against the single node's PING.
        let mut masters: Vec<redis::Connection> = cluster
            .nodes
            .iter()
            .map(|n| {
                let url = format!("redis://127.0.0.1:{}/0", n.port());
                redis::Client::open(url).unwrap().get_connection().unwrap()
            })
            .collect();
        let mut turn = 0;
        g.bench_function("ping_round_robin/cluster", |b| {
            b.iter_custom(|n| {
                let round_robin = || {
                    turn = (turn + 1) % masters.len();
                    let _: String = redis::cmd("PING").query(&mut masters[turn]).unwrap();
                };
                let one_node = || {
                    let _: String = redis::cmd("PING").query(&mut con).unwrap();
                };
                against_one_node(
                    &ratios,
                    "ping_round_robin/cluster",
                    n,
                    round_robin,
                    one_node,
                )
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
        let limit = |l: &RateLimiter, i: usize| {
            let d = l.check("bench", &keys[i % KEYS]).unwrap();
            assert!(d.allowed && d.tracked);
        };
        for (name, l) in &limiters {
            let id = format!("limiter/{name}/allowed");
            let mut i = 0;
            let mut decide = || {
                i += 1;
                limit(l, i);
            };
            g.bench_function(&id, |b| match *name {
                "redis" => {
                    b.iter_custom(|n| with_ping(&ratios, &id, &mut ping_con, n, &mut decide))
                }
                "cluster" => b.iter_custom(|n| {
                    let mut j = 0;
                    let one_node = || {
                        j += 1;
                        limit(&limiters[0].1, KEYS / 2 + j);
                    };
                    against_one_node(&ratios, &id, n, &mut decide, one_node)
                }),
                _ => b.iter(&mut decide),
            });
        }
        let take = |s: &Slots, i: usize| {
            let l = s.acquire(&keys[i % USERS]).unwrap();
            assert!(s.release(&l));
        };
        for (name, s) in &slots {
            let id = format!("slots/{name}/acquire_release");
            let mut i = 0;
            let mut decide = || {
                i += 1;
                take(s, i);
            };
            g.bench_function(&id, |b| match *name {
                "redis" => {
                    b.iter_custom(|n| with_ping(&ratios, &id, &mut ping_con, n, &mut decide))
                }
                "cluster" => b.iter_custom(|n| {
                    let mut j = 0;
                    let one_node = || {
                        j += 1;
                        take(&slots[0].1, j);
                    };
                    against_one_node(&ratios, &id, n, &mut decide, one_node)
                }),
                _ => b.iter(&mut decide),
            });
        }
        let check = |br: &Breakers| assert!(br.check("store").unwrap().allowed);
        for (name, br) in &breakers {
            let id = format!("breaker/{name}/check_closed");
            let mut decide = || check(br);
            g.bench_function(&id, |b| match *name {
                "redis" => {
                    b.iter_custom(|n| with_ping(&ratios, &id, &mut ping_con, n, &mut decide))
                }
                "cluster" => b.iter_custom(|n| {
                    against_one_node(&ratios, &id, n, &mut decide, || check(&breakers[0].1))
                }),
                _ => b.iter(&mut decide),
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
        assert_eq!(
            on_cluster.errors(),
            0,
            "a cluster call failed during the bench"
        );

        println!("\nRedis commands per decision (INFO total_commands_processed, 1,000 each):");
        let one = std::slice::from_ref(&server);
        let per = [
            (
                "limiter check",
                commands_per(one, 1_000, |i| limit(&limiters[0].1, i)),
                commands_per(&cluster.nodes, 1_000, |i| limit(&limiters[3].1, i)),
            ),
            (
                "slot acquire + release",
                commands_per(one, 1_000, |i| take(&slots[0].1, i)),
                commands_per(&cluster.nodes, 1_000, |i| take(&slots[2].1, i)),
            ),
            (
                "breaker check",
                commands_per(one, 1_000, |_| check(&breakers[0].1)),
                commands_per(&cluster.nodes, 1_000, |_| check(&breakers[2].1)),
            ),
        ];
        for (name, one, on_cluster) in per {
            println!("  {name:<36} one node {one:.3}, cluster {on_cluster:.3}");
        }

        println!(
            "\nmedian ratio to a PING (single node, alternately per call, one sample per criterion \
             sample) or to the single node's decision (cluster, alternately by {BLOCK}, one \
             sample per block), in the same loop:"
        );
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
