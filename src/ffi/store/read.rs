//! Reading: `lmsrt_store_fetch`, `lmsrt_store_wait` (the same request, blocking until something
//! matches) and `lmsrt_store_head_cursor`.

use std::ffi::c_char;
use std::time::Duration;

use super::call;
use crate::cursor::Cursor;
use crate::event::Priority;
use crate::ffi::args::{self, MAX_REQUEST_BYTES, str_arg, too_long};
use crate::ffi::buf::lmsrt_buf;
use crate::ffi::call::Out;
use crate::ffi::handle::lmsrt_store;
use crate::ffi::status::{FfiResult, lmsrt_status};
use crate::store::Batch;

/// A batch whose events carry their data as JSON text (`"data":"{\"k\":1}"`): see
/// `data_as_text` in `lmsrt_store_fetch`.
#[derive(serde::Serialize)]
struct TextBatch<'a> {
    events: Vec<TextEvent<'a>>,
    cursor: Cursor,
    gap: bool,
    has_more: bool,
}

#[derive(serde::Serialize)]
struct TextEvent<'a> {
    id: i64,
    event_type: &'a str,
    priority: Priority,
    channel_id: i64,
    message_id: Option<i64>,
    thread_id: Option<i64>,
    user_id: i64,
    data: &'a str,
    timestamp: i64,
    expires_at: i64,
}

/// The batch as the request asked for it.
fn batch_json(batch: &Batch, data_as_text: bool) -> FfiResult<lmsrt_buf> {
    if !data_as_text {
        return lmsrt_buf::json(batch);
    }
    lmsrt_buf::json(&TextBatch {
        events: batch
            .events
            .iter()
            .map(|e| TextEvent {
                id: e.id,
                event_type: &e.event_type,
                priority: e.priority,
                channel_id: e.channel_id,
                message_id: e.message_id,
                thread_id: e.thread_id,
                user_id: e.user_id,
                data: &e.data,
                timestamp: e.timestamp,
                expires_at: e.expires_at,
            })
            .collect(),
        cursor: batch.cursor,
        gap: batch.gap,
        has_more: batch.has_more,
    })
}

/// # Safety
///
/// `request` valid for reads of `len` bytes when not NULL.
unsafe fn request_arg(request: *const c_char, len: usize) -> FfiResult<args::Request> {
    // SAFETY: forwarded from the caller.
    let text = unsafe {
        str_arg(
            request,
            len,
            MAX_REQUEST_BYTES,
            "request",
            too_long("request", MAX_REQUEST_BYTES),
        )
    }?;
    args::parse_request_doc(text)
}

/// Fetches the next batch for a request, without waiting.
///
/// `request` (`request_len` bytes, at most 1 MiB) is a JSON object:
/// `{"channels":[1,2],"cursor":"...","limit":50,"order":"priority","thread_id":5,"types":["message_create"]}`.
/// `channels` (1 to 1024 ids > 0) is required. `cursor` is the string a previous batch
/// returned, a legacy `last_event_id` integer, or absent/null/"" for the start of the log.
/// `limit` is 1 to 1000 (default 50); `order` is `"priority"` (default) or `"sequential"`;
/// `thread_id` (0 or absent: any) and `types` (up to 64) filter. `data_as_text` (default
/// false) true renders each event's `data` as a JSON string holding the object's text
/// (`"data":"{\"text\":\"hi\"}"`), so that a reader can decode each event on its own and skip
/// one it cannot decode instead of failing on the whole batch (the PHP binding does). Unknown
/// fields are refused.
///
/// On success `*out_batch` receives the batch as JSON, which the caller frees with
/// `lmsrt_buf_free`:
/// `{"events":[{"id":1,"event_type":"message_create","priority":1,"channel_id":7,"message_id":1,"thread_id":null,"user_id":3,"data":{...},"timestamp":1700000000000,"expires_at":1700003600000}],"cursor":"v1....","gap":false,"has_more":false}`.
/// Pass `cursor` back to receive what comes next: every matching event arrives exactly once.
/// `gap` true means something this cursor would have received expired first, or could not be
/// delivered (stored data no reader can decode, left by an older version or damage; skipped,
/// never returned): resynchronise;
/// `has_more` true means more is pending now. Times are milliseconds since the Unix epoch.
///
/// Errors: `NULL_POINTER`, `CLOSED`, `INVALID_UTF8`, `INVALID_ARGUMENT`, `INVALID_CHANNEL`,
/// `INVALID_EVENT_TYPE`, `INVALID_CURSOR`, `BUSY`, `STORAGE`.
///
/// # Safety
///
/// `store` as for `lmsrt_store_append`; `request` valid for reads of `request_len` bytes;
/// `out_batch` valid for a write of one `lmsrt_buf`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_store_fetch(
    store: *const lmsrt_store,
    request: *const c_char,
    request_len: usize,
    out_batch: *mut lmsrt_buf,
) -> lmsrt_status {
    let body = |store: &crate::store::EventStore| {
        // SAFETY: the caller guarantees `request_len` readable bytes at `request`.
        let r = unsafe { request_arg(request, request_len) }?;
        batch_json(&store.fetch(&r.req)?, r.data_as_text)
    };
    // SAFETY: the caller guarantees `out_batch` writable.
    unsafe { call(store, Out::new(out_batch, "out_batch"), body) }
}

