//! The shape every entry point with out-parameters shares, after rustls-ffi: out-parameters
//! checked for NULL first, written last and only on success, all inside the panic boundary.
//! The store's and the guards' per-handle helpers (`store::call`, `guards::call`) build on
//! [`with_outs`]; the calls without a handle use it directly.

use super::args::out_arg;
use super::panic::ffi_boundary;
use super::status::{FfiResult, lmsrt_status};

/// An out-parameter of an entry point: where a result goes, and its name for the NULL error.
pub(crate) struct Out<T> {
    ptr: *mut T,
    what: &'static str,
}

impl<T> Out<T> {
    /// The out-parameter `ptr`, called `what` in messages.
    pub(crate) fn new(ptr: *mut T, what: &'static str) -> Out<T> {
        Out { ptr, what }
    }
}

/// The out-parameters of one entry point, as [`with_outs`] checks and writes them: none (`()`),
/// one ([`Out`]) or two (a pair, written together).
pub(crate) trait OutParams {
    /// What the call produces for them.
    type Value;
    /// Fails with `NULL_POINTER` naming the first NULL one.
    fn check(&self) -> FfiResult<()>;
    /// Writes `value`.
    ///
    /// # Safety
    ///
    /// [`check`](OutParams::check) passed, and each pointer is valid for a write of its type.
    unsafe fn write(self, value: Self::Value);
}

impl OutParams for () {
    type Value = ();
    fn check(&self) -> FfiResult<()> {
        Ok(())
    }
    unsafe fn write(self, (): ()) {}
}

impl<T> OutParams for Out<T> {
    type Value = T;
    fn check(&self) -> FfiResult<()> {
        out_arg(self.ptr, self.what).map(drop)
    }
    unsafe fn write(self, value: T) {
        // SAFETY: not NULL (`check` passed) and writable (this function's contract).
        unsafe { self.ptr.write(value) }
    }
}

impl<A, B> OutParams for (Out<A>, Out<B>) {
    type Value = (A, B);
    fn check(&self) -> FfiResult<()> {
        self.0.check()?;
        self.1.check()
    }
    unsafe fn write(self, (a, b): (A, B)) {
        // SAFETY: forwarded from the caller, for each of the two.
        unsafe {
            self.0.write(a);
            self.1.write(b);
        }
    }
}

/// The shape every entry point with out-parameters shares, in rustls-ffi's order: inside the
/// panic boundary, `outs` are checked for NULL before anything happens (so nothing is done whose
/// result has nowhere to go), `body` runs, and its value is written to `outs` last, only when it
/// succeeded: on failure the caller's variables are untouched.
///
/// # Safety
///
/// Each out-parameter, when not NULL, must be valid for a write of its type.
pub(crate) unsafe fn with_outs<O: OutParams>(
    outs: O,
    body: impl FnOnce() -> FfiResult<O::Value>,
) -> lmsrt_status {
    ffi_boundary! {
        outs.check()?;
        let value = body()?;
        // SAFETY: checked above; writable by this function's contract.
        unsafe { outs.write(value) };
        Ok(())
    }
}
