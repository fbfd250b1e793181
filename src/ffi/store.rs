//! The store's entry points: `lmsrt_store_*`.
//!
//! Conventions shared by every function here (the header repeats them per function):
//! the return value is an `lmsrt_status`; out-parameters are written only when it is
//! `LMSRT_STATUS_OK`; strings are `(const char *ptr, size_t len)` pairs, checked as UTF-8 and
//! bounded in size, and never kept after the call returns; results that are documents come back
//! as `lmsrt_buf`s the caller frees with `lmsrt_buf_free`.

use std::ffi::c_char;
use std::time::Duration;

use super::args::{
    self, EventArgs, MAX_BATCH_BYTES, MAX_CONFIG_BYTES, MAX_PATH_BYTES, MAX_REQUEST_BYTES,
    MAX_SHORT_BYTES, opt_str_arg, out_arg, str_arg, too_long,
};
use super::buf::lmsrt_buf;
use super::handle::{self, lmsrt_store};
use super::panic::ffi_boundary;
use super::status::{FfiError, FfiResult, lmsrt_status};
use crate::cursor::{Cursor, MAX_CURSOR_LEN};
use crate::error::{Error, ErrorCode};
use crate::event::Priority;
use crate::store::{Batch, EventStore};

fn to_json(value: &impl serde::Serialize) -> FfiResult<lmsrt_buf> {
    serde_json::to_vec(value)
        .map(lmsrt_buf::from_vec)
        .map_err(|e| FfiError::new(ErrorCode::Internal, format!("serializing the result: {e}")))
}

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
        return to_json(batch);
    }
    to_json(&TextBatch {
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

/// Opens (creating or migrating) the event store at the file `path` and returns a handle to it
/// in `*out_store`.
///
/// `path` (`path_len` bytes, UTF-8, at most 4096, no NUL) names the SQLite database. Beside it
/// the store keeps `<path>-wal`, `<path>-shm`, `<path>-lmsrt-writer` and `<path>-lmsrt-signal`.
/// Any number of processes and threads may open the same file at once.
///
/// `options` (`options_len` bytes) is NULL (with length 0), empty, or a JSON object whose
/// fields are all optional: `durability` (`"process_crash"`, the default, or `"power_loss"`:
/// an fsync per commit), `max_data_bytes` (1 to 16777216, default 65536), `default_ttl_ms`
/// (default 3600000), `min_ttl_ms` (default 1000), `max_ttl_ms` (default 2592000000; the
/// three TTLs are 1 to 3155760000000, 100 years, with min <= default <= max),
/// `purge_interval_ms` (a background thread purges expired events at this interval, 10 to
/// 86400000; 0 or absent: none), `purge_chunk` (rows per purge transaction, 1 to 100000,
/// default 500) and `live_tail_window` (0 or more, see the crate's `Config`; default 256).
/// Unknown fields, and values outside these ranges, are refused with
/// `LMSRT_STATUS_INVALID_ARGUMENT` naming the option and its range, so a typo or a stray
/// value is not silently taken.
///
/// On success `*out_store` receives a new handle, owned by the caller, who releases it with
/// `lmsrt_store_close`. On failure `*out_store` is left untouched.
///
/// Errors: `NULL_POINTER`, `INVALID_UTF8`, `INVALID_ARGUMENT` (bad options, path too long),
/// `STORAGE`, `BUSY`, `IO`, `SCHEMA_TOO_NEW`.
///
/// # Safety
///
/// `path` must be valid for reads of `path_len` bytes; `options`, when not NULL, for reads of
/// `options_len` bytes; `out_store` must be valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_store_open(
    path: *const c_char,
    path_len: usize,
    options: *const c_char,
    options_len: usize,
    out_store: *mut *mut lmsrt_store,
) -> lmsrt_status {
    ffi_boundary! {
        let out = out_arg(out_store, "out_store")?;
        // SAFETY: the caller guarantees `path_len` readable bytes at `path`.
        let path = unsafe {
            str_arg(path, path_len, MAX_PATH_BYTES, "path", too_long("path", MAX_PATH_BYTES))
        }?;
        if path.is_empty() || path.contains('\0') {
            return Err(FfiError::invalid("path must be non-empty and contain no NUL byte"));
        }
        // SAFETY: the caller guarantees `options_len` readable bytes at `options` if not NULL.
        let options = unsafe {
            opt_str_arg(
                options,
                options_len,
                MAX_CONFIG_BYTES,
                "options",
                too_long("options", MAX_CONFIG_BYTES),
            )
        }?;
        let config = args::parse_config(options)?;
        let store = EventStore::open(path, config)?;
        let h = handle::register(store);
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(h) };
        Ok(())
    }
}

