//! Poison events: data that some reader cannot decode must neither get in nor, when it is
//! already in the file (written by an older version, by hand, or damaged), stop any reader.
//!
//! Appends refuse data nested deeper than 64 levels and lone UTF-16 surrogate escapes with a
//! typed `InvalidData` error that changes nothing. Rows put into the file behind the store's
//! back (with rusqlite, as an old version or corruption would) are skipped by every reader:
//! fetch in both of its paths (live tail and catch-up), wait, and the tail the daemon fans out
//! from; the cursor moves past them with `gap: true`, and the next event arrives.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lms_realtime::event::MAX_DATA_DEPTH;
use lms_realtime::store::{self, Config, EventStore, FetchRequest};
use lms_realtime::{ErrorCode, NewEvent};
use rusqlite::params;

fn nested(depth: usize) -> String {
    format!(
        r#"{{"a":{}1{}}}"#,
        "[".repeat(depth - 1),
        "]".repeat(depth - 1)
    )
}

const LONE_SURROGATE: &str = r#"{"text":"\ud800"}"#;

fn open(dir: &tempfile::TempDir, window: i64) -> EventStore {
    EventStore::open(
        dir.path().join("p.db"),
        Config {
            live_tail_window: window,
            ..Config::default()
        },
    )
    .unwrap()
}

/// Inserts a row with `data` (text or blob) straight into the file, bypassing validation.
fn insert_raw(dir: &tempfile::TempDir, channel: i64, data: rusqlite::types::Value) -> i64 {
    let c = rusqlite::Connection::open(dir.path().join("p.db")).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    c.execute(
        "INSERT INTO lmsrt_events (event_type, priority, channel_id, user_id, data, timestamp, expires_at)
         VALUES ('message_create', 1, ?1, 1, ?2, ?3, ?4)",
        params![channel, data, now, now + 3_600_000],
    )
    .unwrap();
    c.last_insert_rowid()
}

#[test]
fn appends_refuse_deep_nesting_and_lone_surrogates_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, 256);
    let ok = s.append(NewEvent::new("message_create", 1)).unwrap();
    for (data, cause) in [
        (nested(MAX_DATA_DEPTH + 1), "nested more than 64"),
        (nested(520), "nested more than 64"),
        (LONE_SURROGATE.to_owned(), "lone UTF-16 surrogate"),
        (r#"{"a":"\udc00"}"#.to_owned(), "lone UTF-16 surrogate"),
    ] {
        let e = s
            .append(NewEvent::new("message_create", 1).data(data.clone()))
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidData, "{data:.40}");
        assert!(e.to_string().contains(cause), "{e}");
        let e = s
            .append_batch(vec![
                NewEvent::new("message_create", 1),
                NewEvent::new("message_create", 1).data(data),
            ])
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidData);
    }
    // 64 levels and a proper surrogate pair are fine.
    let deep = s
        .append(NewEvent::new("message_create", 1).data(nested(MAX_DATA_DEPTH)))
        .unwrap();
    let pair = s
        .append(NewEvent::new("message_create", 1).data(r#"{"t":"\ud83d\ude00"}"#))
        .unwrap();
    let b = s.fetch(&FetchRequest::new([1])).unwrap();
    let ids: Vec<i64> = b.events.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![ok, deep, pair], "nothing refused was stored");
    assert!(!b.gap);
}

