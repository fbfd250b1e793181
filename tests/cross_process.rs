//! Several processes on one database file: concurrent appends, cross-process wake-up, and a
//! writer killed with SIGKILL mid-stream.
//!
//! The test binary re-executes itself as the child processes: `child_entry` does nothing unless
//! `LMSRT_CHILD_ROLE` is set, in which case it plays that role and exits.

mod read_all;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lms_realtime::{Config, Cursor, EventStore, FetchRequest, NewEvent};
use read_all::all_ids;

fn spawn_child(role: &str, db: &Path, extra: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("LMSRT_CHILD_ROLE", role)
        .env("LMSRT_CHILD_DB", db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn env_num(name: &str) -> i64 {
    std::env::var(name).unwrap().parse().unwrap()
}

/// The child side. Prints `ACK <id>` for every append it has had acknowledged.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var("LMSRT_CHILD_ROLE") else {
        return;
    };
    let db = std::env::var("LMSRT_CHILD_DB").unwrap();
    let store = EventStore::open(&db, Config::default()).unwrap();
    match role.as_str() {
        "append" => {
            let n = env_num("LMSRT_CHILD_N");
            let ch = env_num("LMSRT_CHILD_CHANNEL");
            for i in 0..n {
                let id = store
                    .append(NewEvent::new("message_create", ch).data(format!(r#"{{"i":{i}}}"#)))
                    .unwrap();
                println!("ACK {id}");
            }
        }
        "append_forever" => {
            for i in 0.. {
                let id = store
                    .append(NewEvent::new("message_create", 1).data(format!(r#"{{"i":{i}}}"#)))
                    .unwrap();
                println!("ACK {id}");
            }
        }
        "append_after" => {
            std::thread::sleep(Duration::from_millis(env_num("LMSRT_CHILD_DELAY_MS") as u64));
            let id = store.append(NewEvent::new("message_create", 9)).unwrap();
            println!("ACK {id}");
        }
        "wait" => {
            let cursor = Cursor::parse(&std::env::var("LMSRT_CHILD_CURSOR").unwrap()).unwrap();
            println!("WAITING");
            let b = store
                .wait(
                    &FetchRequest::new([9]).cursor(cursor),
                    Duration::from_secs(20),
                )
                .unwrap();
            for e in b.events {
                println!("GOT {}", e.id);
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// The value after `tag` on a line of child output. The test harness prints its own
/// `test child_entry ... ` without a newline first, so the tag may sit mid-line.
fn tagged(line: &str, tag: &str) -> Option<i64> {
    line.split_once(tag).map(|(_, v)| v.trim().parse().unwrap())
}

fn acks(child: Child) -> Vec<i64> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| tagged(l, "ACK "))
        .collect()
}

#[test]
fn concurrent_appends_from_four_processes_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("multi.db");
    drop(EventStore::open(&db, Config::default()).unwrap());
    let children: Vec<Child> = (1..=4)
        .map(|ch| {
            spawn_child(
                "append",
                &db,
                &[
                    ("LMSRT_CHILD_N", "250".into()),
                    ("LMSRT_CHILD_CHANNEL", ch.to_string()),
                ],
            )
        })
        .collect();
    let mut all: Vec<i64> = children.into_iter().flat_map(acks).collect();
    assert_eq!(all.len(), 1000);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 1000, "two appends got the same id");
    let store = EventStore::open(&db, Config::default()).unwrap();
    let mut seen = all_ids(&store, &[1, 2, 3, 4]);
    seen.sort();
    assert_eq!(seen, all);
}

#[test]
fn an_append_in_another_process_wakes_a_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("wake.db");
    let store = EventStore::open(&db, Config::default()).unwrap();
    let head = store.head_cursor().unwrap();

    // This process waits; a child appends.
    let child = spawn_child(
        "append_after",
        &db,
        &[("LMSRT_CHILD_DELAY_MS", "200".into())],
    );
    let b = store
        .wait(
            &FetchRequest::new([9]).cursor(head),
            Duration::from_secs(20),
        )
        .unwrap();
    let ids = acks(child);
    assert_eq!(
        b.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids,
        "woken with the child's event"
    );

    // A child waits; this process appends.
    let head = store.head_cursor().unwrap();
    let mut child = spawn_child("wait", &db, &[("LMSRT_CHILD_CURSOR", head.to_string())]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("WAITING") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child died");
    }
    std::thread::sleep(Duration::from_millis(100));
    let id = store.append(NewEvent::new("message_create", 9)).unwrap();
    let mut got = Vec::new();
    for l in out.lines() {
        if let Some(x) = tagged(&l.unwrap(), "GOT ") {
            got.push(x);
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(got, vec![id]);
}

#[test]
fn a_writer_killed_mid_stream_loses_no_acknowledged_append() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    drop(EventStore::open(&db, Config::default()).unwrap());
    for round in 0..3 {
        let mut child = spawn_child("append_forever", &db, &[]);
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut acked = Vec::new();
        let start = Instant::now();
        for l in out.lines() {
            let Ok(l) = l else { break };
            if let Some(id) = tagged(&l, "ACK ") {
                acked.push(id);
                // Kill at a different point each round, while it is busy appending.
                if acked.len() >= 200 + round * 137 || start.elapsed() > Duration::from_secs(20) {
                    // SAFETY: plain kill(2) on our own child's pid.
                    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                    break;
                }
            }
        }
        child.wait().unwrap();
        assert!(!acked.is_empty());

        let store = EventStore::open(&db, Config::default()).unwrap();
        let conn = rusqlite::Connection::open(&db).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let present: std::collections::HashSet<i64> = all_ids(&store, &[1]).into_iter().collect();
        for id in &acked {
            assert!(present.contains(id), "acknowledged append {id} lost");
        }
        // The file is still writable after the crash.
        store.append(NewEvent::new("message_create", 1)).unwrap();
    }
}

/// Writers killed with SIGKILL while others contend for the writer lock: whatever they held
/// (a place in the queue, the lock itself) must not hold up the writers that live on, and
/// nothing any of them had acknowledged may be lost.
#[test]
fn writers_killed_while_others_contend_hold_nobody_up() {
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("contend.db");
    drop(EventStore::open(&db, Config::default()).unwrap());
    /// Kills the children however the test ends, so a failure leaves no writer behind.
    struct Children(Vec<Child>);
    impl Drop for Children {
        fn drop(&mut self) {
            for child in &mut self.0 {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    let acked = Arc::new(Mutex::new(Vec::<Vec<i64>>::new()));
    let mut children = Children(Vec::new());
    let mut readers = Vec::new();
    for k in 0..4 {
        let mut child = spawn_child("append_forever", &db, &[]);
        let out = BufReader::new(child.stdout.take().unwrap());
        acked.lock().unwrap().push(Vec::new());
        let acked = acked.clone();
        readers.push(std::thread::spawn(move || {
            for l in out.lines() {
                let Ok(l) = l else { break };
                if let Some(id) = tagged(&l, "ACK ") {
                    acked.lock().unwrap()[k].push(id);
                }
            }
        }));
        children.0.push(child);
    }
    let count = |k: usize| acked.lock().unwrap()[k].len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (0..4).any(|k| count(k) < 100) {
        assert!(Instant::now() < deadline, "the writers made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    for child in &children.0[..2] {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    }
    let after_kill = [count(2), count(3)];

    // This process and the two survivors go on appending.
    let (tx, rx) = std::sync::mpsc::channel();
    let db2 = db.clone();
    std::thread::spawn(move || {
        let store = EventStore::open(&db2, Config::default()).unwrap();
        let ids: Vec<i64> = (0..200)
            .map(|_| store.append(NewEvent::new("message_create", 1)).unwrap())
            .collect();
        let _ = tx.send(ids);
    });
    let mine = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("appends after the kills never finished");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(2) < after_kill[0] + 100 || count(3) < after_kill[1] + 100 {
        assert!(Instant::now() < deadline, "a surviving writer was held up");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(children); // SIGKILL the survivors too, mid-stream
    for r in readers {
        r.join().unwrap();
    }

    let store = EventStore::open(&db, Config::default()).unwrap();
    let present: std::collections::HashSet<i64> = all_ids(&store, &[1]).into_iter().collect();
    let all = acked.lock().unwrap();
    for id in all.iter().flatten().chain(&mine) {
        assert!(present.contains(id), "acknowledged append {id} lost");
    }
}

/// `advance_ids` from this process while two others append as fast as they can: each append
/// commits either before the jump or after it, so the ids on each side are contiguous, and a
/// reader from the start (or from a cursor before the jump) gets them all with `gap: false`.
#[test]
fn advance_ids_is_ordered_with_appends_in_other_processes() {
    use std::sync::{Arc, Mutex};
    const PAST: i64 = 1_000_000_000;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("floor.db");
    let store = EventStore::open(&db, Config::default()).unwrap();
    /// Kills the children however the test ends, so a failure leaves no writer behind.
    struct Children(Vec<Child>);
    impl Drop for Children {
        fn drop(&mut self) {
            for child in &mut self.0 {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    let acked = Arc::new(Mutex::new(vec![Vec::<i64>::new(); 2]));
    let mut children = Children(Vec::new());
    let mut readers = Vec::new();
    for k in 0..2 {
        let mut child = spawn_child("append_forever", &db, &[]);
        let out = BufReader::new(child.stdout.take().unwrap());
        let acked = acked.clone();
        readers.push(std::thread::spawn(move || {
            for l in out.lines() {
                let Ok(l) = l else { break };
                if let Some(id) = tagged(&l, "ACK ") {
                    acked.lock().unwrap()[k].push(id);
                }
            }
        }));
        children.0.push(child);
    }
    let above = |k: usize| {
        acked.lock().unwrap()[k]
            .iter()
            .filter(|id| **id > PAST)
            .count()
    };
    let count = |k: usize| acked.lock().unwrap()[k].len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (0..2).any(|k| count(k) < 100) {
        assert!(Instant::now() < deadline, "the writers made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(store.advance_ids(PAST).unwrap(), PAST);
    while (0..2).any(|k| above(k) < 100) {
        assert!(Instant::now() < deadline, "no append got past the floor");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(children);
    for r in readers {
        r.join().unwrap();
    }

    let acked = acked.lock().unwrap();
    for ids in acked.iter() {
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "a child's ids went back"
        );
    }
    let mut all: Vec<i64> = acked.iter().flatten().copied().collect();
    all.sort_unstable();
    // Everything is in the file, and the ids the children were told are exactly those
    // stored (a child killed mid-append may have committed one more it never reported).
    let stored = all_ids(&store, &[1]);
    assert!(stored.len() >= all.len() && stored.len() - all.len() <= 2);
    let below = stored.iter().take_while(|id| **id <= PAST).count();
    let expect: Vec<i64> = (1..=below as i64)
        .chain(PAST + 1..=PAST + (stored.len() - below) as i64)
        .collect();
    assert_eq!(
        stored, expect,
        "ids on each side of the jump are contiguous"
    );
    assert!(all.iter().all(|id| stored.binary_search(id).is_ok()));
    // A reader whose cursor is before the jump crosses it without a gap.
    let b = store
        .fetch(
            &FetchRequest::new([1])
                .cursor(Cursor::from_last_event_id(below as i64 - 1))
                .limit(1000),
        )
        .unwrap();
    assert!(!b.gap);
    assert_eq!(
        b.events.iter().map(|e| e.id).take(2).collect::<Vec<_>>(),
        vec![below as i64, PAST + 1]
    );
}

/// Runs `f` on another thread and fails the test if it takes more than 10 s: a hang becomes a
/// failure, without a tight wall-clock assertion.
fn within_10s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} did not finish within 10 s"))
}

/// Overwrites the start of the writer lock file of `db` with `bytes`, as a crash of an older
/// version, an edit or a disk error might leave it.
fn damage_writer_lock(db: &Path, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let mut p = db.as_os_str().to_owned();
    p.push("-lmsrt-writer");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
        .unwrap();
    f.write_all_at(bytes, 0).unwrap();
}

/// The lock file's queue words (next ticket at byte 256, the ticket being served at 320) as
/// `next` and `serving`, the rest of the first page zero.
fn queue_words(next: u32, serving: u32) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    b[256..260].copy_from_slice(&next.to_ne_bytes());
    b[320..324].copy_from_slice(&serving.to_ne_bytes());
    b
}

fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn a_damaged_writer_lock_file_holds_up_neither_open_nor_append() {
    let damages = [
        ("garbage", pseudo_random(4096, 0x9e37_79b9_7f4a_7c15)),
        ("tickets a million ahead", queue_words(1_000_000, 0)),
        ("turn a million ahead", queue_words(0, 1_000_000)),
    ];
    for (what, bytes) in damages {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("e.db");
        let store = EventStore::open(&db, Config::default()).unwrap();
        let mut acked: Vec<i64> = (0..20)
            .map(|_| store.append(NewEvent::new("message_create", 1)).unwrap())
            .collect();
        drop(store);

        // Damaged while nobody has it open: opening (which migrates under the lock) and
        // appending finish promptly.
        damage_writer_lock(&db, &bytes);
        let (store, id) = within_10s(&format!("open and append after {what}"), {
            let db = db.clone();
            move || {
                let store = EventStore::open(&db, Config::default()).unwrap();
                let id = store.append(NewEvent::new("message_create", 1)).unwrap();
                (store, id)
            }
        });
        acked.push(id);

        // Damaged under an open store: its next append finishes promptly too.
        damage_writer_lock(&db, &bytes);
        let (store, id) = within_10s(&format!("append after {what} under an open store"), {
            move || {
                let id = store.append(NewEvent::new("message_create", 1)).unwrap();
                (store, id)
            }
        });
        acked.push(id);

        // Writers in other processes queue normally afterwards, and nothing acknowledged is
        // lost.
        let kids: Vec<Child> = (0..2)
            .map(|_| {
                spawn_child(
                    "append",
                    &db,
                    &[
                        ("LMSRT_CHILD_N", "50".into()),
                        ("LMSRT_CHILD_CHANNEL", "1".into()),
                    ],
                )
            })
            .collect();
        for kid in kids {
            acked.extend(within_10s(
                &format!("two writers after {what}"),
                move || acks(kid),
            ));
        }
        acked.sort_unstable();
        assert_eq!(all_ids(&store, &[1]), acked, "after {what}");
    }
}