/// Closes the store `*store` and sets `*store` to NULL.
///
/// Closing wakes every `lmsrt_store_wait` on the handle (they return `LMSRT_STATUS_CLOSED`),
/// stops the background purger and releases the database. Calls running on other threads at
/// that moment finish or fail with `LMSRT_STATUS_CLOSED`; memory is released when the last of
/// them returns. Afterwards every copy of the handle is invalid: any call with one returns
/// `LMSRT_STATUS_CLOSED`, never a crash.
///
/// Returns `LMSRT_STATUS_OK` when it closed the store, and also when `*store` is already NULL
/// (so closing the same variable twice is a no-op). Returns `LMSRT_STATUS_CLOSED` when `*store`
/// is a copy of a handle that was closed through another variable (and still sets `*store` to
/// NULL), `LMSRT_STATUS_NULL_POINTER` when `store` itself is NULL.
///
/// # Safety
///
/// `store`, when not NULL, must be valid for reading and writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_store_close(store: *mut *mut lmsrt_store) -> lmsrt_status {
    ffi_boundary! {
        let slot = out_arg(store, "store")?;
        // SAFETY: `slot` is not NULL and the caller guarantees it is readable and writable.
        let h = unsafe { slot.read() };
        if h.is_null() {
            return Ok(());
        }
        // SAFETY: as above.
        unsafe { slot.write(std::ptr::null_mut()) };
        handle::take(h)?.close();
        Ok(())
    }
}

