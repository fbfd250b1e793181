//! The guards' entry points: `lmsrt_guards_*`, `lmsrt_limiter_*`, `lmsrt_breaker_*`,
//! `lmsrt_slot_*`, `lmsrt_rollout_cohort` and `lmsrt_metrics_*`.
//!
//! Conventions are the store's (see `store.rs`), with one addition for speed: the decisions a
//! PHP worker makes on every request (rate limits, breakers, slots) come back as plain C
//! structs through out-parameters, not JSON, so a decision costs well under a microsecond of
//! library time. A refusal is an answer, not an error: those calls return `LMSRT_STATUS_OK`
//! with `allowed` (or `acquired`) false. Only bad input, a closed handle and I/O failures are
//! error statuses.

use std::ffi::c_char;
use std::sync::Arc;

use serde::Deserialize;

use super::args::{
    MAX_CONFIG_BYTES, MAX_PATH_BYTES, MAX_REQUEST_BYTES, MAX_SHORT_BYTES, opt_str_arg, out_arg,
    str_arg, too_long,
};
use super::buf::lmsrt_buf;
use super::guards_config::{GuardsConfig, parse_guards_config};
use super::handle::Registry;
use super::panic::ffi_boundary;
use super::status::{FfiError, FfiResult, lmsrt_status};
use crate::error::{Error, ErrorCode};
use crate::guards::{
    BreakerState, BreakerStatus, Breakers, ClientMode, Cohort, Decision, Lease, RateLimiter,
    Rollout, Slots,
};
use crate::metrics::{Counter, Gauge, Histogram, Metrics};

/// The shared guards of one database: rate limiter, circuit breakers, connection slots and
/// metrics. Opaque: made by `lmsrt_guards_open`, released by `lmsrt_guards_close`.
///
/// Thread safety: a handle may be shared by any number of threads, which may call any function
/// on it at the same time (no call blocks or takes a lock held across processes). Closing it
/// while other threads use it is safe: their calls finish or fail with `LMSRT_STATUS_CLOSED`.
/// After close, every copy of the handle is invalid and every call with one fails with
/// `LMSRT_STATUS_CLOSED`; handle values are never reused within a process, and a store handle
/// is never a valid guards handle (nor the reverse).
#[allow(non_camel_case_types)]
pub struct lmsrt_guards {
    _private: [u8; 0],
}

/// What an `lmsrt_guards` handle names.
#[derive(Debug)]
pub(crate) struct Guards {
    limiter: RateLimiter,
    breakers: Breakers,
    slots: Slots,
    metrics: Arc<Metrics>,
}

impl Guards {
    fn open(path: &str, c: GuardsConfig) -> crate::Result<Guards> {
        let metrics = Arc::new(Metrics::open(path, c.metrics)?);
        Ok(Guards {
            limiter: RateLimiter::open(path, c.limiter)?.with_metrics(metrics.clone()),
            breakers: Breakers::open(path, c.breaker)?.with_metrics(metrics.clone()),
            slots: Slots::open(path, c.slots)?.with_metrics(metrics.clone()),
            metrics,
        })
    }
}

static GUARDS: Registry<Guards> =
    Registry::new("the guards handle is closed (or was never returned by lmsrt_guards_open)");

fn lookup(h: *const lmsrt_guards) -> FfiResult<Arc<Guards>> {
    GUARDS.get(h, "guards")
}

/// A circuit breaker's state, as the `state` field of `lmsrt_breaker_status` carries it (an
/// `int32_t`, so the struct's layout does not depend on the compiler's enum size).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lmsrt_breaker_state {
    /// Calls go through.
    Closed = 0,
    /// Calls are refused until the open period ends.
    Open = 1,
    /// The open period is over: a limited number of probe calls go through.
    HalfOpen = 2,
}

/// How clients should poll, from the plan's fallback tiers: the `mode` field of
/// `lmsrt_breaker_status` (an `int32_t`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lmsrt_mode {
    /// Long-poll with 30 s waits: all is well.
    Long = 0,
    /// 10 s waits: failures are showing.
    Medium = 1,
    /// Poll every 3 s: recovering (half-open).
    Short = 2,
    /// Poll every 1 s: the breaker is open.
    Emergency = 3,
}

/// Which side of a rollout a user is on: what `lmsrt_rollout_cohort` writes to `*out_cohort`
/// (an `int32_t`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lmsrt_cohort {
    /// Outside the percentage: keeps the old behaviour.
    Control = 0,
    /// Inside the percentage: the new behaviour is on.
    Rollout = 1,
    /// On the beta list: the new behaviour is always on.
    Beta = 2,
}

/// The answer to one rate-limit check (`lmsrt_limiter_check`, `lmsrt_limiter_peek`).
///
/// Plain data written by the library; the caller owns the memory (typically a local or a
/// struct reused for every call). Not shared: one per thread.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct lmsrt_decision {
    /// When refused, ms until a retry can succeed (the `Retry-After`); 0 when allowed.
    pub retry_after_ms: u64,
    /// Ms until the key's allowance is full again.
    pub reset_after_ms: u64,
    /// The key's current allowance: requests a rested key could make at once at its present
    /// reputation (the configured burst at full reputation).
    pub limit: u32,
    /// Requests of cost 1 that would be allowed right after this decision.
    pub remaining: u32,
    /// The key's reputation, 0 to 1000 per mille; refusals lower it, time restores it.
    pub reputation_permille: u32,
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// Refused by the DDoS guard: the key is blocked for `retry_after_ms`.
    pub blocked: bool,
    /// False when the shared table was full and the request was allowed without tracking the
    /// key (the limiter fails open).
    pub tracked: bool,
}