/// Like `lmsrt_store_fetch`, but when nothing matching is pending, blocks the calling thread
/// until a matching event is appended by any thread or process on the host, or `timeout_ms`
/// milliseconds pass; then `*out_batch` holds an empty batch whose cursor is still valid.
///
/// Blocking costs no CPU (no polling): the thread sleeps until a commit wakes it, within
/// milliseconds. If the handle is closed meanwhile (by another thread), the wait returns
/// `LMSRT_STATUS_CLOSED` at once. Requests, results and errors are those of
/// `lmsrt_store_fetch`.
///
/// # Safety
///
/// As `lmsrt_store_fetch`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_store_wait(
    store: *const lmsrt_store,
    request: *const c_char,
    request_len: usize,
    timeout_ms: u32,
    out_batch: *mut lmsrt_buf,
) -> lmsrt_status {
    let body = |store: &crate::store::EventStore| {
        // SAFETY: the caller guarantees `request_len` readable bytes at `request`.
        let r = unsafe { request_arg(request, request_len) }?;
        let batch = store.wait(&r.req, Duration::from_millis(timeout_ms.into()))?;
        batch_json(&batch, r.data_as_text)
    };
    // SAFETY: the caller guarantees `out_batch` writable.
    unsafe { call(store, Out::new(out_batch, "out_batch"), body) }
}

/// Writes a cursor at the current end of the log to `*out_cursor` (a string; free it with
/// `lmsrt_buf_free`). A page that renders its state and then polls from this cursor misses
/// nothing committed after the render.
///
/// Errors: `NULL_POINTER`, `CLOSED`, `BUSY`, `STORAGE`.
///
/// # Safety
///
/// `store` as for `lmsrt_store_append`; `out_cursor` valid for a write of one `lmsrt_buf`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_store_head_cursor(
    store: *const lmsrt_store,
    out_cursor: *mut lmsrt_buf,
) -> lmsrt_status {
    let body = |store: &crate::store::EventStore| {
        let cursor = store.head_cursor()?;
        Ok(lmsrt_buf::from_vec(cursor.to_string().into_bytes()))
    };
    // SAFETY: the caller guarantees `out_cursor` writable.
    unsafe { call(store, Out::new(out_cursor, "out_cursor"), body) }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::ffi::store::tests::{open, s, take};
    use crate::ffi::store::{lmsrt_store_append, lmsrt_store_close};

    #[test]
    fn append_then_fetch_round_trips_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = open(&dir);
        let (t, d) = ("message_create", r#"{"text":"hé"}"#);
        let mut id = 0;
        // SAFETY: live strings and out-pointers.
        let st = unsafe {
            lmsrt_store_append(
                h,
                s(t).0,
                s(t).1,
                0,
                7,
                5,
                0,
                3,
                s(d).0,
                s(d).1,
                0,
                std::ptr::null(),
                0,
                &mut id,
            )
        };
        assert_eq!(st, lmsrt_status::Ok);
        let req = r#"{"channels":[7]}"#;
        let mut out = lmsrt_buf::EMPTY;
        // SAFETY: as above.
        let st = unsafe { lmsrt_store_fetch(h, s(req).0, s(req).1, &mut out) };
        assert_eq!(st, lmsrt_status::Ok);
        let v: serde_json::Value = serde_json::from_str(&take(out)).unwrap();
        assert_eq!(v["events"][0]["id"], id);
        assert_eq!(v["events"][0]["data"]["text"], "hé");
        assert_eq!(v["events"][0]["message_id"], 5);
        assert!(v["events"][0]["thread_id"].is_null());
        assert_eq!(v["gap"], false);
        // SAFETY: `h` is a live local.
        assert_eq!(unsafe { lmsrt_store_close(&mut h) }, lmsrt_status::Ok);
    }
}