/// Appends one event and writes its id to `*out_id` once it is committed (durable as the
/// store's `durability` says, and visible to every process).
///
/// Arguments, with the ABI's defaults:
/// * `event_type` (`event_type_len` bytes): `[a-z][a-z0-9_]{0,63}`.
/// * `priority`: 1 (critical) to 4 (low); 0 takes the type's default.
/// * `channel_id`: > 0.
/// * `message_id`, `thread_id`: 0 means none.
/// * `user_id`: the acting user.
/// * `data` (`data_len` bytes): a JSON object of at most the store's `max_data_bytes`, nested
///   at most 64 levels deep (arrays and objects, the object itself included), whose strings
///   are well-formed Unicode (no `\uD800`-style escape of a lone UTF-16 surrogate): anything
///   else is `INVALID_DATA` naming the cause, so that every reader can decode what is stored.
///   NULL (with `data_len` 0) means `{}`; NULL with a non-zero `data_len` is `NULL_POINTER`.
/// * `ttl_ms`: time to live in milliseconds within the store's bounds; 0 takes the store's
///   default.
/// * `idempotency_key` (`idempotency_key_len` bytes, 1 to 255): NULL (with length 0) for none;
///   NULL with a non-zero length is `NULL_POINTER`, not "none". A second append
///   with the same key returns the first event's id instead of appending again (for retries).
///
/// Concurrent appends from threads share one transaction (group commit).
///
/// Errors: `NULL_POINTER`, `CLOSED`, `INVALID_UTF8`, `INVALID_EVENT_TYPE`, `INVALID_PRIORITY`,
/// `INVALID_CHANNEL`, `INVALID_DATA`, `DATA_TOO_LARGE`, `INVALID_TTL`, `INVALID_ARGUMENT`,
/// `IDEMPOTENCY_CONFLICT`, `BUSY`, `STORAGE`.
///
/// # Safety
///
/// `store` must be NULL or a handle from `lmsrt_store_open` (closed ones are detected). Each
/// string pointer, when not NULL, must be valid for reads of its length; `out_id` must be valid
/// for a write of one `int64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_store_append(
    store: *const lmsrt_store,
    event_type: *const c_char,
    event_type_len: usize,
    priority: i32,
    channel_id: i64,
    message_id: i64,
    thread_id: i64,
    user_id: i64,
    data: *const c_char,
    data_len: usize,
    ttl_ms: i64,
    idempotency_key: *const c_char,
    idempotency_key_len: usize,
    out_id: *mut i64,
) -> lmsrt_status {
    ffi_boundary! {
        let out = out_arg(out_id, "out_id")?;
        let store = handle::get(store)?;
        // SAFETY: the caller guarantees `event_type_len` readable bytes at `event_type`.
        let event_type = unsafe {
            str_arg(event_type, event_type_len, MAX_SHORT_BYTES, "event_type", |_| {
                Error::InvalidEventType("(too long)".into()).into()
            })
        }?;
        let max_data = store.config().max_data_bytes;
        // SAFETY: the caller guarantees `data_len` readable bytes at `data` if not NULL.
        let data = unsafe {
            opt_str_arg(data, data_len, max_data, "data", |size| {
                Error::DataTooLarge { size, max: max_data }.into()
            })
        }?;
        // SAFETY: the caller guarantees `idempotency_key_len` readable bytes if not NULL.
        let idempotency_key = unsafe {
            opt_str_arg(
                idempotency_key,
                idempotency_key_len,
                MAX_SHORT_BYTES,
                "idempotency_key",
                too_long("idempotency_key", MAX_SHORT_BYTES),
            )
        }?;
        let event = args::new_event(EventArgs {
            event_type,
            priority: priority.into(),
            channel_id,
            message_id,
            thread_id,
            user_id,
            data,
            ttl_ms,
            idempotency_key,
        })?;
        let id = store.append(event)?;
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(id) };
        Ok(())
    }
}

/// Appends several events in one transaction, all or nothing, and returns their ids.
///
/// `events` (`events_len` bytes, at most 64 MiB) is a JSON array of objects with the fields
/// of `lmsrt_store_append`: `event_type` (or `type`) and `channel_id` required; `priority`,
/// `message_id`, `thread_id`, `user_id`, `data` (a JSON object, not a string),
/// `ttl_ms` and `idempotency_key` optional, with the same defaults (absent, null or 0).
/// Unknown fields are refused. At most 10000 events. When one event is invalid nothing is
/// appended and the message names its index (`event 3: ...`).
///
/// On success `*out_ids` receives a JSON array of the ids, in the order of the events
/// (`[41,42]`); the caller frees it with `lmsrt_buf_free`.
///
/// Errors: as `lmsrt_store_append`, plus `INVALID_ARGUMENT` for malformed JSON.
///
/// # Safety
///
/// `store` as for `lmsrt_store_append`; `events` valid for reads of `events_len` bytes;
/// `out_ids` valid for a write of one `lmsrt_buf`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_store_append_batch(
    store: *const lmsrt_store,
    events: *const c_char,
    events_len: usize,
    out_ids: *mut lmsrt_buf,
) -> lmsrt_status {
    ffi_boundary! {
        let out = out_arg(out_ids, "out_ids")?;
        let store = handle::get(store)?;
        // SAFETY: the caller guarantees `events_len` readable bytes at `events`.
        let text = unsafe {
            str_arg(events, events_len, MAX_BATCH_BYTES, "events", too_long("events", MAX_BATCH_BYTES))
        }?;
        let ids = store.append_batch(args::parse_batch(text)?)?;
        let buf = to_json(&ids)?;
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(buf) };
        Ok(())
    }
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
    ffi_boundary! {
        let out = out_arg(out_batch, "out_batch")?;
        let store = handle::get(store)?;
        // SAFETY: the caller guarantees `request_len` readable bytes at `request`.
        let r = unsafe { request_arg(request, request_len) }?;
        let buf = batch_json(&store.fetch(&r.req)?, r.data_as_text)?;
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(buf) };
        Ok(())
    }
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
    ffi_boundary! {
        let out = out_arg(out_batch, "out_batch")?;
        let store = handle::get(store)?;
        // SAFETY: the caller guarantees `request_len` readable bytes at `request`.
        let r = unsafe { request_arg(request, request_len) }?;
        let batch = store.wait(&r.req, Duration::from_millis(timeout_ms.into()))?;
        let buf = batch_json(&batch, r.data_as_text)?;
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(buf) };
        Ok(())
    }
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
    ffi_boundary! {
        let out = out_arg(out_cursor, "out_cursor")?;
        let store = handle::get(store)?;
        let cursor = store.head_cursor()?;
        let buf = lmsrt_buf::from_vec(cursor.to_string().into_bytes());
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(buf) };
        Ok(())
    }
}

