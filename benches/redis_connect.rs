//! What each way of connecting costs an append (`docs/redis.md`, "Connecting"), two forms side
//! by side, alternately sample by sample in one run: on a 3-master Redis Cluster, one store
//! through `redis://` to its master and through `redis+cluster://` seeds; on two servers, plain
//! TCP and `rediss://`; on a master with one replica, without and with `wait_replicas=1`.
//! Servers started here on loopback, no persistence.
//!
//! `cargo bench --features redis --bench redis_connect [-- SAMPLES]` (needs `redis-server`,
//! `redis-cli`, `openssl`). Prints p50 and p99 per form and per round; nothing is asserted.

#[cfg(feature = "redis")]
#[path = "../tests/redis_common/mod.rs"]
mod redis_common;

#[cfg(feature = "redis")]
fn main() {
    use redis_common::{RedisCluster, RedisServer, make_ca, make_cert};

    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3000);

    let cluster = RedisCluster::start();
    let seeds = cluster.url();
    let name = seeds.split("store=").nth(1).unwrap().to_owned();
    let slot: u16 = cluster.nodes[0]
        .cli(&["CLUSTER", "KEYSLOT", &format!("{{{name}}}")])
        .parse()
        .unwrap();
    let master = cluster.nodes[cluster.owner(slot)].port();
    let direct = format!("redis://127.0.0.1:{master}/0?store={name}");
    compare(
        "cluster",
        [
            ("redis:// to the master", direct),
            ("redis+cluster://", seeds),
        ],
        n,
    );
    drop(cluster);

    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_cert(dir.path(), "ca", "server");
    let plain = RedisServer::start();
    let tls = RedisServer::start_tls_in(dir.path(), false);
    let rediss = format!(
        "rediss://127.0.0.1:{}/0?store=b&tls_ca={}",
        tls.port(),
        dir.path().join("ca.pem").display()
    );
    compare("tls", [("redis://", plain.url()), ("rediss://", rediss)], n);

    let master = RedisServer::start();
    let port = master.port().to_string();
    let replica = RedisServer::start_with_args(&["--replicaof", "127.0.0.1", &port]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !replica
        .cli(&["INFO", "replication"])
        .contains("master_link_status:up")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "replica not in sync in 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let base = format!("redis://127.0.0.1:{port}/0?store=w");
    let waiting = format!("{base}&wait_replicas=1&wait_timeout_ms=1000");
    compare(
        "wait",
        [("redis://", base), ("wait_replicas=1", waiting)],
        n,
    );
}

/// Appends through each form in turn, `n` samples each per round, three rounds.
#[cfg(feature = "redis")]
fn compare(title: &str, forms: [(&str, String); 2], n: usize) {
    use std::time::Instant;

    use lms_realtime::{Config, EventStore, NewEvent};

    let stores = forms
        .each_ref()
        .map(|(_, url)| EventStore::open_url(url, Config::default()).unwrap());
    let data = r#"{"text":"hello there, a chat message of some length"}"#;
    for round in 1..=3 {
        let mut samples = [Vec::with_capacity(n), Vec::with_capacity(n)];
        for _ in 0..n {
            for (s, out) in stores.iter().zip(samples.iter_mut()) {
                let t = Instant::now();
                s.append(NewEvent::new("message_create", 1).data(data))
                    .unwrap();
                out.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        let [a, b] = samples.map(|mut v| {
            v.sort_by(|x, y| x.total_cmp(y));
            let at = |p: f64| v[((v.len() - 1) as f64 * p) as usize];
            (at(0.5), at(0.99))
        });
        println!(
            "{title} round {round}: {} p50 {:.1} µs p99 {:.1} µs | {} p50 {:.1} µs p99 {:.1} µs | p50 ratio {:.2}",
            forms[0].0,
            a.0,
            a.1,
            forms[1].0,
            b.0,
            b.1,
            b.0 / a.0
        );
    }
}

#[cfg(not(feature = "redis"))]
fn main() {
    eprintln!(
        "redis_connect needs the `redis` feature: cargo bench --features redis --bench redis_connect"
    );
}
