//! Guards shared by several processes on one host: the limiter's budget is exact across
//! processes, a breaker opened in one process is open in the others, connection slots cap
//! across processes and survive a SIGKILLed holder, and metrics from many processes add up.
//!
//! The test binary re-executes itself as the child processes: `guards_child` does nothing
//! unless `LMSRT_GUARDS_ROLE` is set, in which case it plays that role and exits. Every process
//! uses a `ManualClock` set from `LMSRT_GUARDS_NOW`, so no test depends on timing; processes
//! synchronise through their pipes (a child prints `READY`, then waits for a line on stdin).
//! Every wait for a child is bounded ([`BOUND`]): a hung child fails its test, it never hangs
//! the run.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use lms_realtime::ErrorCode;
use lms_realtime::clock::ManualClock;
use lms_realtime::guards::{
    ActionLimit, BreakerConfig, BreakerState, Breakers, ClientMode, LimiterConfig, RateLimiter,
    Slots, SlotsConfig,
};
use lms_realtime::metrics::{Counter, Histogram, Metrics, MetricsConfig};

const T0: i64 = 1_700_000_000_000;

/// The limits every process opens the shared limiter with.
fn limiter_config(clock: &ManualClock) -> LimiterConfig {
    LimiterConfig::default()
        .action("big", ActionLimit::per_minute(1000))
        .action("fixed", ActionLimit::per_minute(60).fixed())
        .clock(Arc::new(clock.clone()))
}

fn slots_config(clock: &ManualClock, check_pid: bool) -> SlotsConfig {
    SlotsConfig {
        check_pid,
        ..SlotsConfig::default().clock(Arc::new(clock.clone()))
    }
}

/// Longest a child may take to print what the parent waits for, or to exit once told to: far
/// above what the slowest role needs on a loaded machine, so reaching it means a hang, which
/// fails the test with the role and the awaited line instead of blocking the run.
const BOUND: Duration = Duration::from_secs(120);

struct Kid {
    role: String,
    child: Child,
    /// The child's stdout, line by line, read on a thread so every wait can be bounded.
    lines: Receiver<String>,
}

impl Kid {
    fn spawn(role: &str, db: &Path, now: i64, extra: &[(&str, &str)]) -> Kid {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "guards_child", "--nocapture", "--test-threads=1"])
            .env("LMSRT_GUARDS_ROLE", role)
            .env("LMSRT_GUARDS_DB", db)
            .env("LMSRT_GUARDS_NOW", now.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Kid {
            role: role.to_owned(),
            child,
            lines,
        }
    }

    /// What follows `tag` on the first line containing it. The harness prints its own text
    /// too, on the same line as the child's first output (`test guards_child ... READY`).
    fn expect(&mut self, tag: &str) -> String {
        let deadline = Instant::now() + BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(at) = line.find(tag) {
                        return line[at + tag.len()..].trim().to_owned();
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("child {} exited before printing {tag}", self.role)
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("child {} printed no {tag} within {BOUND:?}", self.role);
                }
            }
        }
    }

    fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"GO\n").unwrap();
        stdin.flush().unwrap();
    }

    fn finish(mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + BOUND;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("child {} did not exit within {BOUND:?}", self.role);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "child {} failed: {status}", self.role);
    }
}

