//! Consumers' committed cursors: `lmsrt_store_commit_cursor` and `lmsrt_store_load_cursor`.

use std::ffi::c_char;

use super::call;
use crate::cursor::{Cursor, MAX_CURSOR_LEN};
use crate::error::Error;
use crate::ffi::args::{name_arg, str_arg};
use crate::ffi::buf::lmsrt_buf;
use crate::ffi::call::Out;
use crate::ffi::handle::lmsrt_store;
use crate::ffi::status::lmsrt_status;

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
    let body = |store: &crate::store::EventStore| {
        // SAFETY: the caller guarantees `consumer_len` readable bytes at `consumer`.
        let consumer = unsafe { name_arg(consumer, consumer_len, "consumer") }?;
        // SAFETY: the caller guarantees `cursor_len` readable bytes at `cursor`.
        let cursor = unsafe {
            str_arg(cursor, cursor_len, MAX_CURSOR_LEN, "cursor", |len| {
                Error::InvalidCursor(format!("{len} bytes, longer than {MAX_CURSOR_LEN}")).into()
            })
        }?;
        Ok(store.commit_cursor(consumer, &Cursor::parse(cursor)?)?)
    };
    // SAFETY: there is no out-parameter; `body` reads the strings under this function's
    // contract.
    unsafe { call(store, (), body) }
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
    let outs = (
        Out::new(out_cursor, "out_cursor"),
        Out::new(out_found, "out_found"),
    );
    let body = |store: &crate::store::EventStore| {
        // SAFETY: the caller guarantees `consumer_len` readable bytes at `consumer`.
        let consumer = unsafe { name_arg(consumer, consumer_len, "consumer") }?;
        let cursor = store.load_cursor(consumer)?;
        let buf = cursor.map_or(lmsrt_buf::EMPTY, |c| {
            lmsrt_buf::from_vec(c.to_string().into_bytes())
        });
        Ok((buf, cursor.is_some()))
    };
    // SAFETY: the caller guarantees `out_cursor` and `out_found` writable.
    unsafe { call(store, outs, body) }
}