impl From<Decision> for lmsrt_decision {
    fn from(d: Decision) -> lmsrt_decision {
        lmsrt_decision {
            retry_after_ms: d.retry_after_ms,
            reset_after_ms: d.reset_after_ms,
            limit: d.limit,
            remaining: d.remaining,
            reputation_permille: d.reputation_permille,
            allowed: d.allowed,
            blocked: d.blocked,
            tracked: d.tracked,
        }
    }
}

/// A circuit breaker's status (`lmsrt_breaker_*`).
///
/// Plain data written by the library; the caller owns the memory. Not shared: one per thread.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct lmsrt_breaker_status {
    /// The wait (or polling interval) of `mode`, in ms: 30000, 10000, 3000 or 1000.
    pub wait_ms: u64,
    /// When refused, ms until a call may be admitted again; 0 when allowed.
    pub retry_after_ms: u64,
    /// Outcomes reported in the failure window (since the breaker last closed).
    pub window_requests: u64,
    /// Failures among them.
    pub window_failures: u64,
    /// The open period the breaker is in, or would use next, in ms (doubles on each re-open).
    pub open_period_ms: u64,
    /// The state: an `lmsrt_breaker_state` value.
    pub state: i32,
    /// The polling mode clients should use: an `lmsrt_mode` value.
    pub mode: i32,
    /// Consecutive failures (closed state).
    pub consecutive_failures: u32,
    /// Whether the call may go ahead (for `lmsrt_breaker_peek` and the `record`/`reset` calls:
    /// whether a check would admit one now).
    pub allowed: bool,
    /// The call was admitted as a half-open probe: report its outcome with
    /// `lmsrt_breaker_record_success` or `lmsrt_breaker_record_failure`.
    pub probe: bool,
    /// False when the shared table was full and the breaker is not tracked (always allowed).
    pub tracked: bool,
}

impl From<BreakerStatus> for lmsrt_breaker_status {
    fn from(s: BreakerStatus) -> lmsrt_breaker_status {
        let state = match s.state {
            BreakerState::Closed => lmsrt_breaker_state::Closed,
            BreakerState::Open => lmsrt_breaker_state::Open,
            BreakerState::HalfOpen => lmsrt_breaker_state::HalfOpen,
        };
        let mode = match s.mode {
            ClientMode::Long => lmsrt_mode::Long,
            ClientMode::Medium => lmsrt_mode::Medium,
            ClientMode::Short => lmsrt_mode::Short,
            ClientMode::Emergency => lmsrt_mode::Emergency,
        };
        lmsrt_breaker_status {
            wait_ms: s.mode.wait_ms(),
            retry_after_ms: s.retry_after_ms,
            window_requests: s.window_requests,
            window_failures: s.window_failures,
            open_period_ms: s.open_period_ms,
            state: state as i32,
            mode: mode as i32,
            consecutive_failures: s.consecutive_failures,
            allowed: s.allowed,
            probe: s.probe,
            tracked: s.tracked,
        }
    }
}

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

/// # Safety
///
/// `ptr` valid for reads of `len` bytes when not NULL.
unsafe fn name_arg<'a>(ptr: *const c_char, len: usize, what: &'static str) -> FfiResult<&'a str> {
    // SAFETY: forwarded from the caller.
    unsafe {
        str_arg(
            ptr,
            len,
            MAX_SHORT_BYTES,
            what,
            too_long(what, MAX_SHORT_BYTES),
        )
    }
}

fn to_buf(bytes: Vec<u8>) -> lmsrt_buf {
    lmsrt_buf::from_vec(bytes)
}

fn to_json(value: &impl serde::Serialize) -> FfiResult<lmsrt_buf> {
    serde_json::to_vec(value)
        .map(to_buf)
        .map_err(|e| FfiError::new(ErrorCode::Internal, format!("serializing the result: {e}")))
}

