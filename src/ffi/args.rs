//! Checked conversions of the arguments C hands us: pointers, lengths, UTF-8, JSON.
//!
//! Every size is bounded before the bytes are read, so a hostile or mistaken length cannot make
//! the library scan (or allocate) gigabytes, and `slice::from_raw_parts` never sees a length
//! over `isize::MAX`.

use std::ffi::c_char;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::status::{FfiError, FfiResult};
use crate::cursor::Cursor;
use crate::error::{Error, ErrorCode};
use crate::event::{NewEvent, Priority};
use crate::store::{Config, Durability, FetchRequest, Order};

/// Longest database path accepted, in bytes.
pub(crate) const MAX_PATH_BYTES: usize = 4096;
/// Longest open-options document, in bytes.
pub(crate) const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// Longest fetch/wait request document, in bytes.
pub(crate) const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Longest batch-append document, in bytes.
pub(crate) const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// Longest event type, consumer name, idempotency key or cursor accepted before the core's
/// own (smaller) checks see it.
pub(crate) const MAX_SHORT_BYTES: usize = 1024;

/// The bytes `ptr[0..len]`, NULL-checked and bounded by `max` (`too_long` builds the error).
///
/// # Safety
///
/// When `ptr` is not NULL it must be valid for reads of `len` bytes for `'a`.
pub(crate) unsafe fn bytes_arg<'a>(
    ptr: *const c_char,
    len: usize,
    max: usize,
    what: &str,
    too_long: impl FnOnce(usize) -> FfiError,
) -> FfiResult<&'a [u8]> {
    if ptr.is_null() {
        return Err(FfiError::null(what));
    }
    if len > max {
        return Err(too_long(len));
    }
    // SAFETY: `ptr` is not NULL, the caller guarantees `len` readable bytes, and
    // `len <= max <= isize::MAX`.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// A UTF-8 string argument; see [`bytes_arg`].
///
/// # Safety
///
/// As [`bytes_arg`].
pub(crate) unsafe fn str_arg<'a>(
    ptr: *const c_char,
    len: usize,
    max: usize,
    what: &str,
    too_long: impl FnOnce(usize) -> FfiError,
) -> FfiResult<&'a str> {
    // SAFETY: forwarded from the caller.
    let b = unsafe { bytes_arg(ptr, len, max, what, too_long) }?;
    std::str::from_utf8(b).map_err(|e| {
        FfiError::new(
            ErrorCode::InvalidUtf8,
            format!("{what} is not valid UTF-8 ({e})"),
        )
    })
}

/// An optional UTF-8 string argument: NULL with a length of 0 means absent.
///
/// NULL with a non-zero length is `NULL_POINTER`, never "absent": the caller meant to pass
/// bytes and lost them (an allocation that failed, a wrong variable), and reading it as absent
/// would turn data into `{}` or silently drop an idempotency key, so that a retry appends a
/// duplicate.
///
/// # Safety
///
/// As [`bytes_arg`].
pub(crate) unsafe fn opt_str_arg<'a>(
    ptr: *const c_char,
    len: usize,
    max: usize,
    what: &str,
    too_long: impl FnOnce(usize) -> FfiError,
) -> FfiResult<Option<&'a str>> {
    if ptr.is_null() {
        if len != 0 {
            return Err(FfiError::new(
                ErrorCode::NullPointer,
                format!("{what} is NULL with a length of {len}: pass NULL with length 0 for none"),
            ));
        }
        return Ok(None);
    }
    // SAFETY: forwarded from the caller.
    unsafe { str_arg(ptr, len, max, what, too_long) }.map(Some)
}

/// A generic "too long" error for `what`.
pub(crate) fn too_long(what: &'static str, max: usize) -> impl FnOnce(usize) -> FfiError {
    move |len| FfiError::invalid(format!("{what} is {len} bytes, longer than {max}"))
}

/// An out-parameter, NULL-checked.
pub(crate) fn out_arg<T>(ptr: *mut T, what: &str) -> FfiResult<*mut T> {
    if ptr.is_null() {
        Err(FfiError::null(what))
    } else {
        Ok(ptr)
    }
}

