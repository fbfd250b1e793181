//! The guards' Redis backend (feature `redis`) against a `redis-server` of the test's own, and
//! against a 3-master Redis Cluster: the same scenario gives the same answers on Redis as in
//! process (one decision arithmetic); two handles (two hosts) share a user's slots and rate;
//! leases expire on Redis's clock and a host that died leaves nothing behind; with Redis down,
//! rate limits and breakers decide on the host-local table and slots fail closed, and
//! everything resumes when Redis is back. On a cluster, users' keys land on different masters,
//! a slot moved to another master is followed, and a master that is down (or hung) sends only
//! its own keys' decisions to the fallback.
//!
//! Over 600 lines on purpose: the scenarios run on one node and on a cluster from one place,
//! with the helpers both share (splitting it would mean a shared test module for one file).

#![cfg(feature = "redis")]

mod redis_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lms_realtime::Error;
use lms_realtime::clock::{Clock, ManualClock};
use lms_realtime::guards::{
    ActionLimit, BreakerConfig, BreakerState, Breakers, LimiterConfig, OnFull, RateLimiter,
    RedisGuards, RedisTime, Slots, SlotsConfig, stable_hash,
};
use redis_common::{RedisCluster, RedisServer, RedisUrls};

/// A manual clock near the real time (Redis key expiry runs on real time).
fn clock() -> ManualClock {
    ManualClock::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    )
}

/// A guards handle on a store of its own on `redis`, with the given time source.
fn guards(redis: &impl RedisUrls, time: RedisTime) -> Arc<RedisGuards> {
    Arc::new(RedisGuards::open(&redis.url()).unwrap().time(time))
}

/// Two handles on the same store name, as two hosts would open them.
fn two_hosts(redis: &impl RedisUrls) -> (Arc<RedisGuards>, Arc<RedisGuards>) {
    let url = redis.url();
    (
        Arc::new(RedisGuards::open(&url).unwrap()),
        Arc::new(RedisGuards::open(&url).unwrap()),
    )
}

/// A small deterministic generator, so a failing sequence can be replayed from its seed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Waits up to `limit` for `cond`, failing with `what` if it never holds.
fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rate_limits_on_one_node() {
    rate_limits_decide_as_in_process(&RedisServer::start());
}

#[test]
fn breakers_on_one_node() {
    breakers_decide_as_in_process(&RedisServer::start());
}

#[test]
fn slots_on_one_node() {
    slots_decide_as_in_process(&RedisServer::start());
}

#[test]
fn two_hosts_on_one_node() {
    two_hosts_share_a_users_slots_and_rate(&RedisServer::start());
}

#[test]
fn many_threads_on_one_node() {
    many_threads_on_two_hosts_never_exceed_the_cap(&RedisServer::start());
}

/// Every scenario of a single node holds on a cluster too (one cluster: it is slow to start).
#[test]
fn scenarios_on_a_cluster() {
    let cluster = RedisCluster::start();
    rate_limits_decide_as_in_process(&cluster);
    breakers_decide_as_in_process(&cluster);
    slots_decide_as_in_process(&cluster);
    two_hosts_share_a_users_slots_and_rate(&cluster);
    many_threads_on_two_hosts_never_exceed_the_cap(&cluster);
}

