//! Damaged files, with no handle (the store may not open): `lmsrt_store_check` and
//! `lmsrt_store_salvage`.

use std::ffi::c_char;

use crate::ffi::args::path_arg;
use crate::ffi::buf::lmsrt_buf;
use crate::ffi::call::{Out, with_outs};
use crate::ffi::status::lmsrt_status;

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
    let body = || {
        // SAFETY: the caller guarantees `path_len` readable bytes at `path`.
        let path = unsafe { path_arg(path, path_len, "path") }?;
        lmsrt_buf::json(&crate::store::check_file(path)?)
    };
    // SAFETY: the caller guarantees `out_json` writable.
    unsafe { with_outs(Out::new(out_json, "out_json"), body) }
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
    let body = || {
        // SAFETY: the caller guarantees `path_len` readable bytes at `path`.
        let path = unsafe { path_arg(path, path_len, "path") }?;
        // SAFETY: the caller guarantees `dest_len` readable bytes at `dest`.
        let dest = unsafe { path_arg(dest, dest_len, "dest") }?;
        lmsrt_buf::json(&crate::store::salvage_file(path, dest)?)
    };
    // SAFETY: the caller guarantees `out_json` writable.
    unsafe { with_outs(Out::new(out_json, "out_json"), body) }
}
