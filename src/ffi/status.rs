//! Status codes as the C ABI declares them, and the per-thread last error.
//!
//! [`lmsrt_status`] mirrors [`ErrorCode`] value for value and name for name: the conversion below
//! is an exhaustive `match` (a new `ErrorCode` does not compile until it has a status), and a
//! unit test checks the reverse direction. The header declares it as a plain C enum so PHP's
//! FFI parser, which cannot see `#define`s, reads the constants.

use std::cell::RefCell;
use std::ffi::c_char;

use crate::error::{Error, ErrorCode};

/// The result of every fallible `lmsrt_*` function: `LMSRT_STATUS_OK` (0) or a negative,
/// stable error code (the core's `ErrorCode` table). On failure,
/// `lmsrt_last_error_message` explains it; out-parameters are written only on success.
///
/// A plain C enum (an `int`, 32 bits on every supported target) rather than a sized one: PHP's FFI
/// parser reads the constants of a plain enum, and cbindgen would wrap a sized one in C23 `#if`s.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum lmsrt_status {
    /// Success.
    Ok = 0,
    /// An argument is out of range or malformed (see the message).
    InvalidArgument = -1,
    /// The event type does not match `[a-z][a-z0-9_]{0,63}`.
    InvalidEventType = -2,
    /// The priority is not 1-4.
    InvalidPriority = -3,
    /// The channel id is not positive.
    InvalidChannel = -4,
    /// The event data is not a JSON object.
    InvalidData = -5,
    /// The event data is larger than the configured cap.
    DataTooLarge = -6,
    /// The time-to-live is outside the configured bounds.
    InvalidTtl = -7,
    /// The cursor string cannot be parsed.
    InvalidCursor = -8,
    /// The store handle has been closed (or was never opened).
    Closed = -9,
    /// The database is locked by another writer for longer than allowed; retry later.
    Busy = -10,
    /// The database failed (I/O error, full disk, corruption).
    Storage = -11,
    /// The database file was written by a newer version of this library.
    SchemaTooNew = -12,
    /// A file beside the database (shared memory, lock file) could not be used.
    Io = -13,
    /// A rate limit refused the request; retry after the advertised delay.
    RateLimited = -14,
    /// A circuit breaker is open; back off.
    CircuitOpen = -15,
    /// All connection slots of the key are taken.
    SlotsExhausted = -16,
    /// A panic was caught at the C boundary (a bug in this library).
    Panic = -17,
    /// A required pointer argument was NULL.
    NullPointer = -18,
    /// A string argument is not valid UTF-8.
    InvalidUtf8 = -19,
    /// An idempotency key was reused for a different event.
    IdempotencyConflict = -20,
    /// A page of the database file is damaged; retrying does not help. Check and salvage the
    /// store (`lmsrt_store_check`, `lmsrt_store_salvage`).
    Corrupt = -21,
    /// An internal invariant failed (a bug in this library).
    Internal = -99,
}

// The header promises 32-bit status codes.
const _: () = assert!(std::mem::size_of::<lmsrt_status>() == 4);

