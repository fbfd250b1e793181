//! The rate limiter's C class: `lmsrt_limiter_check`, `lmsrt_limiter_peek`,
//! `lmsrt_limiter_reset`, and the decision they write, `lmsrt_decision`.

use std::ffi::c_char;

use super::{call, lmsrt_guards, name};
use crate::ffi::call::Out;
use crate::ffi::status::lmsrt_status;
use crate::guards::Decision;

/// The answer to one rate-limit check (`lmsrt_limiter_check`, `lmsrt_limiter_peek`).
///
/// Plain data written by the library; the caller owns the memory (typically a local or a
/// struct reused for every call). Not shared: one per thread.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct lmsrt_decision {
    /// When refused, ms until a retry can succeed (the `Retry-After`); 0 when allowed.
    pub retry_after_ms: u64,
    /// Ms until the key's allowance is full again.
    pub reset_after_ms: u64,
    /// The key's current allowance: requests a rested key could make at once at its present
    /// reputation (the configured burst at full reputation).
    pub limit: u32,
    /// Requests of cost 1 that would be allowed right after this decision.
    pub remaining: u32,
    /// The key's reputation, 0 to 1000 per mille; refusals lower it, time restores it.
    pub reputation_permille: u32,
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// Refused by the DDoS guard: the key is blocked for `retry_after_ms`.
    pub blocked: bool,
    /// False when the shared table was full and the request was allowed without tracking the
    /// key (the limiter fails open).
    pub tracked: bool,
}

impl From<Decision> for lmsrt_decision {
    fn from(d: Decision) -> lmsrt_decision {
        lmsrt_decision {
            retry_after_ms: d.retry_after_ms,
            reset_after_ms: d.reset_after_ms,
            limit: d.limit,
            remaining: d.remaining,
            reputation_permille: d.reputation_permille,
            allowed: d.allowed,
            blocked: d.blocked,
            tracked: d.tracked,
        }
    }
}

/// Decides one request of `action` (a configured action name, e.g. `"post"`) by `key` (a user
/// id, an IP, 1 to 1024 bytes) worth `cost` ordinary requests (1 to the action's burst),
/// consuming allowance when it is allowed, and writes the decision to `*out`.
///
/// A refusal is not an error: the status is `LMSRT_STATUS_OK` and `out->allowed` is false,
/// with `out->retry_after_ms` (and `out->blocked` for a DDoS block). The budget is exact across
/// every thread and process sharing the database: N processes hammering one key are allowed
/// exactly the burst between them. Allowed, refused and blocked decisions are counted in the
/// metrics (`limiter_allowed`, `limiter_denied`, `limiter_blocked`).
///
/// Errors: `NULL_POINTER`, `CLOSED`, `INVALID_UTF8`, `INVALID_ARGUMENT` (unknown action, empty
/// key, cost out of range, string too long).
///
/// # Safety
///
/// `guards` must be NULL or a handle from `lmsrt_guards_open` (closed ones are detected);
/// `action` and `key` valid for reads of their lengths; `out` valid for a write of one
/// `lmsrt_decision`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_limiter_check(
    guards: *const lmsrt_guards,
    action: *const c_char,
    action_len: usize,
    key: *const c_char,
    key_len: usize,
    cost: u32,
    out: *mut lmsrt_decision,
) -> lmsrt_status {
    let names = [
        name(action, action_len, "action"),
        name(key, key_len, "key"),
    ];
    // SAFETY: the caller guarantees `action` and `key` readable for their lengths and `out`
    // writable.
    unsafe {
        call(guards, names, Out::new(out, "out"), |g, [action, key]| {
            Ok(g.limiter.check_cost(action, key, cost)?.into())
        })
    }
}

