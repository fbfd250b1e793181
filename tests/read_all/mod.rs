//! Shared by the integration tests that check nothing acknowledged was lost: every id stored on
//! a set of channels, read back from the start.

use lms_realtime::{Cursor, EventStore, FetchRequest};

/// The ids of every event on `channels`, fetched from the start in sequential order.
pub fn all_ids(store: &EventStore, channels: &[i64]) -> Vec<i64> {
    let mut cur = Cursor::START;
    let mut ids = Vec::new();
    loop {
        let b = store
            .fetch(
                &FetchRequest::new(channels.iter().copied())
                    .cursor(cur)
                    .limit(1000),
            )
            .unwrap();
        if b.events.is_empty() {
            return ids;
        }
        ids.extend(b.events.iter().map(|e| e.id));
        cur = b.cursor;
    }
}