/// Opens the guards shared by every process using the database at `path`, and returns a handle
/// in `*out_guards`.
///
/// `path` (`path_len` bytes, UTF-8, at most 4096, no NUL) names the database; the database
/// itself is not opened. Beside it the guards map (creating them zero-filled if missing)
/// `<path>-lmsrt-limits`, `<path>-lmsrt-breakers`, `<path>-lmsrt-slots` and
/// `<path>-lmsrt-metrics`. Every process that opens them must be able to read and write them.
///
/// `config` (`config_len` bytes, at most 64 KiB) is NULL (with length 0), empty, or a JSON
/// object mirroring the crate's configuration types; every field is optional and defaults as
/// the Rust `Default`s do, and unknown fields are refused with `LMSRT_STATUS_INVALID_ARGUMENT`:
///
/// * `limits`: an object of actions, each `{"rate": 20, "period_ms": 60000, "burst": 20,
///   "adaptive": ..., "block": ...}`, adding to or replacing the defaults (`post` 20 per
///   minute, `poll` 180 per minute with burst 30, `ip` 600 per minute with burst 100 and DDoS
///   blocks). `rate` is required; `period_ms` defaults to 60000 and `burst` to `rate`.
///   `adaptive` is `true` (the default: 100 per mille of reputation lost per refusal, a floor
///   of 250 per mille, recovery in 600000 ms), `false` (a fixed limit) or
///   `{"penalty_permille", "min_allowance_permille", "recovery_ms"}`. `block` is `false` (the
///   default), `true` or `{"base_ms": 60000, "max_ms": 3600000, "forget_ms": 86400000}`: keys
///   refused at zero reputation are blocked, for doubling periods.
/// * `limiter`: `{"capacity": 65536}` (keys in the table).
/// * `breaker`: `failure_threshold` (5), `failure_ratio_permille` (500), `min_requests` (20),
///   `window_ms` (10000), `open_ms` (5000), `max_open_ms` (120000), `half_open_probes` (1),
///   `probe_timeout_ms` (10000), `capacity` (1024).
/// * `slots`: `max` (3 concurrent leases per key, 1 to 15), `lease_ms` (35000), `on_full`
///   (`"refuse"` or `"evict_oldest"`), `check_pid` (true: reclaim leases of dead processes),
///   `capacity` (16384).
/// * `metrics`: the health verdict's alert lines, `p99_ms` (100), `error_rate_permille` (50),
///   `min_samples` (20).
///
/// Processes sharing the files should use the same settings: the files hold the state, the
/// settings come from each opener (a table's capacity is fixed by its creator).
///
/// On success `*out_guards` receives a new handle, owned by the caller, who releases it with
/// `lmsrt_guards_close`. On failure `*out_guards` is left untouched (some of the files may
/// have been created).
///
/// Errors: `NULL_POINTER`, `INVALID_UTF8`, `INVALID_ARGUMENT` (bad settings, path too long),
/// `IO` (a file cannot be created or mapped, or was written by another version), `STORAGE`
/// (no space left on the disk for the files: they are allocated in full before they are
/// mapped, so a full disk is this error rather than a crash later; retry when space returns).
///
/// # Safety
///
/// `path` must be valid for reads of `path_len` bytes; `config`, when not NULL, for reads of
/// `config_len` bytes; `out_guards` must be valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_guards_open(
    path: *const c_char,
    path_len: usize,
    config: *const c_char,
    config_len: usize,
    out_guards: *mut *mut lmsrt_guards,
) -> lmsrt_status {
    ffi_boundary! {
        let out = out_arg(out_guards, "out_guards")?;
        // SAFETY: the caller guarantees `path_len` readable bytes at `path`.
        let path = unsafe {
            str_arg(path, path_len, MAX_PATH_BYTES, "path", too_long("path", MAX_PATH_BYTES))
        }?;
        if path.is_empty() || path.contains('\0') {
            return Err(FfiError::invalid("path must be non-empty and contain no NUL byte"));
        }
        // SAFETY: the caller guarantees `config_len` readable bytes at `config` if not NULL.
        let config = unsafe {
            opt_str_arg(config, config_len, MAX_CONFIG_BYTES, "config", too_long("config", MAX_CONFIG_BYTES))
        }?;
        let guards = Guards::open(path, parse_guards_config(config)?)?;
        let h = GUARDS.register(guards);
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(h) };
        Ok(())
    }
}

/// Closes the guards `*guards` and sets `*guards` to NULL. The shared files stay (they hold
/// the state other processes share); leases acquired through the handle stay held until
/// released (through any handle on the same database) or expired.
///
/// Returns `LMSRT_STATUS_OK` when it closed the handle, and also when `*guards` is already
/// NULL (so closing the same variable twice is a no-op). Returns `LMSRT_STATUS_CLOSED` when
/// `*guards` is a copy of a handle closed through another variable (and still sets `*guards`
/// to NULL), `LMSRT_STATUS_NULL_POINTER` when `guards` itself is NULL.
///
/// # Safety
///
/// `guards`, when not NULL, must be valid for reading and writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_guards_close(guards: *mut *mut lmsrt_guards) -> lmsrt_status {
    ffi_boundary! {
        let slot = out_arg(guards, "guards")?;
        // SAFETY: `slot` is not NULL and the caller guarantees it is readable and writable.
        let h = unsafe { slot.read() };
        if h.is_null() {
            return Ok(());
        }
        // SAFETY: as above.
        unsafe { slot.write(std::ptr::null_mut()) };
        GUARDS.take(h)?;
        Ok(())
    }
}

/// Decides one request of `action` (a configured action name, e.g. `"post"`) by `key` (a user
/// id, an IP, 1 to 1024 bytes) worth `cost` ordinary requests (1 to the action's burst),
/// consuming allowance when it is allowed, and writes the decision to `*out`.
///
/// A refusal is not an error: the status is `LMSRT_STATUS_OK` and `out->allowed` is false,
/// with `out->retry_after_ms` (and `out->blocked` for a DDoS block). The budget is exact across
/// every thread and process sharing the database: N processes hammering one key are allowed
/// exactly the burst between them. Allowed, refused and blocked decisions are counted in the
/// metrics (`limiter_allowed`, `limiter_denied`, `limiter_blocked`).
///
/// Errors: `NULL_POINTER`, `CLOSED`, `INVALID_UTF8`, `INVALID_ARGUMENT` (unknown action, empty
/// key, cost out of range, string too long).
///
/// # Safety
///
/// `guards` must be NULL or a handle from `lmsrt_guards_open` (closed ones are detected);
/// `action` and `key` valid for reads of their lengths; `out` valid for a write of one
/// `lmsrt_decision`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_limiter_check(
    guards: *const lmsrt_guards,
    action: *const c_char,
    action_len: usize,
    key: *const c_char,
    key_len: usize,
    cost: u32,
    out: *mut lmsrt_decision,
) -> lmsrt_status {
    ffi_boundary! {
        let out = out_arg(out, "out")?;
        let g = lookup(guards)?;
        // SAFETY: the caller guarantees the lengths.
        let (action, key) = unsafe { (name_arg(action, action_len, "action")?, name_arg(key, key_len, "key")?) };
        let d = g.limiter.check_cost(action, key, cost)?;
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(d.into()) };
        Ok(())
    }
}

