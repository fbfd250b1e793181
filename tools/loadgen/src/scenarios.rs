//! One run: start (or find) the server, connect the clients, publish as the scenario says,
//! let the last deliveries drain, and report.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lms_realtime::{EventStore, store};
use serde_json::Value;

use crate::client::{Shared, spawn_clients, wait_registered};
use crate::http::Conn;
use crate::publishers::{publish, publish_request};
use crate::report::{self, PublishSpan};
use crate::server::{Server, Usage, proc_usage, procs_usage, start_server};
use crate::{Args, Scenario, Target, now_us, token_key};

/// Runs the scenario `a` names, from start to report.
pub(crate) async fn run(a: Arc<Args>) {
    let server = start_server(&a).await;
    let store = if a.target == Target::Daemon {
        Some(Arc::new(
            EventStore::open_location(
                &store::StoreLocation::parse(&server.db.to_string_lossy())
                    .expect("--db: a path or a store URL"),
                store::Config::default(),
            )
            .expect("opening the store"),
        ))
    } else {
        None
    };
    let start_cursor = store
        .as_ref()
        .map(|s| s.head_cursor().unwrap().to_string())
        .unwrap_or_default();
    let (shared, stop_tx) = Shared::new();
    let n_clients = if a.scenario == Scenario::Publish {
        0
    } else {
        a.clients
    };
    let channels = if a.scenario == Scenario::Fanout {
        1
    } else {
        a.channels
    };
    let a = Arc::new(Args {
        channels,
        ..(*a).clone()
    });
    println!(
        "scenario {:?}: {} {:?} clients over {} channels, target {:?} at {}, publisher {:?}, \
         poll timeout {} s, token ttl {} s",
        a.scenario,
        n_clients,
        a.transport,
        a.channels,
        a.target,
        server.addr,
        a.publish,
        a.poll_timeout,
        a.token_ttl
    );
    if let Some((rss, _, _)) = procs_usage(&server.pids) {
        println!(
            "server RSS before the clients connect: {:.1} MiB",
            rss as f64 / 1024.0
        );
    }
    let clients = spawn_clients(n_clients, &a, server.addr, &start_cursor, &shared).await;
    let t_connect = Instant::now();
    if n_clients > 0 {
        wait_registered(&server, a.also_url, &shared, n_clients, a.target).await;
        println!(
            "{} clients waiting after {:.1} s",
            n_clients,
            t_connect.elapsed().as_secs_f64()
        );
    }
    let usage = Usage::start(&server.pids);
    let mut summary = serde_json::json!({
        "scenario": format!("{:?}", a.scenario).to_lowercase(),
        "target": format!("{:?}", a.target).to_lowercase(),
        "clients": n_clients,
        "channels": a.channels,
        "publisher": format!("{:?}", a.publish).to_lowercase(),
        "transport": format!("{:?}", a.transport).to_lowercase(),
        "poll_timeout_s": a.poll_timeout,
        "token_ttl_s": a.token_ttl,
        "stream_max_age_s": a.stream_max_age,
    });

    // Publishing, per scenario. `published` lists every acknowledged seq.
    let publish_started_us = now_us();
    let (published, span) = match a.scenario {
        Scenario::Idle => {
            tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
            (Vec::new(), None)
        }
        Scenario::Fanout => {
            let published = fanout(&a, &server, &shared, n_clients, &mut summary).await;
            (published, None)
        }
        Scenario::Steady | Scenario::Saturate | Scenario::Publish => {
            let mut p = publish(&a, &server, store.as_ref()).await;
            report::publishing(&mut p, &mut summary);
            (p.acked, Some(p.secs))
        }
    };
    let server_usage = usage.now();
    let measured = n_clients > 0 && a.scenario != Scenario::Idle;
    if measured {
        let want = published.len() as u64 * n_clients as u64 / a.channels as u64;
        drain(&shared, want).await;
    }
    shared.stop.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let mut seen_all = Vec::new();
    for c in clients {
        if let Ok(s) = c.await {
            seen_all.push(s);
        }
    }
    let span = span.map(|secs| PublishSpan {
        started_us: publish_started_us,
        secs,
        last_receipt_us: shared.last_receipt.load(Ordering::Relaxed) as i64,
    });
    report::deliveries(&a, &seen_all, &published, measured, span, &mut summary);
    report::usage(server_usage, &mut summary);
    if a.json {
        println!("{summary}");
    }
}

