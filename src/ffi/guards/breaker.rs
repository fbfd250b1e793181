//! The circuit breakers' C class: `lmsrt_breaker_*`, and the status they write,
//! `lmsrt_breaker_status` (with its `lmsrt_breaker_state` and `lmsrt_mode` values).

use std::ffi::c_char;

use super::{call, lmsrt_guards, name};
use crate::ffi::call::Out;
use crate::ffi::status::lmsrt_status;
use crate::guards::{BreakerState, BreakerStatus, Breakers, ClientMode};

/// A circuit breaker's state, as the `state` field of `lmsrt_breaker_status` carries it (an
/// `int32_t`, so the struct's layout does not depend on the compiler's enum size).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lmsrt_breaker_state {
    /// Calls go through.
    Closed = 0,
    /// Calls are refused until the open period ends.
    Open = 1,
    /// The open period is over: a limited number of probe calls go through.
    HalfOpen = 2,
}

/// How clients should poll, from the plan's fallback tiers: the `mode` field of
/// `lmsrt_breaker_status` (an `int32_t`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lmsrt_mode {
    /// Long-poll with 30 s waits: all is well.
    Long = 0,
    /// 10 s waits: failures are showing.
    Medium = 1,
    /// Poll every 3 s: recovering (half-open).
    Short = 2,
    /// Poll every 1 s: the breaker is open.
    Emergency = 3,
}

/// A circuit breaker's status (`lmsrt_breaker_*`).
///
/// Plain data written by the library; the caller owns the memory. Not shared: one per thread.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct lmsrt_breaker_status {
    /// The wait (or polling interval) of `mode`, in ms: 30000, 10000, 3000 or 1000.
    pub wait_ms: u64,
    /// When refused, ms until a call may be admitted again; 0 when allowed.
    pub retry_after_ms: u64,
    /// Outcomes reported in the failure window (since the breaker last closed).
    pub window_requests: u64,
    /// Failures among them.
    pub window_failures: u64,
    /// The open period the breaker is in, or would use next, in ms (doubles on each re-open).
    pub open_period_ms: u64,
    /// The state: an `lmsrt_breaker_state` value.
    pub state: i32,
    /// The polling mode clients should use: an `lmsrt_mode` value.
    pub mode: i32,
    /// Consecutive failures (closed state).
    pub consecutive_failures: u32,
    /// Whether the call may go ahead (for `lmsrt_breaker_peek` and the `record`/`reset` calls:
    /// whether a check would admit one now).
    pub allowed: bool,
    /// The call was admitted as a half-open probe: report its outcome with
    /// `lmsrt_breaker_record_success` or `lmsrt_breaker_record_failure`.
    pub probe: bool,
    /// False when the shared table was full and the breaker is not tracked (always allowed).
    pub tracked: bool,
}

impl From<BreakerStatus> for lmsrt_breaker_status {
    fn from(s: BreakerStatus) -> lmsrt_breaker_status {
        let state = match s.state {
            BreakerState::Closed => lmsrt_breaker_state::Closed,
            BreakerState::Open => lmsrt_breaker_state::Open,
            BreakerState::HalfOpen => lmsrt_breaker_state::HalfOpen,
        };
        let mode = match s.mode {
            ClientMode::Long => lmsrt_mode::Long,
            ClientMode::Medium => lmsrt_mode::Medium,
            ClientMode::Short => lmsrt_mode::Short,
            ClientMode::Emergency => lmsrt_mode::Emergency,
        };
        lmsrt_breaker_status {
            wait_ms: s.mode.wait_ms(),
            retry_after_ms: s.retry_after_ms,
            window_requests: s.window_requests,
            window_failures: s.window_failures,
            open_period_ms: s.open_period_ms,
            state: state as i32,
            mode: mode as i32,
            consecutive_failures: s.consecutive_failures,
            allowed: s.allowed,
            probe: s.probe,
            tracked: s.tracked,
        }
    }
}

/// Runs one breaker operation on breaker `name` through [`call`], writing the status it returns.
///
/// # Safety
///
/// As [`call`]: `name` valid for reads of `name_len` bytes when not NULL; `out` valid for a
/// write when not NULL.
unsafe fn breaker_op(
    guards: *const lmsrt_guards,
    name_ptr: *const c_char,
    name_len: usize,
    out: *mut lmsrt_breaker_status,
    op: impl FnOnce(&Breakers, &str) -> crate::Result<BreakerStatus>,
) -> lmsrt_status {
    let names = [name(name_ptr, name_len, "name")];
    // SAFETY: this function's contract is `call`'s for these arguments.
    unsafe {
        call(guards, names, Out::new(out, "out"), |g, [n]| {
            Ok(op(&g.breakers, n)?.into())
        })
    }
}