/// What `lmsrt_limiter_check` with cost 1 would answer now, without consuming anything or
/// counting a refusal.
///
/// Errors and safety: as `lmsrt_limiter_check`.
///
/// # Safety
///
/// As `lmsrt_limiter_check`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_limiter_peek(
    guards: *const lmsrt_guards,
    action: *const c_char,
    action_len: usize,
    key: *const c_char,
    key_len: usize,
    out: *mut lmsrt_decision,
) -> lmsrt_status {
    ffi_boundary! {
        let out = out_arg(out, "out")?;
        let g = lookup(guards)?;
        // SAFETY: the caller guarantees the lengths.
        let (action, key) = unsafe { (name_arg(action, action_len, "action")?, name_arg(key, key_len, "key")?) };
        let d = g.limiter.peek(action, key)?;
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(d.into()) };
        Ok(())
    }
}

/// Forgets the state of `key` for `action` (allowance, reputation, block), for every process:
/// an administrator's unblock.
///
/// Errors: `NULL_POINTER`, `CLOSED`, `INVALID_UTF8`, `INVALID_ARGUMENT` (unknown action,
/// empty key).
///
/// # Safety
///
/// `guards` as for `lmsrt_limiter_check`; `action` and `key` valid for reads of their lengths.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_limiter_reset(
    guards: *const lmsrt_guards,
    action: *const c_char,
    action_len: usize,
    key: *const c_char,
    key_len: usize,
) -> lmsrt_status {
    ffi_boundary! {
        let g = lookup(guards)?;
        // SAFETY: the caller guarantees the lengths.
        let (action, key) = unsafe { (name_arg(action, action_len, "action")?, name_arg(key, key_len, "key")?) };
        g.limiter.reset(action, key)?;
        Ok(())
    }
}

/// Runs one breaker operation: the shared argument checks and the write of the status.
///
/// # Safety
///
/// `name` valid for reads of `name_len` bytes when not NULL; `out` valid for a write when not
/// NULL.
unsafe fn breaker_op(
    guards_h: *const lmsrt_guards,
    name: *const c_char,
    name_len: usize,
    out: *mut lmsrt_breaker_status,
    op: impl FnOnce(&Breakers, &str) -> crate::Result<BreakerStatus>,
) -> FfiResult<()> {
    let out = out_arg(out, "out")?;
    let g = lookup(guards_h)?;
    // SAFETY: forwarded from the caller.
    let name = unsafe { name_arg(name, name_len, "name") }?;
    let s = op(&g.breakers, name)?;
    // SAFETY: `out` is not NULL and the caller guarantees it is writable.
    unsafe { out.write(s.into()) };
    Ok(())
}

/// Asks whether a call guarded by breaker `name` (1 to 1024 bytes; use a fixed set of names
/// such as `"store"`) may go ahead, and writes the breaker's status to `*out`.
///
/// A refusal (the breaker is open, or half-open with its probes taken) is not an error: the
/// status is `LMSRT_STATUS_OK` with `out->allowed` false and `out->retry_after_ms`. When the
/// breaker is half-open the call may be admitted as a probe (`out->probe`): report its outcome.
/// `out->mode` is the polling mode to advertise to clients. The breaker is shared by every
/// thread and process using the database.
///
/// Errors: `NULL_POINTER`, `CLOSED`, `INVALID_UTF8`, `INVALID_ARGUMENT` (empty or too long
/// name).
///
/// # Safety
///
/// `guards` must be NULL or a handle from `lmsrt_guards_open`; `name` valid for reads of
/// `name_len` bytes; `out` valid for a write of one `lmsrt_breaker_status`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_breaker_check(
    guards: *const lmsrt_guards,
    name: *const c_char,
    name_len: usize,
    out: *mut lmsrt_breaker_status,
) -> lmsrt_status {
    ffi_boundary! {
        // SAFETY: forwarded from the caller.
        unsafe { breaker_op(guards, name, name_len, out, |b, n| b.check(n)) }
    }
}

/// Writes breaker `name`'s status to `*out` without admitting anything (for status pages).
///
/// Errors and safety: as `lmsrt_breaker_check`.
///
/// # Safety
///
/// As `lmsrt_breaker_check`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_breaker_peek(
    guards: *const lmsrt_guards,
    name: *const c_char,
    name_len: usize,
    out: *mut lmsrt_breaker_status,
) -> lmsrt_status {
    ffi_boundary! {
        // SAFETY: forwarded from the caller.
        unsafe { breaker_op(guards, name, name_len, out, |b, n| b.status(n)) }
    }
}

/// Reports a successful call guarded by breaker `name`: resets its consecutive failures and
/// closes it when half-open. Writes the resulting status to `*out`.
///
/// Errors and safety: as `lmsrt_breaker_check`.
///
/// # Safety
///
/// As `lmsrt_breaker_check`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_breaker_record_success(
    guards: *const lmsrt_guards,
    name: *const c_char,
    name_len: usize,
    out: *mut lmsrt_breaker_status,
) -> lmsrt_status {
    ffi_boundary! {
        // SAFETY: forwarded from the caller.
        unsafe { breaker_op(guards, name, name_len, out, |b, n| b.record_success(n)) }
    }
}

