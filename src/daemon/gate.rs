//! The gate in front of the store: every store call of a request (or a background task) goes
//! through [`State::store_call`] or [`State::append`], behind the store's circuit breaker, on a
//! bounded number of blocking threads, with the outcome booked with the breaker and the
//! metrics. Also what the breaker tells clients ([`State::advertised`]).

use std::sync::Mutex;
#[cfg(feature = "redis")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::error::ApiError;
use super::replay::Ticket;
use super::state::State;
use crate::error::ErrorCode;
use crate::event::NewEvent;
use crate::guards::{BreakerStatus, ClientMode};
use crate::metrics::{Counter, Histogram};
use crate::store::EventStore;

const STORE_BREAKER: &str = "store";

/// How long a status read from a breaker in Redis (`--guards redis`) serves later responses.
const VIEW_TTL: Duration = Duration::from_millis(10);

/// The store breaker's status as last seen, for breakers in Redis: every response advertises
/// the breaker's mode, and a fan-out answering 10,000 polls at once would otherwise make 10,000
/// round trips to read one value. Admission ([`State::admit`]) and outcomes still go to Redis
/// every time; this only spares the reads, which are at most [`VIEW_TTL`] old (their retry
/// hint is aged accordingly) and refreshed by every outcome booked.
///
/// A view older than that is refreshed in the background (awaited on the serving thread's
/// multiplexed connection), and meanwhile the old one still serves: a response never waits on
/// Redis for the mode it advertises.
#[derive(Debug, Default)]
pub(crate) struct BreakerView {
    seen: Mutex<Option<(Instant, BreakerStatus)>>,
    /// A refresh is on its way.
    #[cfg(feature = "redis")]
    refreshing: AtomicBool,
}

impl BreakerView {
    fn remember(&self, s: BreakerStatus) {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), s));
    }
}

impl State {
    /// Whether the store's circuit breaker lets a call through now (a 503 telling the client
    /// to back off if not).
    async fn admit(&self) -> Result<(), ApiError> {
        #[cfg(feature = "redis")]
        let status = if self.shared_guards.is_some() {
            // Boxed, as the other calls to Redis here: a waiting poll's future keeps room for
            // its largest state, and these would be it.
            Box::pin(self.breakers.check_async(STORE_BREAKER)).await
        } else {
            self.breakers.check(STORE_BREAKER)
        };
        #[cfg(not(feature = "redis"))]
        let status = self.breakers.check(STORE_BREAKER);
        let status = status.map_err(|e| ApiError::Internal(e.to_string()))?;
        if !status.allowed {
            Err(ApiError::Unavailable {
                code: ErrorCode::CircuitOpen.name(),
                message: "the event store is failing; back off and retry".into(),
                mode: status.mode,
                retry_after_ms: status.retry_after_ms.max(1),
            })
        } else {
            Ok(())
        }
    }

