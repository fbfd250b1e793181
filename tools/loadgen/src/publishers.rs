//! The publishers: signed HTTP requests, the library in this process, or a C process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lms_realtime::token::{self, TokenKey};
use lms_realtime::{EventStore, NewEvent};

use crate::http::{Conn, request};
use crate::server::Server;
use crate::{Args, Publisher, Scenario, Target, now_us, token_key};

/// The request that publishes event `seq` to `channel`, stamped with its publish time `t` (µs
/// since the epoch): a signed `POST /v1/events` for the daemon (with `message_id` when given),
/// `POST /pub/<channel>` for Nchan.
pub(crate) fn publish_request(
    target: Target,
    key: &TokenKey,
    channel: u64,
    seq: u64,
    message_id: Option<u64>,
    t: i64,
) -> Vec<u8> {
    match target {
        Target::Daemon => {
            let message_id = message_id
                .map(|m| format!(r#","message_id":{m}"#))
                .unwrap_or_default();
            let body = format!(
                r#"{{"event_type":"message_create","channel_id":{channel}{message_id},"data":{{"seq":{seq},"t":{t}}}}}"#
            );
            let ts = t / 1_000_000;
            let sig = token::sign_publish(key, ts, body.as_bytes());
            request(
                "POST",
                "/v1/events",
                &[
                    ("content-type", "application/json"),
                    ("x-lms-timestamp", &ts.to_string()),
                    ("x-lms-signature", &sig),
                ],
                body.as_bytes(),
            )
        }
        Target::Nchan => {
            let body = format!(r#"{{"seq":{seq},"t":{t}}}"#);
            request("POST", &format!("/pub/{channel}"), &[], body.as_bytes())
        }
    }
}

/// What the publishers of a steady, saturate or publish run did.
pub(crate) struct Published {
    /// Every acknowledged seq.
    pub(crate) acked: Vec<u64>,
    /// Requests that failed.
    pub(crate) failed: u64,
    /// Latency of each acknowledged HTTP publish request (µs); empty for the other publishers.
    pub(crate) request_latencies_us: Vec<u32>,
    /// From the first publish to the last acknowledgement.
    pub(crate) secs: f64,
}

/// Publishes for `--duration` s with `--publishers` publishers of the `--publish` kind: at
/// `--rate` events/s in the steady scenario, as fast as they can otherwise.
pub(crate) async fn publish(
    a: &Arc<Args>,
    server: &Server,
    store: Option<&Arc<EventStore>>,
) -> Published {
    let mut published: Vec<u64> = Vec::new();
    let rate = if a.scenario == Scenario::Steady {
        a.rate
    } else {
        0.0
    };
    let limit = if a.scenario == Scenario::Steady {
        (a.rate * a.duration) as u64
    } else {
        u64::MAX
    };
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let timer = {
        let stop = stop.clone();
        let d = a.duration;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(d)).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let mut pub_lat: Vec<u32> = Vec::new();
    let mut failed = 0;
    match a.publish {
        Publisher::Http => {
            let mut tasks = Vec::new();
            for _ in 0..a.publishers.max(1) {
                tasks.push(tokio::spawn(http_publisher(
                    a.clone(),
                    server.addr,
                    next.clone(),
                    limit,
                    rate,
                    started,
                    stop.clone(),
                )));
            }
            for t in tasks {
                let (_, f, lat, acked) = t.await.unwrap();
                failed += f;
                pub_lat.extend(lat);
                published.extend(acked);
            }
        }
        Publisher::Lib => {
            let store = store.cloned().expect("the lib publisher needs the store");
            let mut threads = Vec::new();
            for _ in 0..a.publishers.max(1) {
                let (store, next, stop) = (store.clone(), next.clone(), stop.clone());
                let (batch, ch) = (a.batch.max(1), a.channels);
                threads.push(std::thread::spawn(move || {
                    lib_publisher(store, next, limit, rate, batch, ch, started, stop)
                }));
            }
            for t in threads {
                let (_, acked) = tokio::task::spawn_blocking(move || t.join().unwrap())
                    .await
                    .unwrap();
                published.extend(acked);
            }
        }
        Publisher::C => {
            let exe = c_publisher();
            let count = if limit == u64::MAX {
                (50_000.0 * a.duration) as u64
            } else {
                limit
            };
            let mut cmd = Command::new(&exe);
            cmd.arg(&server.db)
                .arg(a.channels.to_string())
                .arg(count.to_string())
                .arg(rate.to_string());
            let out = tokio::task::spawn_blocking(move || cmd.output())
                .await
                .unwrap()
                .expect("running the C publisher");
            assert!(
                out.status.success(),
                "C publisher: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            published.extend(0..count);
            let _ = std::fs::remove_file(&exe);
        }
    }
    timer.abort();
    Published {
        acked: published,
        failed,
        request_latencies_us: pub_lat,
        secs: started.elapsed().as_secs_f64(),
    }
}

/// Publishes events `seq` from `next` (shared) until `stop` or `limit`, at `rate` per second
/// across all publishers (0: as fast as possible). Returns (acknowledged, failed, latencies µs).
async fn http_publisher(
    a: Arc<Args>,
    addr: SocketAddr,
    next: Arc<AtomicU64>,
    limit: u64,
    rate: f64,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> (u64, u64, Vec<u32>, Vec<u64>) {
    let key = token_key();
    let mut conn = Conn::open(addr).await.expect("publisher connection");
    let (mut ok, mut failed) = (0, 0);
    let mut lat = Vec::new();
    let mut acked = Vec::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let seq = next.fetch_add(1, Ordering::Relaxed);
        if seq >= limit {
            break;
        }
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(seq as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let channel = 1 + seq % a.channels as u64;
        let req = publish_request(a.target, &key, channel, seq, Some(seq + 1), now_us());
        let t0 = Instant::now();
        match conn.send(&req).await {
            Ok((s, _, _)) if (200..300).contains(&s) => {
                ok += 1;
                acked.push(seq);
                lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Ok(_) => failed += 1,
            Err(_) => {
                failed += 1;
                if let Ok(c) = Conn::open(addr).await {
                    conn = c;
                }
            }
        }
    }
    (ok, failed, lat, acked)
}

/// The library publisher: appends `count` events (in transactions of `batch`) at `rate`.
#[allow(clippy::too_many_arguments)]
fn lib_publisher(
    store: Arc<EventStore>,
    next: Arc<AtomicU64>,
    limit: u64,
    rate: f64,
    batch: usize,
    channels: usize,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> (u64, Vec<u64>) {
    let mut acked = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let first = next.fetch_add(batch as u64, Ordering::Relaxed);
        if first >= limit {
            break;
        }
        let last = (first + batch as u64).min(limit);
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(first as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let events: Vec<NewEvent> = (first..last)
            .map(|seq| {
                NewEvent::new("message_create", 1 + (seq % channels as u64) as i64)
                    .message_id(seq as i64 + 1)
                    .data(format!(r#"{{"seq":{seq},"t":{}}}"#, now_us()))
            })
            .collect();
        if store.append_batch(events).is_ok() {
            acked.extend(first..last);
        }
    }
    (acked.len() as u64, acked)
}

/// Compiles the repository's tests/c/publisher.c against the library beside this executable.
fn c_publisher() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().unwrap().to_path_buf();
    // This package lives in tools/loadgen of the repository.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::env::temp_dir().join(format!("lmsrt-publisher-{}", std::process::id()));
    let st = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O2"])
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/c/publisher.c"))
        .arg("-o")
        .arg(&out)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-llms_realtime", "-lpthread"])
        .status()
        .expect("running cc");
    assert!(
        st.success(),
        "compiling tests/c/publisher.c failed (build the cdylib: cargo build --release --lib)"
    );
    out
}