/// The poison rows an old version or a damaged file could hold, each followed by a good event:
/// a reader with `limit=1` must get every good event, in order, and step past each poison row.
fn poison_then_good(dir: &tempfile::TempDir, s: &EventStore) -> (Vec<i64>, Vec<i64>) {
    use rusqlite::types::Value;
    let mut poison = Vec::new();
    let mut good = Vec::new();
    for data in [
        Value::Text(nested(520)),
        Value::Text(LONE_SURROGATE.into()),
        Value::Text("not json".into()),
        Value::Text("[1,2]".into()),
        Value::Blob(vec![b'{', 0xff, 0xfe, b'}']),
        Value::Integer(7),
    ] {
        poison.push(insert_raw(dir, 1, data));
        good.push(
            s.append(NewEvent::new("message_create", 1).data(r#"{"ok":true}"#))
                .unwrap(),
        );
    }
    (poison, good)
}

fn read_all_with_limit_1(s: &EventStore) -> (Vec<i64>, usize) {
    let mut req = FetchRequest::new([1]).limit(1);
    let mut got = Vec::new();
    let mut gaps = 0;
    for _ in 0..100 {
        let b = s.fetch(&req).unwrap();
        got.extend(b.events.iter().map(|e| e.id));
        for e in &b.events {
            let _: serde_json::Value = serde_json::from_str(&e.data).unwrap();
        }
        gaps += usize::from(b.gap);
        req.cursor = b.cursor;
        if !b.has_more && b.events.is_empty() && !b.gap {
            break;
        }
    }
    (got, gaps)
}

#[test]
fn fetch_steps_past_poison_rows_in_the_live_tail_path() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, 256);
    let (_, good) = poison_then_good(&dir, &s);
    let (got, gaps) = read_all_with_limit_1(&s);
    assert_eq!(got, good);
    assert_eq!(gaps, 6, "each poison row skipped is reported as a gap");
    // And a JSON rendering of a whole batch (what the C ABI and the daemon send) works.
    let b = s.fetch(&FetchRequest::new([1]).limit(100)).unwrap();
    assert!(b.gap);
    let v: serde_json::Value = serde_json::to_value(&b).unwrap();
    assert_eq!(v["events"].as_array().unwrap().len(), good.len());
}

#[test]
fn fetch_steps_past_poison_rows_in_the_catch_up_path() {
    let dir = tempfile::tempdir().unwrap();
    // Window 0: every fetch reads ids from the index and loads the selected rows.
    let s = open(&dir, 0);
    let (_, good) = poison_then_good(&dir, &s);
    let (got, gaps) = read_all_with_limit_1(&s);
    assert_eq!(got, good);
    assert_eq!(gaps, 6);
    assert!(store::undeliverable_events_seen() >= 6);
}

#[test]
fn wait_returns_past_a_poison_row_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, 256);
    let start = s.head_cursor().unwrap();
    insert_raw(&dir, 1, rusqlite::types::Value::Text(LONE_SURROGATE.into()));
    let good = s.append(NewEvent::new("message_create", 1)).unwrap();
    let req = FetchRequest::new([1]).limit(1).cursor(start);
    let t = std::time::Instant::now();
    let b = s.wait(&req, Duration::from_secs(10)).unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "not stuck: {:?}",
        t.elapsed()
    );
    assert!(b.events.is_empty() && b.gap, "{b:?}");
    let b = s
        .wait(&req.clone().cursor(b.cursor), Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        b.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![good]
    );
}

/// The tail (what the daemon keeps in memory and assembles batches from) hands a poison row on
/// as expired with `{}` data; a batch assembled from it skips it with a gap, and the tail keeps
/// going.
#[test]
fn the_tail_and_assemble_skip_poison_rows() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, 256);
    let seen: Arc<Mutex<Vec<lms_realtime::Event>>> = Arc::default();
    let head = Arc::new(Mutex::new(0i64));
    let sub = {
        let seen = seen.clone();
        let head = head.clone();
        s.subscribe(move |b| {
            seen.lock().unwrap().extend(b.events.iter().cloned());
            *head.lock().unwrap() = b.head;
        })
        .unwrap()
    };
    let start = s.head_cursor().unwrap();
    let poison = insert_raw(&dir, 1, rusqlite::types::Value::Text(nested(520)));
    let good = s.append(NewEvent::new("message_create", 1)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while *head.lock().unwrap() < good {
        assert!(std::time::Instant::now() < deadline, "the tail is stuck");
        std::thread::sleep(Duration::from_millis(10));
    }
    let events = seen.lock().unwrap().clone();
    let p = events.iter().find(|e| e.id == poison).unwrap();
    assert_eq!((p.data.as_str(), p.expires_at), ("{}", 0));
    // Already marked expired, the poison row is no candidate: even with limit=1 the batch
    // holds the next event, and says it moved past one it could not deliver.
    let req = FetchRequest::new([1]).limit(1).cursor(start);
    let b = s
        .assemble(&req, &events, *head.lock().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        b.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![good]
    );
    assert!(b.gap);
    let v: serde_json::Value = serde_json::to_value(&b).unwrap();
    assert_eq!(v["events"][0]["id"], good);
    drop(sub);
}