/// A path argument (a database, a salvage destination): UTF-8, at most 4096 bytes, non-empty and
/// without NUL, since the OS would cut the name at the NUL.
///
/// # Safety
///
/// As [`bytes_arg`].
pub(crate) unsafe fn path_arg<'a>(
    ptr: *const c_char,
    len: usize,
    what: &'static str,
) -> FfiResult<&'a str> {
    // SAFETY: forwarded from the caller.
    let path = unsafe {
        str_arg(
            ptr,
            len,
            MAX_PATH_BYTES,
            what,
            too_long(what, MAX_PATH_BYTES),
        )
    }?;
    if path.is_empty() || path.contains('\0') {
        return Err(FfiError::invalid(format!(
            "{what} must be non-empty and contain no NUL byte"
        )));
    }
    Ok(path)
}

/// A short UTF-8 name (an action, a key, a breaker or metric name, a consumer): at most
/// [`MAX_SHORT_BYTES`] before the core's own checks (emptiness, its smaller limits) see it.
///
/// # Safety
///
/// As [`bytes_arg`].
pub(crate) unsafe fn name_arg<'a>(
    ptr: *const c_char,
    len: usize,
    what: &'static str,
) -> FfiResult<&'a str> {
    // SAFETY: forwarded from the caller.
    unsafe {
        str_arg(
            ptr,
            len,
            MAX_SHORT_BYTES,
            what,
            too_long(what, MAX_SHORT_BYTES),
        )
    }
}

fn json_error(what: &str, e: serde_json::Error) -> FfiError {
    FfiError::invalid(format!("{what}: {e}"))
}

/// `0` or absent means "none" for optional ids, as WordPress uses 0 for "no post".
fn nonzero(v: Option<i64>) -> Option<i64> {
    v.filter(|v| *v != 0)
}

/// Open options: every field optional, unknown fields refused (a typo should not be ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigJson {
    durability: Option<String>,
    max_data_bytes: Option<usize>,
    default_ttl_ms: Option<u64>,
    min_ttl_ms: Option<u64>,
    max_ttl_ms: Option<u64>,
    purge_interval_ms: Option<u64>,
    purge_chunk: Option<usize>,
    live_tail_window: Option<i64>,
}

/// Parses the open options (`None`: all defaults).
pub(crate) fn parse_config(text: Option<&str>) -> FfiResult<Config> {
    let mut config = Config::default();
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(config);
    };
    let j: ConfigJson = serde_json::from_str(text).map_err(|e| json_error("options", e))?;
    if let Some(d) = j.durability {
        config.durability = match d.as_str() {
            "process_crash" => Durability::ProcessCrash,
            "power_loss" => Durability::PowerLoss,
            _ => {
                return Err(FfiError::invalid(format!(
                    "options: durability must be \"process_crash\" or \"power_loss\", not {d:?}"
                )));
            }
        };
    }
    if let Some(v) = j.max_data_bytes {
        config.max_data_bytes = v;
    }
    if let Some(v) = j.default_ttl_ms {
        config.default_ttl = Duration::from_millis(v);
    }
    if let Some(v) = j.min_ttl_ms {
        config.min_ttl = Duration::from_millis(v);
    }
    if let Some(v) = j.max_ttl_ms {
        config.max_ttl = Duration::from_millis(v);
    }
    config.purge_interval = j
        .purge_interval_ms
        .filter(|v| *v > 0)
        .map(Duration::from_millis);
    if let Some(v) = j.purge_chunk {
        config.purge_chunk = v;
    }
    if let Some(v) = j.live_tail_window {
        config.live_tail_window = v;
    }
    Ok(config)
}

/// A cursor in a request: the opaque string, or a legacy `last_event_id` integer.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CursorJson {
    Text(String),
    Int(i64),
}

/// A fetch/wait request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestJson {
    channels: Vec<i64>,
    /// Absent, null or `""`: the start of the log.
    cursor: Option<CursorJson>,
    limit: Option<usize>,
    order: Option<String>,
    thread_id: Option<i64>,
    types: Option<Vec<String>>,
    /// Each event's `data` as its JSON text (a string) instead of the object.
    data_as_text: Option<bool>,
}

/// A parsed fetch/wait request document: the request, and how to render its batch.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) req: FetchRequest,
    /// Render each event's `data` as a JSON string holding the object's text.
    pub(crate) data_as_text: bool,
}