/// Reports a failed call guarded by breaker `name`: may open a closed breaker (after
/// `failure_threshold` consecutive failures, or a failure ratio over the window) and re-opens a
/// half-open one with a doubled open period. Writes the resulting status to `*out`.
///
/// Errors and safety: as `lmsrt_breaker_check`.
///
/// # Safety
///
/// As `lmsrt_breaker_check`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_breaker_record_failure(
    guards: *const lmsrt_guards,
    name: *const c_char,
    name_len: usize,
    out: *mut lmsrt_breaker_status,
) -> lmsrt_status {
    ffi_boundary! {
        // SAFETY: forwarded from the caller.
        unsafe { breaker_op(guards, name, name_len, out, |b, n| b.record_failure(n)) }
    }
}

/// Closes breaker `name` and forgets its failures and backoff (an operator's reset). Writes
/// the resulting status to `*out`.
///
/// Errors and safety: as `lmsrt_breaker_check`.
///
/// # Safety
///
/// As `lmsrt_breaker_check`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_breaker_reset(
    guards: *const lmsrt_guards,
    name: *const c_char,
    name_len: usize,
    out: *mut lmsrt_breaker_status,
) -> lmsrt_status {
    ffi_boundary! {
        // SAFETY: forwarded from the caller.
        unsafe { breaker_op(guards, name, name_len, out, |b, n| b.reset(n)) }
    }
}

/// Opens breaker `name` for `duration_ms` (an operator's switch, e.g. during maintenance),
/// keeping its backoff. Writes the resulting status to `*out`.
///
/// Errors and safety: as `lmsrt_breaker_check`.
///
/// # Safety
///
/// As `lmsrt_breaker_check`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_breaker_force_open(
    guards: *const lmsrt_guards,
    name: *const c_char,
    name_len: usize,
    duration_ms: u64,
    out: *mut lmsrt_breaker_status,
) -> lmsrt_status {
    ffi_boundary! {
        // SAFETY: forwarded from the caller.
        unsafe { breaker_op(guards, name, name_len, out, |b, n| b.force_open(n, duration_ms)) }
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
    ffi_boundary! {
        let out = out_arg(out, "out")?;
        let g = lookup(guards)?;
        // SAFETY: the caller guarantees `key_len` readable bytes at `key`.
        let key = unsafe { name_arg(key, key_len, "key") }?;
        let lease = match g.slots.acquire(key) {
            Ok(l) => l.into(),
            Err(Error::SlotsExhausted { .. }) => lmsrt_lease::NONE,
            Err(e) => return Err(e.into()),
        };
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(lease) };
        Ok(())
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
    ffi_boundary! {
        let out = out_arg(out_held, "out_held")?;
        let lease = out_arg(lease.cast_mut(), "lease")?;
        let g = lookup(guards)?;
        // SAFETY: `lease` is not NULL and the caller guarantees it is readable.
        let held = g.slots.release(&unsafe { read_lease(lease) });
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(held) };
        Ok(())
    }
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
    ffi_boundary! {
        let out = out_arg(out_renewed, "out_renewed")?;
        let lease = out_arg(lease, "lease")?;
        let g = lookup(guards)?;
        // SAFETY: `lease` is not NULL and the caller guarantees it is readable.
        let mut l = unsafe { read_lease(lease) };
        let renewed = g.slots.renew(&mut l);
        // SAFETY: `lease` and `out` are not NULL and the caller guarantees they are writable;
        // only integer fields of the lease are written.
        unsafe {
            if renewed {
                std::ptr::addr_of_mut!((*lease).token).write(l.token);
                std::ptr::addr_of_mut!((*lease).expires_at_ms).write(l.expires_at_ms);
            }
            out.write(renewed);
        }
        Ok(())
    }
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
    ffi_boundary! {
        let out = out_arg(out_held, "out_held")?;
        let lease = out_arg(lease.cast_mut(), "lease")?;
        let g = lookup(guards)?;
        // SAFETY: `lease` is not NULL and the caller guarantees it is readable.
        let held = g.slots.is_held(&unsafe { read_lease(lease) });
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(held) };
        Ok(())
    }
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
    ffi_boundary! {
        let out = out_arg(out_count, "out_count")?;
        let g = lookup(guards)?;
        // SAFETY: the caller guarantees `key_len` readable bytes at `key`.
        let key = unsafe { name_arg(key, key_len, "key") }?;
        let n = g.slots.count(key)?;
        // SAFETY: `out` is not NULL and the caller guarantees it is writable.
        unsafe { out.write(n) };
        Ok(())
    }
}

/// A beta user id: a string, or an integer (WordPress user ids) taken as its decimal text.
#[derive(Deserialize)]
#[serde(untagged)]
enum BetaUser {
    Text(String),
    Int(i64),
}

