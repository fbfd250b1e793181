//! The connection slots' C class: `lmsrt_slot_*`, and the lease they hand out, `lmsrt_lease`.

use std::ffi::c_char;

use super::{call, lmsrt_guards, lookup, name};
use crate::error::Error;
use crate::ffi::args::out_arg;
use crate::ffi::call::{Out, with_outs};
use crate::ffi::status::lmsrt_status;
use crate::guards::Lease;

/// A connection slot, as `lmsrt_slot_acquire` hands it out. Keep it unchanged to release, renew
/// or check it. Those calls use only `record`, `index` and `token` (and `renew` updates `token`
/// and `expires_at_ms`); they never read the `bool` fields, so a lease may be stored as those
/// three numbers and rebuilt with the rest zeroed. A lease of garbage is simply not held.
///
/// Plain data: copy it freely. It names a slot in the shared table, not memory, so it stays
/// meaningful after the handle is closed (any handle on the same database can release it).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct lmsrt_lease {
    /// Hash of the key the slot belongs to.
    pub key_hash: u64,
    /// Identifies this lease exactly (0 when nothing was acquired).
    pub token: u64,
    /// When the lease expires unless renewed (ms since the Unix epoch; one-second resolution).
    pub expires_at_ms: i64,
    /// The record in the shared table.
    pub record: u32,
    /// The slot within the record (0-based).
    pub index: u32,
    /// Whether a slot was acquired. False when every slot of the key is taken (and the policy
    /// is `refuse`) or the table has no room: then the other fields are 0.
    pub acquired: bool,
    /// The lease took over one whose holder was dead or, with `evict_oldest`, the oldest one.
    pub reclaimed: bool,
}

impl From<Lease> for lmsrt_lease {
    fn from(l: Lease) -> lmsrt_lease {
        lmsrt_lease {
            key_hash: l.key_hash,
            token: l.token,
            expires_at_ms: l.expires_at_ms,
            record: l.record,
            index: l.index,
            acquired: true,
            reclaimed: l.reclaimed,
        }
    }
}

impl lmsrt_lease {
    const NONE: lmsrt_lease = lmsrt_lease {
        key_hash: 0,
        token: 0,
        expires_at_ms: 0,
        record: 0,
        index: 0,
        acquired: false,
        reclaimed: false,
    };
}

/// Reads the numbers of a caller's lease, never its `bool` fields (a C caller may have left
/// any byte there, which Rust must not read as a `bool`).
///
/// # Safety
///
/// `lease` is not NULL and valid for reads of one `lmsrt_lease`.
unsafe fn read_lease(lease: *const lmsrt_lease) -> Lease {
    // SAFETY: the caller guarantees `lease` is readable; every field read is an integer.
    unsafe {
        Lease {
            key_hash: std::ptr::addr_of!((*lease).key_hash).read(),
            record: std::ptr::addr_of!((*lease).record).read(),
            index: std::ptr::addr_of!((*lease).index).read(),
            token: std::ptr::addr_of!((*lease).token).read(),
            expires_at_ms: std::ptr::addr_of!((*lease).expires_at_ms).read(),
            reclaimed: false,
        }
    }
}

