//! Latency percentiles and multi-process figures that criterion's means cannot give.
//!
//! Run everything: `cargo bench --bench latency`; or some sections:
//! `cargo bench --bench latency -- threads groups procs fetch purge wake idle`.
//! Each section prints one table; `benches/README.md` records the figures.
//!
//! The binary re-executes itself (`--child <role> …`) for the multi-process sections.
//!
//! One file over 600 lines on purpose: cargo builds each bench file as one binary, and every
//! section shares the child-process protocol and the percentile table above; a section is a
//! function of a few dozen lines.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lms_realtime::clock::ManualClock;
use lms_realtime::{Config, Cursor, EventStore, FetchRequest, NewEvent, Order, Priority};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1..]);
        return;
    }
    let wanted: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let on = |s: &str| wanted.is_empty() || wanted.contains(&s);
    let dir = tempfile::tempdir().unwrap();
    if on("threads") {
        threads(dir.path());
    }
    if on("groups") {
        groups(dir.path());
    }
    if on("procs") {
        procs(dir.path());
    }
    if on("fetch") {
        fetch(dir.path());
    }
    if on("index") {
        index(dir.path());
    }
    if on("purge") {
        purge(dir.path());
    }
    if on("wake") {
        wake(dir.path());
    }
    if on("idle") {
        idle(dir.path());
    }
}

