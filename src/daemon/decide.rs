//! Where a guard decides. Host-local guards (`--guards local`, the default) decide in a few
//! atomic operations, inline. Guards in Redis (`--guards redis`) cost a round trip, and a Redis
//! (or a cluster's master) that stops answering holds a call for up to
//! [`IO_TIMEOUT`](crate::guards::redis::IO_TIMEOUT): on a shard's one serving thread that
//! would hold up every connection the shard serves, and even a healthy round trip would leave
//! the thread idle while it lasts. So there each decision runs on the runtime's blocking
//! threads, at most [`GUARD_CALLS`] at once (each shard's runtime has that many blocking
//! threads beyond those of the store's calls), and only the request that needs it waits.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::state::State;

/// Guard decisions in flight at once with `--guards redis`: beyond them a decision
/// waits for a permit (asynchronously). Each holds a blocking thread for its round trip; a
/// hung master holds one for at most `IO_TIMEOUT`, and its back-off then fails the next calls
/// fast.
pub(crate) const GUARD_CALLS: usize = 16;

impl State {
    /// Whether guard decisions leave the serving thread (`--guards redis`).
    pub(crate) fn remote_guards(&self) -> bool {
        self.guard_calls.is_some()
    }

    /// Runs a guard decision `f`: inline with host-local guards, else on a blocking thread
    /// while the caller awaits it. A panic in `f` goes on in the caller, as inline.
    pub(crate) fn decide<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Arc<State>) -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send + 'static {
        let call = if self.remote_guards() {
            Call::Later(self.clone(), f)
        } else {
            Call::Done(f(self))
        };
        async move {
            let (state, f) = match call {
                Call::Done(v) => return v,
                Call::Later(state, f) => (state, f),
            };
            let _permit = match &state.guard_calls {
                Some(sem) => sem.acquire().await.ok(),
                None => None,
            };
            let s = state.clone();
            match tokio::task::spawn_blocking(move || f(&s)).await {
                Ok(v) => v,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
    }

    /// Runs a decision nobody waits for (a slot given back, a lease renewed): in the
    /// background as [`decide`](Self::decide) would with guards in Redis, else inline. Also
    /// inline once the daemon shuts down or outside a runtime: a runtime that stops drops the
    /// tasks it has not run, and a slot given back in one of them would stay taken on the
    /// other hosts until its lease ran out.
    pub(crate) fn decide_later(self: &Arc<Self>, f: impl FnOnce(&Arc<State>) + Send + 'static) {
        if !self.remote_guards() || *self.shutdown.borrow() {
            return f(self);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(self.decide(f));
            }
            Err(_) => f(self),
        }
    }
}

/// A decision made, or to be made off the serving thread.
enum Call<T, F> {
    Done(T),
    Later(Arc<State>, F),
}

/// The permits of the daemon's guard calls: `Some` with `--guards redis`.
pub(crate) fn guard_calls(remote: bool) -> Option<Semaphore> {
    remote.then(|| Semaphore::new(GUARD_CALLS))
}
