//! The C ABI: what PHP (through FFI) and C programs call.
//!
//! Conventions (the header, `include/lms_realtime.h`, is generated from these doc comments):
//!
//! * Every fallible function returns an `lmsrt_status`: `LMSRT_STATUS_OK` (0) or a negative,
//!   stable code from the core's [`ErrorCode`](crate::ErrorCode) table. Out-parameters are
//!   written only on success. `lmsrt_last_error_message` explains the latest failure of the
//!   calling thread.
//! * Strings cross as `(const char *ptr, size_t len)`: UTF-8 checked, size-bounded, never kept.
//!   A NULL `ptr` with a non-zero `len` is `LMSRT_STATUS_NULL_POINTER` everywhere, also for
//!   optional strings, which are absent only as `(NULL, 0)`: bytes the caller lost must not be
//!   read as "none" (data as `{}`, a dropped idempotency key and a duplicate on retry).
//! * Settings documents are checked before anything opens: unknown fields and out-of-range
//!   values are `LMSRT_STATUS_INVALID_ARGUMENT` (for the store's options, naming the option
//!   and its range).
//! * Metrics counters saturate at `UINT64_MAX` instead of wrapping.
//! * Documents (batches, id lists, cursors, metrics) come back as owned `lmsrt_buf`s, released
//!   with `lmsrt_buf_free`. Guard decisions, made on every request, come back as plain C
//!   structs instead (`lmsrt_decision`, `lmsrt_breaker_status`, `lmsrt_lease`); a refused
//!   decision is an answer (`LMSRT_STATUS_OK`, `allowed` false), not an error.
//! * No panic crosses the boundary: each entry point catches it and returns
//!   `LMSRT_STATUS_PANIC`.
//! * NULL pointers, invalid UTF-8, oversized input and closed handles are errors, never crashes.

mod args;
pub mod buf;
mod call;
pub mod guards;
pub mod handle;
pub(crate) mod panic;
pub mod status;
pub mod store;
pub mod token;

use std::ffi::c_char;

pub use buf::lmsrt_buf;
pub use guards::{
    lmsrt_breaker_state, lmsrt_breaker_status, lmsrt_cohort, lmsrt_decision, lmsrt_guards,
    lmsrt_lease, lmsrt_mode,
};
pub use handle::lmsrt_store;
pub use status::lmsrt_status;

/// The ABI version this library implements. It changes whenever a signature or the meaning of a
/// function changes; a binding checks `lmsrt_abi_version()` against the version it was written
/// for. Until 1.0 of the crate there is no ABI stability between versions.
pub const LMSRT_ABI_VERSION: u32 = 1;

/// The ABI version of the loaded library (`LMSRT_ABI_VERSION` of the header it was built with).
/// Compare it with the header's `LMSRT_ABI_VERSION` before calling anything else.
///
/// Infallible and thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn lmsrt_abi_version() -> u32 {
    LMSRT_ABI_VERSION
}

/// The library's version (the crate version, e.g. `"0.1.0"`) as a static NUL-terminated string.
/// The caller must not free it.
///
/// Infallible and thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn lmsrt_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The store engines this library can open, as a static NUL-terminated string of names
/// separated by spaces: `"sqlite"`, or `"sqlite redis"` when it was built with the cargo
/// feature `redis` (then `lmsrt_store_open` also takes a `redis://` URL). A binding asks it to
/// tell "this library cannot open a Redis store" from a bad URL before opening one. The caller
/// must not free it.
///
/// Infallible and thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn lmsrt_engines() -> *const c_char {
    if cfg!(feature = "redis") {
        c"sqlite redis".as_ptr()
    } else {
        c"sqlite".as_ptr()
    }
}
