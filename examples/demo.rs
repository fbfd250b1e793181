//! The store alone, without HTTP (the daemon, `lms-longpolld`, serves browsers): opens
//! `lms-realtime.db` in the working directory, appends a few chat events from a second thread,
//! and prints them as a waiting reader receives them.
//!
//! Run: `cargo run --release --example demo`

use std::sync::Arc;
use std::time::{Duration, Instant};

use lms_realtime::{Config, EventStore, FetchRequest, NewEvent};

fn main() -> lms_realtime::Result<()> {
    let path = std::env::var("LMSRT_DB").unwrap_or_else(|_| "lms-realtime.db".into());
    let store = Arc::new(EventStore::open(&path, Config::default())?);
    println!("store: {path}");
    let mut cursor = store.head_cursor()?;

    let writer = store.clone();
    let t = std::thread::spawn(move || -> lms_realtime::Result<()> {
        let script = [
            ("message_create", r#"{"text":"Hello from the chat"}"#),
            ("reaction_update", r#"{"emoji":"👍","count":1}"#),
            ("badge_update", r#"{"unread":3}"#),
            ("message_delete", r#"{}"#),
        ];
        for (i, (ty, data)) in script.iter().enumerate() {
            std::thread::sleep(Duration::from_millis(300));
            writer.append(
                NewEvent::new(*ty, 1)
                    .message_id(i as i64 + 1)
                    .user_id(7)
                    .data(*data),
            )?;
        }
        Ok(())
    });

    let started = Instant::now();
    let mut received = 0;
    while received < 4 && started.elapsed() < Duration::from_secs(10) {
        let batch = store.wait(
            &FetchRequest::new([1]).cursor(cursor),
            Duration::from_secs(5),
        )?;
        for e in &batch.events {
            received += 1;
            println!(
                "{:>6.0} ms  #{:<5} {:<16} priority {}  {}",
                started.elapsed().as_secs_f64() * 1000.0,
                e.id,
                e.event_type,
                e.priority.as_u8(),
                e.data
            );
        }
        cursor = batch.cursor;
    }
    t.join().expect("writer thread")?;
    println!("cursor to resume from: {cursor}");
    Ok(())
}