fn rate_limits_decide_as_in_process(redis: &impl RedisUrls) {
    let tiny = ActionLimit::per_minute(3)
        .adaptive(300, 200, Duration::from_secs(30))
        .block(
            Duration::from_secs(1),
            Duration::from_secs(8),
            Duration::from_secs(60),
        );
    let mut seen = [0; 3];
    for seed in 0..8 {
        let clock = clock();
        let config = LimiterConfig::default()
            .action("tiny", tiny)
            .clock(Arc::new(clock.clone()));
        let remote =
            RateLimiter::on_redis(guards(redis, RedisTime::Caller), config.clone()).unwrap();
        let local = RateLimiter::in_process(config).unwrap();
        let mut rng = Lcg(seed);
        for step in 0..300 {
            clock.advance_ms(rng.below(1_500) as i64);
            let a = ["post", "ip", "tiny", "tiny"][rng.below(4) as usize];
            let k = format!("k{}", rng.below(2));
            let (r, l) = match rng.below(10) {
                0 => (remote.peek(a, &k).unwrap(), local.peek(a, &k).unwrap()),
                1 => {
                    remote.reset(a, &k).unwrap();
                    local.reset(a, &k).unwrap();
                    continue;
                }
                _ => (remote.check(a, &k).unwrap(), local.check(a, &k).unwrap()),
            };
            assert_eq!(r, l, "seed {seed}, step {step}: {a} {k}");
            seen[usize::from(!r.allowed) + usize::from(r.blocked)] += 1;
        }
    }
    // The scenarios reach every kind of answer: allowed, refused, blocked.
    assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
}

fn breakers_decide_as_in_process(redis: &impl RedisUrls) {
    for seed in 0..8 {
        let clock = clock();
        let config = BreakerConfig {
            failure_threshold: 3,
            min_requests: 4,
            window_ms: 1_000,
            open_ms: 500,
            max_open_ms: 4_000,
            half_open_probes: 2,
            probe_timeout_ms: 700,
            ..BreakerConfig::default()
        }
        .clock(Arc::new(clock.clone()));
        let remote = Breakers::on_redis(guards(redis, RedisTime::Caller), config.clone()).unwrap();
        let local = Breakers::in_process(config).unwrap();
        let mut rng = Lcg(seed);
        for step in 0..300 {
            clock.advance_ms(rng.below(300) as i64);
            let name = ["store", "daemon"][rng.below(2) as usize];
            let (r, l) = match rng.below(12) {
                0..=2 => (remote.check(name), local.check(name)),
                3 => (remote.status(name), local.status(name)),
                4..=6 => (remote.record_success(name), local.record_success(name)),
                7..=10 => (remote.record_failure(name), local.record_failure(name)),
                _ if rng.below(2) == 0 => (remote.reset(name), local.reset(name)),
                _ => (remote.force_open(name, 900), local.force_open(name, 900)),
            };
            assert_eq!(r.unwrap(), l.unwrap(), "seed {seed}, step {step}: {name}");
        }
    }
}

fn slots_decide_as_in_process(redis: &impl RedisUrls) {
    for (seed, on_full) in [
        (1, OnFull::Reject),
        (2, OnFull::EvictOldest),
        (3, OnFull::Reject),
    ] {
        let clock = clock();
        let config = SlotsConfig {
            max_per_key: 3,
            lease_ms: 5_000,
            on_full,
            check_pid: false,
            ..SlotsConfig::default()
        }
        .clock(Arc::new(clock.clone()));
        let remote = Slots::on_redis(guards(redis, RedisTime::Caller), config.clone()).unwrap();
        let local = Slots::in_process(config).unwrap();
        // Each backend's leases, in the same order: (remote, local).
        let mut held = Vec::new();
        let mut rng = Lcg(seed);
        for step in 0..300 {
            // At least a second apart: expiries (one-second resolution) never tie, so "the
            // lease that expires first" is one lease on both backends.
            clock.advance_ms(1_000 + rng.below(1_500) as i64);
            let k = format!("user-{}", rng.below(2));
            let at = format!("seed {seed}, step {step}");
            match rng.below(6) {
                0..=2 => match (remote.acquire(&k), local.acquire(&k)) {
                    (Ok(r), Ok(l)) => {
                        assert_eq!(
                            (r.expires_at_ms, r.reclaimed),
                            (l.expires_at_ms, l.reclaimed),
                            "{at}"
                        );
                        held.push((r, l));
                    }
                    (Err(Error::SlotsExhausted { .. }), Err(Error::SlotsExhausted { .. })) => {}
                    other => panic!("{at}: {other:?}"),
                },
                3 if !held.is_empty() => {
                    let (r, l) = held.swap_remove(rng.below(held.len() as u64) as usize);
                    let (on_redis, in_table) = (remote.release(&r), local.release(&l));
                    // A lease already expired may still sit in the table's word (true) or be
                    // gone from Redis (false); either way nothing is held. A live one: alike.
                    if l.expires_at_ms > clock.now_ms() {
                        assert_eq!(on_redis, in_table, "{at}");
                    } else {
                        assert!(!on_redis || in_table, "{at}");
                    }
                }
                4 if !held.is_empty() => {
                    let i = rng.below(held.len() as u64) as usize;
                    let (r, l) = &mut held[i];
                    assert_eq!(remote.renew(r), local.renew(l), "{at}");
                    assert_eq!(r.expires_at_ms, l.expires_at_ms, "{at}");
                    assert_eq!(remote.is_held(r), local.is_held(l), "{at}");
                }
                _ => assert_eq!(remote.count(&k).unwrap(), local.count(&k).unwrap(), "{at}"),
            }
        }
    }
}

