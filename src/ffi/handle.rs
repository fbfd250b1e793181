//! Handles: opaque tokens that name a registered object (a store, a set of guards), so that a
//! closed (or stale, or never issued) handle is an error instead of a use-after-free.
//!
//! A `lmsrt_store *` or `lmsrt_guards *` is not the address of anything: it is a number issued
//! by this module, never reused within a process and never shared between the two kinds (a
//! store handle passed where guards are expected is `LMSRT_STATUS_CLOSED`, not a confusion).
//! Every call looks the number up and clones the object's `Arc` for the duration of the call,
//! so a close on one thread cannot free an object that another thread is using: the closed
//! object makes that call return `LMSRT_STATUS_CLOSED` (a waiting call wakes at once), and its
//! memory goes when the last in-flight call ends. Any later use of any copy of the handle fails
//! with `LMSRT_STATUS_CLOSED`. The lookup costs one uncontended read lock and a search of a
//! small ordered map, tens of nanoseconds next to a SQLite transaction or a guard decision.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

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

/// One counter for every kind of handle, so no two live objects of any kind share a value.
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// The live objects of one kind, by handle value.
pub(crate) struct Registry<T> {
    map: RwLock<BTreeMap<usize, Arc<T>>>,
    /// The message for a handle that is not (or no longer) registered.
    closed: &'static str,
}

impl<T> Registry<T> {
    /// An empty registry (const, so it can be a `static` without lazy initialisation).
    pub(crate) const fn new(closed: &'static str) -> Registry<T> {
        Registry {
            map: RwLock::new(BTreeMap::new()),
            closed,
        }
    }

    fn closed(&self) -> FfiError {
        FfiError::new(ErrorCode::Closed, self.closed)
    }

    /// Registers `value` and returns its new handle value.
    pub(crate) fn register<H>(&self, value: T) -> *mut H {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::new(value));
        std::ptr::without_provenance_mut(id)
    }

    /// The object behind `h`, for the duration of one call (`what` names it when NULL).
    #[inline]
    pub(crate) fn get<H>(&self, h: *const H, what: &str) -> FfiResult<Arc<T>> {
        if h.is_null() {
            return Err(FfiError::null(what));
        }
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&h.addr())
            .cloned()
            .ok_or_else(|| self.closed())
    }

    /// Unregisters `h` and returns its object, or `Closed` if it is not registered.
    fn take<H>(&self, h: *mut H) -> FfiResult<Arc<T>> {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let value = map.remove(&h.addr()).ok_or_else(|| self.closed())?;
        if map.is_empty() {
            // Give the map's node back when the last object closes, so a program that closes
            // everything ends with nothing allocated (leak checkers stay quiet).
            *map = BTreeMap::new();
        }
        Ok(value)
    }

    /// The close protocol of every kind of handle, for `lmsrt_<kind>_close(<kind> **slot)`:
    /// a NULL `slot` is `NULL_POINTER` (naming `what`); a NULL `*slot` is a no-op (`None`), so
    /// closing the same variable twice is harmless; otherwise `*slot` is set to NULL and the
    /// object unregistered and returned, or `CLOSED` when it is not registered (a copy of a
    /// handle closed through another variable: `*slot` is still set to NULL).
    ///
    /// # Safety
    ///
    /// `slot`, when not NULL, must be valid for reading and writing one pointer.
    pub(crate) unsafe fn close<H>(
        &self,
        slot: *mut *mut H,
        what: &str,
    ) -> FfiResult<Option<Arc<T>>> {
        if slot.is_null() {
            return Err(FfiError::null(what));
        }
        // SAFETY: `slot` is not NULL and the caller guarantees it is readable and writable.
        let h = unsafe { slot.read() };
        if h.is_null() {
            return Ok(None);
        }
        // SAFETY: as above.
        unsafe { slot.write(std::ptr::null_mut()) };
        self.take(h).map(Some)
    }
}

static STORES: Registry<EventStore> =
    Registry::new("the store handle is closed (or was never returned by lmsrt_store_open)");

/// Registers `store` and returns its new handle.
pub(crate) fn register(store: EventStore) -> *mut lmsrt_store {
    STORES.register(store)
}

/// The store behind `h`, for the duration of one call.
pub(crate) fn get(h: *const lmsrt_store) -> FfiResult<Arc<EventStore>> {
    STORES.get(h, "store")
}

/// Closes the store handle in `*slot` (see [`Registry::close`]) and returns its store.
///
/// # Safety
///
/// As [`Registry::close`].
pub(crate) unsafe fn close(slot: *mut *mut lmsrt_store) -> FfiResult<Option<Arc<EventStore>>> {
    // SAFETY: forwarded from the caller.
    unsafe { STORES.close(slot, "store") }
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