/// Parses a fetch/wait request document.
#[cfg(test)]
pub(crate) fn parse_request(text: &str) -> FfiResult<FetchRequest> {
    parse_request_doc(text).map(|r| r.req)
}

/// Parses a fetch/wait request document, with its rendering options.
pub(crate) fn parse_request_doc(text: &str) -> FfiResult<Request> {
    let j: RequestJson = serde_json::from_str(text).map_err(|e| json_error("request", e))?;
    let data_as_text = j.data_as_text.unwrap_or(false);
    let mut r = FetchRequest::new(j.channels);
    r.cursor = match j.cursor {
        None => Cursor::START,
        Some(CursorJson::Text(s)) if s.is_empty() => Cursor::START,
        Some(CursorJson::Text(s)) => Cursor::parse(&s)?,
        Some(CursorJson::Int(i)) if i >= 0 => Cursor::from_last_event_id(i),
        Some(CursorJson::Int(i)) => {
            return Err(Error::InvalidCursor(format!("negative last_event_id {i}")).into());
        }
    };
    if let Some(l) = j.limit {
        r.limit = l;
    }
    if let Some(o) = j.order {
        r.order = o.parse::<Order>()?;
    }
    r.thread_id = nonzero(j.thread_id);
    r.types = j.types.unwrap_or_default();
    Ok(Request {
        req: r,
        data_as_text,
    })
}

/// One event of a batch-append document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventJson<'a> {
    #[serde(alias = "type")]
    event_type: String,
    channel_id: i64,
    priority: Option<i64>,
    message_id: Option<i64>,
    thread_id: Option<i64>,
    user_id: Option<i64>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    ttl_ms: Option<i64>,
    idempotency_key: Option<String>,
}

/// The fields of one event as the typed `lmsrt_store_append` takes them.
pub(crate) struct EventArgs<'a> {
    pub(crate) event_type: &'a str,
    pub(crate) priority: i64,
    pub(crate) channel_id: i64,
    pub(crate) message_id: i64,
    pub(crate) thread_id: i64,
    pub(crate) user_id: i64,
    pub(crate) data: Option<&'a str>,
    pub(crate) ttl_ms: i64,
    pub(crate) idempotency_key: Option<&'a str>,
}

/// Builds a [`NewEvent`] with the ABI's conventions: 0 means "default" for priority and TTL and
/// "none" for message and thread ids; absent data is `{}`.
pub(crate) fn new_event(a: EventArgs<'_>) -> FfiResult<NewEvent> {
    let mut e = NewEvent::new(a.event_type, a.channel_id).user_id(a.user_id);
    if a.priority != 0 {
        e = e.priority(Priority::from_i64(a.priority)?);
    }
    e.message_id = nonzero(Some(a.message_id));
    e.thread_id = nonzero(Some(a.thread_id));
    if let Some(d) = a.data {
        e.data = d.to_owned();
    }
    match a.ttl_ms {
        0 => {}
        t if t < 0 => {
            return Err(FfiError::new(
                ErrorCode::InvalidTtl,
                format!("invalid ttl {t} ms: expected a positive number (0: the default)"),
            ));
        }
        t => e.ttl = Some(Duration::from_millis(t as u64)),
    }
    e.idempotency_key = a.idempotency_key.map(str::to_owned);
    Ok(e)
}