/// Takes one of `key`'s connection slots (1 to 1024 bytes, e.g. a user id) for the calling
/// process, for the configured `lease_ms`, and writes the lease to `*out`.
///
/// When every slot of the key is held (and `on_full` is `refuse`), or the shared table has no
/// room for a new key, the status is still `LMSRT_STATUS_OK` and `out->acquired` is false (the
/// other fields 0): a refusal is not an error. With `evict_oldest` the lease that expires first
/// is taken over (`out->reclaimed`), and its holder learns it from `lmsrt_slot_is_held` or
/// `lmsrt_slot_renew`. Leases of dead processes are reclaimed (with `check_pid`), and every
/// lease frees itself when it expires, so a crashed holder cannot keep a slot.
///
/// Errors: `NULL_POINTER`, `CLOSED`, `INVALID_UTF8`, `INVALID_ARGUMENT` (empty or too long key).
///
/// # Safety
///
/// `guards` must be NULL or a handle from `lmsrt_guards_open`; `key` valid for reads of
/// `key_len` bytes; `out` valid for a write of one `lmsrt_lease`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_slot_acquire(
    guards: *const lmsrt_guards,
    key: *const c_char,
    key_len: usize,
    out: *mut lmsrt_lease,
) -> lmsrt_status {
    let names = [name(key, key_len, "key")];
    // SAFETY: the caller guarantees `key` readable for `key_len` bytes and `out` writable.
    unsafe {
        call(guards, names, Out::new(out, "out"), |g, [key]| {
            match g.slots.acquire(key) {
                Ok(l) => Ok(l.into()),
                Err(Error::SlotsExhausted { .. }) => Ok(lmsrt_lease::NONE),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// Gives the slot of `*lease` back and writes to `*out_held` whether the lease was still held
/// (false when it had expired and been reused, was evicted, was released before, or was never
/// acquired). Either way the slot is no longer this lease's.
///
/// Errors: `NULL_POINTER`, `CLOSED`.
///
/// # Safety
///
/// `guards` must be NULL or a handle from `lmsrt_guards_open`; `lease` valid for reads of one
/// `lmsrt_lease`; `out_held` valid for a write of one `bool`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_slot_release(
    guards: *const lmsrt_guards,
    lease: *const lmsrt_lease,
    out_held: *mut bool,
) -> lmsrt_status {
    // The lease is checked before the handle, as every input pointer is.
    let body = || {
        let lease = out_arg(lease.cast_mut(), "lease")?;
        let g = lookup(guards)?;
        // SAFETY: `lease` is not NULL and the caller guarantees it is readable.
        Ok(g.slots.release(&unsafe { read_lease(lease) }))
    };
    // SAFETY: the caller guarantees `out_held` writable.
    unsafe { with_outs(Out::new(out_held, "out_held"), body) }
}

/// Extends a held lease by `lease_ms` from now. On success `*out_renewed` is true and
/// `lease->token` and `lease->expires_at_ms` are updated (keep the updated lease); when the
/// lease was lost (expired and reused, evicted, released) `*out_renewed` is false and `*lease`
/// is left unchanged: end the long-poll it covered.
///
/// Errors: `NULL_POINTER`, `CLOSED`.
///
/// # Safety
///
/// `guards` must be NULL or a handle from `lmsrt_guards_open`; `lease` valid for reads and
/// writes of one `lmsrt_lease`; `out_renewed` valid for a write of one `bool`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_slot_renew(
    guards: *const lmsrt_guards,
    lease: *mut lmsrt_lease,
    out_renewed: *mut bool,
) -> lmsrt_status {
    let body = || {
        let lease = out_arg(lease, "lease")?;
        let g = lookup(guards)?;
        // SAFETY: `lease` is not NULL and the caller guarantees it is readable.
        let mut l = unsafe { read_lease(lease) };
        let renewed = g.slots.renew(&mut l);
        if renewed {
            // SAFETY: `lease` is not NULL and the caller guarantees it is writable; only
            // integer fields are written. Nothing after this can fail, so the lease is
            // updated only when the call succeeds.
            unsafe {
                std::ptr::addr_of_mut!((*lease).token).write(l.token);
                std::ptr::addr_of_mut!((*lease).expires_at_ms).write(l.expires_at_ms);
            }
        }
        Ok(renewed)
    };
    // SAFETY: the caller guarantees `out_renewed` writable.
    unsafe { with_outs(Out::new(out_renewed, "out_renewed"), body) }
}

/// Writes to `*out_held` whether `*lease` is still held (not released, expired or evicted).
///
/// Errors: `NULL_POINTER`, `CLOSED`.
///
/// # Safety
///
/// As `lmsrt_slot_release`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_slot_is_held(
    guards: *const lmsrt_guards,
    lease: *const lmsrt_lease,
    out_held: *mut bool,
) -> lmsrt_status {
    let body = || {
        let lease = out_arg(lease.cast_mut(), "lease")?;
        let g = lookup(guards)?;
        // SAFETY: `lease` is not NULL and the caller guarantees it is readable.
        Ok(g.slots.is_held(&unsafe { read_lease(lease) }))
    };
    // SAFETY: the caller guarantees `out_held` writable.
    unsafe { with_outs(Out::new(out_held, "out_held"), body) }
}

/// Writes to `*out_count` how many of `key`'s slots are held now, by any process.
///
/// Errors: `NULL_POINTER`, `CLOSED`, `INVALID_UTF8`, `INVALID_ARGUMENT` (empty or too long key).
///
/// # Safety
///
/// `guards` must be NULL or a handle from `lmsrt_guards_open`; `key` valid for reads of
/// `key_len` bytes; `out_count` valid for a write of one `uint32_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_slot_count(
    guards: *const lmsrt_guards,
    key: *const c_char,
    key_len: usize,
    out_count: *mut u32,
) -> lmsrt_status {
    let names = [name(key, key_len, "key")];
    // SAFETY: the caller guarantees `key` readable for `key_len` bytes and `out_count` writable.
    unsafe {
        call(
            guards,
            names,
            Out::new(out_count, "out_count"),
            |g, [key]| Ok(g.slots.count(key)?),
        )
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::ffi::guards::lmsrt_guards_close;
    use crate::ffi::guards::tests::{open, s};

    #[test]
    fn leases_round_trip_and_bool_bytes_are_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = open(&dir, r#"{"slots":{"max":1}}"#);
        let mut lease = lmsrt_lease::NONE;
        let mut other = lmsrt_lease::NONE;
        let mut held = false;
        // SAFETY: live strings and out-pointers.
        unsafe {
            assert_eq!(
                lmsrt_slot_acquire(h, s("u").0, s("u").1, &mut lease),
                lmsrt_status::Ok
            );
            assert!(lease.acquired && lease.token != 0);
            assert_eq!(
                lmsrt_slot_acquire(h, s("u").0, s("u").1, &mut other),
                lmsrt_status::Ok
            );
            assert_eq!(other, lmsrt_lease::NONE, "full: refused, not an error");
            // A lease rebuilt by C from its numbers alone, with garbage in the bool bytes
            // (never read as bools), still releases.
            let mut copy = std::mem::MaybeUninit::<lmsrt_lease>::zeroed();
            let p = copy.as_mut_ptr();
            std::ptr::addr_of_mut!((*p).record).write(lease.record);
            std::ptr::addr_of_mut!((*p).index).write(lease.index);
            std::ptr::addr_of_mut!((*p).token).write(lease.token);
            std::ptr::addr_of_mut!((*p).acquired).cast::<u8>().write(7);
            std::ptr::addr_of_mut!((*p).reclaimed)
                .cast::<u8>()
                .write(0xff);
            assert_eq!(
                lmsrt_slot_release(h, copy.as_ptr(), &mut held),
                lmsrt_status::Ok
            );
            assert!(held);
            assert_eq!(lmsrt_slot_release(h, &lease, &mut held), lmsrt_status::Ok);
            assert!(!held, "released twice");
            assert_eq!(lmsrt_slot_release(h, &other, &mut held), lmsrt_status::Ok);
            assert!(!held, "a refused lease holds nothing");
            assert_eq!(
                lmsrt_slot_release(h, std::ptr::null(), &mut held),
                lmsrt_status::NullPointer
            );
            assert_eq!(lmsrt_guards_close(&mut h), lmsrt_status::Ok);
        }
    }
}