/// What `lmsrt_limiter_check` with cost 1 would answer now, without consuming anything or
/// counting a refusal.
///
/// Errors and safety: as `lmsrt_limiter_check`.
///
/// # Safety
///
/// As `lmsrt_limiter_check`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_limiter_peek(
    guards: *const lmsrt_guards,
    action: *const c_char,
    action_len: usize,
    key: *const c_char,
    key_len: usize,
    out: *mut lmsrt_decision,
) -> lmsrt_status {
    let names = [
        name(action, action_len, "action"),
        name(key, key_len, "key"),
    ];
    // SAFETY: the caller guarantees `action` and `key` readable for their lengths and `out`
    // writable.
    unsafe {
        call(guards, names, Out::new(out, "out"), |g, [action, key]| {
            Ok(g.limiter.peek(action, key)?.into())
        })
    }
}

/// Forgets the state of `key` for `action` (allowance, reputation, block), for every process:
/// an administrator's unblock.
///
/// Errors: `NULL_POINTER`, `CLOSED`, `INVALID_UTF8`, `INVALID_ARGUMENT` (unknown action,
/// empty key).
///
/// # Safety
///
/// `guards` as for `lmsrt_limiter_check`; `action` and `key` valid for reads of their lengths.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_limiter_reset(
    guards: *const lmsrt_guards,
    action: *const c_char,
    action_len: usize,
    key: *const c_char,
    key_len: usize,
) -> lmsrt_status {
    let names = [
        name(action, action_len, "action"),
        name(key, key_len, "key"),
    ];
    // SAFETY: the caller guarantees `action` and `key` readable for their lengths.
    unsafe {
        call(guards, names, (), |g, [action, key]| {
            Ok(g.limiter.reset(action, key)?)
        })
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::ffi::guards::lmsrt_guards_close;
    use crate::ffi::guards::tests::{open, s};

    fn check(h: *mut lmsrt_guards, action: &str, key: &str) -> lmsrt_decision {
        let mut d = std::mem::MaybeUninit::<lmsrt_decision>::uninit();
        // SAFETY: live strings; `d` is written on success, which is asserted.
        unsafe {
            let st = lmsrt_limiter_check(
                h,
                s(action).0,
                s(action).1,
                s(key).0,
                s(key).1,
                1,
                d.as_mut_ptr(),
            );
            assert_eq!(st, lmsrt_status::Ok);
            d.assume_init()
        }
    }

    #[test]
    fn two_threads_share_one_exact_budget_through_one_handle() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = open(
            &dir,
            r#"{"limits":{"t":{"rate":50,"period_ms":86400000,"adaptive":false}}}"#,
        );
        let addr = h as usize;
        let allowed: u32 = (0..2)
            .map(|_| {
                std::thread::spawn(move || {
                    let h: *mut lmsrt_guards = std::ptr::without_provenance_mut(addr);
                    (0..200).filter(|_| check(h, "t", "k").allowed).count() as u32
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(allowed, 50);
        let d = check(h, "t", "k");
        assert!(!d.allowed && d.retry_after_ms > 0 && d.tracked);
        // SAFETY: `h` is a live local.
        assert_eq!(unsafe { lmsrt_guards_close(&mut h) }, lmsrt_status::Ok);
        assert!(h.is_null());
    }

    #[test]
    fn out_is_written_only_on_success() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = open(&dir, "");
        let sentinel = lmsrt_decision {
            retry_after_ms: 7,
            reset_after_ms: 7,
            limit: 7,
            remaining: 7,
            reputation_permille: 7,
            allowed: true,
            blocked: true,
            tracked: false,
        };
        let mut d = sentinel;
        // SAFETY: live strings and out-pointer.
        let st = unsafe {
            lmsrt_limiter_check(h, s("nope").0, s("nope").1, s("k").0, s("k").1, 1, &mut d)
        };
        assert_eq!(st, lmsrt_status::InvalidArgument, "unknown action");
        assert_eq!(d, sentinel);
        // SAFETY: NULL out is refused before anything is read.
        let st = unsafe {
            lmsrt_limiter_peek(
                h,
                s("post").0,
                s("post").1,
                s("k").0,
                s("k").1,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(st, lmsrt_status::NullPointer);
        // SAFETY: `h` is a live local.
        assert_eq!(unsafe { lmsrt_guards_close(&mut h) }, lmsrt_status::Ok);
    }
}