/// Parses a batch-append document: a JSON array of event objects.
pub(crate) fn parse_batch(text: &str) -> FfiResult<Vec<NewEvent>> {
    let events: Vec<EventJson<'_>> =
        serde_json::from_str(text).map_err(|e| json_error("events", e))?;
    events
        .into_iter()
        .enumerate()
        .map(|(i, j)| {
            new_event(EventArgs {
                event_type: &j.event_type,
                priority: j.priority.unwrap_or(0),
                channel_id: j.channel_id,
                message_id: j.message_id.unwrap_or(0),
                thread_id: j.thread_id.unwrap_or(0),
                user_id: j.user_id.unwrap_or(0),
                data: j.data.map(RawValue::get),
                ttl_ms: j.ttl_ms.unwrap_or(0),
                idempotency_key: j.idempotency_key.as_deref(),
            })
            .map_err(|mut e| {
                e.message = format!("event {i}: {}", e.message);
                e
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::status::lmsrt_status;

    #[test]
    fn requests_parse_with_defaults_and_legacy_cursors() {
        let r = parse_request(r#"{"channels":[2,1]}"#).unwrap();
        assert_eq!(r, FetchRequest::new([2, 1]));
        let r = parse_request(
            r#"{"channels":[1],"cursor":42,"limit":5,"order":"sequential","thread_id":0,"types":["a"]}"#,
        )
        .unwrap();
        assert_eq!(r.cursor, Cursor::from_last_event_id(42));
        assert_eq!(
            (r.limit, r.order, r.thread_id),
            (5, Order::Sequential, None)
        );
        assert_eq!(r.types, vec!["a".to_owned()]);
        let r = parse_request(r#"{"channels":[1],"cursor":"7","thread_id":9}"#).unwrap();
        assert_eq!(
            (r.cursor, r.thread_id),
            (Cursor::from_last_event_id(7), Some(9))
        );
    }

    #[test]
    fn bad_requests_get_their_codes() {
        let code = |t: &str| parse_request(t).unwrap_err().status;
        assert_eq!(code("{"), lmsrt_status::InvalidArgument);
        assert_eq!(
            code(r#"{"channels":[1],"x":1}"#),
            lmsrt_status::InvalidArgument
        );
        assert_eq!(code(r#"{"cursor":"1"}"#), lmsrt_status::InvalidArgument);
        assert_eq!(
            code(r#"{"channels":[1],"cursor":"v9"}"#),
            lmsrt_status::InvalidCursor
        );
        assert_eq!(
            code(r#"{"channels":[1],"cursor":-1}"#),
            lmsrt_status::InvalidCursor
        );
        assert_eq!(
            code(r#"{"channels":[1],"order":"x"}"#),
            lmsrt_status::InvalidArgument
        );
    }

    #[test]
    fn config_parses_and_refuses_unknown_fields() {
        let c = parse_config(Some(
            r#"{"durability":"power_loss","max_data_bytes":10,"default_ttl_ms":5000,"min_ttl_ms":1000,"max_ttl_ms":9000,"purge_interval_ms":250,"purge_chunk":7}"#,
        ))
        .unwrap();
        assert_eq!(c.durability, Durability::PowerLoss);
        assert_eq!(c.max_data_bytes, 10);
        assert_eq!(c.default_ttl, Duration::from_secs(5));
        assert_eq!(c.purge_interval, Some(Duration::from_millis(250)));
        assert_eq!(c.purge_chunk, 7);
        assert!(parse_config(None).is_ok());
        assert!(parse_config(Some("  ")).is_ok());
        assert!(parse_config(Some(r#"{"max_dat_bytes":1}"#)).is_err());
        assert!(parse_config(Some(r#"{"durability":"never"}"#)).is_err());
    }

    #[test]
    fn batches_parse_with_the_abi_conventions() {
        let evs = parse_batch(
            r#"[{"type":"message_create","channel_id":3,"data":{"a":[1]},"message_id":0,"thread_id":4,"ttl_ms":2000,"priority":2,"idempotency_key":"k"},
                {"event_type":"x","channel_id":1}]"#,
        )
        .unwrap();
        assert_eq!(evs[0].data, r#"{"a":[1]}"#);
        assert_eq!(evs[0].message_id, None);
        assert_eq!(evs[0].thread_id, Some(4));
        assert_eq!(evs[0].priority, Some(Priority::High));
        assert_eq!(evs[0].ttl, Some(Duration::from_secs(2)));
        assert_eq!(evs[0].idempotency_key.as_deref(), Some("k"));
        assert_eq!(evs[1].data, "{}");
        let e = parse_batch(
            r#"[{"type":"x","channel_id":1},{"type":"x","channel_id":1,"priority":9}]"#,
        )
        .unwrap_err();
        assert_eq!(e.status, lmsrt_status::InvalidPriority);
        assert!(e.message.starts_with("event 1:"), "{}", e.message);
        let e = parse_batch(r#"[{"type":"x","channel_id":1,"ttl_ms":-5}]"#).unwrap_err();
        assert_eq!(e.status, lmsrt_status::InvalidTtl);
        assert_eq!(
            parse_batch("{}").unwrap_err().status,
            lmsrt_status::InvalidArgument
        );
    }
}
