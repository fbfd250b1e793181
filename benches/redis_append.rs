//! The Redis engine's append beside raw `XADD` on the same `redis-server` (started here on a
//! free loopback port, no persistence), alternately in one run, as issue #21 asks: a single
//! append against one `XADD` round trip, and batches of 100 against 100 pipelined `XADD`s.
//!
//! `cargo bench --features redis --bench redis_append` (needs `redis-server`). Prints per round
//! the mean, p50 and p99 of each and their ratios; nothing is asserted.

#[cfg(feature = "redis")]
#[path = "../tests/redis_common/mod.rs"]
mod redis_common;

#[cfg(feature = "redis")]
fn main() {
    use std::time::Instant;

    use lms_realtime::{Config, EventStore, NewEvent};

    let server = redis_common::RedisServer::start();
    let url = server.url();
    let store = EventStore::open_url(&url, Config::default()).unwrap();
    let raw_url = url.split('?').next().unwrap();
    let mut con = redis::Client::open(raw_url)
        .unwrap()
        .get_connection()
        .unwrap();
    let data = r#"{"text":"hello there, a chat message of some length"}"#;
    let n = 4000;
    let stats = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        let at = |p: f64| v[((v.len() - 1) as f64 * p) as usize];
        (v.iter().sum::<f64>() / v.len() as f64, at(0.5), at(0.99))
    };
    let timed = |f: &mut dyn FnMut()| {
        (0..n)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect::<Vec<f64>>()
    };
    for round in 1..=3 {
        let xadd = stats(timed(&mut || {
            let _: String = redis::cmd("XADD")
                .arg("bench:s")
                .arg("*")
                .arg("d")
                .arg(data)
                .query(&mut con)
                .unwrap();
        }));
        let append = stats(timed(&mut || {
            store
                .append(NewEvent::new("message_create", 1).data(data))
                .unwrap();
        }));
        let batches = 40;
        let t = Instant::now();
        for _ in 0..batches {
            let mut p = redis::pipe();
            for _ in 0..100 {
                p.cmd("XADD").arg("bench:s").arg("*").arg("d").arg(data);
            }
            let _: Vec<String> = p.query(&mut con).unwrap();
        }
        let xadd_batched = f64::from(batches * 100) / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..batches {
            let evs = (0..100)
                .map(|_| NewEvent::new("message_create", 1).data(data))
                .collect();
            store.append_batch(evs).unwrap();
        }
        let append_batched = f64::from(batches * 100) / t.elapsed().as_secs_f64();
        println!(
            "round {round}: single (us, mean/p50/p99): XADD {:.1}/{:.1}/{:.1}, append {:.1}/{:.1}/{:.1}, \
             rate ratio {:.2}; batches of 100 (events/s): pipelined XADD {xadd_batched:.0}, \
             append_batch {append_batched:.0}, ratio {:.2}",
            xadd.0,
            xadd.1,
            xadd.2,
            append.0,
            append.1,
            append.2,
            xadd.0 / append.0,
            append_batched / xadd_batched
        );
        let _: () = redis::cmd("DEL").arg("bench:s").query(&mut con).unwrap();
    }
}

#[cfg(not(feature = "redis"))]
fn main() {
    eprintln!(
        "redis_append needs the `redis` feature: cargo bench --features redis --bench redis_append"
    );
}
