//! Two daemons on one Redis (features `daemon` and `redis`), as two hosts would run them: a
//! publish to either reaches a poll waiting on the other; an append through a store handle of
//! its own (PHP's path) wakes waiters on both; with Redis killed mid-traffic, publishes answer
//! 503 `storage` and no poll hangs; with Redis back empty, every event acknowledged after the
//! restart reaches the reader exactly once, one acknowledged before it either reached it once
//! or the reader was told `gap: true`, and the daemons were never restarted. And the binary:
//! `--db redis://…` serves, `--check` refuses a URL.
//!
//! The daemons run in this process (as in `daemon_http.rs`), each over its own `EventStore`
//! opened from the URL: nothing is shared between them but Redis.

#![cfg(all(feature = "daemon", feature = "redis"))]

mod daemon_common;
mod redis_common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use daemon_common::*;
use hyper::StatusCode;
use lms_realtime::daemon::{self, Spawned};
use lms_realtime::{EventStore, NewEvent, store};
use redis_common::RedisServer;
use serde_json::{Value, json};

/// One daemon over its own store handle on `url`.
struct Node {
    store: Arc<EventStore>,
    addr: SocketAddr,
    spawned: Option<Spawned>,
}

impl Node {
    async fn start(url: &str, state_dir: &std::path::Path) -> Node {
        let store = Arc::new(EventStore::open_url(url, store::Config::default()).unwrap());
        let cfg = daemon::Config {
            state_dir: Some(state_dir.to_path_buf()),
            // Every poll here says how long it waits; this is only the longest allowed.
            poll_timeout: 30,
            // The breaker opens after 5 failures, as in production, but for short spells, so
            // traffic resumes within the test's time once Redis is back.
            breaker_open_ms: 200,
            ..config()
        };
        let spawned = daemon::spawn(store.clone(), cfg).await.unwrap();
        Node {
            store,
            addr: spawned.addr,
            spawned: Some(spawned),
        }
    }

    async fn stop(&mut self) {
        if let Some(s) = self.spawned.take() {
            let _ = s.shutdown.send(());
            s.task.await.unwrap().unwrap();
        }
        self.store.close();
    }
}

/// A poll on `addr` (channel 1, waiting up to `wait_s`), sent from a task of its own.
fn poll_in_background(
    addr: SocketAddr,
    cursor: String,
    wait_s: u64,
) -> tokio::task::JoinHandle<Reply> {
    tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        c.poll(
            &token(7, &[1]),
            &format!("channels=1&cursor={cursor}&timeout={wait_s}"),
        )
        .await
    })
}

/// Awaits a background poll, failing clearly when it is not answered within `within`.
async fn answered<T>(poll: tokio::task::JoinHandle<T>, within: Duration, what: &str) -> T {
    tokio::time::timeout(within, poll)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {within:?}"))
        .unwrap()
}

fn ns(v: &Value) -> Vec<i64> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["n"].as_i64().unwrap())
        .collect()
}

/// A 503 for Redis down: the store's fault (`storage`), or the breaker it opened.
fn unavailable_code(r: &Reply) -> bool {
    matches!(r.code().as_str(), "storage" | "circuit_open")
}

