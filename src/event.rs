//! Events: what is appended ([`NewEvent`]), what is delivered ([`Event`]), and their validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Delivery priority. Lower numbers are more urgent and are delivered first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "i64")]
#[repr(u8)]
pub enum Priority {
    /// Messages and threads created or deleted: the chat is wrong without them.
    Critical = 1,
    /// Reactions.
    High = 2,
    /// Badges and summaries.
    Normal = 3,
    /// Statistics.
    Low = 4,
}

impl Priority {
    /// All priorities, most urgent first.
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// The numeric value, 1–4.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The index of this priority's lane in a cursor, 0–3.
    pub fn lane(self) -> usize {
        self as usize - 1
    }

    /// The priority for a numeric value, or [`Error::InvalidPriority`].
    pub fn from_i64(v: i64) -> Result<Priority> {
        match v {
            1 => Ok(Priority::Critical),
            2 => Ok(Priority::High),
            3 => Ok(Priority::Normal),
            4 => Ok(Priority::Low),
            _ => Err(Error::InvalidPriority(v)),
        }
    }

    /// The default priority of an event type, following the existing plugin: message and thread
    /// create/delete and date-separator deletes are critical, reactions high, badge and summary
    /// updates normal, statistics low. Unknown types are normal.
    pub fn default_for_type(event_type: &str) -> Priority {
        match event_type {
            "message_create"
            | "message_delete"
            | "thread_create"
            | "thread_delete"
            | "thread_message_create"
            | "thread_message_delete"
            | "date_separator_delete" => Priority::Critical,
            "reaction_update"
            | "reaction_add"
            | "reaction_remove"
            | "thread_reaction"
            | "thread_reaction_update" => Priority::High,
            "statistics_update" | "stats_update" | "statistics" => Priority::Low,
            _ => Priority::Normal,
        }
    }
}

impl From<Priority> for u8 {
    fn from(p: Priority) -> u8 {
        p as u8
    }
}

impl TryFrom<i64> for Priority {
    type Error = Error;
    fn try_from(v: i64) -> Result<Priority> {
        Priority::from_i64(v)
    }
}

/// Checks an event type against `[a-z][a-z0-9_]{0,63}`.
pub fn validate_event_type(t: &str) -> Result<()> {
    let b = t.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidEventType(truncate_for_message(t)))
    }
}

