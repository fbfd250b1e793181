//! What a fetch asks for ([`FetchRequest`], [`Order`]) and what it answers ([`Batch`]).

use serde::Serialize;

use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::event::{Event, validate_event_type};

/// Most channels one fetch may name.
pub const MAX_CHANNELS: usize = 1024;
/// Most event types one fetch may filter on.
pub const MAX_TYPES: usize = 64;
/// Largest batch one fetch may ask for.
pub const MAX_LIMIT: usize = 1000;

/// Order of events in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Urgent lanes first, every pending lane gets a share (no starvation), append order within
    /// a lane; each lane keeps its own position in the cursor.
    #[default]
    Priority,
    /// The next N events by id, sorted by priority inside the batch only.
    Sequential,
}

impl std::str::FromStr for Order {
    type Err = Error;
    fn from_str(s: &str) -> Result<Order> {
        match s {
            "priority" => Ok(Order::Priority),
            "sequential" => Ok(Order::Sequential),
            _ => Err(Error::InvalidArgument(format!(
                "order must be \"priority\" or \"sequential\", not {s:?}"
            ))),
        }
    }
}

/// What to fetch: channels, optional filters, where to start, how many, in which order.
///
/// A cursor belongs to its request: resuming with other channels or filters may skip events
/// that the new filters match but the old ones did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Channels to read (1 to [`MAX_CHANNELS`], each > 0).
    pub channels: Vec<i64>,
    /// Only events of this thread.
    pub thread_id: Option<i64>,
    /// Only events of these types (empty: all).
    pub types: Vec<String>,
    /// Where to start.
    pub cursor: Cursor,
    /// Most events to return (1 to [`MAX_LIMIT`], default 50).
    pub limit: usize,
    /// Batch order.
    pub order: Order,
}

impl FetchRequest {
    /// A request for `channels` from the start of the log, 50 events, priority order.
    pub fn new(channels: impl IntoIterator<Item = i64>) -> FetchRequest {
        FetchRequest {
            channels: channels.into_iter().collect(),
            thread_id: None,
            types: Vec::new(),
            cursor: Cursor::START,
            limit: 50,
            order: Order::Priority,
        }
    }

    /// Sets the cursor.
    pub fn cursor(mut self, cursor: Cursor) -> Self {
        self.cursor = cursor;
        self
    }

    /// Sets the limit.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Sets the order.
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Only events of `thread_id`.
    pub fn thread(mut self, thread_id: i64) -> Self {
        self.thread_id = Some(thread_id);
        self
    }

    /// Only events of these types.
    pub fn types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Checks the request and returns it with channels and types sorted and de-duplicated.
    pub(crate) fn normalized(&self) -> Result<FetchRequest> {
        if self.channels.is_empty() || self.channels.len() > MAX_CHANNELS {
            return Err(Error::InvalidArgument(format!(
                "a fetch names 1 to {MAX_CHANNELS} channels, not {}",
                self.channels.len()
            )));
        }
        if let Some(c) = self.channels.iter().find(|c| **c <= 0) {
            return Err(Error::InvalidChannel(*c));
        }
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(Error::InvalidArgument(format!(
                "limit must be 1 to {MAX_LIMIT}, not {}",
                self.limit
            )));
        }
        if self.types.len() > MAX_TYPES {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_TYPES} event types per fetch"
            )));
        }
        for t in &self.types {
            validate_event_type(t)?;
        }
        let mut r = self.clone();
        r.channels.sort_unstable();
        r.channels.dedup();
        r.types.sort_unstable();
        r.types.dedup();
        Ok(r)
    }
}

/// One fetch's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Batch {
    /// The events, in the request's order.
    pub events: Vec<Event>,
    /// Pass this back to get what comes next.
    pub cursor: Cursor,
    /// True when an event this client would have received expired or was purged before it
    /// was fetched (or the cursor came from another database): resynchronise from the source
    /// of truth.
    pub gap: bool,
    /// True when more matching events are waiting: fetch again without waiting.
    pub has_more: bool,
}