/// The child side.
#[test]
fn guards_child() {
    let Ok(role) = std::env::var("LMSRT_GUARDS_ROLE") else {
        return;
    };
    let db = std::env::var("LMSRT_GUARDS_DB").unwrap();
    let clock = ManualClock::new(std::env::var("LMSRT_GUARDS_NOW").unwrap().parse().unwrap());
    let arg = |k: &str| std::env::var(k).unwrap();
    let wait_for_go = || {
        println!("READY");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
    };
    match role.as_str() {
        "limit_hammer" => {
            let limiter = RateLimiter::open(&db, limiter_config(&clock)).unwrap();
            let attempts: usize = arg("LMSRT_GUARDS_N").parse().unwrap();
            wait_for_go();
            let mut allowed = [0usize; 3];
            for _ in 0..attempts {
                for (i, action) in ["post", "big", "fixed"].iter().enumerate() {
                    if limiter.check(action, "hot-key").unwrap().allowed {
                        allowed[i] += 1;
                    }
                }
            }
            println!("ALLOWED {} {} {}", allowed[0], allowed[1], allowed[2]);
        }
        "breaker_fail" => {
            let b = Breakers::open(&db, BreakerConfig::default().clock(Arc::new(clock))).unwrap();
            // Bounded: a breaker that never opens prints `closed`, which the parent refuses.
            let mut s = b.check("store").unwrap();
            for _ in 0..1_000 {
                if s.state != BreakerState::Closed {
                    break;
                }
                s = b.record_failure("store").unwrap();
            }
            println!("STATE {}", s.state.as_str());
        }
        "breaker_status" => {
            let b = Breakers::open(&db, BreakerConfig::default().clock(Arc::new(clock))).unwrap();
            let s = b.status("store").unwrap();
            println!("STATE {} {}", s.state.as_str(), s.mode.as_str());
        }
        "slot_hold" => {
            let check_pid = arg("LMSRT_GUARDS_CHECK_PID") == "1";
            let slots = Slots::open(&db, slots_config(&clock, check_pid)).unwrap();
            let n: usize = arg("LMSRT_GUARDS_N").parse().unwrap();
            let leases: Vec<_> = (0..n)
                .filter_map(|_| slots.acquire("user-1").ok())
                .collect();
            println!("HELD {}", leases.len());
            // Hold until told to stop (or killed), then give the slots back.
            wait_for_go();
            for l in &leases {
                assert!(slots.release(l));
            }
        }
        "metrics_record" => {
            let m = Metrics::open(
                &db,
                MetricsConfig {
                    clock: Arc::new(clock),
                    ..MetricsConfig::default()
                },
            )
            .unwrap();
            for i in 0..1000u64 {
                m.incr(Counter::Appends);
                m.record_us(Histogram::Append, 100 + i);
            }
            m.incr(Counter::AppendErrors);
            println!("DONE");
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn eight_processes_hammering_one_key_get_exactly_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut kids: Vec<Kid> = (0..8)
        .map(|_| Kid::spawn("limit_hammer", &db, T0, &[("LMSRT_GUARDS_N", "2000")]))
        .collect();
    for k in &mut kids {
        k.expect("READY");
    }
    for k in &mut kids {
        k.go();
    }
    let mut totals = [0usize; 3];
    for mut k in kids {
        let line = k.expect("ALLOWED");
        for (t, n) in totals.iter_mut().zip(line.split(' ')) {
            *t += n.parse::<usize>().unwrap();
        }
        k.finish();
    }
    // 8 × 2000 attempts per action; the budgets are the bursts: post 20 (the default),
    // big 1000, fixed 60.
    assert_eq!(totals, [20, 1000, 60]);

    // The parent sees the same table: the key is exhausted, and time refills it exactly.
    let clock = ManualClock::new(T0);
    let limiter = RateLimiter::open(&db, limiter_config(&clock)).unwrap();
    assert!(!limiter.check("post", "hot-key").unwrap().allowed);
    assert!(!limiter.check("fixed", "hot-key").unwrap().allowed);
    clock.advance_ms(1_000);
    assert!(limiter.check("fixed", "hot-key").unwrap().allowed);
    assert!(!limiter.check("fixed", "hot-key").unwrap().allowed);
    assert!(limiter.check("post", "another-key").unwrap().allowed);
}

#[test]
fn a_breaker_opened_in_one_process_is_open_in_another() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut opener = Kid::spawn("breaker_fail", &db, T0, &[]);
    assert_eq!(opener.expect("STATE"), "open");
    opener.finish();

    let mut watcher = Kid::spawn("breaker_status", &db, T0 + 1_000, &[]);
    assert_eq!(watcher.expect("STATE"), "open emergency");
    watcher.finish();

    // This process sees it too, probes it after the open period, and closes it for everyone.
    let clock = ManualClock::new(T0 + 1_000);
    let b = Breakers::open(&db, BreakerConfig::default().clock(Arc::new(clock.clone()))).unwrap();
    let s = b.check("store").unwrap();
    assert_eq!((s.allowed, s.retry_after_ms), (false, 4_000));
    assert_eq!(
        s.into_result("store").unwrap_err().code(),
        ErrorCode::CircuitOpen
    );
    clock.advance_ms(4_000);
    let p = b.check("store").unwrap();
    assert!(p.probe);
    b.record_success("store").unwrap();

    let mut watcher = Kid::spawn("breaker_status", &db, T0 + 5_000, &[]);
    assert_eq!(watcher.expect("STATE"), "closed long");
    watcher.finish();
    assert_eq!(b.status("store").unwrap().mode, ClientMode::Long);
}

/// Spawns a child holding all 3 slots of `user-1`, then SIGKILLs it.
fn kill_a_slot_holder(db: &Path, check_pid: bool) {
    let flag = if check_pid { "1" } else { "0" };
    let mut holder = Kid::spawn(
        "slot_hold",
        db,
        T0,
        &[("LMSRT_GUARDS_N", "3"), ("LMSRT_GUARDS_CHECK_PID", flag)],
    );
    assert_eq!(holder.expect("HELD"), "3");
    let clock = ManualClock::new(T0);
    let slots = Slots::open(db, slots_config(&clock, check_pid)).unwrap();
    assert_eq!(slots.count("user-1").unwrap(), 3);
    let e = slots.acquire("user-1").unwrap_err();
    assert_eq!(e.code(), ErrorCode::SlotsExhausted);
    // `Child::kill` is SIGKILL on Unix: the holder gets no chance to release anything.
    holder.child.kill().unwrap();
    let status = holder.child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

#[test]
fn slots_of_a_killed_holder_are_reclaimed_after_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    kill_a_slot_holder(&db, false);
    let clock = ManualClock::new(T0);
    let slots = Slots::open(&db, slots_config(&clock, false)).unwrap();
    // Without the pid check the dead holder's leases stand until they expire...
    assert!(slots.acquire("user-1").is_err());
    clock.advance_ms(34_000);
    assert!(slots.acquire("user-1").is_err());
    // ...and then all three are free again.
    clock.advance_ms(1_000);
    assert_eq!(slots.count("user-1").unwrap(), 0);
    let leases: Vec<_> = (0..3).map(|_| slots.acquire("user-1").unwrap()).collect();
    assert!(slots.acquire("user-1").is_err());
    assert!(leases.iter().all(|l| slots.release(l)));
}

#[test]
fn slots_of_a_killed_holder_are_reclaimed_at_once_when_its_pid_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    kill_a_slot_holder(&db, true);
    let clock = ManualClock::new(T0);
    let slots = Slots::open(&db, slots_config(&clock, true)).unwrap();
    for _ in 0..3 {
        let l = slots.acquire("user-1").unwrap();
        assert!(l.reclaimed, "taken over from the dead pid");
    }
    assert!(slots.acquire("user-1").is_err(), "the cap still holds");
}