fn two_hosts_share_a_users_slots_and_rate(redis: &impl RedisUrls) {
    let (a, b) = two_hosts(redis);
    let config = SlotsConfig {
        check_pid: false,
        ..SlotsConfig::default()
    };
    let on_a = Slots::on_redis(a.clone(), config.clone()).unwrap();
    let on_b = Slots::on_redis(b.clone(), config).unwrap();
    let l1 = on_a.acquire("user-7").unwrap();
    let _l2 = on_a.acquire("user-7").unwrap();
    let _l3 = on_b.acquire("user-7").unwrap();
    assert!(matches!(
        on_b.acquire("user-7"),
        Err(Error::SlotsExhausted { max: 3, .. })
    ));
    assert!(on_a.acquire("user-7").is_err());
    assert_eq!(on_b.count("user-7").unwrap(), 3);
    assert!(on_b.is_held(&l1), "a lease taken on A is seen on B");
    assert!(on_b.release(&l1), "and B may give it back for A");
    assert!(!on_a.is_held(&l1));
    assert!(on_a.acquire("user-7").is_ok());
    assert!(on_b.acquire("user-8").is_ok(), "users are independent");

    // 20 posts a minute for a user, counted across both hosts.
    let lim_a = RateLimiter::on_redis(a.clone(), LimiterConfig::default()).unwrap();
    let lim_b = RateLimiter::on_redis(b.clone(), LimiterConfig::default()).unwrap();
    let allowed = (0..30)
        .filter(|i| {
            let l = if i % 2 == 0 { &lim_a } else { &lim_b };
            l.check("post", "user-7").unwrap().allowed
        })
        .count();
    assert_eq!(allowed, 20);
    let d = lim_a.check("post", "user-7").unwrap();
    assert!(!d.allowed && d.tracked && d.retry_after_ms > 0, "{d:?}");

    // A breaker opened by failures seen on both hosts is open on both.
    let br_a = Breakers::on_redis(a.clone(), BreakerConfig::default()).unwrap();
    let br_b = Breakers::on_redis(b.clone(), BreakerConfig::default()).unwrap();
    for i in 0..5 {
        let b = if i % 2 == 0 { &br_a } else { &br_b };
        b.record_failure("store").unwrap();
    }
    assert_eq!(br_a.check("store").unwrap().state, BreakerState::Open);
    assert!(!br_b.check("store").unwrap().allowed);
    assert_eq!((a.errors(), b.errors()), (0, 0));
}

fn many_threads_on_two_hosts_never_exceed_the_cap(redis: &impl RedisUrls) {
    let (a, b) = two_hosts(redis);
    let hosts: Vec<Arc<Slots>> = [a, b]
        .into_iter()
        .map(|g| Arc::new(Slots::on_redis(g, SlotsConfig::default()).unwrap()))
        .collect();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let s = hosts[i % 2].clone();
            std::thread::spawn(move || {
                let mut mine = 0;
                for _ in 0..50 {
                    if let Ok(l) = s.acquire("user-1") {
                        let n = s.count("user-1").unwrap();
                        assert!(n <= 3, "{n} leases held");
                        mine += 1;
                        assert!(s.release(&l));
                    }
                }
                mine
            })
        })
        .collect();
    let total: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(total >= 3, "some acquisitions succeed ({total})");
    assert_eq!(hosts[0].count("user-1").unwrap(), 0);
}

