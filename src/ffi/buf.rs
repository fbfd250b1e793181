//! `lmsrt_buf`: bytes the library allocates and hands to the caller, freed only by
//! `lmsrt_buf_free`.

use std::ffi::c_char;

use super::status::{FfiError, FfiResult};
use crate::error::ErrorCode;

/// Bytes owned by the caller after a successful call (a JSON document or a cursor string).
///
/// `ptr` points to `len` bytes of UTF-8 followed by a NUL that `len` does not count, so C code
/// may use `ptr` as a string. An empty buffer is `{NULL, 0}`.
///
/// Ownership: the buffer belongs to the caller, who must release it exactly once with
/// `lmsrt_buf_free` (never libc `free`: the library's allocator made it). It does not refer to
/// the store and stays valid after the store is closed.
///
/// Thread safety: a buffer is plain memory; it may be moved to and freed on another thread, but
/// must not be freed while another thread reads it.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug)]
pub struct lmsrt_buf {
    /// The bytes (NUL-terminated), or NULL when empty.
    pub ptr: *mut c_char,
    /// How many bytes, not counting the terminating NUL.
    pub len: usize,
}

impl lmsrt_buf {
    /// The empty buffer, `{NULL, 0}`.
    pub const EMPTY: lmsrt_buf = lmsrt_buf {
        ptr: std::ptr::null_mut(),
        len: 0,
    };

    /// Hands `value` to the caller as a JSON document.
    pub(crate) fn json(value: &impl serde::Serialize) -> FfiResult<lmsrt_buf> {
        serde_json::to_vec(value)
            .map(lmsrt_buf::from_vec)
            .map_err(|e| FfiError::new(ErrorCode::Internal, format!("serializing the result: {e}")))
    }

    /// Hands `bytes` to the caller, NUL-terminated.
    pub(crate) fn from_vec(mut bytes: Vec<u8>) -> lmsrt_buf {
        let len = bytes.len();
        bytes.push(0);
        let boxed: Box<[u8]> = bytes.into_boxed_slice();
        lmsrt_buf {
            ptr: Box::into_raw(boxed).cast::<c_char>(),
            len,
        }
    }
}

/// Frees the bytes of `*buf` and resets it to `{NULL, 0}`, so freeing the same variable twice
/// is harmless. NULL, or a buffer whose `ptr` is NULL, is a no-op.
///
/// Infallible and thread-safe (for distinct buffers).
///
/// # Safety
///
/// `buf`, when not NULL, must point to an `lmsrt_buf` that is either `{NULL, 0}` or was filled
/// by an `lmsrt_*` function and not changed since (a copy of it already freed through another
/// variable may not be freed again).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_buf_free(buf: *mut lmsrt_buf) {
    if buf.is_null() {
        return;
    }
    // SAFETY: the caller guarantees `buf` points to a valid `lmsrt_buf`.
    let b = unsafe { &mut *buf };
    if b.ptr.is_null() {
        b.len = 0;
        return;
    }
    let slice = std::ptr::slice_from_raw_parts_mut(b.ptr.cast::<u8>(), b.len + 1);
    // SAFETY: `ptr` and `len + 1` are exactly what `from_vec` produced from a boxed slice
    // (the caller guarantees the buffer is unchanged and not yet freed).
    drop(unsafe { Box::from_raw(slice) });
    *b = lmsrt_buf::EMPTY;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_nul_terminated_and_free_resets_them() {
        let mut b = lmsrt_buf::from_vec(b"abc".to_vec());
        assert_eq!(b.len, 3);
        // SAFETY: `from_vec` allocated `len + 1` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(b.ptr.cast::<u8>(), 4) };
        assert_eq!(bytes, b"abc\0");
        // SAFETY: `b` came from `from_vec`.
        unsafe { lmsrt_buf_free(&mut b) };
        assert!(b.ptr.is_null() && b.len == 0);
        // SAFETY: freeing an empty buffer and NULL are no-ops.
        unsafe {
            lmsrt_buf_free(&mut b);
            lmsrt_buf_free(std::ptr::null_mut());
        }
        let mut e = lmsrt_buf::from_vec(Vec::new());
        assert!(!e.ptr.is_null() && e.len == 0);
        // SAFETY: `e` came from `from_vec`.
        unsafe { lmsrt_buf_free(&mut e) };
    }
}