    /// The store breaker's status now (`None` if it cannot be read); for breakers in Redis,
    /// possibly as seen up to [`VIEW_TTL`] ago.
    pub(crate) fn store_breaker(&self) -> Option<BreakerStatus> {
        let Some(view) = &self.breaker_view else {
            return self.breakers.status(STORE_BREAKER).ok();
        };
        let seen = *view.seen.lock().unwrap_or_else(|p| p.into_inner());
        let aged = seen.map(|(at, mut s)| {
            let age = at.elapsed();
            s.retry_after_ms = s.retry_after_ms.saturating_sub(age.as_millis() as u64);
            (age, s)
        });
        if let Some((age, s)) = aged
            && age < VIEW_TTL
        {
            return Some(s);
        }
        #[cfg(feature = "redis")]
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            if !view.refreshing.swap(true, Ordering::AcqRel) {
                let (breakers, view) = (self.breakers.clone(), view.clone());
                rt.spawn(async move {
                    if let Ok(s) = breakers.status_async(STORE_BREAKER).await {
                        view.remember(s);
                    }
                    view.refreshing.store(false, Ordering::Release);
                });
            }
            return aged.map(|(_, s)| s);
        }
        // Outside a runtime (nothing else to serve): read it now.
        let s = self.breakers.status(STORE_BREAKER).ok();
        self.remember(s);
        s
    }

    /// Keeps `status` (just read or returned by an outcome) as the latest view, if there is one.
    fn remember(&self, status: Option<BreakerStatus>) {
        if let (Some(view), Some(s)) = (&self.breaker_view, status) {
            view.remember(s);
        }
    }

    /// The mode and `retry_ms` to advertise now.
    pub(crate) fn advertised(&self) -> (ClientMode, u64) {
        let status = self.store_breaker();
        let mode = status.map_or(ClientMode::Long, |s| s.mode);
        let retry_ms = if *self.shutdown.borrow() {
            1000
        } else {
            status.map_or(0, |s| s.retry_after_ms)
        };
        (mode, retry_ms)
    }

    /// Appends through the appender thread (commits shared with concurrent requests), behind
    /// the store's circuit breaker; `ticket` records the outcome in the replay window.
    pub(crate) async fn append(
        &self,
        events: Vec<NewEvent>,
        ticket: Ticket,
    ) -> Result<Vec<i64>, ApiError> {
        self.admit().await?;
        self.metrics.incr(Counter::Appends);
        let r = self.appender.append(events, Some(ticket)).await;
        self.outcome(r, Counter::Appends).await
    }

    /// Books an outcome with the store breaker: a store failure, or a call the store answered.
    async fn book(&self, failed: bool) -> Option<BreakerStatus> {
        #[cfg(feature = "redis")]
        if self.shared_guards.is_some() {
            return Box::pin(self.breakers.record_async(STORE_BREAKER, failed))
                .await
                .ok();
        }
        if failed {
            self.breakers.record_failure(STORE_BREAKER).ok()
        } else {
            self.breakers.record_success(STORE_BREAKER).ok()
        }
    }

    /// Books a store call's outcome with the breaker and the metrics, and maps its error.
    async fn outcome<T>(&self, r: crate::Result<T>, counter: Counter) -> Result<T, ApiError> {
        match r {
            Ok(v) => {
                self.remember(self.book(false).await);
                Ok(v)
            }
            Err(e) => {
                let fault = e.is_fault();
                if fault {
                    self.metrics.incr(match counter {
                        Counter::Appends => Counter::AppendErrors,
                        _ => Counter::FetchErrors,
                    });
                    if e.code() == ErrorCode::Corrupt {
                        self.metrics.incr(Counter::CorruptReads);
                    }
                    tracing::warn!(error = %e, "store call failed");
                }
                // A call the store answered (the request was bad) is not a store failure.
                let after = self.book(fault).await;
                self.remember(after);
                let mode = after.map_or(ClientMode::Medium, |s| s.mode.max(ClientMode::Medium));
                let retry = after.map_or(1000, |s| s.retry_after_ms.max(1000));
                Err(ApiError::from_store(e, mode, retry))
            }
        }
    }

    /// Runs `f` on a blocking thread (at most as many at once as `sem` allows), behind the
    /// store's circuit breaker, counting the call in `counter` (and its `_errors` twin).
    pub(crate) async fn store_call<T: Send + 'static>(
        &self,
        sem: &Semaphore,
        counter: Counter,
        f: impl FnOnce(&EventStore) -> crate::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.admit().await?;
        self.metrics.incr(counter);
        let _permit = sem
            .acquire()
            .await
            .map_err(|_| ApiError::Internal("semaphore closed".into()))?;
        let store = self.store.clone();
        let started = Instant::now();
        let r = tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ApiError::Internal(format!("store task: {e}")))?;
        if counter == Counter::Fetches {
            self.metrics.record(Histogram::Fetch, started.elapsed());
        }
        self.outcome(r, counter).await
    }

    /// Gives `lease` back from a task of its own (its request went away before its answer). In
    /// line once the daemon shuts down or outside a runtime: a runtime that stops drops the tasks
    /// it has not run, and a slot given back in one of them would stay taken on every host until
    /// its lease ran out.
    #[cfg(feature = "redis")]
    pub(crate) fn release_later(self: &std::sync::Arc<Self>, lease: crate::guards::Lease) {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if !*self.shutdown.borrow() => {
                let state = self.clone();
                rt.spawn(async move { state.slots.release_async(&lease).await });
            }
            _ => {
                self.slots.release(&lease);
            }
        }
    }
}