#[test]
fn leases_expire_on_redis_time_and_a_dead_host_leaves_nothing() {
    let redis = RedisServer::start();
    let g = guards(&redis, RedisTime::Server);
    let config = SlotsConfig {
        lease_ms: 1_000,
        ..SlotsConfig::default()
    };
    // "Host A" takes all three slots and dies without releasing them.
    {
        let dying = Slots::on_redis(g.clone(), config.clone()).unwrap();
        for _ in 0..3 {
            dying.acquire("user-9").unwrap();
        }
    }
    let survivor = Slots::on_redis(g.clone(), config).unwrap();
    assert!(
        survivor.acquire("user-9").is_err(),
        "the dead host's leases still count"
    );
    let key = slots_key(&g, "user-9");
    assert_eq!(redis.command(&["EXISTS", &key]).as_deref(), Some(":1"));
    wait_for(Duration::from_secs(5), "leases expire", || {
        survivor.count("user-9").unwrap() == 0
    });
    // Redis drops the set itself once its last lease is over (expiry + 1 s).
    wait_for(Duration::from_secs(5), "the lease set expires", || {
        redis.command(&["EXISTS", &key]).as_deref() == Some(":0")
    });
    let mut l = survivor.acquire("user-9").unwrap();
    assert!(!l.reclaimed);
    let before = l.expires_at_ms;
    std::thread::sleep(Duration::from_millis(1_100));
    assert!(survivor.renew(&mut l));
    assert!(l.expires_at_ms > before);
}

/// The store name `g` was opened with (its keys' prefix, from its `Debug`).
fn store_name(g: &RedisGuards) -> String {
    let shown = format!("{g:?}");
    let start = shown.find("lmsrt-guard:").unwrap() + "lmsrt-guard:".len();
    let end = start + shown[start..].find(':').unwrap();
    shown[start..end].to_owned()
}

/// A key's tag, as the guards' tables and Redis keys use it (0 is the tables' empty marker).
fn tag(key: &[u8]) -> u64 {
    stable_hash(&[key]).max(1)
}

/// The Redis key of `user`'s leases for the guards `g`.
fn slots_key(g: &RedisGuards, user: &str) -> String {
    format!(
        "lmsrt-guard:{}:sl:{:016x}",
        store_name(g),
        tag(user.as_bytes())
    )
}

#[test]
fn with_redis_down_limits_and_breakers_go_local_and_slots_fail_closed() {
    let mut redis = RedisServer::start();
    let g = guards(&redis, RedisTime::Server);
    let limiter = RateLimiter::on_redis(g.clone(), LimiterConfig::default()).unwrap();
    let breakers = Breakers::on_redis(g.clone(), BreakerConfig::default()).unwrap();
    let slots = Slots::on_redis(g.clone(), SlotsConfig::default()).unwrap();
    let mut lease = slots.acquire("user-1").unwrap();
    for _ in 0..20 {
        assert!(limiter.check("post", "user-1").unwrap().allowed);
    }
    assert!(!limiter.check("post", "user-1").unwrap().allowed);

    redis.kill();
    // The local table starts empty: the user has a fresh allowance on this host, and the
    // limit still holds there.
    let started = Instant::now();
    let allowed = (0..30)
        .filter(|_| limiter.check("post", "user-1").unwrap().allowed)
        .count();
    assert_eq!(allowed, 20);
    assert!(!g.is_up());
    for _ in 0..5 {
        breakers.record_failure("store").unwrap();
    }
    let s = breakers.check("store").unwrap();
    assert!(
        !s.allowed && s.tracked,
        "the store breaker opens on this host: {s:?}"
    );
    assert!(matches!(
        slots.acquire("user-2"),
        Err(Error::SlotsExhausted { .. })
    ));
    assert!(!slots.renew(&mut lease) && !slots.is_held(&lease));
    assert!(slots.count("user-1").is_err());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "decisions while down must not wait on the dead server ({:?})",
        started.elapsed()
    );
    assert!(g.errors() >= 1);

    redis.run();
    wait_for(Duration::from_secs(20), "slots work again", || {
        slots.acquire("user-2").is_ok()
    });
    // Back on Redis (empty after the restart): the shared state is fresh again.
    assert!(breakers.check("store").unwrap().allowed);
    assert!(limiter.check("post", "user-3").unwrap().allowed);
    assert!(g.is_up());
}