fn truncate_for_message(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Deepest nesting of arrays and objects accepted in `data`, the data object itself counting as
/// the first level (`{"a":{"b":[1]}}` is 3 deep).
///
/// Every reader must be able to decode what the store holds: PHP's `json_decode` stops at 512
/// levels (the batch around the data adds 3), JavaScript engines and other decoders at a few
/// hundred or at their stack. Data nested deeper than any chat payload needs would be accepted
/// here and then make every fetch of its channel fail in PHP, for as long as it lived.
pub const MAX_DATA_DEPTH: usize = 64;

/// Checks that `data` is a JSON object of at most `max_bytes` bytes that every binding can
/// decode: nested at most [`MAX_DATA_DEPTH`] levels, and with only well-formed Unicode (no
/// `\uD800`-style escape of a lone UTF-16 surrogate, which serde_json skips over unchecked
/// when it only validates but PHP's and other strict decoders refuse). Each failure is
/// [`Error::InvalidData`] naming the cause, or [`Error::DataTooLarge`].
pub fn validate_data(data: &str, max_bytes: usize) -> Result<()> {
    if data.len() > max_bytes {
        return Err(Error::DataTooLarge {
            size: data.len(),
            max: max_bytes,
        });
    }
    check_data(data).map_err(Error::InvalidData)
}

/// Whether stored `data` can be delivered: what [`validate_data`] accepts, whatever its size
/// (a store may have been reopened with a smaller cap). A row that fails this was written by
/// an older version or damaged; readers skip it rather than fail every fetch that meets it.
pub(crate) fn is_deliverable(data: &str) -> bool {
    check_data(data).is_ok()
}

fn check_data(data: &str) -> std::result::Result<(), String> {
    if !data.trim_start().starts_with('{') {
        return Err("expected a JSON object".into());
    }
    // Syntax first (its messages give line and column); the scan below relies on it.
    serde_json::from_str::<serde::de::IgnoredAny>(data).map_err(|e| e.to_string())?;
    check_depth_and_escapes(data.as_bytes())
}

/// Over syntactically valid JSON: the nesting depth, and that every `\u` escape of a UTF-16
/// surrogate is a high one immediately followed by a low one. (Raw bytes are already UTF-8:
/// the text is a `&str`, so only escapes can spell an unpaired surrogate.)
fn check_depth_and_escapes(b: &[u8]) -> std::result::Result<(), String> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DATA_DEPTH {
                    return Err(format!(
                        "data is nested more than {MAX_DATA_DEPTH} levels deep (arrays and \
                         objects, at byte {i}); not every reader can decode that"
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] != b'\\' {
                        i += 1;
                        continue;
                    }
                    if b.get(i + 1) != Some(&b'u') {
                        i += 2;
                        continue;
                    }
                    let unit = hex4(b, i + 2);
                    match unit {
                        Some(0xD800..=0xDBFF) => {
                            let low = (b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u'))
                                .then(|| hex4(b, i + 8))
                                .flatten();
                            if !matches!(low, Some(0xDC00..=0xDFFF)) {
                                return Err(lone_surrogate(b, i));
                            }
                            i += 12;
                        }
                        Some(0xDC00..=0xDFFF) => return Err(lone_surrogate(b, i)),
                        _ => i += 6,
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let h = std::str::from_utf8(b.get(at..at + 4)?).ok()?;
    u32::from_str_radix(h, 16).ok()
}

fn lone_surrogate(b: &[u8], at: usize) -> String {
    let esc = String::from_utf8_lossy(&b[at..(at + 6).min(b.len())]);
    format!(
        "data holds the escape {esc} (at byte {at}), a lone UTF-16 surrogate: strings must be \
         well-formed Unicode"
    )
}

/// An event to append. Build it with [`NewEvent::new`] and the setters.
///
/// ```
/// use lms_realtime::{NewEvent, Priority};
/// let ev = NewEvent::new("message_create", 7)
///     .message_id(42)
///     .user_id(3)
///     .data(r#"{"text":"hello"}"#);
/// assert_eq!(ev.effective_priority(), Priority::Critical);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// `[a-z][a-z0-9_]{0,63}`.
    pub event_type: String,
    /// `None` takes the type's default ([`Priority::default_for_type`]).
    pub priority: Option<Priority>,
    /// The channel, > 0.
    pub channel_id: i64,
    /// The message concerned, if any.
    pub message_id: Option<i64>,
    /// The thread concerned, if any.
    pub thread_id: Option<i64>,
    /// The acting user.
    pub user_id: i64,
    /// A JSON object, as text.
    pub data: String,
    /// Time to live; `None` takes the store's default.
    pub ttl: Option<Duration>,
    /// When set, a second append with the same key returns the first event's id instead of
    /// creating a duplicate (for retries after a timeout).
    pub idempotency_key: Option<String>,
}

impl NewEvent {
    /// An event of `event_type` in `channel_id`, with empty data and defaults elsewhere.
    pub fn new(event_type: impl Into<String>, channel_id: i64) -> NewEvent {
        NewEvent {
            event_type: event_type.into(),
            priority: None,
            channel_id,
            message_id: None,
            thread_id: None,
            user_id: 0,
            data: "{}".to_owned(),
            ttl: None,
            idempotency_key: None,
        }
    }

    /// Sets the priority.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = Some(p);
        self
    }

    /// Sets the message id.
    pub fn message_id(mut self, id: i64) -> Self {
        self.message_id = Some(id);
        self
    }

    /// Sets the thread id.
    pub fn thread_id(mut self, id: i64) -> Self {
        self.thread_id = Some(id);
        self
    }

    /// Sets the user id.
    pub fn user_id(mut self, id: i64) -> Self {
        self.user_id = id;
        self
    }

    /// Sets the data (a JSON object as text).
    pub fn data(mut self, json: impl Into<String>) -> Self {
        self.data = json.into();
        self
    }

    /// Sets the time to live.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The priority the event will be stored with.
    pub fn effective_priority(&self) -> Priority {
        self.priority
            .unwrap_or_else(|| Priority::default_for_type(&self.event_type))
    }
}

/// A stored event, as delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Assigned by the store; strictly increasing in commit order.
    pub id: i64,
    /// The event type.
    pub event_type: String,
    /// The priority (1–4).
    pub priority: Priority,
    /// The channel.
    pub channel_id: i64,
    /// The message concerned, if any.
    pub message_id: Option<i64>,
    /// The thread concerned, if any.
    pub thread_id: Option<i64>,
    /// The acting user.
    pub user_id: i64,
    /// The data, a JSON object as text (serialized as the object itself).
    #[serde(serialize_with = "raw_json")]
    pub data: String,
    /// When it was appended, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// When it expires, in milliseconds since the Unix epoch.
    pub expires_at: i64,
}

fn raw_json<S: serde::Serializer>(data: &str, s: S) -> std::result::Result<S::Ok, S::Error> {
    // The store only holds validated objects, so this cannot fail on stored data.
    let raw: &serde_json::value::RawValue =
        serde_json::from_str(data).map_err(serde::ser::Error::custom)?;
    raw.serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_pattern() {
        for ok in ["a", "message_create", "x9_", &"a".repeat(64)] {
            assert!(validate_event_type(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "9a",
            "_a",
            "Message",
            "a-b",
            "a b",
            "é",
            &"a".repeat(65),
            "a\0",
        ] {
            assert_eq!(
                validate_event_type(bad).unwrap_err().code(),
                crate::ErrorCode::InvalidEventType,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn data_must_be_an_object_under_the_cap() {
        assert!(validate_data(r#" {"a":[1,2]}"#, 100).is_ok());
        for bad in ["[]", "1", "\"s\"", "{", "{\"a\":}", "", "null"] {
            assert_eq!(
                validate_data(bad, 100).unwrap_err().code(),
                crate::ErrorCode::InvalidData,
                "{bad:?}"
            );
        }
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(100));
        assert!(matches!(
            validate_data(&big, 100),
            Err(Error::DataTooLarge { max: 100, .. })
        ));
    }

    #[test]
    fn data_nesting_is_capped_at_64_levels() {
        let nested = |depth: usize| {
            format!(
                r#"{{"a":{}1{}}}"#,
                "[".repeat(depth - 1),
                "]".repeat(depth - 1)
            )
        };
        assert!(validate_data(&nested(MAX_DATA_DEPTH), 1 << 20).is_ok());
        for depth in [MAX_DATA_DEPTH + 1, 520] {
            let e = validate_data(&nested(depth), 1 << 20).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::InvalidData);
            assert!(e.to_string().contains("nested more than 64 levels"), "{e}");
        }
        // Brackets inside strings are text, not nesting.
        let text = format!(r#"{{"a":"{}"}}"#, "[{".repeat(200));
        assert!(validate_data(&text, 1 << 20).is_ok());
    }

    #[test]
    fn lone_surrogate_escapes_are_refused() {
        for bad in [
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\uDBFF x"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":"\ud800\ud800"}"#,
            r#"{"\ud800":1}"#,
            r#"{"a":["ok","\\\ud800"]}"#,
        ] {
            let e = validate_data(bad, 100).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::InvalidData, "{bad}");
            assert!(
                e.to_string().contains("lone UTF-16 surrogate"),
                "{bad}: {e}"
            );
        }
        for ok in [
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{"a":"\\ud800"}"#,
            r#"{"a":"\u00e9\"\\"}"#,
            r#"{"a":"😀 é"}"#,
        ] {
            assert!(validate_data(ok, 100).is_ok(), "{ok}");
        }
    }

    #[test]
    fn default_priorities_follow_the_plugin() {
        assert_eq!(
            Priority::default_for_type("message_create"),
            Priority::Critical
        );
        assert_eq!(
            Priority::default_for_type("date_separator_delete"),
            Priority::Critical
        );
        assert_eq!(
            Priority::default_for_type("reaction_update"),
            Priority::High
        );
        assert_eq!(Priority::default_for_type("badge_update"), Priority::Normal);
        assert_eq!(
            Priority::default_for_type("something_new"),
            Priority::Normal
        );
        assert_eq!(
            Priority::default_for_type("statistics_update"),
            Priority::Low
        );
    }

    #[test]
    fn priority_range() {
        for v in 1..=4 {
            assert_eq!(Priority::from_i64(v).unwrap().as_u8() as i64, v);
        }
        for v in [0, 5, -1, i64::MAX] {
            assert!(matches!(Priority::from_i64(v), Err(Error::InvalidPriority(x)) if x == v));
        }
    }

    #[test]
    fn event_serializes_data_as_an_object() {
        let e = Event {
            id: 1,
            event_type: "t".into(),
            priority: Priority::High,
            channel_id: 2,
            message_id: None,
            thread_id: Some(3),
            user_id: 4,
            data: r#"{"k":1}"#.into(),
            timestamp: 5,
            expires_at: 6,
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["data"]["k"], 1);
        assert_eq!(v["priority"], 2);
        assert!(v["message_id"].is_null());
    }
}
