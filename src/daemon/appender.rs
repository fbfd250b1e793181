//! The appender: one thread that commits the events of concurrent `POST /v1/events` requests
//! together.
//!
//! Each request hands its events over a channel and awaits its ids. The thread takes every
//! request waiting at that moment and appends them in one transaction, so eight concurrent
//! publishers cost one commit (and one wake-up of the store's tail reader) instead of eight,
//! and no request hops through the runtime's blocking pool. Every request is answered only
//! after the transaction holding its events has committed; the answers of one transaction go
//! back to the runtime together, with one wake-up.
//!
//! One transaction is all or nothing, so a request with a bad event must not sink the others:
//! when a combined append is refused for a reason that belongs to one request (validation, an
//! idempotency conflict), the requests are appended one by one, and each gets its own answer.
//! Requests carrying idempotency keys are appended on their own, so that two requests retrying
//! the same key keep the store's semantics (the second gets the first's id).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::{Notify, oneshot};

use crate::error::{Error, ErrorCode, Result};
use crate::event::NewEvent;
use crate::store::{EventStore, MAX_BATCH};

struct Job {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<i64>>>,
}

/// The handle requests use to append.
#[derive(Debug, Clone)]
pub(crate) struct Appender {
    tx: mpsc::Sender<Job>,
}

type Reply = (oneshot::Sender<Result<Vec<i64>>>, Result<Vec<i64>>);

/// Answers on their way back to the runtime. The appender thread hands over a whole
/// transaction's answers at once and wakes the runtime once ([`complete`] then answers each
/// request from a runtime thread): answering each request's channel from the appender thread
/// would wake the runtime once per request, a system call each.
#[derive(Debug, Default)]
struct Done {
    replies: Mutex<Vec<Reply>>,
    notify: Notify,
    closed: AtomicBool,
}

impl Done {
    fn hand_over(&self, replies: &mut Vec<Reply>) {
        if replies.is_empty() {
            return;
        }
        self.replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(replies);
        self.notify.notify_one();
    }
}

/// Answers the requests whose transactions the appender thread finished; ends with it.
async fn complete(done: Arc<Done>) {
    let mut batch = Vec::new();
    loop {
        done.notify.notified().await;
        std::mem::swap(
            &mut batch,
            &mut *done.replies.lock().unwrap_or_else(|p| p.into_inner()),
        );
        for (tx, r) in batch.drain(..) {
            let _ = tx.send(r);
        }
        if done.closed.load(Ordering::Acquire) {
            return;
        }
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("events", &self.events.len())
            .finish()
    }
}

impl Appender {
    /// Starts the appender thread, and the task that hands its answers to the requests (on
    /// the current runtime); both end when every `Appender` handle is dropped.
    pub(crate) fn start(store: Arc<EventStore>) -> Result<Appender> {
        let (tx, rx) = mpsc::channel::<Job>();
        let done = Arc::new(Done::default());
        let d = done.clone();
        std::thread::Builder::new()
            .name("lmsrt-appender".into())
            .spawn(move || {
                run(&store, &rx, &d);
                d.closed.store(true, Ordering::Release);
                d.notify.notify_one();
            })
            .map_err(|e| Error::Internal(format!("starting the appender thread: {e}")))?;
        tokio::spawn(complete(done));
        Ok(Appender { tx })
    }

    /// Appends `events` (in one transaction, possibly shared with other requests) and returns
    /// their ids once committed.
    pub(crate) async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<i64>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { events, reply })
            .map_err(|_| Error::Closed)?;
        rx.await.unwrap_or(Err(Error::Closed))
    }
}

fn run(store: &EventStore, rx: &mpsc::Receiver<Job>, done: &Done) {
    let mut replies: Vec<Reply> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut total = jobs[0].events.len();
        while total < MAX_BATCH / 2 {
            match rx.try_recv() {
                Ok(j) => {
                    total += j.events.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let (alone, shared): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|j| j.events.iter().any(|e| e.idempotency_key.is_some()));
        for j in alone {
            let r = store.append_batch(j.events);
            replies.push((j.reply, r));
        }
        commit_together(store, shared, &mut replies);
        // Every request is answered after its transaction committed (or failed).
        done.hand_over(&mut replies);
    }
}

fn commit_together(store: &EventStore, jobs: Vec<Job>, replies: &mut Vec<Reply>) {
    match jobs.len() {
        0 => return,
        1 => {
            let j = jobs.into_iter().next().expect("one job");
            let r = store.append_batch(j.events);
            replies.push((j.reply, r));
            return;
        }
        _ => {}
    }
    let lens: Vec<usize> = jobs.iter().map(|j| j.events.len()).collect();
    let all: Vec<NewEvent> = jobs.iter().flat_map(|j| j.events.iter().cloned()).collect();
    match store.append_batch(all) {
        Ok(ids) => {
            let mut at = 0;
            for (j, n) in jobs.into_iter().zip(lens) {
                replies.push((j.reply, Ok(ids[at..at + n].to_vec())));
                at += n;
            }
        }
        Err(e) if is_per_request(&e) => {
            // One request's fault: find it by appending them one by one.
            for j in jobs {
                let r = store.append_batch(j.events);
                replies.push((j.reply, r));
            }
        }
        Err(e) => {
            for j in jobs {
                replies.push((j.reply, Err(same_error(&e))));
            }
        }
    }
}

/// Errors caused by one request's content rather than by the store.
fn is_per_request(e: &Error) -> bool {
    matches!(
        e.code(),
        ErrorCode::InvalidArgument
            | ErrorCode::InvalidEventType
            | ErrorCode::InvalidPriority
            | ErrorCode::InvalidChannel
            | ErrorCode::InvalidData
            | ErrorCode::DataTooLarge
            | ErrorCode::InvalidTtl
            | ErrorCode::IdempotencyConflict
    )
}

/// A copy of a store error for each request of a failed combined append.
fn same_error(e: &Error) -> Error {
    match e {
        Error::Closed => Error::Closed,
        Error::Busy(m) => Error::Busy(m.clone()),
        Error::Storage(m) => Error::Storage(m.clone()),
        Error::Corrupt(m) => Error::Corrupt(m.clone()),
        other => match other.code() {
            ErrorCode::Io => Error::Storage(other.to_string()),
            _ => Error::Internal(other.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_commits_and_a_bad_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(EventStore::open(dir.path().join("e.db"), Default::default()).unwrap());
        let a = Appender::start(store.clone()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let a = a.clone();
            tasks.push(tokio::spawn(async move {
                let ty = if i == 17 {
                    "Bad Type"
                } else {
                    "message_create"
                };
                a.append(vec![NewEvent::new(ty, 1), NewEvent::new("x", 2)])
                    .await
            }));
        }
        let mut ids = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            let r = t.await.unwrap();
            if i == 17 {
                assert_eq!(r.unwrap_err().code(), ErrorCode::InvalidEventType);
            } else {
                let v = r.unwrap();
                assert_eq!(v.len(), 2);
                assert_eq!(v[1], v[0] + 1, "a request's events stay together");
                ids.extend(v);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 78);
        let k = a
            .append(vec![NewEvent::new("m", 1).idempotency_key("k")])
            .await
            .unwrap();
        let again = a
            .append(vec![NewEvent::new("m", 1).idempotency_key("k")])
            .await
            .unwrap();
        assert_eq!(k, again);
    }
}
