//! Appending: `lmsrt_store_append` (one event, typed arguments) and `lmsrt_store_append_batch`
//! (a JSON array, all or nothing).

use std::ffi::c_char;

use super::call;
use crate::error::Error;
use crate::ffi::args::{
    self, EventArgs, MAX_BATCH_BYTES, MAX_SHORT_BYTES, opt_str_arg, str_arg, too_long,
};
use crate::ffi::buf::lmsrt_buf;
use crate::ffi::call::Out;
use crate::ffi::handle::lmsrt_store;
use crate::ffi::status::lmsrt_status;

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
    let body = |store: &crate::store::EventStore| {
        // SAFETY: the caller guarantees `event_type_len` readable bytes at `event_type`.
        let event_type = unsafe {
            str_arg(
                event_type,
                event_type_len,
                MAX_SHORT_BYTES,
                "event_type",
                |_| Error::InvalidEventType("(too long)".into()).into(),
            )
        }?;
        let max_data = store.config().max_data_bytes;
        // SAFETY: the caller guarantees `data_len` readable bytes at `data` if not NULL.
        let data = unsafe {
            opt_str_arg(data, data_len, max_data, "data", |size| {
                Error::DataTooLarge {
                    size,
                    max: max_data,
                }
                .into()
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
        Ok(store.append(event)?)
    };
    // SAFETY: the caller guarantees `out_id` writable.
    unsafe { call(store, Out::new(out_id, "out_id"), body) }
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
    let body = |store: &crate::store::EventStore| {
        // SAFETY: the caller guarantees `events_len` readable bytes at `events`.
        let text = unsafe {
            str_arg(
                events,
                events_len,
                MAX_BATCH_BYTES,
                "events",
                too_long("events", MAX_BATCH_BYTES),
            )
        }?;
        lmsrt_buf::json(&store.append_batch(args::parse_batch(text)?)?)
    };
    // SAFETY: the caller guarantees `out_ids` writable.
    unsafe { call(store, Out::new(out_ids, "out_ids"), body) }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::ffi::store::tests::{open, s, take};
    use crate::ffi::store::{lmsrt_store_close, lmsrt_store_fetch, lmsrt_store_open};

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
}