/// Makes every event appended from now on, by any process, get an id greater than `past`, and
/// writes the head id afterwards to `*out_head` (the id `lmsrt_store_head_cursor` then starts
/// from: `past`, or the head as it was when that is already at or beyond `past`).
///
/// For a site that moves between its own event table and this store: clients keep the
/// `last_event_id` the old backend gave them, so before switching, pass the highest id it ever
/// issued, and no new event gets an id those clients would take as already seen. When the
/// store's ids are already at or beyond `past` nothing changes. The skipped ids are never
/// assigned; nothing was lost, so readers whose cursors are before the jump get the later
/// events with `"gap":false`. It is one write transaction under the writer lock appends take:
/// atomic, and ordered with the appends of every process.
///
/// `past` is 0 to `INT64_MAX - 1`; anything else is `INVALID_ARGUMENT` and changes nothing.
///
/// Errors: `NULL_POINTER`, `CLOSED`, `INVALID_ARGUMENT`, `BUSY`, `STORAGE`.
///
/// # Safety
///
/// `store` as for `lmsrt_store_append`; `out_head` valid for a write of one `int64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_store_advance_ids(
    store: *const lmsrt_store,
    past: i64,
    out_head: *mut i64,
) -> lmsrt_status {
    ffi_boundary! {
        let out = out_arg(out_head, "out_head")?;
        let store = handle::get(store)?;
        let head = store.advance_ids(past)?;
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(head) };
        Ok(())
    }
}

/// Deletes up to `max_rows` expired events, in short transactions, and writes how many were
/// deleted to `*out_deleted`. Clients whose cursors had not passed a purged event get
/// `"gap":true`.
///
/// Errors: `NULL_POINTER`, `CLOSED`, `BUSY`, `STORAGE`.
///
/// # Safety
///
/// `store` as for `lmsrt_store_append`; `out_deleted` valid for a write of one `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_store_purge_expired(
    store: *const lmsrt_store,
    max_rows: u64,
    out_deleted: *mut u64,
) -> lmsrt_status {
    ffi_boundary! {
        let out = out_arg(out_deleted, "out_deleted")?;
        let store = handle::get(store)?;
        let max = usize::try_from(max_rows).unwrap_or(usize::MAX);
        let n = store.purge_expired(max)?;
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(n as u64) };
        Ok(())
    }
}

/// # Safety
///
/// `consumer` valid for reads of `len` bytes when not NULL.
unsafe fn consumer_arg<'a>(consumer: *const c_char, len: usize) -> FfiResult<&'a str> {
    // SAFETY: forwarded from the caller.
    unsafe {
        str_arg(
            consumer,
            len,
            MAX_SHORT_BYTES,
            "consumer",
            too_long("consumer", MAX_SHORT_BYTES),
        )
    }
}

