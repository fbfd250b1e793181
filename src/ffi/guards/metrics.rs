//! The host-wide metrics' C class: `lmsrt_metrics_*` (counters, histograms, gauges, and the
//! snapshot, Prometheus and health documents).

use std::ffi::c_char;

use super::{call, lmsrt_guards, name};
use crate::ffi::buf::lmsrt_buf;
use crate::ffi::call::Out;
use crate::ffi::status::{FfiError, FfiResult, lmsrt_status};
use crate::metrics::{Counter, Gauge, Histogram, Metrics};

fn unknown_metric(kind: &str, name: &str, known: impl Iterator<Item = &'static str>) -> FfiError {
    let known: Vec<&str> = known.collect();
    FfiError::invalid(format!(
        "unknown {kind} {name:?}: expected one of {}",
        known.join(", ")
    ))
}

/// Runs one update of the metric `name` through [`call`]: the name is decoded and `op` applies
/// it; there is no out-parameter.
///
/// # Safety
///
/// As [`call`]: `name` valid for reads of `name_len` bytes when not NULL.
unsafe fn update(
    guards: *const lmsrt_guards,
    name_ptr: *const c_char,
    name_len: usize,
    op: impl FnOnce(&Metrics, &str) -> FfiResult<()>,
) -> lmsrt_status {
    let names = [name(name_ptr, name_len, "name")];
    // SAFETY: this function's contract is `call`'s for these arguments.
    unsafe { call(guards, names, (), |g, [n]| op(&g.metrics, n)) }
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
    // SAFETY: the caller guarantees `name` readable for `name_len` bytes: all that
    // `update` requires.
    unsafe {
        update(guards, name, name_len, |m, name| {
            let c = Counter::from_name(name).ok_or_else(|| {
                unknown_metric("counter", name, Counter::ALL.iter().map(|c| c.name()))
            })?;
            m.add(c, n);
            Ok(())
        })
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
    // SAFETY: the caller guarantees `name` readable for `name_len` bytes: all that
    // `update` requires.
    unsafe {
        update(guards, name, name_len, |m, name| {
            let h = Histogram::from_name(name).ok_or_else(|| {
                unknown_metric("histogram", name, Histogram::ALL.iter().map(|h| h.name()))
            })?;
            m.record_us(h, us);
            Ok(())
        })
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
    // SAFETY: the caller guarantees `name` readable for `name_len` bytes: all that
    // `update` requires.
    unsafe {
        update(guards, name, name_len, |m, name| {
            m.set_gauge(gauge(name)?, value);
            Ok(())
        })
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
    // SAFETY: the caller guarantees `name` readable for `name_len` bytes: all that
    // `update` requires.
    unsafe {
        update(guards, name, name_len, |m, name| {
            m.add_gauge(gauge(name)?, delta);
            Ok(())
        })
    }
}

fn gauge(name: &str) -> FfiResult<Gauge> {
    Gauge::from_name(name)
        .ok_or_else(|| unknown_metric("gauge", name, Gauge::ALL.iter().map(|g| g.name())))
}

/// Runs a call that writes a document about the metrics to `*out`, through [`call`].
///
/// # Safety
///
/// As [`call`]: `out` valid for a write of one `lmsrt_buf` when not NULL.
unsafe fn document(
    guards: *const lmsrt_guards,
    out: *mut lmsrt_buf,
    make: impl FnOnce(&Metrics) -> FfiResult<lmsrt_buf>,
) -> lmsrt_status {
    // SAFETY: this function's contract is `call`'s for these arguments.
    unsafe { call(guards, [], Out::new(out, "out"), |g, []| make(&g.metrics)) }
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
    // SAFETY: the caller guarantees `out` writable: all that `document` requires.
    unsafe {
        document(guards, out, |m| {
            Ok(lmsrt_buf::from_vec(m.snapshot().to_json().into_bytes()))
        })
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
    // SAFETY: the caller guarantees `out` writable: all that `document` requires.
    unsafe {
        document(guards, out, |m| {
            Ok(lmsrt_buf::from_vec(
                m.snapshot().to_prometheus().into_bytes(),
            ))
        })
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
    // SAFETY: the caller guarantees `out` writable: all that `document` requires.
    unsafe { document(guards, out, |m| lmsrt_buf::json(&m.health())) }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::ffi::buf::lmsrt_buf_free;
    use crate::ffi::guards::lmsrt_guards_close;
    use crate::ffi::guards::tests::{open, s};

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
