//! The settings document of `lmsrt_guards_open`, mirroring the Rust configuration types.
//!
//! Every field is optional and takes the Rust `Default` when absent; unknown fields are refused
//! (a typo must not silently fall back to a default). The clock is always the system clock.
//!
//! ```json
//! {
//!   "limits": {
//!     "post": {"rate": 20, "period_ms": 60000, "burst": 20,
//!              "adaptive": {"penalty_permille": 100, "min_allowance_permille": 250,
//!                           "recovery_ms": 600000},
//!              "block": false},
//!     "ip":   {"rate": 600, "burst": 100,
//!              "block": {"base_ms": 60000, "max_ms": 3600000, "forget_ms": 86400000}}
//!   },
//!   "limiter": {"capacity": 65536},
//!   "breaker": {"failure_threshold": 5, "failure_ratio_permille": 500, "min_requests": 20,
//!               "window_ms": 10000, "open_ms": 5000, "max_open_ms": 120000,
//!               "half_open_probes": 1, "probe_timeout_ms": 10000, "capacity": 1024},
//!   "slots": {"max": 3, "lease_ms": 35000, "on_full": "refuse", "check_pid": true,
//!             "capacity": 16384},
//!   "metrics": {"p99_ms": 100, "error_rate_permille": 50, "min_samples": 20}
//! }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::ffi::status::{FfiError, FfiResult};
use crate::guards::{ActionLimit, BreakerConfig, LimiterConfig, OnFull, SlotsConfig};
use crate::metrics::MetricsConfig;

/// What `lmsrt_guards_open` opens the four shared guards with.
#[derive(Debug, Clone, Default)]
pub(crate) struct GuardsConfig {
    pub(crate) limiter: LimiterConfig,
    pub(crate) breaker: BreakerConfig,
    pub(crate) slots: SlotsConfig,
    pub(crate) metrics: MetricsConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardsJson {
    limits: Option<BTreeMap<String, LimitJson>>,
    limiter: Option<LimiterJson>,
    breaker: Option<BreakerJson>,
    slots: Option<SlotsJson>,
    metrics: Option<MetricsJson>,
}

/// One action's limit. `rate` is required; the rest defaults as `ActionLimit::new` does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitJson {
    rate: u32,
    period_ms: Option<u64>,
    burst: Option<u32>,
    /// `true` (default adaptation), `false` (fixed) or an [`AdaptiveJson`] object.
    adaptive: Option<serde_json::Value>,
    /// `false` (never block, the default), `true` (default blocks) or a [`BlockJson`] object.
    block: Option<serde_json::Value>,
}

/// `ActionLimit::adaptive`'s arguments; absent ones keep `ActionLimit::new`'s values.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdaptiveJson {
    penalty_permille: Option<u32>,
    min_allowance_permille: Option<u32>,
    recovery_ms: Option<u64>,
}

/// `ActionLimit::block`'s arguments; absent ones take the default `ip` action's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockJson {
    base_ms: Option<u64>,
    max_ms: Option<u64>,
    forget_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimiterJson {
    capacity: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakerJson {
    failure_threshold: Option<u32>,
    failure_ratio_permille: Option<u32>,
    min_requests: Option<u32>,
    window_ms: Option<u64>,
    open_ms: Option<u64>,
    max_open_ms: Option<u64>,
    half_open_probes: Option<u32>,
    probe_timeout_ms: Option<u64>,
    capacity: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotsJson {
    #[serde(alias = "max_per_key")]
    max: Option<u32>,
    lease_ms: Option<u64>,
    on_full: Option<String>,
    check_pid: Option<bool>,
    capacity: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsJson {
    p99_ms: Option<u64>,
    error_rate_permille: Option<u32>,
    min_samples: Option<u64>,
}

/// Defaults of a `"block"` object (the default `ip` action's blocks).
const BLOCK_BASE_MS: u64 = 60_000;
const BLOCK_MAX_MS: u64 = 3_600_000;
const BLOCK_FORGET_MS: u64 = 86_400_000;

fn invalid(what: &str, e: impl std::fmt::Display) -> FfiError {
    FfiError::invalid(format!("guards config: {what}: {e}"))
}

/// A `true` / `false` / object switch: `Ok(None)` for false, `Ok(Some(T::default()))` for true.
fn switch<T: DeserializeOwned + Default>(
    v: Option<serde_json::Value>,
    what: &str,
) -> FfiResult<Option<Option<T>>> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Bool(false)) => Ok(Some(None)),
        Some(serde_json::Value::Bool(true)) => Ok(Some(Some(T::default()))),
        Some(v @ serde_json::Value::Object(_)) => serde_json::from_value(v)
            .map(|t| Some(Some(t)))
            .map_err(|e| invalid(what, e)),
        Some(other) => Err(invalid(
            what,
            format!("expected true, false or an object, not {other}"),
        )),
    }
}

