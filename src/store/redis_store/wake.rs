//! Waiting on Redis: one subscriber thread per store listens on the store's wake-up channel
//! (every append publishes the new head there) and wakes the waiters of this process.
//!
//! The thread starts with the first wait. While it is not subscribed (Redis down, reconnecting),
//! waiters look again every [`UNSUBSCRIBED_POLL`]; while it is, every [`SAFETY_NET`] as well (a
//! wake-up lost with a dropped connection costs at most that). Each wake re-runs the waiters'
//! fetches, whatever channel the append was on: simple, and cheap for a process with a few
//! waiters (a PHP worker). The daemon's fan-out, which holds thousands, is fed by `feed` instead
//! (`EventStore::subscribe`), and shares this file's listening loop ([`keep_listening`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ::redis::RedisResult;

use super::RedisStore;
use super::connect::Endpoint;
use crate::error::Result;
use crate::store::{Batch, FetchRequest};

/// How often a waiter looks again while subscribed, woken or not.
const SAFETY_NET: Duration = Duration::from_secs(1);
/// How often a waiter looks while no subscription is up.
const UNSUBSCRIBED_POLL: Duration = Duration::from_millis(50);
/// How long a listener blocks on a read before it checks whether the store closed.
pub(super) const READ_SLICE: Duration = Duration::from_millis(250);
/// Pause before the subscriber reconnects.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct State {
    /// Moves on every wake-up received, and when the subscription comes or goes.
    generation: u64,
    subscribed: bool,
    started: bool,
}

/// The wake-ups of one store in this process.
#[derive(Debug)]
pub(super) struct Wake {
    channel: String,
    state: Mutex<State>,
    cv: Condvar,
    stop: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Wake {
    pub(super) fn new(channel: String) -> Wake {
        Wake {
            channel,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the subscriber thread, once.
    fn ensure_started(self: &Arc<Self>, endpoint: &Arc<Endpoint>) {
        {
            let mut s = self.state();
            if s.started || self.stop.load(Ordering::SeqCst) {
                return;
            }
            s.started = true;
        }
        let me = self.clone();
        let endpoint = endpoint.clone();
        let spawned = std::thread::Builder::new()
            .name("lmsrt-redis-wake".into())
            .spawn(move || me.run(&endpoint));
        match spawned {
            Ok(h) => *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(h),
            // No thread: waiters poll (they see `subscribed` false), and the next wait retries.
            Err(_) => self.state().started = false,
        }
    }

    fn bump(&self, subscribed: Option<bool>) {
        let mut s = self.state();
        s.generation += 1;
        if let Some(sub) = subscribed {
            s.subscribed = sub;
        }
        self.cv.notify_all();
    }

    /// The generation now, and whether a subscription is up.
    fn snapshot(&self) -> (u64, bool) {
        let s = self.state();
        (s.generation, s.subscribed)
    }

    /// Sleeps until the generation moves past `seen`, or `until`.
    fn sleep(&self, seen: u64, until: Instant) {
        let mut s = self.state();
        while s.generation == seen && !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= until {
                return;
            }
            s = self
                .cv
                .wait_timeout(s, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Stops the thread and wakes every waiter (they then find the store closed).
    pub(super) fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.bump(Some(false));
        if let Some(h) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }

    fn run(&self, endpoint: &Endpoint) {
        keep_listening(endpoint, &self.channel, &self.stop, |heard| match heard {
            // Subscribed: waiters look again, for what was appended while nobody listened.
            Heard::Subscribed => self.bump(Some(true)),
            Heard::Message(_) => self.bump(None),
            Heard::Quiet => {}
            Heard::Down => self.bump(Some(false)),
        });
    }
}

/// What a listener on a wake-up channel is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Heard {
    /// The subscription is up (first, or again after a reconnect): anything may have been
    /// appended while nobody listened.
    Subscribed,
    /// A wake-up: the head it carries (every append publishes its new head).
    Message(Option<i64>),
    /// [`READ_SLICE`] passed without a message.
    Quiet,
    /// The connection failed; a reconnect follows after [`RECONNECT_PAUSE`].
    Down,
}

/// Holds a subscription to `channel` until `stop` is set, reconnecting whenever it fails, and
/// tells `on` what it hears. Runs on the caller's thread.
///
/// On a Redis Cluster it subscribes on the node the store is on when it connects, and stays
/// there: `PUBLISH` reaches every node of a cluster (the cluster bus broadcasts it), so a slot
/// that moves away does not silence it. A node that fails sends the reconnect to the seeds.
pub(super) fn keep_listening(
    endpoint: &Endpoint,
    channel: &str,
    stop: &AtomicBool,
    mut on: impl FnMut(Heard),
) {
    while !stop.load(Ordering::SeqCst) {
        let _ = listen(endpoint, channel, stop, &mut on);
        on(Heard::Down);
        let resume = Instant::now() + RECONNECT_PAUSE;
        while Instant::now() < resume && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Subscribes and relays what it hears until the connection fails or `stop` is set.
fn listen(
    endpoint: &Endpoint,
    channel: &str,
    stop: &AtomicBool,
    on: &mut impl FnMut(Heard),
) -> RedisResult<()> {
    let (_, mut con) = endpoint.connect()?;
    let mut ps = con.as_pubsub();
    ps.subscribe(channel)?;
    ps.set_read_timeout(Some(READ_SLICE))?;
    on(Heard::Subscribed);
    while !stop.load(Ordering::SeqCst) {
        match ps.get_message() {
            Ok(m) => on(Heard::Message(
                m.get_payload::<String>().ok().and_then(|h| h.parse().ok()),
            )),
            Err(e) if e.is_timeout() => on(Heard::Quiet),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A wait: fetch; when nothing is there, sleep until a wake-up, the safety net or `deadline`,
/// and fetch again. A failing fetch ends it with its error: nothing hangs on a Redis that is
/// down.
pub(super) fn wait(store: &RedisStore, mut req: FetchRequest, deadline: Instant) -> Result<Batch> {
    store.check_open()?;
    store.wake.ensure_started(&store.endpoint);
    loop {
        let (seen, subscribed) = store.wake.snapshot();
        let batch = store.fetch(&req)?;
        if !batch.events.is_empty() || batch.gap || batch.has_more {
            return Ok(batch);
        }
        req.cursor = batch.cursor;
        let now = Instant::now();
        if now >= deadline {
            return Ok(batch);
        }
        let nap = if subscribed {
            SAFETY_NET
        } else {
            UNSUBSCRIBED_POLL
        };
        store.wake.sleep(seen, deadline.min(now + nap));
        store.check_open()?;
    }
}