#[test]
fn the_back_off_doubles_while_redis_stays_down() {
    // Nothing listens on port 1: every connection is refused at once.
    let g = Arc::new(RedisGuards::open("redis://127.0.0.1:1/0").unwrap());
    let limiter = RateLimiter::on_redis(g.clone(), LimiterConfig::default()).unwrap();
    assert!(g.is_up());
    assert!(
        limiter.check("post", "u").unwrap().allowed,
        "decided locally"
    );
    assert_eq!(g.errors(), 1);
    assert!(!g.is_up());
    // Calls during the back-off do not try Redis.
    assert!(limiter.check("post", "u").unwrap().allowed);
    assert_eq!(g.errors(), 1);
    wait_for(
        Duration::from_secs(3),
        "the first back-off (1 s) ends",
        || g.is_up(),
    );
    assert!(limiter.check("post", "u").unwrap().allowed);
    assert_eq!(g.errors(), 2);
    // The second is 2 s: still backing off after 1.2 s.
    std::thread::sleep(Duration::from_millis(1_200));
    assert!(!g.is_up());
    wait_for(
        Duration::from_secs(3),
        "the second back-off (2 s) ends",
        || g.is_up(),
    );
}

#[test]
fn bad_urls_and_names_are_refused() {
    assert!(RedisGuards::open("redis://127.0.0.1:1/0?store=bad{name}").is_err());
    assert!(RedisGuards::open("not a url").is_err());
    let g = Arc::new(RedisGuards::open("redis://127.0.0.1:1/0").unwrap());
    assert!(
        format!("{g:?}").contains("lmsrt-guard:lmsrt:"),
        "default name"
    );
    let bad = SlotsConfig {
        max_per_key: 0,
        ..SlotsConfig::default()
    };
    assert!(Slots::on_redis(g, bad).is_err());
}

/// The Redis Cluster hash slot of a key without a hash tag (CRC16-XMODEM mod 16384).
fn slot_of(key: &str) -> u16 {
    let mut crc: u16 = 0;
    for &byte in key.as_bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16_384
}

/// A user whose leases' key lands on a master `pick` accepts (by index in `cluster.nodes`).
fn user_where(
    cluster: &RedisCluster,
    g: &RedisGuards,
    pick: impl Fn(usize) -> bool,
) -> (String, u16) {
    (0..100)
        .map(|i| format!("user-{i}"))
        .map(|u| {
            let slot = slot_of(&slots_key(g, &u));
            (u, slot)
        })
        .find(|(_, slot)| pick(cluster.owner(*slot)))
        .expect("one of 100 users lands there")
}

fn no_pid_check() -> SlotsConfig {
    SlotsConfig {
        check_pid: false,
        ..SlotsConfig::default()
    }
}

