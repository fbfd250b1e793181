//! The Redis engine's append beside raw `XADD` on the same `redis-server`, alternately in one
//! run, as issue #21 asks: a single append against one `XADD` round trip, and batches of 100
//! against 100 pipelined `XADD`s; and the physical bound of a script: one `EVALSHA` whose Lua
//! does nothing but 100 `XADD`s (or one).
//!
//! `cargo bench --features redis --bench redis_append` starts its own `redis-server` (free
//! loopback port, no persistence). With `LMSRT_BENCH_REDIS=redis://127.0.0.1:PORT` it uses that
//! one instead, under a store name of its own, so that several builds and `redis-benchmark` take
//! turns on one server (`benches/redis-batch.sh`). Prints per round the client-side figures
//! (mean, p50, p99, rates, ratios) and Redis's own time per event (`INFO commandstats`, reset
//! before each measure: what the server spent, whatever the client's scheduling). Nothing is
//! asserted.

#[cfg(feature = "redis")]
#[path = "../tests/redis_common/mod.rs"]
mod redis_common;

#[cfg(feature = "redis")]
fn main() {
    use std::time::Instant;

    use lms_realtime::{Config, EventStore, NewEvent};

    let (_server, base) = match std::env::var("LMSRT_BENCH_REDIS") {
        Ok(u) => (None, u),
        Err(_) => {
            let s = redis_common::RedisServer::start();
            let base = s.url().split('?').next().unwrap().to_owned();
            (Some(s), base)
        }
    };
    let url = format!("{base}?store=bench-{}", std::process::id());
    // No background purger: its script would count in the append's server time.
    let config = Config {
        purge_interval: None,
        ..Config::default()
    };
    let store = EventStore::open_url(&url, config).unwrap();
    let mut con = redis::Client::open(base.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let stream = format!("bench-xadd-{}", std::process::id());
    let data = r#"{"text":"hello there, a chat message of some length"}"#;
    // What the engine stores per event (the encoded event), so the bound script moves as many bytes.
    let stored = r#"{"t":"message_create","p":1,"c":1,"m":null,"th":null,"u":1,"d":{"text":"hello there, a chat message of some length"},"ts":1796600000000,"x":1796686400000}"#;
    let bound = redis::Script::new(
        "for i = 1, #ARGV do redis.call('XADD', KEYS[1], '*', 'd', ARGV[i]) end return #ARGV",
    );
    let n = 4000;
    let batches = 40;
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
    // Redis's own time in `cmd` (µs) since the last reset, then a reset.
    let server_us = |con: &mut redis::Connection, cmd: &str| -> f64 {
        let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(con).unwrap();
        info.lines()
            .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")))
            .and_then(|l| l.split(",usec=").nth(1))
            .and_then(|r| r.split(',').next())
            .and_then(|u| u.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let per_event = |us: f64, events: u32| us / f64::from(events);
    let xadd = |p: &mut redis::Pipeline| {
        p.cmd("XADD").arg(&stream).arg("*").arg("d").arg(stored);
    };
    for round in 1..=3 {
        server_us(&mut con, "xadd");
        let single_xadd = stats(timed(&mut || {
            let mut p = redis::pipe();
            xadd(&mut p);
            let _: (String,) = p.query(&mut con).unwrap();
        }));
        let single_xadd_srv = per_event(server_us(&mut con, "xadd"), n);
        let single = stats(timed(&mut || {
            store
                .append(NewEvent::new("message_create", 1).data(data))
                .unwrap();
        }));
        let single_srv = per_event(server_us(&mut con, "evalsha"), n);
        let single_bound = stats(timed(&mut || {
            let _: i64 = bound.key(&stream).arg(stored).invoke(&mut con).unwrap();
        }));
        let single_bound_srv = per_event(server_us(&mut con, "evalsha"), n);

        let t = Instant::now();
        for _ in 0..batches {
            let mut p = redis::pipe();
            for _ in 0..100 {
                xadd(&mut p);
            }
            let _: Vec<String> = p.query(&mut con).unwrap();
        }
        let piped = f64::from(batches * 100) / t.elapsed().as_secs_f64();
        let piped_srv = per_event(server_us(&mut con, "xadd"), batches * 100);
        let t = Instant::now();
        for _ in 0..batches {
            let evs = (0..100)
                .map(|_| NewEvent::new("message_create", 1).data(data))
                .collect();
            store.append_batch(evs).unwrap();
        }
        let batched = f64::from(batches * 100) / t.elapsed().as_secs_f64();
        let batched_srv = per_event(server_us(&mut con, "evalsha"), batches * 100);
        let t = Instant::now();
        for _ in 0..batches {
            let mut inv = bound.key(&stream);
            for _ in 0..100 {
                inv.arg(stored);
            }
            let _: i64 = inv.invoke(&mut con).unwrap();
        }
        let bound_rate = f64::from(batches * 100) / t.elapsed().as_secs_f64();
        let bound_srv = per_event(server_us(&mut con, "evalsha"), batches * 100);
        println!(
            "round {round}: single (us mean/p50/p99): XADD {:.1}/{:.1}/{:.1}, append {:.1}/{:.1}/{:.1} \
             (rate ratio {:.2}), bound script {:.1}/{:.1}/{:.1}; Redis us per event: XADD {single_xadd_srv:.2}, \
             append {single_srv:.2}, bound {single_bound_srv:.2}",
            single_xadd.0,
            single_xadd.1,
            single_xadd.2,
            single.0,
            single.1,
            single.2,
            single_xadd.0 / single.0,
            single_bound.0,
            single_bound.1,
            single_bound.2,
        );
        println!(
            "round {round}: batches of 100 (events/s): pipelined XADD {piped:.0}, append_batch {batched:.0} \
             (ratio {:.2}), bound script {bound_rate:.0} (ratio {:.2}); Redis us per event: XADD \
             {piped_srv:.2}, append_batch {batched_srv:.2}, bound {bound_srv:.2}",
            batched / piped,
            bound_rate / piped,
        );
        let _: () = redis::cmd("DEL").arg(&stream).query(&mut con).unwrap();
    }
}

#[cfg(not(feature = "redis"))]
fn main() {
    eprintln!(
        "redis_append needs the `redis` feature: cargo bench --features redis --bench redis_append"
    );
}
