//! The guards' C classes: the `lmsrt_guards` handle (`lmsrt_guards_open`, `lmsrt_guards_close`)
//! here, and one file per class that works through it: `limiter` (`lmsrt_limiter_*`),
//! `breaker` (`lmsrt_breaker_*`), `slots` (`lmsrt_slot_*`), `rollout` (`lmsrt_rollout_cohort`,
//! which needs no handle) and `metrics` (`lmsrt_metrics_*`).
//!
//! Conventions are the store's (see `store.rs`), with one addition for speed: the decisions a
//! PHP worker makes on every request (rate limits, breakers, slots) come back as plain C
//! structs through out-parameters, not JSON, so a decision costs well under a microsecond of
//! library time. A refusal is an answer, not an error: those calls return `LMSRT_STATUS_OK`
//! with `allowed` (or `acquired`) false. Only bad input, a closed handle and I/O failures are
//! error statuses.
//!
//! Every call on a handle goes through `call` (the module), which does what they all share (panic
//! boundary, out-parameters, handle, names) in one place.

// In the header's order: cbindgen takes a module's items, then its submodules as declared (the
// blank lines keep rustfmt from sorting them).
mod limiter;

mod breaker;

mod slots;

mod rollout;

mod metrics;

mod config;

use std::ffi::c_char;
use std::sync::Arc;

use super::args::{MAX_CONFIG_BYTES, name_arg, opt_str_arg, path_arg, too_long};
use super::call::{Out, OutParams, with_outs};
use super::handle::Registry;
use super::panic::ffi_boundary;
use super::status::{FfiResult, lmsrt_status};
use crate::guards::{Breakers, RateLimiter, Slots};
use crate::metrics::Metrics;
use config::{GuardsConfig, parse_guards_config};

pub use breaker::{
    lmsrt_breaker_check, lmsrt_breaker_force_open, lmsrt_breaker_peek,
    lmsrt_breaker_record_failure, lmsrt_breaker_record_success, lmsrt_breaker_reset,
    lmsrt_breaker_state, lmsrt_breaker_status, lmsrt_mode,
};
pub use limiter::{lmsrt_decision, lmsrt_limiter_check, lmsrt_limiter_peek, lmsrt_limiter_reset};
pub use metrics::{
    lmsrt_metrics_add_gauge, lmsrt_metrics_health, lmsrt_metrics_incr, lmsrt_metrics_prometheus,
    lmsrt_metrics_record_us, lmsrt_metrics_set_gauge, lmsrt_metrics_snapshot,
};
pub use rollout::{lmsrt_cohort, lmsrt_rollout_cohort};
pub use slots::{
    lmsrt_lease, lmsrt_slot_acquire, lmsrt_slot_count, lmsrt_slot_is_held, lmsrt_slot_release,
    lmsrt_slot_renew,
};

/// The shared guards of one database: rate limiter, circuit breakers, connection slots and
/// metrics. Opaque: made by `lmsrt_guards_open`, released by `lmsrt_guards_close`.
///
/// Thread safety: a handle may be shared by any number of threads, which may call any function
/// on it at the same time (no call blocks or takes a lock held across processes). Closing it
/// while other threads use it is safe: their calls finish or fail with `LMSRT_STATUS_CLOSED`.
/// After close, every copy of the handle is invalid and every call with one fails with
/// `LMSRT_STATUS_CLOSED`; handle values are never reused within a process, and a store handle
/// is never a valid guards handle (nor the reverse).
#[allow(non_camel_case_types)]
pub struct lmsrt_guards {
    _private: [u8; 0],
}

/// What an `lmsrt_guards` handle names.
#[derive(Debug)]
pub(crate) struct Guards {
    limiter: RateLimiter,
    breakers: Breakers,
    slots: Slots,
    metrics: Arc<Metrics>,
}

impl Guards {
    fn open(path: &str, c: GuardsConfig) -> crate::Result<Guards> {
        let metrics = Arc::new(Metrics::open(path, c.metrics)?);
        Ok(Guards {
            limiter: RateLimiter::open(path, c.limiter)?.with_metrics(metrics.clone()),
            breakers: Breakers::open(path, c.breaker)?.with_metrics(metrics.clone()),
            slots: Slots::open(path, c.slots)?.with_metrics(metrics.clone()),
            metrics,
        })
    }
}

static GUARDS: Registry<Guards> =
    Registry::new("the guards handle is closed (or was never returned by lmsrt_guards_open)");

