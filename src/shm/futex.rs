//! Futex waits on a word of a shared mapping, woken from any process.
//!
//! The kernel keys a futex on a shared file mapping by inode and offset, so a wake in one
//! process reaches sleepers in every other. On platforms without futexes, waits fall back to
//! short sleeps (and wakes do nothing), which callers survive because they re-check their
//! condition after every return.

use std::sync::atomic::AtomicU32;
#[cfg(not(target_os = "linux"))]
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Sleeps while `word` holds `expected`, for at most `timeout`, woken only by the wakes whose
/// bits meet `bits` (nonzero; `u32::MAX` for every wake): a waker that knows whom it wants to
/// wake wakes only them, not every sleeper on the word. Returns early when so woken by
/// [`futex_wake_bits`] (from any process mapping the same file) or if the word already differs.
/// Spurious returns are possible; callers re-check their condition.
pub(crate) fn futex_wait_bits(word: &AtomicU32, expected: u32, bits: u32, timeout: Duration) {
    #[cfg(target_os = "linux")]
    {
        // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline.
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let nanos = now.tv_nsec as u64 + u64::from(timeout.subsec_nanos());
        let secs = (timeout.as_secs().min(i32::MAX as u64) + nanos / 1_000_000_000) as libc::time_t;
        let deadline = libc::timespec {
            tv_sec: now.tv_sec.saturating_add(secs),
            tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `word` is a valid, aligned u32 for the duration of the call; not the private
        // variant, because the mapping is shared between processes.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT_BITSET,
                expected,
                &deadline as *const libc::timespec,
                std::ptr::null::<u32>(),
                bits.max(1),
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = bits;
        if word.load(Ordering::Acquire) == expected {
            std::thread::sleep(timeout.min(Duration::from_millis(1)));
        }
    }
}

/// Wakes the sleepers in [`futex_wait_bits`] on `word` whose bits meet `bits`, in every process.
pub(crate) fn futex_wake_bits(word: &AtomicU32, bits: u32) {
    #[cfg(target_os = "linux")]
    // SAFETY: `word` is a valid, aligned u32; waking has no memory effects.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE_BITSET,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            bits.max(1),
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (word, bits);
}
