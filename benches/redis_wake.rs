//! Cross-daemon wake latency on Redis (issue #21: "cross-daemon wake p99 ≤ 5 ms"), beside the
//! same on one SQLite daemon, alternately in one run: a poll waits on daemon A; the time from
//! sending a signed publish to daemon B until A's poll is answered. Three set-ups per round:
//! Redis, publish on B and wait on A (two daemons, each with its own store handle); Redis, both
//! on A (the engine's share without the second daemon); SQLite, both on one daemon (the
//! embedded default, whose wake is a futex and an in-process hand-off).
//!
//! `cargo bench --features daemon,redis --bench redis_wake [-- ROUNDS SAMPLES]` (needs
//! `redis-server`; starts its own, no persistence, and the daemons in this process). Prints per
//! round and set-up the p50, p90, p99 and max in µs; nothing is asserted.

#[cfg(all(feature = "redis", feature = "daemon"))]
#[path = "../tests/redis_common/mod.rs"]
mod redis_common;

#[cfg(all(feature = "redis", feature = "daemon"))]
#[path = "../tests/daemon_common/mod.rs"]
mod daemon_common;

#[cfg(all(feature = "redis", feature = "daemon"))]
fn main() {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Instant;

    use daemon_common::{Client, config, token, wait_for_waiters};
    use lms_realtime::{EventStore, daemon, store};

    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let samples: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let server = redis_common::RedisServer::start();
        let url = server.url();
        let state = tempfile::tempdir().unwrap();
        let cfg = daemon::Config {
            state_dir: Some(state.path().to_path_buf()),
            ..config()
        };
        let start = |s: EventStore| {
            let cfg = cfg.clone();
            // The daemon runs while its `Spawned` is held (dropping it shuts the daemon down).
            async move { daemon::spawn(Arc::new(s), cfg).await.unwrap() }
        };
        let open_redis = || EventStore::open_url(&url, store::Config::default()).unwrap();
        let da = start(open_redis()).await;
        let db = start(open_redis()).await;
        let dir = tempfile::tempdir().unwrap();
        let ds =
            start(EventStore::open(dir.path().join("chat.db"), store::Config::default()).unwrap())
                .await;
        let (a, b, sqlite) = (da.addr, db.addr, ds.addr);

        // One sample: a poll waiting on `wait_on` (registered first), a publish sent to
        // `publish_to`; µs from sending the publish to the poll's answer.
        let mut n = 0i64;
        let mut sample = async |publish_to: SocketAddr, wait_on: SocketAddr| -> f64 {
            n += 1;
            let mut c = Client::connect(wait_on).await;
            // Read up to the head first (pages of at most 200), so the poll below waits.
            let mut cursor = String::new();
            loop {
                let page = c
                    .poll(
                        &token(1, &[1]),
                        &format!("channels=1&cursor={cursor}&timeout=0&limit=200"),
                    )
                    .await
                    .json();
                cursor = page["cursor"].as_str().unwrap().to_owned();
                if page["has_more"] != true {
                    break;
                }
            }
            let poll = tokio::spawn(async move {
                c.poll(
                    &token(1, &[1]),
                    &format!("channels=1&cursor={cursor}&timeout=10"),
                )
                .await;
                Instant::now()
            });
            wait_for_waiters(wait_on, 1).await;
            let mut p = Client::connect(publish_to).await;
            let body = serde_json::json!({"event_type": "m", "channel_id": 1, "data": {"n": n}});
            let sent = Instant::now();
            let r = p.publish(&body).await;
            assert!(r.status.is_success(), "{}", r.text());
            let answered = poll.await.unwrap();
            answered.duration_since(sent).as_secs_f64() * 1e6
        };
        let setups = [
            ("redis, publish on B, wait on A", b, a),
            ("redis, one daemon", a, a),
            ("sqlite, one daemon", sqlite, sqlite),
        ];
        for round in 1..=rounds {
            let mut lat: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
            // Alternately, sample by sample: a noisy host hits every set-up alike.
            for _ in 0..samples {
                for (i, (_, p, w)) in setups.iter().enumerate() {
                    lat[i].push(sample(*p, *w).await);
                }
            }
            for ((name, _, _), mut v) in setups.iter().zip(lat) {
                v.sort_by(|x, y| x.total_cmp(y));
                let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
                println!(
                    "round {round} {name:32} n={} p50={:.0} p90={:.0} p99={:.0} max={:.0} µs",
                    v.len(),
                    at(0.5),
                    at(0.9),
                    at(0.99),
                    at(1.0)
                );
            }
        }
    });
}

#[cfg(not(all(feature = "redis", feature = "daemon")))]
fn main() {
    eprintln!("needs --features daemon,redis");
}