/// The guards behind `h`, for the duration of one call.
fn lookup(h: *const lmsrt_guards) -> FfiResult<Arc<Guards>> {
    GUARDS.get(h, "guards")
}

/// A name argument of a guards call (an action, a key, a breaker or metric name): the C pair
/// `(ptr, len)`, and what messages call it.
struct Name {
    ptr: *const c_char,
    len: usize,
    what: &'static str,
}

/// The name argument `(ptr, len)`, called `what` in messages.
fn name(ptr: *const c_char, len: usize, what: &'static str) -> Name {
    Name { ptr, len, what }
}

/// Runs one call on a guards handle, doing what every `lmsrt_limiter_*`, `lmsrt_breaker_*`,
/// `lmsrt_slot_*` and `lmsrt_metrics_*` function shares, in this order, inside the panic
/// boundary: the out-parameters are checked for NULL, the handle is resolved (NULL is
/// `NULL_POINTER`, a closed one `CLOSED`), each name is decoded (UTF-8, at most 1024 bytes,
/// else `INVALID_UTF8` or `INVALID_ARGUMENT`); then `op` runs on them, and what it returns is
/// written to the out-parameters last, only when everything succeeded.
///
/// # Safety
///
/// Each name's pointer, when not NULL, must be valid for reads of its length, and each
/// out-parameter, when not NULL, for a write of its type. The handle is a registry token, never
/// dereferenced: any value is safe.
unsafe fn call<const N: usize, O: OutParams>(
    guards: *const lmsrt_guards,
    names: [Name; N],
    outs: O,
    op: impl FnOnce(&Guards, [&str; N]) -> FfiResult<O::Value>,
) -> lmsrt_status {
    let body = || {
        let g = lookup(guards)?;
        let mut decoded: [&str; N] = [""; N];
        for (d, n) in decoded.iter_mut().zip(names) {
            // SAFETY: the caller guarantees each name's pointer readable for its length.
            *d = unsafe { name_arg(n.ptr, n.len, n.what) }?;
        }
        op(&g, decoded)
    };
    // SAFETY: the caller guarantees the out-parameters writable.
    unsafe { with_outs(outs, body) }
}

/// Opens the guards shared by every process using the database at `path`, and returns a handle
/// in `*out_guards`.
///
/// `path` (`path_len` bytes, UTF-8, at most 4096, no NUL) names the database; the database
/// itself is not opened. Beside it the guards map (creating them zero-filled if missing)
/// `<path>-lmsrt-limits`, `<path>-lmsrt-breakers`, `<path>-lmsrt-slots` and
/// `<path>-lmsrt-metrics`. Every process that opens them must be able to read and write them.
///
/// `config` (`config_len` bytes, at most 64 KiB) is NULL (with length 0), empty, or a JSON
/// object mirroring the crate's configuration types; every field is optional and defaults as
/// the Rust `Default`s do, and unknown fields are refused with `LMSRT_STATUS_INVALID_ARGUMENT`:
///
/// * `limits`: an object of actions, each `{"rate": 20, "period_ms": 60000, "burst": 20,
///   "adaptive": ..., "block": ...}`, adding to or replacing the defaults (`post` 20 per
///   minute, `poll` 180 per minute with burst 30, `ip` 600 per minute with burst 100 and DDoS
///   blocks). `rate` is required; `period_ms` defaults to 60000 and `burst` to `rate`.
///   `adaptive` is `true` (the default: 100 per mille of reputation lost per refusal, a floor
///   of 250 per mille, recovery in 600000 ms), `false` (a fixed limit) or
///   `{"penalty_permille", "min_allowance_permille", "recovery_ms"}`. `block` is `false` (the
///   default), `true` or `{"base_ms": 60000, "max_ms": 3600000, "forget_ms": 86400000}`: keys
///   refused at zero reputation are blocked, for doubling periods.
/// * `limiter`: `{"capacity": 65536}` (keys in the table).
/// * `breaker`: `failure_threshold` (5), `failure_ratio_permille` (500), `min_requests` (20),
///   `window_ms` (10000), `open_ms` (5000), `max_open_ms` (120000), `half_open_probes` (1),
///   `probe_timeout_ms` (10000), `capacity` (1024).
/// * `slots`: `max` (3 concurrent leases per key, 1 to 15), `lease_ms` (35000), `on_full`
///   (`"refuse"` or `"evict_oldest"`), `check_pid` (true: reclaim leases of dead processes),
///   `capacity` (16384).
/// * `metrics`: the health verdict's alert lines, `p99_ms` (100), `error_rate_permille` (50),
///   `min_samples` (20).
///
/// Processes sharing the files should use the same settings: the files hold the state, the
/// settings come from each opener (a table's capacity is fixed by its creator).
///
/// On success `*out_guards` receives a new handle, owned by the caller, who releases it with
/// `lmsrt_guards_close`. On failure `*out_guards` is left untouched (some of the files may
/// have been created).
///
/// Errors: `NULL_POINTER`, `INVALID_UTF8`, `INVALID_ARGUMENT` (bad settings, path too long),
/// `IO` (a file cannot be created or mapped, or was written by another version), `STORAGE`
/// (no space left on the disk for the files: they are allocated in full before they are
/// mapped, so a full disk is this error rather than a crash later; retry when space returns).
///
/// # Safety
///
/// `path` must be valid for reads of `path_len` bytes; `config`, when not NULL, for reads of
/// `config_len` bytes; `out_guards` must be valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_guards_open(
    path: *const c_char,
    path_len: usize,
    config: *const c_char,
    config_len: usize,
    out_guards: *mut *mut lmsrt_guards,
) -> lmsrt_status {
    let outs = Out::new(out_guards, "out_guards");
    let body = || {
        // SAFETY: the caller guarantees `path_len` readable bytes at `path`.
        let path = unsafe { path_arg(path, path_len, "path") }?;
        // SAFETY: the caller guarantees `config_len` readable bytes at `config` if not NULL.
        let config = unsafe {
            opt_str_arg(
                config,
                config_len,
                MAX_CONFIG_BYTES,
                "config",
                too_long("config", MAX_CONFIG_BYTES),
            )
        }?;
        let guards = Guards::open(path, parse_guards_config(config)?)?;
        Ok(GUARDS.register(guards))
    };
    // SAFETY: the caller guarantees `out_guards` writable.
    unsafe { with_outs(outs, body) }
}

