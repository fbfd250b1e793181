//! The panic boundary: no panic unwinds into C.
//!
//! Every exported function runs its body inside [`ffi_boundary!`]. A panic is caught, recorded
//! as the thread's last error and reported as `LMSRT_STATUS_PANIC`. It does not abort: since
//! Rust 1.81 a panic escaping an `extern "C"` function aborts the process, which would take a
//! whole PHP-FPM worker (and every request it serves) down with one bug.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::status::{FfiResult, clear_last_error, lmsrt_status, set_last_error};

/// Runs `body`, turning its result (or its panic) into a status and the thread's last error.
///
/// The store types are unwind safe in the sense that matters here: their locks recover from
/// poisoning and a failed call leaves nothing half-done that a later call could observe, so
/// asserting unwind safety is sound.
pub(crate) fn boundary(body: impl FnOnce() -> FfiResult<()>) -> lmsrt_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            clear_last_error();
            lmsrt_status::Ok
        }
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status
        }
        Err(payload) => {
            set_last_error(&format!(
                "panic in lms_realtime (a bug; please report it): {}",
                panic_message(&*payload)
            ));
            lmsrt_status::Panic
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

/// Wraps the body of an exported function: `ffi_boundary! { ...; Ok(()) }` evaluates to an
/// [`lmsrt_status`]. The body may use `?` on
/// [`FfiResult`] and on the core's `Result`.
macro_rules! ffi_boundary {
    ($($body:tt)*) => {
        $crate::ffi::panic::boundary(move || -> $crate::ffi::status::FfiResult<()> { $($body)* })
    };
}
pub(crate) use ffi_boundary;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::status::{FfiError, lmsrt_last_error_message};

    fn last_error() -> String {
        let mut buf = vec![0u8; 512];
        let mut n = 0usize;
        // SAFETY: `buf` is valid for 512 bytes, `n` for one write.
        unsafe { lmsrt_last_error_message(buf.as_mut_ptr().cast(), buf.len(), &mut n) };
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let s = ffi_boundary! {
            panic!("boom {}", 42);
        };
        assert_eq!(s, lmsrt_status::Panic);
        assert!(last_error().contains("boom 42"), "{}", last_error());
        let s = ffi_boundary! {
            std::panic::panic_any(7u8);
        };
        assert_eq!(s, lmsrt_status::Panic);
        assert!(last_error().contains("no message"));
    }

    #[test]
    fn errors_set_and_successes_clear_the_last_error() {
        let s = ffi_boundary! {
            Err(FfiError::invalid("nope"))
        };
        assert_eq!(s, lmsrt_status::InvalidArgument);
        assert_eq!(last_error(), "nope");
        let s = ffi_boundary! {
            Err::<(), _>(crate::Error::Closed)?;
            Ok(())
        };
        assert_eq!(s, lmsrt_status::Closed);
        assert_eq!(last_error(), "the store is closed");
        assert_eq!(ffi_boundary! { Ok(()) }, lmsrt_status::Ok);
        assert_eq!(last_error(), "");
    }
}