/// Stores `cursor` durably as the position of `consumer` (a name of 1 to 255 bytes), replacing
/// what it had.
///
/// Errors: `NULL_POINTER`, `CLOSED`, `INVALID_UTF8`, `INVALID_ARGUMENT`, `INVALID_CURSOR`,
/// `BUSY`, `STORAGE`.
///
/// # Safety
///
/// `store` as for `lmsrt_store_append`; `consumer` and `cursor` valid for reads of their
/// lengths.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_store_commit_cursor(
    store: *const lmsrt_store,
    consumer: *const c_char,
    consumer_len: usize,
    cursor: *const c_char,
    cursor_len: usize,
) -> lmsrt_status {
    ffi_boundary! {
        let store = handle::get(store)?;
        // SAFETY: the caller guarantees `consumer_len` readable bytes at `consumer`.
        let consumer = unsafe { consumer_arg(consumer, consumer_len) }?;
        // SAFETY: the caller guarantees `cursor_len` readable bytes at `cursor`.
        let cursor = unsafe {
            str_arg(cursor, cursor_len, MAX_CURSOR_LEN, "cursor", |len| {
                Error::InvalidCursor(format!("{len} bytes, longer than {MAX_CURSOR_LEN}")).into()
            })
        }?;
        store.commit_cursor(consumer, &Cursor::parse(cursor)?)?;
        Ok(())
    }
}

/// Loads the cursor last committed by `consumer`.
///
/// On success `*out_found` says whether there is one; if so `*out_cursor` receives it (free it
/// with `lmsrt_buf_free`), otherwise `*out_cursor` is set to `{NULL, 0}`.
///
/// Errors: `NULL_POINTER`, `CLOSED`, `INVALID_UTF8`, `INVALID_ARGUMENT`, `BUSY`, `STORAGE`.
///
/// # Safety
///
/// `store` as for `lmsrt_store_append`; `consumer` valid for reads of `consumer_len` bytes;
/// `out_cursor` and `out_found` valid for one write each.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_store_load_cursor(
    store: *const lmsrt_store,
    consumer: *const c_char,
    consumer_len: usize,
    out_cursor: *mut lmsrt_buf,
    out_found: *mut bool,
) -> lmsrt_status {
    ffi_boundary! {
        let out = out_arg(out_cursor, "out_cursor")?;
        let found = out_arg(out_found, "out_found")?;
        let store = handle::get(store)?;
        // SAFETY: the caller guarantees `consumer_len` readable bytes at `consumer`.
        let consumer = unsafe { consumer_arg(consumer, consumer_len) }?;
        let cursor = store.load_cursor(consumer)?;
        let buf = cursor.map_or(lmsrt_buf::EMPTY, |c| lmsrt_buf::from_vec(c.to_string().into_bytes()));
        // SAFETY: both are not NULL and the caller guarantees they are writable.
        unsafe {
            found.write(cursor.is_some());
            out.write(buf);
        }
        Ok(())
    }
}

/// A store path argument: UTF-8, at most 4096 bytes, non-empty, no NUL.
///
/// # Safety
///
/// `ptr` must be valid for reads of `len` bytes.
unsafe fn path_arg<'a>(ptr: *const c_char, len: usize, what: &'static str) -> FfiResult<&'a str> {
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