/// Asks whether a call guarded by breaker `name` (1 to 1024 bytes; use a fixed set of names
/// such as `"store"`) may go ahead, and writes the breaker's status to `*out`.
///
/// A refusal (the breaker is open, or half-open with its probes taken) is not an error: the
/// status is `LMSRT_STATUS_OK` with `out->allowed` false and `out->retry_after_ms`. When the
/// breaker is half-open the call may be admitted as a probe (`out->probe`): report its outcome.
/// `out->mode` is the polling mode to advertise to clients. The breaker is shared by every
/// thread and process using the database.
///
/// Errors: `NULL_POINTER`, `CLOSED`, `INVALID_UTF8`, `INVALID_ARGUMENT` (empty or too long
/// name).
///
/// # Safety
///
/// `guards` must be NULL or a handle from `lmsrt_guards_open`; `name` valid for reads of
/// `name_len` bytes; `out` valid for a write of one `lmsrt_breaker_status`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_breaker_check(
    guards: *const lmsrt_guards,
    name: *const c_char,
    name_len: usize,
    out: *mut lmsrt_breaker_status,
) -> lmsrt_status {
    // SAFETY: the caller guarantees `name` readable for `name_len` bytes and `out`
    // writable: what `breaker_op` requires.
    unsafe { breaker_op(guards, name, name_len, out, |b, n| b.check(n)) }
}

/// Writes breaker `name`'s status to `*out` without admitting anything (for status pages).
///
/// Errors and safety: as `lmsrt_breaker_check`.
///
/// # Safety
///
/// As `lmsrt_breaker_check`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_breaker_peek(
    guards: *const lmsrt_guards,
    name: *const c_char,
    name_len: usize,
    out: *mut lmsrt_breaker_status,
) -> lmsrt_status {
    // SAFETY: the caller guarantees `name` readable for `name_len` bytes and `out`
    // writable: what `breaker_op` requires.
    unsafe { breaker_op(guards, name, name_len, out, |b, n| b.status(n)) }
}

/// Reports a successful call guarded by breaker `name`: resets its consecutive failures and
/// closes it when half-open. Writes the resulting status to `*out`.
///
/// Errors and safety: as `lmsrt_breaker_check`.
///
/// # Safety
///
/// As `lmsrt_breaker_check`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_breaker_record_success(
    guards: *const lmsrt_guards,
    name: *const c_char,
    name_len: usize,
    out: *mut lmsrt_breaker_status,
) -> lmsrt_status {
    // SAFETY: the caller guarantees `name` readable for `name_len` bytes and `out`
    // writable: what `breaker_op` requires.
    unsafe { breaker_op(guards, name, name_len, out, |b, n| b.record_success(n)) }
}

/// Reports a failed call guarded by breaker `name`: may open a closed breaker (after
/// `failure_threshold` consecutive failures, or a failure ratio over the window) and re-opens a
/// half-open one with a doubled open period. Writes the resulting status to `*out`.
///
/// Errors and safety: as `lmsrt_breaker_check`.
///
/// # Safety
///
/// As `lmsrt_breaker_check`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_breaker_record_failure(
    guards: *const lmsrt_guards,
    name: *const c_char,
    name_len: usize,
    out: *mut lmsrt_breaker_status,
) -> lmsrt_status {
    // SAFETY: the caller guarantees `name` readable for `name_len` bytes and `out`
    // writable: what `breaker_op` requires.
    unsafe { breaker_op(guards, name, name_len, out, |b, n| b.record_failure(n)) }
}

/// Closes breaker `name` and forgets its failures and backoff (an operator's reset). Writes
/// the resulting status to `*out`.
///
/// Errors and safety: as `lmsrt_breaker_check`.
///
/// # Safety
///
/// As `lmsrt_breaker_check`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_breaker_reset(
    guards: *const lmsrt_guards,
    name: *const c_char,
    name_len: usize,
    out: *mut lmsrt_breaker_status,
) -> lmsrt_status {
    // SAFETY: the caller guarantees `name` readable for `name_len` bytes and `out`
    // writable: what `breaker_op` requires.
    unsafe { breaker_op(guards, name, name_len, out, |b, n| b.reset(n)) }
}

/// Opens breaker `name` for `duration_ms` (an operator's switch, e.g. during maintenance),
/// keeping its backoff. Writes the resulting status to `*out`.
///
/// Errors and safety: as `lmsrt_breaker_check`.
///
/// # Safety
///
/// As `lmsrt_breaker_check`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_breaker_force_open(
    guards: *const lmsrt_guards,
    name: *const c_char,
    name_len: usize,
    duration_ms: u64,
    out: *mut lmsrt_breaker_status,
) -> lmsrt_status {
    // SAFETY: the caller guarantees `name` readable for `name_len` bytes and `out`
    // writable: what `breaker_op` requires.
    unsafe {
        breaker_op(guards, name, name_len, out, |b, n| {
            b.force_open(n, duration_ms)
        })
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::ffi::guards::lmsrt_guards_close;
    use crate::ffi::guards::tests::{open, s};

    #[test]
    fn status_carries_the_state_and_mode_enums() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = open(&dir, r#"{"breaker":{"failure_threshold":2}}"#);
        let mut st = std::mem::MaybeUninit::<lmsrt_breaker_status>::uninit();
        for _ in 0..2 {
            // SAFETY: live string and out-pointer.
            let r =
                unsafe { lmsrt_breaker_record_failure(h, s("db").0, s("db").1, st.as_mut_ptr()) };
            assert_eq!(r, lmsrt_status::Ok);
        }
        // SAFETY: written by the successful call above.
        let st = unsafe { st.assume_init() };
        assert_eq!(st.state, lmsrt_breaker_state::Open as i32);
        assert_eq!(st.mode, lmsrt_mode::Emergency as i32);
        assert_eq!((st.wait_ms, st.allowed), (1_000, false));
        // SAFETY: `h` is a live local.
        assert_eq!(unsafe { lmsrt_guards_close(&mut h) }, lmsrt_status::Ok);
    }
}