fn msg(i: u64) -> NewEvent {
    NewEvent::new("message_create", 1 + (i % 50) as i64)
        .message_id(i as i64)
        .user_id(7)
        .data(r#"{"text":"hello there, this is a chat message"}"#)
}

struct Pcts {
    p50: f64,
    p99: f64,
    max: f64,
    n: usize,
}

/// Percentiles of durations given in microseconds.
fn pcts(mut v: Vec<f64>) -> Pcts {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Pcts {
        p50: at(0.50),
        p99: at(0.99),
        max: *v.last().unwrap(),
        n: v.len(),
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn self_exe() -> PathBuf {
    std::env::current_exe().unwrap()
}

/// Monotonic time that is comparable between processes (CLOCK_MONOTONIC is system-wide).
fn mono_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn cpu_time_self() -> Duration {
    // SAFETY: rusage is plain old data, for which all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage with a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

// ---- threads: group commit --------------------------------------------------------------

fn threads(dir: &Path) {
    println!("## threads: group commit (appends/s, 2 rounds of 3 s each, alternating)");
    println!("| durability | 1 thread | 8 threads | ratio | 8 threads, one channel | ratio |");
    println!("|---|---|---|---|---|---|");
    for (label, durability) in [
        (
            "process crash (default)",
            lms_realtime::Durability::ProcessCrash,
        ),
        (
            "power loss (fsync per commit)",
            lms_realtime::Durability::PowerLoss,
        ),
    ] {
        let cfg = Config {
            durability,
            ..Config::default()
        };
        let store = Arc::new(
            EventStore::open(dir.join(format!("threads-{durability:?}.db")), cfg).unwrap(),
        );
        // `one_channel`: every thread appends to channel 1, so the rows of a group share
        // their lane-index leaf (the `groups` section shows what that saves in SQLite).
        let run = |nthreads: usize, one_channel: bool| -> f64 {
            let stop = Arc::new(AtomicBool::new(false));
            let hs: Vec<_> = (0..nthreads)
                .map(|t| {
                    let store = store.clone();
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let mut n = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            let mut e = msg(t as u64 * 1_000_000 + n);
                            if one_channel {
                                e.channel_id = 1;
                            }
                            store.append(e).unwrap();
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            let secs = 3.0;
            std::thread::sleep(Duration::from_secs_f64(secs));
            stop.store(true, Ordering::Relaxed);
            hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>() as f64 / secs
        };
        // Alternate to spread machine noise over all three.
        let (mut one, mut eight, mut shared) = (0.0, 0.0, 0.0);
        for _ in 0..2 {
            one += run(1, false) / 2.0;
            eight += run(8, false) / 2.0;
            shared += run(8, true) / 2.0;
        }
        println!(
            "| {label} | {one:.0} | {eight:.0} | {:.2} | {shared:.0} | {:.2} |",
            eight / one,
            shared / one
        );
    }
}

// ---- groups: what a commit of 8 rows costs in SQLite itself -------------------------------

/// Raw rusqlite on the store's own schema, no hand-offs: the cost per row of a row committed
/// alone against rows committed 8 (or 32) to a transaction, with the 8 rows spread over
/// channels or all on one. This is the ceiling any group commit can reach on this schema: the
/// `threads` ratio cannot exceed "alone / groups of 8" for appends spread over channels.
///
/// Two variants are not the store's and are measured to size the alternatives: a 1 KiB page,
/// and a *deferred* lane index, where an append writes only the table (and the expiry index)
/// and every 4,096 rows one statement copies the new rows' lane entries, in lane order, into a
/// `WITHOUT ROWID` table (with a 64 MiB page cache, so the leaves it touches stay cached).
fn groups(dir: &Path) {
    println!(
        "## groups: raw rusqlite INSERTs into the store's schema, µs per row (median of 10 alternating rounds of 4,000 rows)"
    );
    println!(
        "| variant | channels | alone | 8 per commit, spread | 8 per commit, 1 channel | 32 per commit, spread | alone ÷ 8 spread | alone ÷ 8 on 1 channel |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (label, page, channels, deferred) in [
        ("the store's (4 KiB pages)", 4096, 50u64, false),
        ("1 KiB pages", 1024, 50, false),
        ("the store's (4 KiB pages)", 4096, 1000, false),
        ("deferred lane index", 4096, 50, true),
        ("deferred lane index", 4096, 1000, true),
    ] {
        let db = dir.join(format!("groups-{page}-{channels}-{deferred}.db"));
        {
            // The page size of a WAL file is fixed once it is written: set it first.
            let c = rusqlite::Connection::open(&db).unwrap();
            c.execute_batch(&format!(
                "PRAGMA page_size = {page}; PRAGMA journal_mode = WAL;"
            ))
            .unwrap();
        }
        drop(EventStore::open(&db, Config::default()).unwrap());
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;
             PRAGMA journal_size_limit = 67108864;",
        )
        .unwrap();
        if deferred {
            c.execute_batch(
                "DROP INDEX lmsrt_events_lane;
                 CREATE TABLE lanes (channel_id INTEGER NOT NULL, priority INTEGER NOT NULL,
                     id INTEGER NOT NULL, expires_at INTEGER NOT NULL,
                     PRIMARY KEY (channel_id, priority, id)) WITHOUT ROWID;
                 PRAGMA cache_size = -65536;",
            )
            .unwrap();
        }
        let insert = |i: u64, ch: i64| {
            let mut st = c
                .prepare_cached(
                    "INSERT INTO lmsrt_events (event_type, priority, channel_id, message_id,
                         thread_id, user_id, data, timestamp, expires_at, idem_key)
                     VALUES (?1, ?2, ?3, ?4, NULL, 7, ?5, ?6, ?7, NULL)",
                )
                .unwrap();
            let now = 1_700_000_000_000 + i as i64;
            st.execute(rusqlite::params![
                "message_create",
                2,
                ch,
                i as i64,
                r#"{"text":"hello there, this is a chat message"}"#,
                now,
                now + 86_400_000
            ])
            .unwrap();
        };
        // Copies the lane entries of rows after `indexed`, in lane order; returns the new mark.
        let index_lanes = |indexed: i64| -> i64 {
            let head = c.last_insert_rowid();
            c.prepare_cached(
                "INSERT INTO lanes SELECT channel_id, priority, id, expires_at
                 FROM lmsrt_events WHERE id > ?1 ORDER BY 1, 2, 3",
            )
            .unwrap()
            .execute([indexed])
            .unwrap();
            head
        };
        // A store that already holds 200,000 rows, as after a few seconds of the `threads`
        // section.
        let mut i = 0u64;
        let mut indexed = 0i64;
        c.execute_batch("BEGIN").unwrap();
        while i < 200_000 {
            insert(i, 1 + (i % channels) as i64);
            i += 1;
        }
        if deferred {
            indexed = index_lanes(indexed);
        }
        c.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        // (per commit, spread over channels?)
        let shapes = [(1u64, true), (8, true), (8, false), (32, true)];
        let mut per_row: Vec<Vec<f64>> = vec![Vec::new(); shapes.len()];
        for _ in 0..10 {
            for (k, &(g, spread)) in shapes.iter().enumerate() {
                let t = Instant::now();
                let mut n = 0;
                while n < 4000 {
                    c.execute_batch("BEGIN IMMEDIATE").unwrap();
                    let base = i;
                    for j in 0..g {
                        let ch = if spread { base + 7 * j } else { base };
                        insert(i, 1 + (ch % channels) as i64);
                        i += 1;
                        n += 1;
                    }
                    if deferred && c.last_insert_rowid() - indexed >= 4096 {
                        indexed = index_lanes(indexed);
                    }
                    c.execute_batch("COMMIT").unwrap();
                }
                per_row[k].push(us(t.elapsed()) / n as f64);
                // Every shape starts from an empty WAL, as the store's checkpoints keep it.
                c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
            }
        }
        let med: Vec<f64> = per_row.into_iter().map(|v| pcts(v).p50).collect();
        println!(
            "| {label} | {channels} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} |",
            med[0],
            med[1],
            med[2],
            med[3],
            med[0] / med[1],
            med[0] / med[2]
        );
    }
}

// ---- procs: 8 processes appending at once -----------------------------------------------

fn procs(dir: &Path) {
    println!("## procs: 8 processes appending concurrently");
    println!("| load | appends | total/s | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    // Saturation: every process appends back to back (8 runnable processes on 2 cores).
    procs_run(dir, "saturated", 3000, 0);
    // Paced: each process appends once per millisecond, like busy PHP workers.
    procs_run(dir, "paced 8 x 1,000/s", 3000, 1000);
}

fn procs_run(dir: &Path, label: &str, per: u64, pace_us: u64) {
    let db = dir.join(format!("procs-{pace_us}.db"));
    drop(EventStore::open(&db, Config::default()).unwrap());
    let children: Vec<_> = (0..8)
        .map(|k| {
            Command::new(self_exe())
                .args(["--child", "append", db.to_str().unwrap(), &per.to_string()])
                .arg(k.to_string())
                .arg(pace_us.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let start = Instant::now();
    let mut lat = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(v) = l.strip_prefix("LAT ") {
                lat.extend(v.split(',').map(|x| x.parse::<f64>().unwrap()));
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let n = lat.len();
    let p = pcts(lat);
    println!(
        "| {label} | {n} | {:.0} | {:.0} µs | {:.0} µs | {:.1} ms |",
        n as f64 / secs,
        p.p50,
        p.p99,
        p.max / 1000.0
    );
}

// ---- fetch: 1,000,000 events over 1,000 channels ----------------------------------------

const FETCH_EVENTS: u64 = 1_000_000;

/// Builds (or reuses) the fetch store. Two thirds of the first 999,000 events expire at
/// `T0 + 60 s`; the clock is then at `T0 + 120 s`; the last 1,000 events are live.
fn fetch_store(dir: &Path) -> (EventStore, ManualClock, i64) {
    let t0 = 1_700_000_000_000;
    let clock = ManualClock::new(t0);
    let cfg = Config {
        clock: Arc::new(clock.clone()),
        ..Config::default()
    };
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&cache).unwrap();
    let path = cache.join("fetch-1m-v1.db");
    let store = if path.exists() {
        EventStore::open(&path, cfg).unwrap()
    } else {
        let tmp = dir.join("fetch-building.db");
        let store = EventStore::open(&tmp, cfg.clone()).unwrap();
        let mk = |i: u64, ttl: Duration| {
            NewEvent::new(
                [
                    "message_create",
                    "reaction_update",
                    "badge_update",
                    "statistics_update",
                ][(i % 10).min(3) as usize],
                1 + (i * 7919 % 1000) as i64,
            )
            .priority(
                Priority::from_i64(match i % 10 {
                    0..=3 => 1,
                    4..=6 => 2,
                    7 | 8 => 3,
                    _ => 4,
                })
                .unwrap(),
            )
            .message_id(i as i64)
            .thread_id((i % 7) as i64)
            .user_id((i % 300) as i64)
            .data(r#"{"text":"a chat message of ordinary length","n":1}"#)
            .ttl(ttl)
        };
        let live = FETCH_EVENTS - 1000;
        let mut i = 0;
        while i < live {
            let batch: Vec<NewEvent> = (i..(i + 10_000).min(live))
                .map(|k| {
                    let ttl = if k % 3 == 0 { 86_400 } else { 60 };
                    mk(k, Duration::from_secs(ttl))
                })
                .collect();
            i += batch.len() as u64;
            store.append_batch(batch).unwrap();
        }
        clock.set_ms(t0 + 120_000);
        let batch: Vec<NewEvent> = (live..FETCH_EVENTS)
            .map(|k| mk(k, Duration::from_secs(86_400)))
            .collect();
        store.append_batch(batch).unwrap();
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", tmp.display()));
            if from.exists() {
                std::fs::rename(&from, format!("{}{suffix}", path.display())).unwrap();
            }
        }
        EventStore::open(&path, cfg).unwrap()
    };
    clock.set_ms(t0 + 120_000);
    let head = store.head_cursor().unwrap().lanes()[0];
    (store, clock, head)
}

fn fetch(dir: &Path) {
    let (store, _clock, head) = fetch_store(dir);
    println!(
        "## fetch: limit 50, {FETCH_EVENTS} events over 1,000 channels, 2/3 of all but the last 1,000 expired and not purged"
    );
    println!("| scenario | channels | order | events/batch | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    for (scenario, cursor) in [
        // A client that is caught up: the newest 200 events are new to it.
        ("live tail", Cursor::from_last_event_id(head - 200)),
        // A client half a million events behind, through the expired region.
        ("catch-up", Cursor::from_last_event_id(head - 500_000)),
    ] {
        for nch in [1usize, 10, 100] {
            // Channels spread over the id space, as a user's channels would be.
            let channels: Vec<i64> = (0..nch as i64)
                .map(|k| 1 + k * (1000 / nch as i64))
                .collect();
            for order in [Order::Priority, Order::Sequential] {
                let req = FetchRequest::new(channels.clone())
                    .cursor(cursor)
                    .limit(50)
                    .order(order);
                let mut got = 0;
                for _ in 0..200 {
                    got = store.fetch(&req).unwrap().events.len();
                }
                let lat: Vec<f64> = (0..3000)
                    .map(|_| {
                        let t = Instant::now();
                        std::hint::black_box(store.fetch(&req).unwrap());
                        us(t.elapsed())
                    })
                    .collect();
                let p = pcts(lat);
                println!(
                    "| {scenario} | {nch} | {order:?} | {got} | {:.0} µs | {:.0} µs | {:.0} µs |",
                    p.p50, p.p99, p.max
                );
            }
        }
    }
}

// ---- index: the lane index against the alternatives ------------------------------------

fn index(dir: &Path) {
    let (store, _clock, head) = fetch_store(dir);
    let src = store.path().to_path_buf();
    drop(store);
    println!(
        "## index: fetch p99 (limit 50, 10 channels, priority order) on the 1,000,000-event store under three lane indexes"
    );
    println!("| index | live tail p99 | catch-up p99 |");
    println!("|---|---|---|");
    for (label, ddl) in [
        (
            "(channel_id, priority, id, expires_at) — chosen",
            "CREATE INDEX lmsrt_events_lane ON lmsrt_events (channel_id, priority, id, expires_at)",
        ),
        (
            "(channel_id, priority, id)",
            "CREATE INDEX lmsrt_events_lane ON lmsrt_events (channel_id, priority, id)",
        ),
        (
            "(channel_id, id)",
            "CREATE INDEX lmsrt_events_lane ON lmsrt_events (channel_id, id)",
        ),
    ] {
        let db = dir.join("index.db");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        {
            // VACUUM INTO gives a clean copy whatever the WAL state of the cached file.
            let c = rusqlite::Connection::open(&src).unwrap();
            c.execute("VACUUM INTO ?1", [db.to_str().unwrap()]).unwrap();
            drop(c);
            let c = rusqlite::Connection::open(&db).unwrap();
            c.execute_batch(&format!("DROP INDEX lmsrt_events_lane; {ddl}; ANALYZE;"))
                .unwrap();
        }
        let clock = ManualClock::new(1_700_000_000_000 + 120_000);
        let store = EventStore::open(
            &db,
            Config {
                clock: Arc::new(clock),
                ..Config::default()
            },
        )
        .unwrap();
        let channels: Vec<i64> = (0..10).map(|k| 1 + k * 100).collect();
        let p99 = |cursor: Cursor| {
            let req = FetchRequest::new(channels.clone()).cursor(cursor).limit(50);
            for _ in 0..50 {
                store.fetch(&req).unwrap();
            }
            pcts(
                (0..1000)
                    .map(|_| {
                        let t = Instant::now();
                        std::hint::black_box(store.fetch(&req).unwrap());
                        us(t.elapsed())
                    })
                    .collect(),
            )
            .p99
        };
        let live = p99(Cursor::from_last_event_id(head - 200));
        let catch_up = p99(Cursor::from_last_event_id(head - 500_000));
        println!("| {label} | {live:.0} µs | {catch_up:.0} µs |");
    }
}

// ---- purge: lock hold and appends during a purge ----------------------------------------

fn purge(dir: &Path) {
    let t0 = 1_700_000_000_000;
    let clock = ManualClock::new(t0);
    let cfg = Config {
        clock: Arc::new(clock.clone()),
        ..Config::default()
    };
    let db = dir.join("purge.db");
    let store = EventStore::open(&db, cfg.clone()).unwrap();
    for c in 0..30 {
        let batch: Vec<NewEvent> = (0..10_000)
            .map(|k| msg(c * 10_000 + k).ttl(Duration::from_secs(10)))
            .collect();
        store.append_batch(batch).unwrap();
    }
    clock.set_ms(t0 + 20_000);

    // Appends from another process while this one purges, and (first) without a purge.
    let appender = |label: &str| -> Pcts {
        let out = Command::new(self_exe())
            .args(["--child", "append_timed", db.to_str().unwrap(), "3"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = label;
        let out = out.wait_with_output().unwrap();
        let lat: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("LAT "))
            .flat_map(|v| {
                v.split(',')
                    .map(|x| x.parse::<f64>().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        pcts(lat)
    };
    let base = appender("baseline");
    let purging = Arc::new(AtomicBool::new(true));
    let p2 = purging.clone();
    let s2 = Arc::new(store);
    let s3 = s2.clone();
    let purger = std::thread::spawn(move || {
        let mut holds = Vec::new();
        let mut total = 0;
        loop {
            let t = Instant::now();
            let t0 = mono_ns();
            let n = s3.purge_expired(s3.config().purge_chunk).unwrap();
            holds.push(us(t.elapsed()));
            if std::env::var_os("LMSRT_BENCH_DEBUG").is_some() && (holds.len() % 100 == 1 || n == 0)
            {
                eprintln!("purge chunk {} at {} ms", holds.len(), t0 / 1_000_000);
            }
            total += n;
            if n == 0 {
                break;
            }
        }
        p2.store(false, Ordering::SeqCst);
        (holds, total)
    });
    let during = appender("during purge");
    let (holds, total) = purger.join().unwrap();
    let h = pcts(holds);
    println!(
        "## purge: {total} expired rows deleted in chunks of {}, appends from another process meanwhile",
        s2.config().purge_chunk
    );
    println!("| measure | n | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "| purge_expired call, one chunk (waiting for the lock included) | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
        h.n,
        h.p50 / 1000.0,
        h.p99 / 1000.0,
        h.max / 1000.0
    );
    for (label, p) in [("append, no purge", base), ("append during purge", during)] {
        println!(
            "| {label} | {} | {:.0} µs | {:.0} µs | {:.1} ms |",
            p.n,
            p.p50,
            p.p99,
            p.max / 1000.0
        );
    }
    let _ = purging;
}

// ---- wake: cross-process wake-up latency ------------------------------------------------

fn wake(dir: &Path) {
    let db = dir.join("wake.db");
    let store = EventStore::open(&db, Config::default()).unwrap();
    let n = 500;
    let mut child = Command::new(self_exe())
        .args(["--child", "waiter", db.to_str().unwrap(), &n.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap(); // READY
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(4));
        store
            .append(NewEvent::new("message_create", 5).data(format!(r#"{{"t":{}}}"#, mono_ns())))
            .unwrap();
    }
    let mut lat = Vec::new();
    for l in out.lines() {
        if let Some(v) = l.unwrap().strip_prefix("LAT ") {
            lat.extend(v.split(',').map(|x| x.parse::<f64>().unwrap()));
        }
    }
    child.wait().unwrap();
    let p = pcts(lat);
    println!("## wake: append in one process → wait() returns in another (commit included)");
    println!("| n | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!(
        "| {} | {:.0} µs | {:.0} µs | {:.1} ms |",
        p.n,
        p.p50,
        p.p99,
        p.max / 1000.0
    );
}

// ---- idle: CPU of a process blocked in wait() -------------------------------------------

fn idle(dir: &Path) {
    let db = dir.join("idle.db");
    drop(EventStore::open(&db, Config::default()).unwrap());
    let secs = 20;
    let out = Command::new(self_exe())
        .args(["--child", "idle", db.to_str().unwrap(), &secs.to_string()])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let cpu: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("CPU "))
        .unwrap()
        .parse()
        .unwrap();
    println!("## idle: one process blocked in wait() on a quiet store for {secs} s");
    println!("| CPU time | share of one core |");
    println!("|---|---|");
    println!(
        "| {:.2} ms | {:.4} % |",
        cpu * 1000.0,
        cpu / secs as f64 * 100.0
    );
}

// ---- children ---------------------------------------------------------------------------

fn child(args: &[String]) {
    let role = args[0].as_str();
    let db = &args[1];
    let store = EventStore::open(db, Config::default()).unwrap();
    let join = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    match role {
        "append" => {
            let n: u64 = args[2].parse().unwrap();
            let k: u64 = args[3].parse().unwrap();
            let pace = Duration::from_micros(args[4].parse().unwrap());
            let start = Instant::now();
            let lat: Vec<f64> = (0..n)
                .map(|i| {
                    // Paced runs append on a fixed schedule (no catch-up bursts after a stall).
                    let due = start + pace * i as u32;
                    if let Some(d) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                    let t = Instant::now();
                    let t0 = mono_ns();
                    store.append(msg(k * 1_000_000 + i)).unwrap();
                    // Slow appends with their start time (one clock for all processes), to
                    // tell stalls that hit every process at once from one process losing races.
                    if t.elapsed() > Duration::from_millis(3)
                        && std::env::var_os("LMSRT_BENCH_DEBUG").is_some()
                    {
                        eprintln!(
                            "SLOW proc {k} at {:.3} ms took {:?}",
                            t0 as f64 / 1e6,
                            t.elapsed()
                        );
                    }
                    us(t.elapsed())
                })
                .collect();
            println!("LAT {}", join(&lat));
        }
        "append_timed" => {
            // Appends at a chat-like pace (one per ms) for the given seconds.
            let secs: u64 = args[2].parse().unwrap();
            let end = Instant::now() + Duration::from_secs(secs);
            let mut lat = Vec::new();
            let mut i = 0;
            while Instant::now() < end {
                let t = Instant::now();
                let t0 = mono_ns();
                store.append(msg(i)).unwrap();
                lat.push(us(t.elapsed()));
                if t.elapsed() > Duration::from_millis(20)
                    && std::env::var_os("LMSRT_BENCH_DEBUG").is_some()
                {
                    eprintln!(
                        "SLOW append at {} ms took {:?}",
                        t0 / 1_000_000,
                        t.elapsed()
                    );
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            println!("LAT {}", join(&lat));
        }
        "waiter" => {
            let n: usize = args[2].parse().unwrap();
            let mut cur = store.head_cursor().unwrap();
            println!("READY");
            let mut lat = Vec::new();
            while lat.len() < n {
                let b = store
                    .wait(&FetchRequest::new([5]).cursor(cur), Duration::from_secs(10))
                    .unwrap();
                let now = mono_ns();
                for e in &b.events {
                    let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
                    lat.push((now - v["t"].as_i64().unwrap()) as f64 / 1000.0);
                }
                if b.events.is_empty() {
                    break;
                }
                cur = b.cursor;
            }
            println!("LAT {}", join(&lat));
        }
        "idle" => {
            let secs: u64 = args[2].parse().unwrap();
            let head = store.head_cursor().unwrap();
            let before = cpu_time_self();
            let b = store
                .wait(
                    &FetchRequest::new([1]).cursor(head),
                    Duration::from_secs(secs),
                )
                .unwrap();
            assert!(b.events.is_empty());
            println!("CPU {}", (cpu_time_self() - before).as_secs_f64());
        }
        other => panic!("unknown child role {other}"),
    }
}