/// Checks the store file at `path` for damage (SQLite's `PRAGMA integrity_check`) and writes a
/// JSON report to `*out_json` (free it with `lmsrt_buf_free`):
/// `{"path": "...", "ok": true|false, "problems": ["..."], "page_count": N}`, with at most 100
/// problems.
///
/// A damaged file is a successful check (`LMSRT_STATUS_OK` with `"ok": false`). It reads only,
/// and is safe while other processes use the store. Use it when a call returned
/// `LMSRT_STATUS_CORRUPT`; then salvage the file with `lmsrt_store_salvage`.
///
/// Errors: `NULL_POINTER`, `INVALID_UTF8`, `INVALID_ARGUMENT` (path too long, not a file),
/// `STORAGE` (the file cannot be opened as a database).
///
/// # Safety
///
/// `path` must be valid for reads of `path_len` bytes; `out_json` valid for a write of one
/// `lmsrt_buf`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_store_check(
    path: *const c_char,
    path_len: usize,
    out_json: *mut lmsrt_buf,
) -> lmsrt_status {
    ffi_boundary! {
        let out = out_arg(out_json, "out_json")?;
        // SAFETY: the caller guarantees `path_len` readable bytes at `path`.
        let path = unsafe { path_arg(path, path_len, "path") }?;
        let buf = to_json(&crate::store::check_file(path)?)?;
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(buf) };
        Ok(())
    }
}