/// Gives the last deliveries time to arrive: until the clients have `want` of them and none
/// came for half a second, for 10 s at most.
async fn drain(shared: &Shared, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = shared.delivered.load(Ordering::Relaxed);
    let mut quiet = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = shared.delivered.load(Ordering::Relaxed);
        if now >= want && now == last && quiet.elapsed() > Duration::from_millis(500) {
            break;
        }
        if now != last {
            quiet = Instant::now();
            last = now;
        }
    }
}

/// The fanout scenario: `--rounds` times, one event to every client on channel 1, timing the
/// last delivery of each round. Returns the seqs published (one per round).
async fn fanout(
    a: &Args,
    server: &Server,
    shared: &Shared,
    n_clients: usize,
    summary: &mut Value,
) -> Vec<u64> {
    let mut published = Vec::new();
    let mut lasts = Vec::new();
    let mut arrivals = Vec::new();
    let mut conn = Conn::open(server.addr).await.expect("publisher");
    let key = token_key();
    for round in 0..a.rounds as u64 {
        shared.last_receipt.store(0, Ordering::Relaxed);
        shared.last_arrival.store(0, Ordering::Relaxed);
        let before = shared.delivered.load(Ordering::Relaxed);
        let cpu_server0 = procs_usage(&server.pids).map_or(0.0, |u| u.1);
        let cpu_self0 = proc_usage(std::process::id()).map_or(0.0, |u| u.1);
        let t = now_us();
        let req = publish_request(a.target, &key, 1, round, None, t);
        let r = conn.send(&req).await;
        assert!(
            r.is_ok_and(|(s, _, _)| (200..300).contains(&s)),
            "fanout publish failed"
        );
        published.push(round);
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.delivered.load(Ordering::Relaxed) < before + n_clients as u64
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let got = shared.delivered.load(Ordering::Relaxed) - before;
        let last_ms = (shared.last_receipt.load(Ordering::Relaxed) as i64 - t) as f64 / 1000.0;
        let arrival_ms = (shared.last_arrival.load(Ordering::Relaxed) as i64 - t) as f64 / 1000.0;
        let cpu_server = procs_usage(&server.pids).map_or(0.0, |u| u.1) - cpu_server0;
        let cpu_self = proc_usage(std::process::id()).map_or(0.0, |u| u.1) - cpu_self0;
        println!(
            "round {round}: {got}/{n_clients} delivered, the last arrived after \
             {arrival_ms:.1} ms and was read after {last_ms:.1} ms \
             (CPU meanwhile: server {:.0} ms, loadgen {:.0} ms)",
            cpu_server * 1000.0,
            cpu_self * 1000.0
        );
        lasts.push(last_ms);
        arrivals.push(arrival_ms);
        // Let every client re-poll before the next round.
        wait_registered(server, a.also_url, shared, n_clients, a.target).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let median = |v: &[f64]| {
        let mut sorted = v.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let tenths = |v: &[f64]| {
        v.iter()
            .map(|x| (x * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    };
    println!(
        "fanout: last arrival per round {:?} ms; median {:.1} ms",
        tenths(&arrivals),
        median(&arrivals)
    );
    println!(
        "fanout: last read by the client per round {:?} ms; median {:.1} ms",
        tenths(&lasts),
        median(&lasts)
    );
    summary["fanout_last_arrival_ms"] = serde_json::json!(arrivals);
    summary["fanout_last_arrival_median_ms"] = serde_json::json!(median(&arrivals));
    summary["fanout_last_ms"] = serde_json::json!(lasts);
    summary["fanout_last_median_ms"] = serde_json::json!(median(&lasts));
    published
}
