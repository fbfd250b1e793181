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

use super::replay::Ticket;
use crate::error::{Error, ErrorCode, Result};
use crate::event::NewEvent;
use crate::store::{EventStore, MAX_BATCH};

struct Job {
    events: Vec<NewEvent>,
    reply: Answer,
}

/// Where a job's outcome goes: the request's channel, and the replay window's ticket of the
/// request, recorded even when the request has gone away (its client hung up mid-append), so
/// that a replay of it finds the ids instead of appending again.
struct Answer {
    tx: oneshot::Sender<Result<Vec<i64>>>,
    ticket: Option<Ticket>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("ticket", &self.ticket.is_some())
            .finish()
    }
}

impl Answer {
    fn send(self, r: Result<Vec<i64>>) {
        if let Some(t) = self.ticket {
            t.finish(r.as_deref().ok());
        }
        let _ = self.tx.send(r);
    }
}

/// The handle requests use to append.
#[derive(Debug, Clone)]
pub(crate) struct Appender {
    tx: mpsc::Sender<Job>,
}

type Reply = (Answer, Result<Vec<i64>>);

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
        for (answer, r) in batch.drain(..) {
            answer.send(r);
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
    /// their ids once committed. `ticket` records the outcome in the replay window, whether
    /// or not this future is still awaited then (dropped unfinished, it records a failure).
    pub(crate) async fn append(
        &self,
        events: Vec<NewEvent>,
        ticket: Option<Ticket>,
    ) -> Result<Vec<i64>> {
        let (tx, rx) = oneshot::channel();
        let reply = Answer { tx, ticket };
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
                a.append(vec![NewEvent::new(ty, 1), NewEvent::new("x", 2)], None)
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
            .append(vec![NewEvent::new("m", 1).idempotency_key("k")], None)
            .await
            .unwrap();
        let again = a
            .append(vec![NewEvent::new("m", 1).idempotency_key("k")], None)
            .await
            .unwrap();
        assert_eq!(k, again);
    }

    /// A request that goes away once its events are queued (its client hung up) still has its
    /// outcome recorded in the replay window: a replay gets the ids instead of appending again.
    #[tokio::test]
    async fn the_outcome_is_recorded_when_the_request_goes_away() {
        use super::super::replay::{self, Begin, ReplayWindow};
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(EventStore::open(dir.path().join("e.db"), Default::default()).unwrap());
        let a = Appender::start(store.clone()).unwrap();
        let window = Arc::new(ReplayWindow::new(10));
        let Begin::First(ticket) = window.begin("k1", b"tag", i64::MAX, 0) else {
            panic!("a new signature comes first");
        };
        // Polled once (the job is queued), then dropped. On this one-thread runtime the answer
        // cannot come back during that poll.
        let mut request = Box::pin(a.append(vec![NewEvent::new("m", 1)], Some(ticket)));
        std::future::poll_fn(|cx| {
            assert!(request.as_mut().poll(cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        drop(request);
        let ids = match window.begin("k1", b"tag", i64::MAX, 0) {
            Begin::Replay(ids) => ids,
            Begin::Wait(rx) => {
                tokio::time::timeout(std::time::Duration::from_secs(10), replay::wait(rx))
                    .await
                    .expect("the outcome within 10 s")
                    .expect("recorded as appended")
            }
            _ => panic!("the signature was forgotten: a replay would append again"),
        };
        assert_eq!(ids.len(), 1);
        let stored = store.fetch(&crate::store::FetchRequest::new([1])).unwrap();
        assert_eq!(
            stored.events.iter().map(|e| e.id).collect::<Vec<_>>(),
            ids.to_vec()
        );
    }
}