/// Copies every readable row of the store file at `path` into a new store file at `dest`
/// (which must not exist) and writes a JSON report to `*out_json` (free it with
/// `lmsrt_buf_free`).
///
/// Event ids, the id sequence and the store's epoch are kept, so cursors handed out before
/// stay valid; consumer cursors, idempotency keys and purge records are copied. Events that
/// could not be read are recorded as purged, so a reader whose cursor moves over them gets
/// `"gap": true`. The report: `source`, `dest`, `events_copied`, `events_lost` (exact when
/// `lost_exact`, otherwise an upper bound), `lost_ranges` (inclusive `[lo, hi]` id ranges),
/// `idempotency_keys_copied`, `cursors_copied`, `cursors_complete`, `purged_copied`,
/// `purged_complete`, `sequence`, `epoch`, `epoch_kept` and `dest_ok` (the new file passes
/// the integrity check).
///
/// Run it while no process uses the store (stop the daemon, take writes offline), then move
/// `dest` over `path` and remove `path`'s `-wal` and `-shm` files.
///
/// Errors: `NULL_POINTER`, `INVALID_UTF8`, `INVALID_ARGUMENT` (a path too long, `path` not a
/// file, `dest` exists), `STORAGE` (either file cannot be used as a database).
///
/// # Safety
///
/// `path` must be valid for reads of `path_len` bytes and `dest` of `dest_len` bytes;
/// `out_json` valid for a write of one `lmsrt_buf`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_store_salvage(
    path: *const c_char,
    path_len: usize,
    dest: *const c_char,
    dest_len: usize,
    out_json: *mut lmsrt_buf,
) -> lmsrt_status {
    ffi_boundary! {
        let out = out_arg(out_json, "out_json")?;
        // SAFETY: the caller guarantees `path_len` readable bytes at `path`.
        let path = unsafe { path_arg(path, path_len, "path") }?;
        // SAFETY: the caller guarantees `dest_len` readable bytes at `dest`.
        let dest = unsafe { path_arg(dest, dest_len, "dest") }?;
        let buf = to_json(&crate::store::salvage_file(path, dest)?)?;
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(buf) };
        Ok(())
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::ffi::buf::lmsrt_buf_free;

    fn s(text: &str) -> (*const c_char, usize) {
        (text.as_ptr().cast(), text.len())
    }

    fn open(dir: &tempfile::TempDir) -> *mut lmsrt_store {
        let path = dir.path().join("e.db");
        let path = path.to_str().unwrap();
        let mut h = std::ptr::null_mut();
        // SAFETY: live strings and out-pointer.
        let st = unsafe { lmsrt_store_open(s(path).0, s(path).1, std::ptr::null(), 0, &mut h) };
        assert_eq!(st, lmsrt_status::Ok);
        h
    }

    fn take(mut b: lmsrt_buf) -> String {
        // SAFETY: `b` came from the library and is freed right after the copy.
        let text = unsafe { std::slice::from_raw_parts(b.ptr.cast::<u8>(), b.len) };
        let text = String::from_utf8(text.to_vec()).unwrap();
        // SAFETY: as above.
        unsafe { lmsrt_buf_free(&mut b) };
        text
    }

    #[test]
    fn close_wakes_a_wait_on_another_thread_and_stale_copies_fail_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = open(&dir);
        let copy = h as usize;
        let waiter = std::thread::spawn(move || {
            let req = r#"{"channels":[1]}"#;
            let mut out = lmsrt_buf::EMPTY;
            let h: *const lmsrt_store = std::ptr::without_provenance(copy);
            let t = std::time::Instant::now();
            // SAFETY: live strings and out-pointer; the handle is a registry token.
            let st = unsafe { lmsrt_store_wait(h, s(req).0, s(req).1, 30_000, &mut out) };
            (st, t.elapsed(), out.ptr.is_null())
        });
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: `h` is a live local.
        assert_eq!(unsafe { lmsrt_store_close(&mut h) }, lmsrt_status::Ok);
        assert!(h.is_null());
        let (st, waited, untouched) = waiter.join().unwrap();
        assert_eq!(st, lmsrt_status::Closed);
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert!(untouched, "out-params are written only on success");
        // A second close of the NULLed variable is a no-op; a stale copy is CLOSED.
        // SAFETY: `h` is a live local.
        assert_eq!(unsafe { lmsrt_store_close(&mut h) }, lmsrt_status::Ok);
        let mut stale: *mut lmsrt_store = std::ptr::without_provenance_mut(copy);
        let mut id = 0;
        let t = "x";
        // SAFETY: the stale handle is a registry token, never dereferenced.
        let st = unsafe {
            lmsrt_store_append(
                stale,
                s(t).0,
                s(t).1,
                0,
                1,
                0,
                0,
                0,
                std::ptr::null(),
                0,
                0,
                std::ptr::null(),
                0,
                &mut id,
            )
        };
        assert_eq!(st, lmsrt_status::Closed);
        // SAFETY: as above.
        let st = unsafe { lmsrt_store_close(&mut stale) };
        assert_eq!(st, lmsrt_status::Closed);
        assert!(stale.is_null());
    }

    #[test]
    fn advance_ids_writes_the_head_only_on_success() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = open(&dir);
        let mut head = -7;
        // SAFETY: live handle and out-pointer.
        let st = unsafe { lmsrt_store_advance_ids(h, 1000, &mut head) };
        assert_eq!(st, lmsrt_status::Ok);
        assert_eq!(head, 1000);
        // SAFETY: as above.
        let st = unsafe { lmsrt_store_advance_ids(h, 5, &mut head) };
        assert_eq!(st, lmsrt_status::Ok);
        assert_eq!(head, 1000, "behind the head: a no-op that returns the head");
        head = -7;
        for bad in [-1, i64::MAX] {
            // SAFETY: as above.
            let st = unsafe { lmsrt_store_advance_ids(h, bad, &mut head) };
            assert_eq!(st, lmsrt_status::InvalidArgument);
        }
        // SAFETY: NULL out-pointer and NULL handle are refused before anything is touched.
        let st = unsafe { lmsrt_store_advance_ids(h, 1, std::ptr::null_mut()) };
        assert_eq!(st, lmsrt_status::NullPointer);
        // SAFETY: as above.
        let st = unsafe { lmsrt_store_advance_ids(std::ptr::null(), 1, &mut head) };
        assert_eq!(st, lmsrt_status::NullPointer);
        assert_eq!(head, -7, "out-params are written only on success");
        let copy = h;
        // SAFETY: `h` is a live local.
        assert_eq!(unsafe { lmsrt_store_close(&mut h) }, lmsrt_status::Ok);
        // SAFETY: the stale handle is a registry token, never dereferenced.
        let st = unsafe { lmsrt_store_advance_ids(copy, 1, &mut head) };
        assert_eq!(st, lmsrt_status::Closed);
        assert_eq!(head, -7);
    }

    #[test]
    fn null_with_a_length_is_null_pointer_never_absent() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = open(&dir);
        let t = "message_create";
        let append = |data: *const c_char, data_len, key: *const c_char, key_len| {
            let mut id = -7;
            // SAFETY: live strings and out-pointer; NULL pointers are never read.
            let st = unsafe {
                lmsrt_store_append(
                    h,
                    s(t).0,
                    s(t).1,
                    0,
                    1,
                    0,
                    0,
                    0,
                    data,
                    data_len,
                    0,
                    key,
                    key_len,
                    &mut id,
                )
            };
            (st, id)
        };
        // Before: data=NULL,len=5 was appended as `{}`, and key=NULL,len=5 appended without
        // its key, so a retry made a second event.
        let null = std::ptr::null();
        assert_eq!(append(null, 5, null, 0), (lmsrt_status::NullPointer, -7));
        assert_eq!(append(null, 0, null, 5), (lmsrt_status::NullPointer, -7));
        let req = r#"{"channels":[1]}"#;
        let mut out = lmsrt_buf::EMPTY;
        // SAFETY: live strings and out-pointer.
        let st = unsafe { lmsrt_store_fetch(h, s(req).0, s(req).1, &mut out) };
        assert_eq!(st, lmsrt_status::Ok);
        let v: serde_json::Value = serde_json::from_str(&take(out)).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), 0, "nothing appended");
        // (NULL, 0) is still "none".
        assert_eq!(append(null, 0, null, 0).0, lmsrt_status::Ok);
        // And NULL options with a length are not "no options".
        let path = dir.path().join("o.db");
        let path = path.to_str().unwrap();
        let mut h2 = std::ptr::null_mut();
        // SAFETY: live strings and out-pointer; the NULL options are never read.
        let st = unsafe { lmsrt_store_open(s(path).0, s(path).1, std::ptr::null(), 5, &mut h2) };
        assert_eq!(st, lmsrt_status::NullPointer);
        assert!(h2.is_null());
        // SAFETY: `h` is a live local.
        assert_eq!(unsafe { lmsrt_store_close(&mut h) }, lmsrt_status::Ok);
    }

    #[test]
    fn out_of_range_options_are_refused_naming_the_option_and_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let path = path.to_str().unwrap();
        for (options, says) in [
            (
                r#"{"max_data_bytes":1000000000000000000}"#,
                "max_data_bytes must be 1 to 16777216, not 1000000000000000000",
            ),
            (
                r#"{"live_tail_window":-5}"#,
                "live_tail_window must be 0 to 9223372036854775807, not -5",
            ),
            (
                r#"{"purge_chunk":1000000}"#,
                "purge_chunk must be 1 to 100000",
            ),
            (
                r#"{"default_ttl_ms":18446744073709551615}"#,
                "default_ttl (ms) must be 1 to 3155760000000",
            ),
            (
                r#"{"max_ttl_ms":60000}"#,
                "expected min_ttl <= default_ttl <= max_ttl",
            ),
            (
                r#"{"purge_interval_ms":5}"#,
                "purge_interval (ms) must be 10 to",
            ),
        ] {
            let mut h = std::ptr::null_mut();
            // SAFETY: live strings and out-pointer.
            let st = unsafe {
                lmsrt_store_open(s(path).0, s(path).1, s(options).0, s(options).1, &mut h)
            };
            assert_eq!(st, lmsrt_status::InvalidArgument, "{options}");
            assert!(h.is_null());
            let msg = crate::ffi::status::last_error_string();
            assert!(msg.contains(says), "{options}: {msg}");
        }
        assert!(
            !dir.path().join("r.db").exists(),
            "a refused configuration creates nothing"
        );
    }

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