#[test]
fn on_a_cluster_users_spread_over_the_masters_and_a_moved_slot_is_followed() {
    let cluster = RedisCluster::start();
    let (a, b) = two_hosts(&cluster);
    let on_a = Slots::on_redis(a.clone(), no_pid_check()).unwrap();
    let on_b = Slots::on_redis(b.clone(), no_pid_check()).unwrap();
    let users: Vec<String> = (0..30).map(|i| format!("user-{i}")).collect();
    for u in &users {
        on_a.acquire(u).unwrap();
        on_b.acquire(u).unwrap();
    }
    // Each master holds the keys of the slots it serves, and every master holds some.
    let pattern = format!("lmsrt-guard:{}:sl:*", store_name(&a));
    let held: Vec<Vec<String>> = cluster
        .nodes
        .iter()
        .map(|n| {
            n.cli(&["KEYS", &pattern])
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .collect();
    assert!(held.iter().all(|keys| !keys.is_empty()), "{held:?}");
    assert_eq!(held.iter().map(Vec::len).sum::<usize>(), users.len());
    for u in &users {
        let key = slots_key(&a, u);
        let owner = cluster.owner(slot_of(&key));
        assert!(
            held[owner].contains(&key),
            "{u}'s leases on its slot's master"
        );
        assert_eq!(cluster.nodes[owner].cli(&["ZCARD", &key]), "2");
    }
    let key = slots_key(&a, &users[0]);
    assert_eq!(
        cluster.nodes[0].cli(&["CLUSTER", "KEYSLOT", &key]),
        slot_of(&key).to_string(),
        "the test's slot is Redis's"
    );

    // Move users[0]'s slot to the next master. While it migrates, a new key of that slot is
    // made on the importing master (ASK)...
    let slot = slot_of(&key);
    let (src, dst) = (cluster.owner(slot), (cluster.owner(slot) + 1) % 3);
    let (src_id, dst_id) = (cluster.node_id(src), cluster.node_id(dst));
    let s = slot.to_string();
    let newcomer = (0..)
        .map(|i| format!("newcomer-{i}"))
        .find(|u| slot_of(&slots_key(&a, u)) == slot)
        .unwrap();
    let keys_in = |n: usize| cluster.nodes[n].cli(&["CLUSTER", "COUNTKEYSINSLOT", &s]);
    assert_eq!(
        cluster.nodes[dst].cli(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &src_id]),
        "OK"
    );
    assert_eq!(
        cluster.nodes[src].cli(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &dst_id]),
        "OK"
    );
    on_b.acquire(&newcomer).unwrap();
    assert_eq!((keys_in(src), keys_in(dst)), ("1".into(), "1".into()));
    assert_eq!(on_a.count(&newcomer).unwrap(), 1);
    // ...then the old key moves and the slot is the other master's: both hosts' slot maps are
    // stale, and MOVED is followed.
    let port = cluster.nodes[dst].port().to_string();
    let migrate = ["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS", &key];
    assert_eq!(cluster.nodes[src].cli(&migrate), "OK");
    for n in [dst, src, 3 - src - dst] {
        assert_eq!(
            cluster.nodes[n].cli(&["CLUSTER", "SETSLOT", &s, "NODE", &dst_id]),
            "OK"
        );
    }
    assert_eq!((keys_in(src), keys_in(dst)), ("0".into(), "2".into()));
    assert_eq!(on_a.count(&users[0]).unwrap(), 2);
    on_b.acquire(&users[0]).unwrap();
    assert!(matches!(
        on_a.acquire(&users[0]),
        Err(Error::SlotsExhausted { max: 3, .. })
    ));
    assert_eq!(on_b.count(&newcomer).unwrap(), 1);
    assert_eq!((a.errors(), b.errors()), (0, 0));
}

