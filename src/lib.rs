//! # lms-realtime
//!
//! A priority event log over SQLite with per-event expiry, cursor-based batch fetch that never
//! loses or repeats an event, and blocking waits woken across processes. It is the core of a
//! real-time WordPress chat: PHP workers append and fetch through the C ABI, a long-poll daemon
//! fans events out to browsers, and Rust programs embed [`EventStore`] directly.
//!
//! ## The delivery contract, in brief
//!
//! * A client that always passes back the cursor it was last given receives every matching event
//!   exactly once, whatever the batch size, priority mix or interleaving of writers.
//! * In [`Order::Priority`], a batch fills from the most urgent lane first, every lane with
//!   pending events gets a share of each batch (no starvation), and within a lane events come in
//!   append order. [`Order::Sequential`] gives the next N events by id, sorted by priority inside
//!   the batch only.
//! * Expired events are never delivered; if one the client would have received expired or was
//!   purged first, the batch says `gap: true`.
//!
//! ```
//! use std::time::Duration;
//! use lms_realtime::{Config, EventStore, FetchRequest, NewEvent};
//!
//! # fn main() -> lms_realtime::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let store = EventStore::open(dir.path().join("chat.db"), Config::default())?;
//! let start = store.head_cursor()?;
//! store.append(NewEvent::new("message_create", 7).message_id(1).data(r#"{"text":"hi"}"#))?;
//! store.append(NewEvent::new("reaction_update", 7).message_id(1))?;
//!
//! let batch = store.wait(&FetchRequest::new([7]).cursor(start), Duration::from_secs(1))?;
//! assert_eq!(batch.events.len(), 2);
//! assert_eq!(batch.events[0].event_type, "message_create"); // critical lane first
//!
//! // Nothing is delivered twice: the next fetch from the returned cursor is empty.
//! let next = store.fetch(&FetchRequest::new([7]).cursor(batch.cursor))?;
//! assert!(next.events.is_empty());
//! # Ok(()) }
//! ```

pub mod clock;
pub mod cursor;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod error;
pub mod event;
pub mod ffi;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod guards;
pub mod metrics;
pub(crate) mod shm;
pub mod store;
pub mod token;

pub use cursor::Cursor;
pub use error::{Error, ErrorCode, Result};
pub use event::{Event, NewEvent, Priority};
pub use guards::{Breakers, RateLimiter, Rollout, Slots};
pub use metrics::Metrics;
pub use store::{
    Batch, Config, Durability, EventStore, FetchRequest, Order, Subscription, TailBatch,
};

/// The README's Rust example, compiled and run as a doc test so it cannot go stale.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
