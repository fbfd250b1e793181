//! Tests of the engine's internals on a `redis-server` of their own (the integration tests'
//! helper, shared by path). The contract itself is tested in `tests/redis_store.rs` and
//! `tests/delivery_contract.rs`.

#[path = "../../../tests/redis_common/mod.rs"]
mod redis_common;

use std::sync::Arc;
use std::time::Duration;

use super::RedisStore;
use crate::clock::ManualClock;
use crate::store::{Config, Engine, EventStore, FetchRequest};
use crate::{Cursor, NewEvent};

#[test]
fn purge_records_past_the_cap_fold_into_a_bound_that_still_reports_the_gap() {
    let server = redis_common::RedisServer::start();
    let clock = ManualClock::new(1_000_000);
    let config = Config {
        clock: Arc::new(clock.clone()),
        ..Config::default()
    };
    let mut engine = RedisStore::open(&server.url(), config).unwrap();
    engine.purge_records = 1;
    let s = EventStore {
        engine: Engine::Redis(engine),
    };
    let short = |ch| NewEvent::new("message_create", ch).ttl(Duration::from_secs(1));
    let e1 = s.append(short(1)).unwrap();
    s.append(short(2)).unwrap();
    let kept = s.append(NewEvent::new("message_create", 1)).unwrap();
    clock.advance_ms(1_000);
    assert_eq!(s.purge_expired(usize::MAX).unwrap(), 2);
    // Two records, one kept: the record of e1 (the oldest) is folded away.
    let from_start = s.fetch(&FetchRequest::new([1])).unwrap();
    assert_eq!(
        from_start.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![kept]
    );
    assert!(
        from_start.gap,
        "e1 was owed; its record is folded, not forgotten"
    );
    // A reader already past the folded bound is owed nothing.
    let past = Cursor::from_last_event_id(e1);
    let b = s.fetch(&FetchRequest::new([1]).cursor(past)).unwrap();
    assert!(!b.gap);
    assert_eq!(b.events.len(), 1);
}