#[test]
fn on_a_cluster_a_master_down_sends_only_its_keys_to_the_fallback() {
    let mut cluster = RedisCluster::start();
    let g = guards(&cluster, RedisTime::Server);
    let slots = Slots::on_redis(g.clone(), no_pid_check()).unwrap();
    let limiter = RateLimiter::on_redis(g.clone(), LimiterConfig::default()).unwrap();
    let (victim, slot) = user_where(&cluster, &g, |_| true);
    let dead = cluster.owner(slot);
    let (other, _) = user_where(&cluster, &g, |m| m != dead);
    slots.acquire(&victim).unwrap();
    slots.acquire(&other).unwrap();
    assert!(g.is_up());

    cluster.nodes[dead].kill();
    // The cluster marks the node failed only after its node timeout (5 s): until then the
    // other masters serve their slots, and only the dead one's decisions fall back.
    let started = Instant::now();
    assert!(matches!(
        slots.acquire(&victim),
        Err(Error::SlotsExhausted { .. })
    ));
    assert!(slots.count(&victim).is_err());
    assert!(!g.is_up());
    assert_eq!(slots.count(&other).unwrap(), 1, "other masters still serve");
    slots.acquire(&other).unwrap();
    let allowed = (0..30)
        .filter(|_| limiter.check("post", &victim).unwrap().allowed)
        .count();
    assert_eq!(allowed, 20, "the limit holds, shared or on this host");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "decisions while a master is down must not wait on it ({:?})",
        started.elapsed()
    );
    assert!(g.errors() >= 1);

    cluster.nodes[dead].run();
    wait_for(
        Duration::from_secs(60),
        "the master's slots work again",
        || slots.acquire(&victim).is_ok(),
    );
    wait_for(
        Duration::from_secs(20),
        "every master is tried again",
        || slots.count(&other).is_ok() && g.is_up(),
    );
}

/// With `cluster-require-full-coverage no` (the set-up `docs/redis.md` advises for shared
/// guards), a master the cluster has marked failed, with no replica to take over, costs only
/// its own keys' decisions: the other masters keep serving theirs, where by default every node
/// answers `CLUSTERDOWN` for every key and all decisions fall back.
#[test]
fn on_a_cluster_without_full_coverage_a_failed_master_costs_only_its_keys() {
    let mut cluster = RedisCluster::start_partial_coverage();
    let g = guards(&cluster, RedisTime::Server);
    let slots = Slots::on_redis(g.clone(), no_pid_check()).unwrap();
    let (victim, slot) = user_where(&cluster, &g, |_| true);
    let dead = cluster.owner(slot);
    let (other, _) = user_where(&cluster, &g, |m| m != dead);
    slots.acquire(&other).unwrap();
    assert_eq!(g.masters_backing_off(), (0, 3));

    let dead_id = cluster.node_id(dead);
    cluster.nodes[dead].kill();
    let live = (0..3).find(|&i| i != dead).unwrap();
    wait_for(
        Duration::from_secs(30),
        "the cluster marks the master failed",
        || {
            cluster.nodes[live]
                .cli(&["CLUSTER", "NODES"])
                .lines()
                .filter(|l| l.starts_with(&dead_id))
                .any(|l| {
                    l.split_whitespace()
                        .nth(2)
                        .is_some_and(|flags| flags.split(',').any(|f| f == "fail"))
                })
        },
    );
    assert!(
        cluster.nodes[live]
            .cli(&["CLUSTER", "INFO"])
            .contains("cluster_state:ok"),
        "the live masters still serve"
    );

    assert!(
        matches!(slots.acquire(&victim), Err(Error::SlotsExhausted { .. })),
        "the failed master's keys fall back (slots fail closed)"
    );
    let errors = g.errors();
    assert_eq!(slots.count(&other).unwrap(), 1, "shared, as before");
    slots.acquire(&other).unwrap();
    assert_eq!(slots.count(&other).unwrap(), 2);
    assert_eq!(g.errors(), errors, "no call to the live masters failed");
    assert!(!g.is_up());
    assert_eq!(
        g.masters_backing_off(),
        (1, 3),
        "one master of three is down"
    );
}

#[test]
fn two_hosts_share_slots_on_a_tls_cluster() {
    let dir = tempfile::tempdir().unwrap();
    redis_common::make_ca(dir.path(), "ca");
    redis_common::make_cert(dir.path(), "ca", "server");
    let cluster = RedisCluster::start_tls_in(dir.path());
    assert!(cluster.url().starts_with("rediss+cluster://"));
    two_hosts_share_a_users_slots_and_rate(&cluster);
}