fn action_limit(name: &str, j: LimitJson) -> FfiResult<ActionLimit> {
    let mut limit = ActionLimit::new(j.rate, Duration::from_millis(j.period_ms.unwrap_or(60_000)));
    if let Some(b) = j.burst {
        limit = limit.burst(b);
    }
    match switch::<AdaptiveJson>(j.adaptive, &format!("limits.{name}.adaptive"))? {
        None => {}
        Some(None) => limit = limit.fixed(),
        Some(Some(a)) => {
            limit = limit.adaptive(
                a.penalty_permille.unwrap_or(limit.penalty_permille),
                a.min_allowance_permille
                    .unwrap_or(limit.min_allowance_permille),
                Duration::from_millis(a.recovery_ms.unwrap_or(limit.recovery_ms)),
            );
        }
    }
    match switch::<BlockJson>(j.block, &format!("limits.{name}.block"))? {
        None | Some(None) => {}
        Some(Some(b)) => {
            limit = limit.block(
                Duration::from_millis(b.base_ms.unwrap_or(BLOCK_BASE_MS)),
                Duration::from_millis(b.max_ms.unwrap_or(BLOCK_MAX_MS)),
                Duration::from_millis(b.forget_ms.unwrap_or(BLOCK_FORGET_MS)),
            );
        }
    }
    Ok(limit)
}