fn message(n: i64) -> Value {
    json!({"event_type": "message_create", "channel_id": 1, "data": {"n": n}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_either_daemon_or_from_php_wakes_waiters_on_both() {
    let server = RedisServer::start();
    let url = server.url();
    let state = tempfile::tempdir().unwrap();
    let mut a = Node::start(&url, state.path()).await;
    let mut b = Node::start(&url, state.path()).await;
    let start = a.store.head_cursor().unwrap().to_string();

    // B → A.
    let on_a = poll_in_background(a.addr, start.clone(), 5);
    wait_for_waiters(a.addr, 1).await;
    let mut pub_b = Client::connect(b.addr).await;
    let r = pub_b.publish(&message(1)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let got = answered(on_a, Duration::from_secs(5), "the poll on A").await;
    assert_eq!(got.status, StatusCode::OK);
    let got = got.json();
    assert_eq!(ns(&got), [1], "B's publish reached A: {got}");
    assert_eq!(got["gap"], false);
    let cursor = got["cursor"].as_str().unwrap().to_owned();

    // A → B.
    let on_b = poll_in_background(b.addr, cursor.clone(), 5);
    wait_for_waiters(b.addr, 1).await;
    let mut pub_a = Client::connect(a.addr).await;
    assert_eq!(pub_a.publish(&message(2)).await.status, StatusCode::OK);
    let got = answered(on_b, Duration::from_secs(5), "the poll on B")
        .await
        .json();
    assert_eq!(ns(&got), [2], "A's publish reached B: {got}");
    let cursor = got["cursor"].as_str().unwrap().to_owned();

    // PHP's path: a store handle of its own appends; a waiter on each daemon wakes.
    let on_a = poll_in_background(a.addr, cursor.clone(), 5);
    let on_b = poll_in_background(b.addr, cursor.clone(), 5);
    wait_for_waiters(a.addr, 1).await;
    wait_for_waiters(b.addr, 1).await;
    let php_url = url.clone();
    tokio::task::spawn_blocking(move || {
        let php = EventStore::open_url(&php_url, store::Config::default()).unwrap();
        php.append(NewEvent::new("message_create", 1).data(r#"{"n":3}"#))
            .unwrap();
    })
    .await
    .unwrap();
    for (poll, on) in [(on_a, "A"), (on_b, "B")] {
        let got = answered(poll, Duration::from_secs(5), on).await.json();
        assert_eq!(ns(&got), [3], "PHP's append reached {on}: {got}");
    }

    // Each reports its engine; the host-local metrics file is in the state dir.
    let h = wait_for_health(a.addr, "health", |_| true).await;
    assert_eq!(h["store"]["engine"], "redis");
    let files: Vec<String> = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("redis-redis___127_0_0_1_") && f.ends_with("-lmsrt-metrics")),
        "the metrics file is in --state-dir: {files:?}"
    );
    a.stop().await;
    b.stop().await;
}

/// What the reader on A saw.
#[derive(Default)]
struct Read {
    /// How many times each `n` was delivered.
    count: HashMap<i64, usize>,
    gaps: usize,
    /// 503s while Redis was down.
    unavailable: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_empty_mid_traffic_loses_nothing_unreported() {
    let mut server = RedisServer::start();
    let url = server.url();
    let state = tempfile::tempdir().unwrap();
    let mut a = Node::start(&url, state.path()).await;
    let mut b = Node::start(&url, state.path()).await;
    let start = a.store.head_cursor().unwrap().to_string();

    // Phase 1 before the kill, 2 once Redis is back (empty).
    let phase = Arc::new(AtomicU8::new(1));
    let stop = Arc::new(AtomicBool::new(false));

    // The last event acknowledged, once the publisher has stopped (0 before): the reader stops
    // when it has read it, so an event acknowledged just before the stop is still read.
    let last = Arc::new(AtomicI64::new(0));

    // The reader: polls A from its cursor, again and again.
    let reader = {
        let last = last.clone();
        let addr = a.addr;
        tokio::spawn(async move {
            let mut read = Read::default();
            let mut cursor = start;
            let mut c = Client::connect(addr).await;
            loop {
                let want = last.load(Ordering::SeqCst);
                if want != 0 && read.count.contains_key(&want) {
                    break;
                }
                let r = tokio::time::timeout(
                    Duration::from_secs(8),
                    c.poll(
                        &token(7, &[1]),
                        &format!("channels=1&cursor={cursor}&timeout=1"),
                    ),
                )
                .await
                .expect("a poll was not answered within 8 s (1 s wait)");
                if r.status == StatusCode::SERVICE_UNAVAILABLE {
                    assert!(unavailable_code(&r), "{}", r.text());
                    read.unavailable += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                assert_eq!(r.status, StatusCode::OK, "{}", r.text());
                let v = r.json();
                if v["gap"] == true {
                    read.gaps += 1;
                }
                for n in ns(&v) {
                    *read.count.entry(n).or_default() += 1;
                }
                cursor = v["cursor"].as_str().unwrap().to_owned();
            }
            read
        })
    };

    // The publisher: to B, one event at a time, recording what was acknowledged and when.
    let publisher = {
        let stop = stop.clone();
        let phase = phase.clone();
        let addr = b.addr;
        tokio::spawn(async move {
            let mut acked: Vec<(i64, u8)> = Vec::new();
            let mut refused = 0;
            let mut c = Client::connect(addr).await;
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let sent_in = phase.load(Ordering::SeqCst);
                let r = tokio::time::timeout(Duration::from_secs(8), c.publish(&message(n)))
                    .await
                    .expect("a publish was not answered within 8 s");
                match r.status {
                    StatusCode::OK => acked.push((n, sent_in)),
                    StatusCode::SERVICE_UNAVAILABLE => {
                        assert!(unavailable_code(&r), "{}", r.text());
                        assert!(r.header("retry-after").is_some(), "a retry hint");
                        refused += 1;
                    }
                    other => panic!("publish answered {other}: {}", r.text()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (acked, refused)
        })
    };

    tokio::time::sleep(Duration::from_millis(400)).await;
    server.kill();
    // Down for a while: publishes are refused, polls answered.
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.run();
    phase.store(2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let (acked, refused) = publisher.await.unwrap();
    last.store(acked.last().map_or(-1, |a| a.0), Ordering::SeqCst);
    let read = answered(
        reader,
        Duration::from_secs(10),
        "the reader (the last event acknowledged)",
    )
    .await;

    assert!(refused > 0, "publishes while Redis was down got 503");
    let after: Vec<i64> = acked.iter().filter(|a| a.1 == 2).map(|a| a.0).collect();
    assert!(
        after.len() >= 10,
        "events flowed again after the restart: {after:?}"
    );
    for n in &after {
        assert_eq!(
            read.count.get(n),
            Some(&1),
            "event {n}, acknowledged after the restart, delivered exactly once"
        );
    }
    let lost_before: Vec<i64> = acked
        .iter()
        .filter(|a| a.1 == 1 && !read.count.contains_key(&a.0))
        .map(|a| a.0)
        .collect();
    assert!(
        read.count.values().all(|c| *c == 1),
        "nothing delivered twice"
    );
    assert!(
        read.gaps > 0,
        "the reader was told of the restart with gap: true (lost before it: {lost_before:?}; \
         503s seen: {})",
        read.unavailable
    );
    // Each daemon's fan-out saw the new epoch; B's refused publishes were engine errors; the
    // engine's figures are in /healthz and /metrics.
    for (node, on) in [(&a, "A"), (&b, "B")] {
        let h = wait_for_health(node.addr, "the fan-out's epoch change", |h| {
            h["store"]["epoch_changes"].as_u64() >= Some(1)
        })
        .await;
        assert_eq!(h["store"]["engine"], "redis", "{on}: {h}");
        assert!(
            h["store"]["latency_us"].as_u64() > Some(0)
                && h["store"]["latency_max_us"].as_u64() >= h["store"]["latency_us"].as_u64(),
            "{on} measured its round trips: {h}"
        );
        if on == "B" {
            assert!(
                h["store"]["errors"].as_u64() > Some(0),
                "B's publishes failed while Redis was down: {h}"
            );
        }
        let m = Client::connect(node.addr)
            .await
            .get("/metrics", &[])
            .await
            .text();
        let value = |name: &str| -> u64 {
            m.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{on}: no {name} in\n{m}"))
        };
        assert!(
            value("lmsrt_daemon_store_epoch_changes_total") >= 1,
            "{on}\n{m}"
        );
        assert!(
            value("lmsrt_daemon_store_errors_total") >= h["store"]["errors"].as_u64().unwrap(),
            "{on}: the counter /healthz showed, or more\n{m}"
        );
        assert!(value("lmsrt_daemon_store_latency_us") > 0, "{on}\n{m}");
        assert!(
            m.contains("lmsrt_daemon_store_info{engine=\"redis\"} 1"),
            "{on}\n{m}"
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_parked_when_redis_dies_are_answered_and_see_a_gap_after_it_restarts_empty() {
    let mut server = RedisServer::start();
    let url = server.url();
    let state = tempfile::tempdir().unwrap();
    let mut a = Node::start(&url, state.path()).await;
    let mut b = Node::start(&url, state.path()).await;
    let mut p = Client::connect(b.addr).await;
    assert_eq!(p.publish(&message(1)).await.status, StatusCode::OK);
    let cursor = a.store.head_cursor().unwrap().to_string();

    // Two polls on each daemon: one that gives up after 1 s, while Redis is down, and one that
    // is still waiting when Redis comes back (its 25 s are a bound, not a delay: the new epoch
    // answers it at once; with 5 s, a busy CI host restarted Redis after it had timed out).
    let short = [a.addr, b.addr].map(|addr| poll_in_background(addr, cursor.clone(), 1));
    let long = [a.addr, b.addr].map(|addr| poll_in_background(addr, cursor.clone(), 25));
    wait_for_waiters(a.addr, 2).await;
    wait_for_waiters(b.addr, 2).await;
    server.kill();
    let r = p.publish(&message(2)).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "storage"),
        "{}",
        r.text()
    );
    for (poll, on) in short.into_iter().zip(["A", "B"]) {
        let r = answered(poll, Duration::from_secs(4), on).await;
        assert!(
            r.status == StatusCode::OK && ns(&r.json()).is_empty()
                || r.status == StatusCode::SERVICE_UNAVAILABLE && unavailable_code(&r),
            "a waiter on {on} is answered (empty, or 503): {} {}",
            r.status,
            r.text()
        );
    }

    // Back, empty, with no daemon restarted: the new epoch wakes the polls still waiting, and
    // they are told gap: true, with a fresh cursor. (A poll that merely timed out would say
    // gap: false.)
    server.run();
    let mut fresh = Vec::new();
    for (poll, on) in long.into_iter().zip(["A", "B"]) {
        let r = answered(poll, Duration::from_secs(30), on).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v = r.json();
        assert_eq!(v["gap"], true, "{on}: the old cursor gets gap: true: {v}");
        fresh.push(v["cursor"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = p.publish(&message(3)).await;
        if r.status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publishes did not come back: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut after_3 = Vec::new();
    for (addr, cursor, on) in [(a.addr, &fresh[0], "A"), (b.addr, &fresh[1], "B")] {
        let v = answered(
            poll_in_background(addr, cursor.clone(), 5),
            Duration::from_secs(8),
            on,
        )
        .await
        .json();
        assert_eq!(ns(&v), [3], "{on}: the new epoch's event: {v}");
        assert_eq!(v["gap"], false);
        after_3.push(v["cursor"].as_str().unwrap().to_owned());
    }
    // From the fresh cursor, events flow as before.
    let on_a = poll_in_background(a.addr, after_3[0].clone(), 5);
    wait_for_waiters(a.addr, 1).await;
    assert_eq!(p.publish(&message(4)).await.status, StatusCode::OK);
    let v = answered(on_a, Duration::from_secs(5), "A after the restart")
        .await
        .json();
    assert_eq!((ns(&v), v["gap"].clone()), (vec![4], json!(false)));
    a.stop().await;
    b.stop().await;
}

/// The binary: `--db redis://…` serves (healthz says redis, the metrics file goes to
/// `--state-dir`), and `--check` refuses a URL with exit 2 without echoing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_a_redis_url_and_check_refuses_one() {
    use std::process::{Command, Stdio};
    let server = RedisServer::start();
    let url = server.url().replace("127.0.0.1", "user:hunter2@127.0.0.1");
    let out = Command::new(env!("CARGO_BIN_EXE_lms-longpolld"))
        .env_clear()
        .args(["--check", &url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("Redis URL") && !err.contains("hunter2"),
        "{err}"
    );

    let state = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lms-longpolld"))
        .env_clear()
        .env("LMSRT_LISTEN", addr.to_string())
        .env("LMSRT_DB", server.url())
        .env("LMSRT_STATE_DIR", state.path())
        .env("LMSRT_TOKEN_KEY", format!("k1:{SECRET}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("the daemon exited: {s}");
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not listen on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let h = wait_for_health(addr, "health", |_| true).await;
    let metrics_files = std::fs::read_dir(state.path()).unwrap().count();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(h["store"]["engine"], "redis", "{h}");
    assert_eq!(metrics_files, 1, "the metrics file is in --state-dir");
}