/// Which rollout cohort `user` falls in, with no state and no handle: every process computes
/// the same answer from the same settings.
///
/// `percent` is 0 to 100. `salt` (at most 1024 bytes) draws the cohorts: a user's bucket is a
/// stable hash of the salt and the user id modulo 10000, and the user is in the rollout when
/// the bucket is below `percent * 100`, so raising the percentage only ever adds users.
/// `beta_users` (`beta_len` bytes, at most 1 MiB) is NULL (with length 0), empty, or a JSON
/// array of user ids (strings, or integers taken as their decimal text) who are always in
/// (`LMSRT_COHORT_BETA`).
/// `user` (at most 1024 bytes) is the user id.
///
/// On success `*out_cohort` receives an `lmsrt_cohort` value and `*out_bucket` the user's
/// bucket (0 to 9999, whatever the cohort).
///
/// Errors: `NULL_POINTER`, `INVALID_UTF8`, `INVALID_ARGUMENT` (percent over 100, malformed
/// beta list, string too long). Thread-safe.
///
/// # Safety
///
/// `salt` and `user` valid for reads of their lengths; `beta_users`, when not NULL, for reads
/// of `beta_len` bytes; `out_cohort` and `out_bucket` valid for one write each.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_rollout_cohort(
    percent: u32,
    salt: *const c_char,
    salt_len: usize,
    beta_users: *const c_char,
    beta_len: usize,
    user: *const c_char,
    user_len: usize,
    out_cohort: *mut i32,
    out_bucket: *mut u32,
) -> lmsrt_status {
    ffi_boundary! {
        let out_c = out_arg(out_cohort, "out_cohort")?;
        let out_b = out_arg(out_bucket, "out_bucket")?;
        // SAFETY: the caller guarantees the lengths (`beta_users` may be NULL).
        let (salt, beta, user) = unsafe {
            (
                name_arg(salt, salt_len, "salt")?,
                opt_str_arg(beta_users, beta_len, MAX_REQUEST_BYTES, "beta_users", too_long("beta_users", MAX_REQUEST_BYTES))?,
                name_arg(user, user_len, "user")?,
            )
        };
        let mut rollout = Rollout::new(percent, salt)?;
        if let Some(text) = beta.filter(|t| !t.trim().is_empty()) {
            let list: Vec<BetaUser> = serde_json::from_str(text).map_err(|e| {
                FfiError::invalid(format!("beta_users: expected a JSON array of user ids: {e}"))
            })?;
            rollout = rollout.beta_users(list.into_iter().map(|u| match u {
                BetaUser::Text(s) => s,
                BetaUser::Int(i) => i.to_string(),
            }));
        }
        let cohort = match rollout.cohort(user) {
            Cohort::Control => lmsrt_cohort::Control,
            Cohort::Rollout => lmsrt_cohort::Rollout,
            Cohort::Beta => lmsrt_cohort::Beta,
        };
        // SAFETY: both are not NULL and the caller guarantees they are writable.
        unsafe {
            out_c.write(cohort as i32);
            out_b.write(rollout.bucket(user));
        }
        Ok(())
    }
}

fn unknown_metric(kind: &str, name: &str, known: impl Iterator<Item = &'static str>) -> FfiError {
    let known: Vec<&str> = known.collect();
    FfiError::invalid(format!(
        "unknown {kind} {name:?}: expected one of {}",
        known.join(", ")
    ))
}

/// # Safety
///
/// `name` valid for reads of `len` bytes when not NULL.
unsafe fn metric_arg<'a>(name: *const c_char, len: usize) -> FfiResult<&'a str> {
    // SAFETY: forwarded from the caller.
    unsafe { name_arg(name, len, "name") }
}

/// Adds `n` to the host-wide counter `name` (`appends`, `append_errors`, `fetches`,
/// `fetch_errors`, `waits`, `wait_errors`, `wait_timeouts`, `deliveries`, and the guards' own
/// `limiter_*`, `breaker_*` and `slots_*` counters, which the guards also count themselves).
/// Counters are shared by every process using the database; nothing allocates or blocks.
///
/// Errors: `NULL_POINTER`, `CLOSED`, `INVALID_UTF8`, `INVALID_ARGUMENT` (unknown counter, whose
/// message lists the known ones).
///
/// # Safety
///
/// `guards` must be NULL or a handle from `lmsrt_guards_open`; `name` valid for reads of
/// `name_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_metrics_incr(
    guards: *const lmsrt_guards,
    name: *const c_char,
    name_len: usize,
    n: u64,
) -> lmsrt_status {
    ffi_boundary! {
        let g = lookup(guards)?;
        // SAFETY: the caller guarantees `name_len` readable bytes at `name`.
        let name = unsafe { metric_arg(name, name_len) }?;
        let c = Counter::from_name(name)
            .ok_or_else(|| unknown_metric("counter", name, Counter::ALL.iter().map(|c| c.name())))?;
        g.metrics.add(c, n);
        Ok(())
    }
}

/// Records one latency of `us` microseconds in the host-wide histogram `name` (`append`,
/// `fetch`, `wait`, `delivery`). Append and fetch p99 feed the health verdict.
///
/// Errors: `NULL_POINTER`, `CLOSED`, `INVALID_UTF8`, `INVALID_ARGUMENT` (unknown histogram).
///
/// # Safety
///
/// As `lmsrt_metrics_incr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_metrics_record_us(
    guards: *const lmsrt_guards,
    name: *const c_char,
    name_len: usize,
    us: u64,
) -> lmsrt_status {
    ffi_boundary! {
        let g = lookup(guards)?;
        // SAFETY: the caller guarantees `name_len` readable bytes at `name`.
        let name = unsafe { metric_arg(name, name_len) }?;
        let h = Histogram::from_name(name).ok_or_else(|| {
            unknown_metric("histogram", name, Histogram::ALL.iter().map(|h| h.name()))
        })?;
        g.metrics.record_us(h, us);
        Ok(())
    }
}

/// Sets the host-wide gauge `name` (`active_waits`, `connections`) to `value`.
///
/// Errors: `NULL_POINTER`, `CLOSED`, `INVALID_UTF8`, `INVALID_ARGUMENT` (unknown gauge).
///
/// # Safety
///
/// As `lmsrt_metrics_incr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_metrics_set_gauge(
    guards: *const lmsrt_guards,
    name: *const c_char,
    name_len: usize,
    value: i64,
) -> lmsrt_status {
    ffi_boundary! {
        let g = lookup(guards)?;
        // SAFETY: the caller guarantees `name_len` readable bytes at `name`.
        let name = unsafe { metric_arg(name, name_len) }?;
        g.metrics.set_gauge(gauge(name)?, value);
        Ok(())
    }
}

