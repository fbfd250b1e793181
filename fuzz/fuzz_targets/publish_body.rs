//! The publish body on arbitrary input. Never panics; a body that parses holds 1 to
//! `MAX_BATCH` events, each with a well-formed type, a channel > 0 and data that is a JSON
//! object every reader can decode; it re-serialises (as a batch, and as one object when it
//! holds one event) to a body that parses to the same events. A body that does not parse is a
//! 400.
#![no_main]

use std::fmt::Write as _;

use libfuzzer_sys::fuzz_target;
use lms_realtime::NewEvent;
use lms_realtime::event::{validate_data, validate_event_type};
use lms_realtime::fuzzing;
use lms_realtime::store::MAX_BATCH;

/// The event as a JSON object, its data as the same text (numbers and spacing kept).
fn to_json(e: &NewEvent) -> String {
    let q = |v: &str| serde_json::to_string(v).unwrap();
    let mut o = format!(
        r#"{{"event_type":{},"channel_id":{},"user_id":{}"#,
        q(&e.event_type),
        e.channel_id,
        e.user_id
    );
    if let Some(p) = e.priority {
        write!(o, r#","priority":{}"#, u8::from(p)).unwrap();
    }
    if let Some(id) = e.message_id {
        write!(o, r#","message_id":{id}"#).unwrap();
    }
    if let Some(id) = e.thread_id {
        write!(o, r#","thread_id":{id}"#).unwrap();
    }
    write!(o, r#","data":{}"#, e.data).unwrap();
    if let Some(ttl) = e.ttl {
        write!(o, r#","ttl_ms":{}"#, ttl.as_millis()).unwrap();
    }
    if let Some(k) = &e.idempotency_key {
        write!(o, r#","idempotency_key":{}"#, q(k)).unwrap();
    }
    o.push('}');
    o
}

fuzz_target!(|data: &[u8]| {
    let events = match fuzzing::parse_events(data) {
        Ok(events) => events,
        Err(e) => {
            assert_eq!(e.status(), 400, "{e:?}");
            return;
        }
    };
    assert!((1..=MAX_BATCH).contains(&events.len()));
    for e in &events {
        validate_event_type(&e.event_type).unwrap();
        assert!(e.channel_id > 0);
        validate_data(&e.data, usize::MAX).unwrap();
    }
    let all: Vec<String> = events.iter().map(to_json).collect();
    let mut bodies = vec![format!(r#"{{"events":[{}]}}"#, all.join(","))];
    if let [one] = &all[..] {
        bodies.push(one.clone());
    }
    for body in bodies {
        let again =
            fuzzing::parse_events(body.as_bytes()).unwrap_or_else(|e| panic!("{e:?}: {body}"));
        assert_eq!(again, events, "{body}");
    }
});