/// Closes the guards `*guards` and sets `*guards` to NULL. The shared files stay (they hold
/// the state other processes share); leases acquired through the handle stay held until
/// released (through any handle on the same database) or expired.
///
/// Returns `LMSRT_STATUS_OK` when it closed the handle, and also when `*guards` is already
/// NULL (so closing the same variable twice is a no-op). Returns `LMSRT_STATUS_CLOSED` when
/// `*guards` is a copy of a handle closed through another variable (and still sets `*guards`
/// to NULL), `LMSRT_STATUS_NULL_POINTER` when `guards` itself is NULL.
///
/// # Safety
///
/// `guards`, when not NULL, must be valid for reading and writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_guards_close(guards: *mut *mut lmsrt_guards) -> lmsrt_status {
    ffi_boundary! {
        // SAFETY: the caller guarantees `guards`, when not NULL, readable and writable.
        unsafe { GUARDS.close(guards, "guards") }?;
        Ok(())
    }
}

/// What the tests of the guards' classes share.
#[cfg(all(test, not(miri)))]
pub(super) mod tests {
    use super::*;

    /// A `(ptr, len)` pair for `text`.
    pub(in crate::ffi) fn s(text: &str) -> (*const c_char, usize) {
        (text.as_ptr().cast(), text.len())
    }

    /// Guards on a fresh database in `dir`, with the settings `config`.
    pub(in crate::ffi) fn open(dir: &tempfile::TempDir, config: &str) -> *mut lmsrt_guards {
        let path = dir.path().join("g.db");
        let path = path.to_str().unwrap();
        let mut h = std::ptr::null_mut();
        // SAFETY: live strings and out-pointer.
        let st =
            unsafe { lmsrt_guards_open(s(path).0, s(path).1, s(config).0, s(config).1, &mut h) };
        assert_eq!(st, lmsrt_status::Ok);
        h
    }

    #[test]
    fn close_nulls_the_variable_and_a_stale_copy_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = open(&dir, "");
        let copy = h;
        // SAFETY: `h` is a live local.
        assert_eq!(unsafe { lmsrt_guards_close(&mut h) }, lmsrt_status::Ok);
        assert!(h.is_null());
        // SAFETY: as above; closing the NULLed variable again is a no-op.
        assert_eq!(unsafe { lmsrt_guards_close(&mut h) }, lmsrt_status::Ok);
        let mut stale = copy;
        // SAFETY: `stale` is a live local; the handle in it is a registry token, never
        // dereferenced.
        let st = unsafe { lmsrt_guards_close(&mut stale) };
        assert_eq!(st, lmsrt_status::Closed);
        assert!(stale.is_null());
    }
}
