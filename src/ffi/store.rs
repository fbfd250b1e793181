//! The store's C class: `lmsrt_store_open` and `lmsrt_store_close` here, the rest by job:
//! `append`, `read` (fetch, wait, head cursor), `ids` (advance, purge), `consumers` (committed
//! cursors) and `repair` (check and salvage a file, no handle).
//!
//! Conventions shared by every function here (the header repeats them per function):
//! the return value is an `lmsrt_status`; out-parameters are written only when it is
//! `LMSRT_STATUS_OK`; strings are `(const char *ptr, size_t len)` pairs, checked as UTF-8 and
//! bounded in size, and never kept after the call returns; results that are documents come back
//! as `lmsrt_buf`s the caller frees with `lmsrt_buf_free`. Every call on a handle goes through
//! `call` (the module).

// In the header's order: cbindgen takes a module's items, then its submodules as declared (the
// blank lines keep rustfmt from sorting them).
mod append;

mod read;

mod ids;

mod consumers;

mod repair;

use std::ffi::c_char;

use super::args::{self, MAX_CONFIG_BYTES, opt_str_arg, path_arg, too_long};
use super::call::{Out, OutParams, with_outs};
use super::handle::{self, lmsrt_store};
use super::panic::ffi_boundary;
use super::status::{FfiResult, lmsrt_status};
use crate::store::{EventStore, StoreLocation};

pub use append::{lmsrt_store_append, lmsrt_store_append_batch};
pub use consumers::{lmsrt_store_commit_cursor, lmsrt_store_load_cursor};
pub use ids::{lmsrt_store_advance_ids, lmsrt_store_purge_expired};
pub use read::{lmsrt_store_fetch, lmsrt_store_head_cursor, lmsrt_store_wait};
pub use repair::{lmsrt_store_check, lmsrt_store_salvage};

/// Runs one call on a store handle, doing what every `lmsrt_store_*` function on a handle
/// shares, in this order, inside the panic boundary: the out-parameters are checked for NULL,
/// the handle is resolved (NULL is `NULL_POINTER`, a closed one `CLOSED`); then `op` runs on
/// the store (decoding its own arguments: their bounds differ, one depends on the store's
/// settings), and what it returns is written to the out-parameters last, only on success.
///
/// # Safety
///
/// Each out-parameter, when not NULL, must be valid for a write of its type. The handle is a
/// registry token, never dereferenced: any value is safe.
unsafe fn call<O: OutParams>(
    store: *const lmsrt_store,
    outs: O,
    op: impl FnOnce(&EventStore) -> FfiResult<O::Value>,
) -> lmsrt_status {
    // SAFETY: the caller guarantees the out-parameters writable.
    unsafe { with_outs(outs, || op(&*handle::get(store)?)) }
}

/// Opens (creating or migrating) the event store at the file `path` and returns a handle to it
/// in `*out_store`.
///
/// `path` (`path_len` bytes, UTF-8, at most 4096, no NUL) names the SQLite database. Beside it
/// the store keeps `<path>-wal`, `<path>-shm`, `<path>-lmsrt-writer` and `<path>-lmsrt-signal`.
/// Any number of processes and threads may open the same file at once.
///
/// `path` may instead be a Redis URL, `redis://[user:password@]host[:port][/db][?store=NAME]`
/// (or `rediss://` for TLS, `redis+cluster://host1:port1,host2:port2/?store=NAME` for a Redis
/// Cluster, `rediss+cluster://`; parameters in the README): the store then lives in that Redis,
/// shared by every host that opens it (a library built with the `redis` feature; otherwise
/// `LMSRT_STATUS_INVALID_ARGUMENT`).
/// Any other `scheme://` is refused with `LMSRT_STATUS_INVALID_ARGUMENT`; Redis unreachable:
/// `LMSRT_STATUS_STORAGE`.
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
    let body = || {
        // SAFETY: the caller guarantees `path_len` readable bytes at `path`.
        let path = unsafe { path_arg(path, path_len, "path") }?;
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
        let location = StoreLocation::parse(path)?;
        let store = EventStore::open_location(&location, args::parse_config(options)?)?;
        Ok(handle::register(store))
    };
    // SAFETY: the caller guarantees `out_store` writable.
    unsafe { with_outs(Out::new(out_store, "out_store"), body) }
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
        // SAFETY: the caller guarantees `store`, when not NULL, readable and writable.
        if let Some(s) = unsafe { handle::close(store) }? {
            s.close();
        }
        Ok(())
    }
}

/// What the tests of the store's entry points share.
#[cfg(all(test, not(miri)))]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ffi::buf::lmsrt_buf;

    /// A `(ptr, len)` pair for `text`.
    pub(in crate::ffi) fn s(text: &str) -> (*const c_char, usize) {
        (text.as_ptr().cast(), text.len())
    }

    /// A store on a fresh database in `dir`, with the default options.
    pub(in crate::ffi) fn open(dir: &tempfile::TempDir) -> *mut lmsrt_store {
        let path = dir.path().join("e.db");
        let path = path.to_str().unwrap();
        let mut h = std::ptr::null_mut();
        // SAFETY: live strings and out-pointer.
        let st = unsafe { lmsrt_store_open(s(path).0, s(path).1, std::ptr::null(), 0, &mut h) };
        assert_eq!(st, lmsrt_status::Ok);
        h
    }

    /// The text of `b`, which is freed.
    pub(in crate::ffi) fn take(mut b: lmsrt_buf) -> String {
        // SAFETY: `b` came from the library and is freed right after the copy.
        let text = unsafe { std::slice::from_raw_parts(b.ptr.cast::<u8>(), b.len) };
        let text = String::from_utf8(text.to_vec()).unwrap();
        // SAFETY: as above.
        unsafe { crate::ffi::buf::lmsrt_buf_free(&mut b) };
        text
    }

    #[test]
    fn open_takes_a_redis_url_and_refuses_other_schemes() {
        let open = |path: &str| {
            let mut h = std::ptr::null_mut();
            // SAFETY: live strings and out-pointer.
            let st = unsafe { lmsrt_store_open(s(path).0, s(path).1, std::ptr::null(), 0, &mut h) };
            assert!(h.is_null(), "no handle on failure");
            st
        };
        assert_eq!(open("ftp://host/e.db"), lmsrt_status::InvalidArgument);
        // Port 1 on loopback: nothing listens. A build with Redis tries and fails to connect;
        // one without refuses the URL.
        let expected = if cfg!(feature = "redis") {
            lmsrt_status::Storage
        } else {
            lmsrt_status::InvalidArgument
        };
        assert_eq!(open("redis://127.0.0.1:1/0"), expected);
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
}