/// Adds `delta` (possibly negative) to the host-wide gauge `name`. A process killed between an
/// increment and its decrement leaves the gauge off: long-lived owners should set absolute
/// values with `lmsrt_metrics_set_gauge`.
///
/// Errors: as `lmsrt_metrics_set_gauge`.
///
/// # Safety
///
/// As `lmsrt_metrics_incr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_metrics_add_gauge(
    guards: *const lmsrt_guards,
    name: *const c_char,
    name_len: usize,
    delta: i64,
) -> lmsrt_status {
    ffi_boundary! {
        let g = lookup(guards)?;
        // SAFETY: the caller guarantees `name_len` readable bytes at `name`.
        let name = unsafe { metric_arg(name, name_len) }?;
        g.metrics.add_gauge(gauge(name)?, delta);
        Ok(())
    }
}

fn gauge(name: &str) -> FfiResult<Gauge> {
    Gauge::from_name(name)
        .ok_or_else(|| unknown_metric("gauge", name, Gauge::ALL.iter().map(|g| g.name())))
}

/// Runs a call that produces a document for `*out`.
///
/// # Safety
///
/// `out` valid for a write of one `lmsrt_buf` when not NULL.
unsafe fn buf_op(
    guards_h: *const lmsrt_guards,
    out: *mut lmsrt_buf,
    make: impl FnOnce(&Guards) -> FfiResult<lmsrt_buf>,
) -> FfiResult<()> {
    let out = out_arg(out, "out")?;
    let g = lookup(guards_h)?;
    let buf = make(&g)?;
    // SAFETY: `out` is not NULL and the caller guarantees it is writable.
    unsafe { out.write(buf) };
    Ok(())
}

/// Writes every host-wide figure to `*out` as JSON (free it with `lmsrt_buf_free`):
/// `{"taken_at_ms":..., "window_ms":..., "counters":{"appends":{"total":N,"window":N},...},
/// "gauges":{"active_waits":N,...}, "histograms":{"append":{"count":N,"sum_us":N,"max_us":N,
/// "window":{"count":N,"p50_us":N,"p95_us":N,"p99_us":N,"max_us":N}},...},
/// "error_rate":0.0 or null, "health":{"status":"ok"|"degraded","reasons":[...]}}`.
/// `window` figures cover the last 50 to 60 seconds; totals run since the metrics file was
/// created.
///
/// Errors: `NULL_POINTER`, `CLOSED`.
///
/// # Safety
///
/// `guards` must be NULL or a handle from `lmsrt_guards_open`; `out` valid for a write of one
/// `lmsrt_buf`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_metrics_snapshot(
    guards: *const lmsrt_guards,
    out: *mut lmsrt_buf,
) -> lmsrt_status {
    ffi_boundary! {
        // SAFETY: forwarded from the caller.
        unsafe { buf_op(guards, out, |g| Ok(to_buf(g.metrics.snapshot().to_json().into_bytes()))) }
    }
}

/// Writes every host-wide figure to `*out` in the Prometheus text exposition format 0.0.4
/// (free it with `lmsrt_buf_free`): counters as `lmsrt_<name>_total`, gauges as
/// `lmsrt_<name>`, histograms as summaries `lmsrt_<name>_latency_seconds`, and
/// `lmsrt_healthy` (1 or 0).
///
/// Errors: `NULL_POINTER`, `CLOSED`.
///
/// # Safety
///
/// As `lmsrt_metrics_snapshot`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_metrics_prometheus(
    guards: *const lmsrt_guards,
    out: *mut lmsrt_buf,
) -> lmsrt_status {
    ffi_boundary! {
        // SAFETY: forwarded from the caller.
        unsafe {
            buf_op(guards, out, |g| Ok(to_buf(g.metrics.snapshot().to_prometheus().into_bytes())))
        }
    }
}