impl From<ErrorCode> for lmsrt_status {
    fn from(c: ErrorCode) -> lmsrt_status {
        match c {
            ErrorCode::Ok => lmsrt_status::Ok,
            ErrorCode::InvalidArgument => lmsrt_status::InvalidArgument,
            ErrorCode::InvalidEventType => lmsrt_status::InvalidEventType,
            ErrorCode::InvalidPriority => lmsrt_status::InvalidPriority,
            ErrorCode::InvalidChannel => lmsrt_status::InvalidChannel,
            ErrorCode::InvalidData => lmsrt_status::InvalidData,
            ErrorCode::DataTooLarge => lmsrt_status::DataTooLarge,
            ErrorCode::InvalidTtl => lmsrt_status::InvalidTtl,
            ErrorCode::InvalidCursor => lmsrt_status::InvalidCursor,
            ErrorCode::Closed => lmsrt_status::Closed,
            ErrorCode::Busy => lmsrt_status::Busy,
            ErrorCode::Storage => lmsrt_status::Storage,
            ErrorCode::SchemaTooNew => lmsrt_status::SchemaTooNew,
            ErrorCode::Io => lmsrt_status::Io,
            ErrorCode::RateLimited => lmsrt_status::RateLimited,
            ErrorCode::CircuitOpen => lmsrt_status::CircuitOpen,
            ErrorCode::SlotsExhausted => lmsrt_status::SlotsExhausted,
            ErrorCode::Panic => lmsrt_status::Panic,
            ErrorCode::NullPointer => lmsrt_status::NullPointer,
            ErrorCode::InvalidUtf8 => lmsrt_status::InvalidUtf8,
            ErrorCode::IdempotencyConflict => lmsrt_status::IdempotencyConflict,
            ErrorCode::Corrupt => lmsrt_status::Corrupt,
            ErrorCode::Internal => lmsrt_status::Internal,
        }
    }
}

/// A failure at the boundary: a status and the message that explains it.
///
/// The core's [`Error`] converts into it; the boundary adds the failures only it can see (NULL
/// pointers, invalid UTF-8, malformed JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FfiError {
    pub(crate) status: lmsrt_status,
    pub(crate) message: String,
}

