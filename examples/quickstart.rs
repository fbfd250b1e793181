//! Quickstart: append two chat events, wait for them, fetch from the cursor (the README's example).

use std::time::Duration;

use lms_realtime::{Config, EventStore, FetchRequest, NewEvent, Order};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One SQLite file (plus small files beside it) is the whole store.
    let dir = std::env::temp_dir().join(format!("lms-realtime-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = EventStore::open(dir.join("chat.db"), Config::default())?;

    // A page renders the chat, then starts polling from the head: nothing in between is lost.
    let mut cursor = store.head_cursor()?;

    store.append(
        NewEvent::new("message_create", 7)
            .message_id(1)
            .user_id(3)
            .data(r#"{"text":"hi"}"#),
    )?;
    store.append(NewEvent::new("reaction_update", 7).message_id(1).user_id(4))?;

    // Blocks until a matching event exists (or the timeout passes); urgent lanes come first.
    let batch = store.wait(
        &FetchRequest::new([7]).cursor(cursor),
        Duration::from_secs(30),
    )?;
    assert_eq!(batch.events[0].event_type, "message_create");
    assert!(!batch.gap); // true would mean: something expired first, resync from the source
    cursor = batch.cursor; // always pass back the cursor you were given

    // Nothing is delivered twice: the next fetch from that cursor is empty.
    assert!(
        store
            .fetch(&FetchRequest::new([7]).cursor(cursor))?
            .events
            .is_empty()
    );

    // Legacy clients keep one integer and want the next N by id.
    let legacy = store.fetch(
        &FetchRequest::new([7])
            .order(Order::Sequential)
            .cursor("0".parse()?),
    )?;
    assert_eq!(legacy.events.len(), 2);
    println!(
        "delivered {} events, cursor {}",
        batch.events.len(),
        legacy.cursor
    );

    drop(store);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
