//! Shared by the corruption tests: a store with thousands of events spread over many pages,
//! then one b-tree leaf page of `lmsrt_events` in the middle of the file overwritten.

#![allow(dead_code)]

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use lms_realtime::event::{NewEvent, Priority};
use lms_realtime::{EventStore, store};

/// Events appended.
pub const EVENTS: i64 = 3000;
/// Channels they are spread over.
pub const CHANNELS: i64 = 3;

/// Events 1..=EVENTS (ids equal to their number) on channels 1..=3, all four priorities, 600
/// bytes of data each (about six to a 4 KiB page, so the table spans some 500 pages); every
/// tenth carries an idempotency key `k<id>`. The consumer `reader` has committed the cursor
/// after event 100.
pub fn build(path: &Path) {
    let s = EventStore::open(path, store::Config::default()).unwrap();
    let pad = "x".repeat(600);
    let events: Vec<NewEvent> = (1..=EVENTS).map(|i| event(i, &pad)).collect();
    for chunk in events.chunks(500) {
        s.append_batch(chunk.to_vec()).unwrap();
    }
    let head = s.head_cursor().unwrap();
    assert_eq!(head.lanes(), [EVENTS; 4]);
    let b = s
        .fetch(
            &store::FetchRequest::new(1..=CHANNELS)
                .order(store::Order::Sequential)
                .limit(100),
        )
        .unwrap();
    s.commit_cursor("reader", &b.cursor).unwrap();
    s.close();
    drop(s);
    // Everything into the main file, so the page overwritten below is the only copy.
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
}

/// The event with id `i` as [`build`] appends it.
pub fn event(i: i64, pad: &str) -> NewEvent {
    let mut e = NewEvent::new("message_created", 1 + i % CHANNELS)
        .priority(Priority::from_i64(1 + i % 4).unwrap())
        .user_id(7)
        .message_id(i)
        .data(format!("{{\"n\":{i},\"pad\":\"{pad}\"}}"));
    if i % 10 == 0 {
        e = e.idempotency_key(format!("k{i}"));
    }
    e
}

/// Overwrites the middle one of the table's leaf pages with garbage (an invalid page type, so
/// SQLite reports corruption rather than reading nonsense). Returns the page number.
pub fn damage(path: &Path) -> i64 {
    damage_pages(path, "lmsrt_events", |pages| {
        assert!(
            pages.len() > 100,
            "the table spans many pages: {}",
            pages.len()
        );
        vec![pages[pages.len() / 2]]
    })[0]
}

/// Overwrites with garbage the leaf pages of b-tree `name` that `pick` chooses from all of
/// them (ascending); returns the page numbers overwritten.
pub fn damage_pages(path: &Path, name: &str, pick: impl Fn(&[i64]) -> Vec<i64>) -> Vec<i64> {
    let (page_size, chosen) = {
        let c = rusqlite::Connection::open(path).unwrap();
        let page_size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        let mut s = c
            .prepare(
                "SELECT pageno FROM dbstat WHERE name = ?1 AND pagetype = 'leaf'
                 ORDER BY pageno",
            )
            .unwrap();
        let pages: Vec<i64> = s
            .query_map([name], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!pages.is_empty(), "{name} has leaf pages");
        (page_size, pick(&pages))
    };
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    for page in &chosen {
        f.seek(SeekFrom::Start(((page - 1) * page_size) as u64))
            .unwrap();
        f.write_all(&vec![0xA5; page_size as usize]).unwrap();
    }
    f.sync_all().unwrap();
    chosen
}
