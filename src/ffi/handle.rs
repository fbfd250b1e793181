//! Store handles: opaque tokens that name a registered store, so that a closed (or stale, or
//! never issued) handle is an error instead of a use-after-free.
//!
//! A `lmsrt_store *` is not the address of anything: it is a number issued by this registry,
//! never reused within a process. Every call looks the number up and clones the store's `Arc`
//! for the duration of the call, so `lmsrt_store_close` on one thread cannot free a store that
//! another thread is using: the closed store makes that call return `LMSRT_STATUS_CLOSED` (a
//! waiting call wakes at once), and its memory goes when the last in-flight call ends. Any later
//! use of any copy of the handle fails with `LMSRT_STATUS_CLOSED`. The lookup costs one
//! uncontended read lock and a hash probe, tens of nanoseconds next to a SQLite transaction.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

use super::status::{FfiError, FfiResult};
use crate::error::ErrorCode;
use crate::store::EventStore;

/// An open event store. Opaque: made by `lmsrt_store_open`, released by `lmsrt_store_close`.
///
/// Thread safety: a handle may be shared by any number of threads, which may call any function
/// on it at the same time (appends from several threads share one commit). Closing it while
/// other threads use it is safe: their calls fail with `LMSRT_STATUS_CLOSED` (waits return at
/// once). After close, every copy of the handle is invalid and every call with one fails with
/// `LMSRT_STATUS_CLOSED`; handle values are never reused within a process.
#[allow(non_camel_case_types)]
pub struct lmsrt_store {
    _private: [u8; 0],
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);
static STORES: LazyLock<RwLock<HashMap<usize, Arc<EventStore>>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// Registers `store` and returns its new handle.
pub(crate) fn register(store: EventStore) -> *mut lmsrt_store {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    STORES
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, Arc::new(store));
    std::ptr::without_provenance_mut(id)
}

fn closed() -> FfiError {
    FfiError::new(
        ErrorCode::Closed,
        "the store handle is closed (or was never returned by lmsrt_store_open)",
    )
}

/// The store behind `h`, for the duration of one call.
pub(crate) fn get(h: *const lmsrt_store) -> FfiResult<Arc<EventStore>> {
    if h.is_null() {
        return Err(FfiError::null("store"));
    }
    STORES
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&h.addr())
        .cloned()
        .ok_or_else(closed)
}

/// Unregisters `h` and returns its store, or `Closed` if it is not registered.
pub(crate) fn take(h: *mut lmsrt_store) -> FfiResult<Arc<EventStore>> {
    let mut stores = STORES.write().unwrap_or_else(|p| p.into_inner());
    let store = stores.remove(&h.addr()).ok_or_else(closed)?;
    if stores.is_empty() {
        // Give the table back when the last store closes, so a program that closes everything
        // ends with nothing allocated (leak checkers stay quiet).
        stores.shrink_to_fit();
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_null_handles_are_errors() {
        let e = get(std::ptr::null()).err().unwrap();
        assert_eq!(e.status, crate::ffi::status::lmsrt_status::NullPointer);
        let bogus: *const lmsrt_store = std::ptr::without_provenance(usize::MAX - 3);
        let e = get(bogus).err().unwrap();
        assert_eq!(e.status, crate::ffi::status::lmsrt_status::Closed);
    }
}
