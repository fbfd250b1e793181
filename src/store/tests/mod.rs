//! Unit tests of [`EventStore`], one file per subject; the helpers they share are here.

mod advance_ids;
mod append;
mod lifecycle;
mod maintenance;
mod purge_gaps;
mod read;
mod wait;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::ErrorCode;
use crate::clock::ManualClock;

fn open_with_clock(dir: &tempfile::TempDir) -> (EventStore, ManualClock) {
    let clock = ManualClock::new(1_700_000_000_000);
    let cfg = Config {
        clock: Arc::new(clock.clone()),
        ..Config::default()
    };
    (
        EventStore::open(dir.path().join("t.db"), cfg).unwrap(),
        clock,
    )
}

fn ev(t: &str, ch: i64) -> NewEvent {
    NewEvent::new(t, ch)
}
