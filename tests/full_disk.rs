//! A full disk under the store and the guards: the process lives and gets a clear `Storage`
//! error, and once space returns everything works again with nothing acknowledged lost.
//!
//! The disk is a tmpfs of a few MiB mounted for the test (the tests run as root). Mapped files
//! used to be created sparse, so the first store to one of their pages on a full disk killed
//! the process with SIGBUS; here that would kill the test binary.

mod read_all;
mod tmpfs;

use std::path::Path;

use lms_realtime::guards::{Breakers, LimiterConfig, RateLimiter, Slots, SlotsConfig};
use lms_realtime::metrics::{Metrics, MetricsConfig};
use lms_realtime::{Config, ErrorCode, EventStore, NewEvent};
use read_all::all_ids;
use tmpfs::{Tmpfs, fill};

fn integrity(db: &Path) -> String {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn event(i: usize) -> NewEvent {
    NewEvent::new("message_create", 1).data(format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(200)))
}

/// Opens every guard at `db` (each maps its own file beside it).
fn open_guards(db: &Path) -> lms_realtime::Result<(RateLimiter, Breakers, Slots, Metrics)> {
    Ok((
        RateLimiter::open(db, LimiterConfig::default())?,
        Breakers::open(db, Default::default())?,
        Slots::open(db, SlotsConfig::default())?,
        Metrics::open(db, MetricsConfig::default())?,
    ))
}

#[test]
fn a_full_disk_is_a_storage_error_and_recovers_when_space_returns() {
    let Some(fs) = Tmpfs::mount(8 << 20) else {
        return;
    };
    let db = fs.path().join("e.db");
    let store = EventStore::open(&db, Config::default()).unwrap();
    let mut acked: Vec<i64> = (0..50).map(|i| store.append(event(i)).unwrap()).collect();

    let filler = fill(fs.path());

    // Appends go on into pages the WAL already has, then fail: a Storage error, no signal.
    let mut refused = None;
    for i in 0..100_000 {
        match store.append(event(1000 + i)) {
            Ok(id) => acked.push(id),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("appends on a full disk never failed");
    assert_eq!(e.code(), ErrorCode::Storage, "{e}");
    // A failed append stays failed, and does not poison the handle: it keeps refusing cleanly.
    let again = store.append(event(0)).unwrap_err();
    assert_eq!(again.code(), ErrorCode::Storage, "{again}");
    assert_eq!(
        all_ids(&store, &[1]),
        acked,
        "reads still work on a full disk"
    );

    // Guards and a second store, whose files would be created on the full disk.
    let e = open_guards(&db).map(drop).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Storage, "{e}");
    let other = fs.path().join("other.db");
    let e = EventStore::open(&other, Config::default())
        .map(drop)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Storage, "{e}");

    std::fs::remove_file(&filler).unwrap();

    // Space is back: the same handle appends, the guards and the other store open and work.
    acked.push(store.append(event(1)).unwrap());
    let (limiter, breakers, slots, metrics) = open_guards(&db).unwrap();
    assert!(limiter.check("post", "user:1").unwrap().allowed);
    drop((limiter, breakers, slots, metrics));
    let other = EventStore::open(&other, Config::default()).unwrap();
    other.append(event(2)).unwrap();
    drop(other);
    assert_eq!(
        all_ids(&store, &[1]),
        acked,
        "an acknowledged event was lost"
    );
    drop(store);

    // And after a reopen, from the file alone.
    let store = EventStore::open(&db, Config::default()).unwrap();
    assert_eq!(all_ids(&store, &[1]), acked);
    drop(store);
    assert_eq!(integrity(&db), "ok");
}
