//! A lease word (see the module docs): its packing, its expiry, and whether its holder is
//! still alive.

use std::sync::atomic::{AtomicU32, Ordering};

/// Field widths of a lease word (see [`pack`]).
pub(super) const PID_BITS: u32 = 22;
pub(super) const PID_MASK: u64 = (1 << PID_BITS) - 1;
pub(super) const GEN_MASK: u64 = (1 << 10) - 1;

/// Per-process generation counter, so two leases of one process never share a word value.
static GENERATION: AtomicU32 = AtomicU32::new(0);

/// The next generation of this process's lease words.
pub(super) fn next_generation() -> u64 {
    GENERATION.fetch_add(1, Ordering::Relaxed) as u64 & GEN_MASK
}

/// A lease word: `pid(22) · generation(10) · expiry(32 bits, Unix seconds)`; pid 0 is a
/// hand-over lock.
pub(super) fn pack(pid: u64, generation: u64, expires_s: u64) -> u64 {
    (pid << 42) | (generation << 32) | (expires_s & 0xFFFF_FFFF)
}

/// The holder of a lease word (0 for a lock).
pub(super) fn pid_of(w: u64) -> u64 {
    w >> 42
}

/// When a lease word expires, in ms since the Unix epoch.
pub(super) fn expiry_ms(w: u64) -> u64 {
    (w & 0xFFFF_FFFF) * 1000
}

/// Held and not expired.
pub(super) fn is_live(w: u64, now: u64) -> bool {
    w != 0 && expiry_ms(w) > now
}

/// Free to take: never held, released, or expired.
pub(super) fn is_free(w: u64, now: u64) -> bool {
    !is_live(w, now)
}

/// Whether a process exists (`kill(pid, 0)` is anything but `ESRCH`).
pub(super) fn pid_alive(pid: u64) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: signal 0 performs only the existence and permission checks; no signal is
        // sent. `pid` is positive (at most 2^22), so it never names a process group.
        let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}