#[test]
fn a_cluster_that_cannot_be_reached_falls_back_and_bad_cluster_urls_are_refused() {
    for bad in [
        "redis+cluster://127.0.0.1:1,127.0.0.1:x/?store=s",
        "redis+cluster://127.0.0.1:1/3?store=s",
        "redis+cluster://127.0.0.1:1/?store=bad{name}",
        "rediss+cluster://127.0.0.1:1/?store=s&tls_ca=/nonexistent/ca.pem",
    ] {
        assert!(
            matches!(RedisGuards::open(bad), Err(Error::InvalidArgument(_))),
            "{bad}"
        );
    }
    // Nothing listens on ports 1 and 2: every connection is refused at once.
    let g =
        Arc::new(RedisGuards::open("redis+cluster://127.0.0.1:1,127.0.0.1:2/?store=s").unwrap());
    let limiter = RateLimiter::on_redis(g.clone(), LimiterConfig::default()).unwrap();
    let slots = Slots::on_redis(g.clone(), SlotsConfig::default()).unwrap();
    assert!(g.is_up());
    assert!(
        limiter.check("post", "u").unwrap().allowed,
        "decided locally"
    );
    assert_eq!(g.errors(), 1);
    assert!(!g.is_up());
    assert!(matches!(
        slots.acquire("u"),
        Err(Error::SlotsExhausted { .. })
    ));
    assert_eq!(g.errors(), 1, "no seed is asked again while backing off");
}

#[test]
fn on_a_cluster_a_failed_over_master_is_found_again() {
    let mut cluster = RedisCluster::start_with_replicas();
    let g = guards(&cluster, RedisTime::Server);
    let slots = Slots::on_redis(g.clone(), no_pid_check()).unwrap();
    let (user, slot) = user_where(&cluster, &g, |_| true);
    let dead = cluster.owner(slot);
    slots.acquire(&user).unwrap();
    cluster.nodes[dead].kill();
    assert!(
        slots.acquire(&user).is_err(),
        "fails closed while no master serves it"
    );
    wait_for(Duration::from_secs(30), "a replica takes over", || {
        cluster.serving(slot).is_some_and(|n| n != dead)
    });
    // The guards' map still names the dead master: the next probe asks the others for theirs.
    wait_for(
        Duration::from_secs(40),
        "decisions reach the new master",
        || slots.acquire(&user).is_ok(),
    );
    assert!(slots.count(&user).unwrap() >= 1);
}

#[test]
fn on_a_cluster_a_hung_master_costs_one_bounded_wait_then_none() {
    let cluster = RedisCluster::start();
    let g = guards(&cluster, RedisTime::Server);
    let slots = Slots::on_redis(g.clone(), no_pid_check()).unwrap();
    let (victim, slot) = user_where(&cluster, &g, |_| true);
    let hung = cluster.owner(slot);
    let (other, _) = user_where(&cluster, &g, |m| m != hung);
    slots.acquire(&victim).unwrap();
    slots.acquire(&other).unwrap();

    cluster.nodes[hung].pause();
    // Within the node timeout (5 s) the cluster has not noticed: only this client's timeout
    // (IO_TIMEOUT, 250 ms) ends the call, and then the node is left alone.
    let started = Instant::now();
    assert!(matches!(
        slots.acquire(&victim),
        Err(Error::SlotsExhausted { .. })
    ));
    let first = started.elapsed();
    for _ in 0..20 {
        assert!(slots.acquire(&victim).is_err());
    }
    slots.acquire(&other).unwrap();
    let all = started.elapsed();
    cluster.nodes[hung].resume();
    assert!(
        first < Duration::from_secs(2) && all < Duration::from_secs(3),
        "a hung master stalls one call for about IO_TIMEOUT, then none ({first:?}, {all:?})"
    );
    assert_eq!(g.errors(), 1, "one call tried the hung master");
    wait_for(Duration::from_secs(30), "the master is used again", || {
        slots.acquire(&victim).is_ok()
    });
}