impl FfiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> FfiError {
        FfiError {
            status: code.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> FfiError {
        FfiError::new(ErrorCode::InvalidArgument, message)
    }

    pub(crate) fn null(what: &str) -> FfiError {
        FfiError::new(ErrorCode::NullPointer, format!("{what} is NULL"))
    }
}

impl From<Error> for FfiError {
    fn from(e: Error) -> FfiError {
        FfiError::new(e.code(), e.to_string())
    }
}

/// Result type of the boundary's helpers.
pub(crate) type FfiResult<T> = Result<T, FfiError>;

thread_local! {
    /// The message of the latest failure on this thread; empty after a success.
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records `message` as this thread's last error.
pub(crate) fn set_last_error(message: &str) {
    LAST_ERROR.with(|m| {
        let mut m = m.borrow_mut();
        m.clear();
        m.push_str(message);
    });
}

/// This thread's last error (for tests of the entry points).
#[cfg(test)]
pub(crate) fn last_error_string() -> String {
    LAST_ERROR.with(|m| m.borrow().clone())
}

/// Clears this thread's last error (after a success).
pub(crate) fn clear_last_error() {
    LAST_ERROR.with(|m| m.borrow_mut().clear());
}

/// The largest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn utf8_prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Copies the calling thread's last error message into `buf` and returns the message's full
/// length in bytes (without the terminating NUL); 0 when the latest call on this thread
/// succeeded.
///
/// At most `len - 1` bytes are copied, cut on a UTF-8 character boundary, followed by a NUL, so
/// a buffer of `return value + 1` bytes holds the whole message. `*out_n` (when `out_n` is not
/// NULL) receives the number of bytes copied, without the NUL. With `buf` NULL or `len` 0
/// nothing is copied (useful to ask for the length).
///
/// The message belongs to the calling thread: each thread sees only its own failures. It stays
/// until the next `lmsrt_*` call on the same thread that can fail; this function does not clear
/// it. No memory is allocated and no ownership crosses the boundary.
///
/// # Safety
///
/// `buf`, when not NULL, must be valid for writes of `len` bytes; `out_n`, when not NULL, must be
/// valid for a write of one `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_last_error_message(
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> usize {
    let copy = |m: &str| -> (usize, usize) {
        if buf.is_null() || len == 0 {
            return (m.len(), 0);
        }
        let part = utf8_prefix(m, len - 1);
        // SAFETY: the caller guarantees `buf` is valid for `len` bytes; `part.len() + 1 <= len`,
        // and `part` is our own string, so the regions do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(part.as_ptr().cast::<c_char>(), buf, part.len());
            *buf.add(part.len()) = 0;
        }
        (m.len(), part.len())
    };
    // `try_with` fails only while the thread is being torn down; report no message then.
    let (total, copied) = LAST_ERROR
        .try_with(|m| match m.try_borrow() {
            Ok(m) => copy(&m),
            Err(_) => copy(""),
        })
        .unwrap_or((0, 0));
    if !out_n.is_null() {
        // SAFETY: the caller guarantees `out_n`, when not NULL, is valid for a write.
        unsafe { out_n.write(copied) };
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every status, in table order.
    const ALL: [lmsrt_status; 23] = [
        lmsrt_status::Ok,
        lmsrt_status::InvalidArgument,
        lmsrt_status::InvalidEventType,
        lmsrt_status::InvalidPriority,
        lmsrt_status::InvalidChannel,
        lmsrt_status::InvalidData,
        lmsrt_status::DataTooLarge,
        lmsrt_status::InvalidTtl,
        lmsrt_status::InvalidCursor,
        lmsrt_status::Closed,
        lmsrt_status::Busy,
        lmsrt_status::Storage,
        lmsrt_status::SchemaTooNew,
        lmsrt_status::Io,
        lmsrt_status::RateLimited,
        lmsrt_status::CircuitOpen,
        lmsrt_status::SlotsExhausted,
        lmsrt_status::Panic,
        lmsrt_status::NullPointer,
        lmsrt_status::InvalidUtf8,
        lmsrt_status::IdempotencyConflict,
        lmsrt_status::Corrupt,
        lmsrt_status::Internal,
    ];

    #[test]
    fn every_error_code_has_a_status_of_the_same_value_and_name() {
        let codes: Vec<ErrorCode> = ErrorCode::ALL
            .iter()
            .copied()
            .chain([ErrorCode::Internal])
            .collect();
        for c in &codes {
            let s = lmsrt_status::from(*c);
            assert_eq!(s as i32, c.as_i32(), "{c:?}");
            assert_eq!(format!("{s:?}"), format!("{c:?}"));
            assert!(ALL.contains(&s));
        }
        assert_eq!(codes.len(), ALL.len());
    }

    #[test]
    fn every_status_is_an_error_code() {
        for s in ALL {
            let c =
                ErrorCode::from_i32(s as i32).unwrap_or_else(|| panic!("{s:?} has no ErrorCode"));
            assert_eq!(format!("{s:?}"), format!("{c:?}"));
        }
    }

    #[test]
    fn last_error_copies_truncates_on_char_boundaries_and_reports_length() {
        set_last_error("héllo");
        let mut buf = [0x7f as c_char; 4];
        let mut n = 99usize;
        // SAFETY: `buf` and `n` are live locals of the stated sizes.
        let total = unsafe { lmsrt_last_error_message(buf.as_mut_ptr(), buf.len(), &mut n) };
        assert_eq!(total, "héllo".len());
        // 'h' (1 byte) and 'é' (2 bytes) fill the 3 bytes before the NUL.
        assert_eq!(n, 3);
        assert_eq!(buf[3], 0);
        let mut small = [0 as c_char; 3];
        // SAFETY: as above.
        unsafe { lmsrt_last_error_message(small.as_mut_ptr(), small.len(), &mut n) };
        assert_eq!(
            n, 1,
            "'é' does not fit in the 2 bytes left, so only 'h' is copied"
        );
        // SAFETY: NULL buffer asks for the length only.
        let total = unsafe { lmsrt_last_error_message(std::ptr::null_mut(), 0, &mut n) };
        assert_eq!((total, n), (6, 0));
        clear_last_error();
        // SAFETY: as above.
        let total =
            unsafe { lmsrt_last_error_message(buf.as_mut_ptr(), buf.len(), std::ptr::null_mut()) };
        assert_eq!(total, 0);
        assert_eq!(buf[0], 0);
    }
}