/// Parses the settings (`None`, empty or blank: all defaults). Range checks are the guards'
/// own, made when they open.
pub(crate) fn parse_guards_config(text: Option<&str>) -> FfiResult<GuardsConfig> {
    let mut c = GuardsConfig::default();
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(c);
    };
    let j: GuardsJson = serde_json::from_str(text).map_err(|e| invalid("JSON", e))?;
    for (name, limit) in j.limits.unwrap_or_default() {
        let limit = action_limit(&name, limit)?;
        c.limiter = c.limiter.action(name, limit);
    }
    if let Some(v) = j.limiter.and_then(|l| l.capacity) {
        c.limiter.capacity = v;
    }
    if let Some(b) = j.breaker {
        let d = &mut c.breaker;
        d.failure_threshold = b.failure_threshold.unwrap_or(d.failure_threshold);
        d.failure_ratio_permille = b.failure_ratio_permille.unwrap_or(d.failure_ratio_permille);
        d.min_requests = b.min_requests.unwrap_or(d.min_requests);
        d.window_ms = b.window_ms.unwrap_or(d.window_ms);
        d.open_ms = b.open_ms.unwrap_or(d.open_ms);
        d.max_open_ms = b.max_open_ms.unwrap_or(d.max_open_ms);
        d.half_open_probes = b.half_open_probes.unwrap_or(d.half_open_probes);
        d.probe_timeout_ms = b.probe_timeout_ms.unwrap_or(d.probe_timeout_ms);
        d.capacity = b.capacity.unwrap_or(d.capacity);
    }
    if let Some(s) = j.slots {
        let d = &mut c.slots;
        d.max_per_key = s.max.unwrap_or(d.max_per_key);
        d.lease_ms = s.lease_ms.unwrap_or(d.lease_ms);
        d.check_pid = s.check_pid.unwrap_or(d.check_pid);
        d.capacity = s.capacity.unwrap_or(d.capacity);
        if let Some(p) = s.on_full {
            d.on_full = match p.as_str() {
                "refuse" | "reject" => OnFull::Reject,
                "evict_oldest" => OnFull::EvictOldest,
                _ => {
                    return Err(invalid(
                        "slots.on_full",
                        format!("expected \"refuse\" or \"evict_oldest\", not {p:?}"),
                    ));
                }
            };
        }
    }
    if let Some(m) = j.metrics {
        let t = &mut c.metrics.thresholds;
        t.p99_ms = m.p99_ms.unwrap_or(t.p99_ms);
        t.error_rate_permille = m.error_rate_permille.unwrap_or(t.error_rate_permille);
        t.min_samples = m.min_samples.unwrap_or(t.min_samples);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::status::lmsrt_status;

    fn limit(c: &GuardsConfig, name: &str) -> ActionLimit {
        c.limiter
            .actions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| *l)
            .unwrap_or_else(|| panic!("no action {name}"))
    }

    #[test]
    fn absent_settings_are_the_rust_defaults() {
        for text in [None, Some(""), Some("  "), Some("{}")] {
            let c = parse_guards_config(text).unwrap();
            let d = GuardsConfig::default();
            assert_eq!(c.limiter.actions, d.limiter.actions);
            assert_eq!(c.limiter.capacity, d.limiter.capacity);
            assert_eq!(c.breaker.failure_threshold, d.breaker.failure_threshold);
            assert_eq!(c.breaker.open_ms, d.breaker.open_ms);
            assert_eq!(c.slots.max_per_key, 3);
            assert_eq!(c.slots.on_full, OnFull::Reject);
            assert_eq!(c.metrics.thresholds, d.metrics.thresholds);
        }
    }

    #[test]
    fn limits_add_or_replace_actions_with_action_limit_new_defaults() {
        let c = parse_guards_config(Some(
            r#"{"limits":{
                "post":{"rate":10},
                "react":{"rate":5,"period_ms":1000,"burst":2,"adaptive":false},
                "ip":{"rate":600,"burst":100,"adaptive":{"penalty_permille":200},"block":{"base_ms":1000}},
                "soft":{"rate":3,"adaptive":true,"block":true}
            },"limiter":{"capacity":128}}"#,
        ))
        .unwrap();
        assert_eq!(
            limit(&c, "post"),
            ActionLimit::per_minute(10),
            "replaced whole"
        );
        assert_eq!(
            limit(&c, "poll"),
            ActionLimit::per_minute(180).burst(30),
            "defaults kept"
        );
        assert_eq!(
            limit(&c, "react"),
            ActionLimit::new(5, Duration::from_secs(1)).burst(2).fixed()
        );
        let ip = limit(&c, "ip");
        assert_eq!(
            (
                ip.penalty_permille,
                ip.min_allowance_permille,
                ip.recovery_ms
            ),
            (200, 250, 600_000)
        );
        assert_eq!(
            (ip.block_base_ms, ip.block_max_ms, ip.block_forget_ms),
            (1000, BLOCK_MAX_MS, BLOCK_FORGET_MS)
        );
        let soft = limit(&c, "soft");
        assert_eq!(soft.penalty_permille, 100);
        assert_eq!(soft.block_base_ms, BLOCK_BASE_MS);
        assert_eq!(c.limiter.capacity, 128);
    }

    #[test]
    fn breaker_slots_and_metrics_fields_map_one_to_one() {
        let c = parse_guards_config(Some(
            r#"{"breaker":{"failure_threshold":2,"failure_ratio_permille":0,"min_requests":3,
                "window_ms":100,"open_ms":50,"max_open_ms":400,"half_open_probes":2,
                "probe_timeout_ms":70,"capacity":64},
               "slots":{"max":5,"lease_ms":2000,"on_full":"evict_oldest","check_pid":false,"capacity":64},
               "metrics":{"p99_ms":7,"error_rate_permille":9,"min_samples":1}}"#,
        ))
        .unwrap();
        let b = &c.breaker;
        assert_eq!(
            (
                b.failure_threshold,
                b.failure_ratio_permille,
                b.min_requests,
                b.window_ms
            ),
            (2, 0, 3, 100)
        );
        assert_eq!(
            (
                b.open_ms,
                b.max_open_ms,
                b.half_open_probes,
                b.probe_timeout_ms,
                b.capacity
            ),
            (50, 400, 2, 70, 64)
        );
        let s = &c.slots;
        assert_eq!(
            (
                s.max_per_key,
                s.lease_ms,
                s.on_full,
                s.check_pid,
                s.capacity
            ),
            (5, 2000, OnFull::EvictOldest, false, 64)
        );
        let t = c.metrics.thresholds;
        assert_eq!((t.p99_ms, t.error_rate_permille, t.min_samples), (7, 9, 1));
        let c =
            parse_guards_config(Some(r#"{"slots":{"max_per_key":2,"on_full":"reject"}}"#)).unwrap();
        assert_eq!((c.slots.max_per_key, c.slots.on_full), (2, OnFull::Reject));
    }

    #[test]
    fn typos_and_malformed_values_are_refused_with_their_place() {
        let err = |t: &str| {
            let e = parse_guards_config(Some(t)).unwrap_err();
            assert_eq!(e.status, lmsrt_status::InvalidArgument);
            e.message
        };
        assert!(err("{").contains("JSON"));
        assert!(err(r#"{"limit":{}}"#).contains("unknown field `limit`"));
        assert!(err(r#"{"limits":{"post":{}}}"#).contains("missing field `rate`"));
        assert!(err(r#"{"limits":{"post":{"rate":-1}}}"#).contains("invalid value"));
        assert!(
            err(r#"{"limits":{"post":{"rate":1,"adaptive":{"penalty":1}}}}"#)
                .contains("limits.post.adaptive: unknown field `penalty`")
        );
        assert!(err(r#"{"limits":{"post":{"rate":1,"block":3}}}"#).contains("limits.post.block"));
        assert!(err(r#"{"breaker":{"open":1}}"#).contains("unknown field `open`"));
        assert!(err(r#"{"slots":{"on_full":"drop"}}"#).contains("slots.on_full"));
        assert!(err(r#"{"metrics":{"p99":1}}"#).contains("unknown field `p99`"));
        assert!(err("[]").contains("JSON"));
    }
}
