//! Background upkeep: the purger thread and checkpoints of a long WAL.

use super::*;

#[test]
fn background_purger_removes_expired_events() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let cfg = Config {
        clock: Arc::new(clock.clone()),
        purge_interval: Some(Duration::from_millis(10)),
        ..Config::default()
    };
    let s = EventStore::open(dir.path().join("bg.db"), cfg).unwrap();
    let start = s.head_cursor().unwrap();
    s.append(ev("a", 1).ttl(Duration::from_secs(2))).unwrap();
    let keep = s.append(ev("a", 1)).unwrap();
    clock.advance_ms(3_000);
    let count = || -> i64 {
        rusqlite::Connection::open(dir.path().join("bg.db"))
            .unwrap()
            .query_row("SELECT count(*) FROM lmsrt_events", [], |r| r.get(0))
            .unwrap()
    };
    // Poll (not a timing assertion): the purger runs every 10 ms; allow it ample time.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count() != 1 {
        assert!(std::time::Instant::now() < deadline, "purger never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    let b = s.fetch(&FetchRequest::new([1]).cursor(start)).unwrap();
    assert_eq!(
        b.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![keep]
    );
    assert!(b.gap, "the purged event is reported as a gap");
    s.close(); // stops the purger thread
}

#[test]
fn a_long_wal_is_checkpointed_before_the_commit_count_comes_round() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_with_clock(&dir);
    let db = dir.path().join("t.db");
    let schema_only = std::fs::metadata(&db).unwrap().len();
    // Ten commits (CHECKPOINT_EVERY is 1,000) writing about 5,000 frames (CHECKPOINT_FRAMES
    // is 4,096): 2 KiB rows, two to a page.
    let text = "x".repeat(2000);
    for _ in 0..10 {
        let batch = (0..1000)
            .map(|k| ev("message_create", 1 + k % 50).data(format!(r#"{{"t":"{text}"}}"#)))
            .collect();
        s.append_batch(batch).unwrap();
    }
    // The WAL's length, not the commit count, started a checkpoint (which may have finished
    // and let the WAL start over by now: its mark stays).
    assert!(s.sqlite().shared.checkpoint_mark.load(Ordering::Relaxed) >= conn::CHECKPOINT_FRAMES);
    // Until a checkpoint copies pages back, the database file holds only the schema.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let copied = loop {
        let len = std::fs::metadata(&db).unwrap().len();
        if len > schema_only + (4 << 20) || std::time::Instant::now() > deadline {
            break len;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        copied > schema_only + (4 << 20),
        "no checkpoint ran: the database file is still {copied} bytes"
    );
}

/// Under steady appends the WAL starts over after a checkpoint, long before it is
/// `WAL_LIMIT_FRAMES` long (where a checkpoint finishes under the writer lock whatever is
/// left). A checkpoint that took "all the frames there when my pass began" for "all of them"
/// left the restart to that limit: the WAL cycled through 64 MiB, and the first cycle of every
/// store paid for the file system allocating and zeroing each block.
#[test]
fn under_steady_appends_the_wal_starts_over_after_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open_with_clock(&dir);
    let frames = || s.sqlite().shared.wal_frames.load(Ordering::Relaxed);
    let mut longest = 0;
    let mut appends = 0;
    // About five frames a commit: a restart is due after a few thousand appends. Paced, as a
    // busy site's appends are, so that a checkpoint's passes keep up even on a loaded
    // machine; every pass still meets commits made while it copied.
    while appends < 40_000 {
        s.append(ev("message_create", 1 + appends % 100)).unwrap();
        appends += 1;
        std::thread::sleep(Duration::from_micros(50));
        let now = frames();
        if now < longest {
            break; // started over
        }
        longest = now;
    }
    assert!(
        frames() < longest,
        "the WAL never started over in {appends} appends ({longest} frames)"
    );
    assert!(
        longest < super::super::maintenance::WAL_LIMIT_FRAMES,
        "the WAL started over only at {longest} frames"
    );
}