#[test]
fn the_slot_cap_holds_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut kids: Vec<Kid> = (0..6)
        .map(|_| {
            Kid::spawn(
                "slot_hold",
                &db,
                T0,
                &[("LMSRT_GUARDS_N", "1"), ("LMSRT_GUARDS_CHECK_PID", "1")],
            )
        })
        .collect();
    let held: usize = kids
        .iter_mut()
        .map(|k| k.expect("HELD").parse::<usize>().unwrap())
        .sum();
    assert_eq!(held, 3, "6 processes, 3 slots");
    for mut k in kids {
        k.expect("READY");
        k.finish(); // closing stdin tells it to release
    }
    let clock = ManualClock::new(T0);
    let slots = Slots::open(&db, slots_config(&clock, true)).unwrap();
    assert_eq!(slots.count("user-1").unwrap(), 0, "every holder released");
}

#[test]
fn metrics_from_many_processes_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let kids: Vec<Kid> = (0..4)
        .map(|_| Kid::spawn("metrics_record", &db, T0, &[]))
        .collect();
    for mut k in kids {
        k.expect("DONE");
        k.finish();
    }
    let m = Metrics::open(
        &db,
        MetricsConfig {
            clock: Arc::new(ManualClock::new(T0 + 1_000)),
            ..MetricsConfig::default()
        },
    )
    .unwrap();
    let s = m.snapshot();
    assert_eq!(s.counters["appends"].total, 4000);
    assert_eq!(s.counters["appends"].window, 4000);
    let h = s.histograms["append"];
    assert_eq!((h.count, h.max_us, h.window.count), (4000, 1099, 4000));
    assert_eq!(h.sum_us, 4 * (100..1100).sum::<u64>());
    assert_eq!(s.error_rate, Some(0.001));
    assert!(s.to_prometheus().contains("lmsrt_appends_total 4000\n"));
}