/// Writes the health verdict to `*out` as JSON (free it with `lmsrt_buf_free`):
/// `{"status":"ok","reasons":[]}`, or `"degraded"` with one sentence per alert line crossed
/// over the last minute (append or fetch p99 above `p99_ms`, error rate above
/// `error_rate_permille`, each judged from `min_samples` samples).
///
/// Errors: `NULL_POINTER`, `CLOSED`.
///
/// # Safety
///
/// As `lmsrt_metrics_snapshot`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lmsrt_metrics_health(
    guards: *const lmsrt_guards,
    out: *mut lmsrt_buf,
) -> lmsrt_status {
    ffi_boundary! {
        // SAFETY: forwarded from the caller.
        unsafe { buf_op(guards, out, |g| to_json(&g.metrics.health())) }
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::ffi::buf::lmsrt_buf_free;

    fn s(text: &str) -> (*const c_char, usize) {
        (text.as_ptr().cast(), text.len())
    }

    fn open(dir: &tempfile::TempDir, config: &str) -> *mut lmsrt_guards {
        let path = dir.path().join("g.db");
        let path = path.to_str().unwrap();
        let mut h = std::ptr::null_mut();
        // SAFETY: live strings and out-pointer.
        let st =
            unsafe { lmsrt_guards_open(s(path).0, s(path).1, s(config).0, s(config).1, &mut h) };
        assert_eq!(st, lmsrt_status::Ok);
        h
    }

    fn check(h: *mut lmsrt_guards, action: &str, key: &str) -> lmsrt_decision {
        let mut d = std::mem::MaybeUninit::<lmsrt_decision>::uninit();
        // SAFETY: live strings; `d` is written on success, which is asserted.
        unsafe {
            let st = lmsrt_limiter_check(
                h,
                s(action).0,
                s(action).1,
                s(key).0,
                s(key).1,
                1,
                d.as_mut_ptr(),
            );
            assert_eq!(st, lmsrt_status::Ok);
            d.assume_init()
        }
    }

    #[test]
    fn two_threads_share_one_exact_budget_through_one_handle() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = open(
            &dir,
            r#"{"limits":{"t":{"rate":50,"period_ms":86400000,"adaptive":false}}}"#,
        );
        let addr = h as usize;
        let allowed: u32 = (0..2)
            .map(|_| {
                std::thread::spawn(move || {
                    let h: *mut lmsrt_guards = std::ptr::without_provenance_mut(addr);
                    (0..200).filter(|_| check(h, "t", "k").allowed).count() as u32
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(allowed, 50);
        let d = check(h, "t", "k");
        assert!(!d.allowed && d.retry_after_ms > 0 && d.tracked);
        // SAFETY: `h` is a live local.
        assert_eq!(unsafe { lmsrt_guards_close(&mut h) }, lmsrt_status::Ok);
        assert!(h.is_null());
    }

    #[test]
    fn breaker_status_enums_and_lease_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = open(
            &dir,
            r#"{"breaker":{"failure_threshold":2},"slots":{"max":1}}"#,
        );
        let mut st = std::mem::MaybeUninit::<lmsrt_breaker_status>::uninit();
        for _ in 0..2 {
            // SAFETY: live string and out-pointer.
            let r =
                unsafe { lmsrt_breaker_record_failure(h, s("db").0, s("db").1, st.as_mut_ptr()) };
            assert_eq!(r, lmsrt_status::Ok);
        }
        // SAFETY: written by the successful call above.
        let st = unsafe { st.assume_init() };
        assert_eq!(st.state, lmsrt_breaker_state::Open as i32);
        assert_eq!(st.mode, lmsrt_mode::Emergency as i32);
        assert_eq!((st.wait_ms, st.allowed), (1_000, false));

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
            assert_eq!(lmsrt_guards_close(&mut h), lmsrt_status::Ok);
        }
    }

    #[test]
    fn rollout_matches_the_rust_buckets() {
        let mut cohort = -1;
        let mut bucket = 0;
        for (user, want) in [("1", 9532), ("2", 810), ("42", 3230), ("user-7", 6887)] {
            // SAFETY: live strings and out-pointers.
            let st = unsafe {
                lmsrt_rollout_cohort(
                    5,
                    s("lms").0,
                    s("lms").1,
                    std::ptr::null(),
                    0,
                    s(user).0,
                    s(user).1,
                    &mut cohort,
                    &mut bucket,
                )
            };
            assert_eq!(st, lmsrt_status::Ok);
            assert_eq!(bucket, want);
            assert_eq!(cohort, lmsrt_cohort::Control as i32);
        }
        let beta = r#"["x", 42]"#;
        // SAFETY: as above.
        let st = unsafe {
            lmsrt_rollout_cohort(
                0,
                s("lms").0,
                s("lms").1,
                s(beta).0,
                s(beta).1,
                s("42").0,
                s("42").1,
                &mut cohort,
                &mut bucket,
            )
        };
        assert_eq!(st, lmsrt_status::Ok);
        assert_eq!((cohort, bucket), (lmsrt_cohort::Beta as i32, 3230));
    }

    #[test]
    fn metrics_names_are_checked_and_documents_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = open(&dir, "");
        let mut b = lmsrt_buf::EMPTY;
        // SAFETY: live strings and out-pointers; buffers freed below.
        unsafe {
            assert_eq!(
                lmsrt_metrics_incr(h, s("appends").0, s("appends").1, 3),
                lmsrt_status::Ok
            );
            assert_eq!(
                lmsrt_metrics_incr(h, s("nope").0, s("nope").1, 1),
                lmsrt_status::InvalidArgument
            );
            assert_eq!(
                lmsrt_metrics_record_us(h, s("append").0, s("append").1, 250),
                lmsrt_status::Ok
            );
            assert_eq!(
                lmsrt_metrics_set_gauge(h, s("connections").0, s("connections").1, 5),
                lmsrt_status::Ok
            );
            assert_eq!(
                lmsrt_metrics_add_gauge(h, s("connections").0, s("connections").1, -2),
                lmsrt_status::Ok
            );
            assert_eq!(lmsrt_metrics_snapshot(h, &mut b), lmsrt_status::Ok);
            let v: serde_json::Value =
                serde_json::from_slice(std::slice::from_raw_parts(b.ptr.cast(), b.len)).unwrap();
            lmsrt_buf_free(&mut b);
            assert_eq!(v["counters"]["appends"]["total"], 3);
            assert_eq!(v["gauges"]["connections"], 3);
            assert_eq!(v["histograms"]["append"]["count"], 1);
            assert_eq!(lmsrt_metrics_health(h, &mut b), lmsrt_status::Ok);
            let text = std::str::from_utf8(std::slice::from_raw_parts(b.ptr.cast::<u8>(), b.len))
                .unwrap()
                .to_owned();
            lmsrt_buf_free(&mut b);
            assert_eq!(text, r#"{"status":"ok","reasons":[]}"#);
            assert_eq!(lmsrt_guards_close(&mut h), lmsrt_status::Ok);
        }
    }
}
