//! The id sequence and expiry: `lmsrt_store_advance_ids` (moving from another backend) and
//! `lmsrt_store_purge_expired`.

use super::call;
use crate::ffi::call::Out;
use crate::ffi::handle::lmsrt_store;
use crate::ffi::status::lmsrt_status;

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
    // SAFETY: the caller guarantees `out_head` writable.
    unsafe {
        call(store, Out::new(out_head, "out_head"), |store| {
            Ok(store.advance_ids(past)?)
        })
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
    let body = |store: &crate::store::EventStore| {
        let max = usize::try_from(max_rows).unwrap_or(usize::MAX);
        Ok(store.purge_expired(max)? as u64)
    };
    // SAFETY: the caller guarantees `out_deleted` writable.
    unsafe { call(store, Out::new(out_deleted, "out_deleted"), body) }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::ffi::store::lmsrt_store_close;
    use crate::ffi::store::tests::open;

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
}
