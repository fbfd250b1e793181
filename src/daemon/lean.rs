//! The lean path of `GET /v1/stream` and `GET /v1/poll`: a connection whose first request is
//! a stream, or whose requests are long-polls, is served without hyper, so that an idle
//! stream or a waiting poll holds no buffer of its own between writes.
//!
//! Why: hyper keeps a connection's read buffer and its write buffer (8 KiB each) for the
//! connection's life, and a request or response head touches a page of each: an idle stream
//! held two pages more than an idle long-poll (`benches/journal/2026-12-07-sse-lean.md`), and a
//! waiting long-poll the page its head was read into.
//!
//! Long-polls ([`serve_polls`]): a `GET /v1/poll` head alone (HTTP/1.1, no body, no
//! `connection: close`) is answered through the router's own entry (`router::handle_poll`),
//! whole, with `content-length`, the connection kept alive; the next head is read into a
//! short-lived buffer again, and while it is another such poll the connection stays lean.
//! A stream head alone is served as a first one is ([`serve`]); anything else goes to hyper
//! with its bytes replayed, on the same connection; either in a task of its own
//! (`daemon::serve`), so a waiting poll's task holds no room for them. While a poll waits the
//! socket is read for EOF (the client left: the poll and its slot go at once); bytes the
//! client sends meanwhile are kept for after it. During a shutdown the poll's answer says
//! `connection: close`.
//!
//! [`first_request`] reads the connection's first bytes into a short-lived buffer, at most
//! the header timeout after the accept (a head that never finishes is closed then, as hyper
//! closes it), until `head::sniff` can tell. Anything but a `GET /v1/stream` head alone goes to
//! hyper with those bytes replayed first ([`TimedIo::replay`]), so hyper sees the
//! connection as it always did: other routes, streams on reused kept-alive connections,
//! pipelined requests, malformed or oversized heads. A stream head is served by [`serve`]:
//! the router's own entry (`router::handle_stream`: the per-address count behind a proxy,
//! then `stream::serve`, the checks and the body hyper would get), written here as hyper writes
//! it (`date`, chunked frames) with `connection: close`: the connection ends with the stream.
//! The head and the chunk sizes are written from short-lived buffers and the frames straight
//! from the hub's shared rendering (one `writev` per frame). While the body waits the socket is
//! read for EOF, as hyper does, so a client that leaves frees its slot at once; stalled writes
//! fail after `--idle-timeout` ([`TimedIo`]).

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Either;
use hyper::Request;
use hyper::body::Body as _;
use hyper::header::{self, HeaderMap};
use hyper::http::response::Parts;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::head::{self, Sniffed};
use super::response::{Reply, body_bytes};
use super::router;
use super::state::State;
use super::timed_io::TimedIo;

/// A connection once its first bytes have told who serves it.
pub(crate) enum Opened {
    /// A `GET /v1/stream` head alone (its bytes consumed): [`serve`] it.
    Stream(TimedIo, Box<Request<()>>),
    /// A `GET /v1/poll` head alone (its bytes consumed): [`serve_polls`] it.
    Poll(TimedIo, Box<Request<()>>),
    /// hyper serves it, the bytes read so far replayed first, within what is left of the header
    /// timeout.
    Hyper(TimedIo, Duration),
    /// The client left, sent no complete head within the header timeout, or the daemon is
    /// shutting down: closed without an answer, as hyper closes it.
    Closed,
}

/// The first read's room: a browser's `EventSource` request head fits.
const FIRST_READ: usize = 2048;

/// Reads `tcp`'s first bytes until they tell who serves the connection (see the module doc).
/// The buffer exists only while bytes are waiting to be told.
pub(crate) async fn first_request(state: &State, tcp: TcpStream) -> Opened {
    let told = next_request(state, &tcp, Vec::new()).await;
    let mut io = TimedIo::new(tcp, Duration::from_secs(state.config.idle_timeout));
    match told {
        Told::Stream(req) => Opened::Stream(io, req),
        Told::Poll(req) => Opened::Poll(io, req),
        Told::Hyper(read, left) => {
            io.replay(read);
            Opened::Hyper(io, left)
        }
        Told::Closed => Opened::Closed,
    }
}

/// What a request head read by [`next_request`] tells.
enum Told {
    /// A `GET /v1/stream` head alone (its bytes consumed).
    Stream(Box<Request<()>>),
    /// A `GET /v1/poll` head alone (its bytes consumed).
    Poll(Box<Request<()>>),
    /// hyper's: the bytes read, to be replayed, and what is left of the header timeout.
    Hyper(Bytes, Duration),
    /// The client left, sent no complete head within the header timeout, or the daemon is
    /// shutting down.
    Closed,
}

/// Reads a request head on `tcp`, after the bytes of it already read (`buf`), until it tells
/// who serves the connection, within the header timeout.
async fn next_request(state: &State, tcp: &TcpStream, mut buf: Vec<u8>) -> Told {
    let max = state.config.max_header_bytes;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(state.config.header_timeout);
    let mut shutdown = state.shutdown.clone();
    let mut told = (!buf.is_empty()).then(|| head::sniff(&buf, max));
    let sniffed = loop {
        if let Some(s) = told.take() {
            match s {
                Sniffed::Partial => {}
                s => break s,
            }
        }
        let readable = tokio::select! {
            r = tokio::time::timeout_at(deadline, tcp.readable()) => r,
            _ = shutdown.wait_for(|s| *s) => return Told::Closed,
        };
        if !matches!(readable, Ok(Ok(()))) {
            return Told::Closed;
        }
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len().max(FIRST_READ));
        }
        match tcp.try_read_buf(&mut buf) {
            Ok(0) => return Told::Closed,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return Told::Closed,
        }
        told = Some(head::sniff(&buf, max));
    };
    match sniffed {
        Sniffed::Stream(req) => Told::Stream(req),
        Sniffed::Poll(req) => Told::Poll(req),
        _ => Told::Hyper(
            Bytes::from(buf),
            deadline.saturating_duration_since(tokio::time::Instant::now()),
        ),
    }
}

/// Serves the stream `req` on `io` (see the module doc); returns once the connection is done.
pub(crate) async fn serve(
    state: Arc<State>,
    mut io: TimedIo,
    peer: SocketAddr,
    req: Box<Request<()>>,
) {
    let Ok(reply) = router::handle_stream(state, peer, *req).await;
    if let Err(e) = write(&mut io, reply).await {
        tracing::trace!(%peer, error = %e, "stream connection ended with an error");
    }
}

/// How a connection goes on after its long-polls ([`serve_polls`]).
pub(crate) enum AfterPolls {
    /// A `GET /v1/stream` head alone (its bytes consumed): [`serve`] it.
    Stream(Box<Request<()>>),
    /// hyper serves it, the bytes read so far replayed first, with its whole header timeout
    /// (the head came on a kept-alive connection).
    Hyper,
    /// Done: closed, or the client left.
    Closed,
}

/// Serves the long-polls of `io`, whose first request is `req`, a `GET /v1/poll` (see the
/// module doc): each answered with `content-length` on a connection kept alive, while the next
/// head is another poll. Returns how the connection goes on, which the caller serves in a task
/// of its own.
///
/// Thousands of these wait at once, each in a task as large as its largest state: `io` is
/// borrowed (held once, by the caller), the reading of the next head (a timer, the readiness,
/// the shutdown watch) is boxed, and a poll's answer is made into bytes as soon as it comes
/// ([`wait_poll`]), so that the waiting poll's state is the largest, and small.
///
/// Not an `async fn`: one keeps its arguments twice (as given, and moved into its body).
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub(crate) fn serve_polls(
    state: &Arc<State>,
    io: &mut TimedIo,
    peer: &SocketAddr,
    mut req: Box<Request<()>>,
) -> impl Future<Output = AfterPolls> + Send {
    async move {
        // Bytes the client sends while its poll waits (a pipelined request): kept for after.
        let mut early = Vec::new();
        loop {
            let whole = match wait_poll(state, io, peer, req, &mut early).await {
                Waited::Whole(whole) => whole,
                Waited::Other(reply) => {
                    // Boxed: never taken, and its state would be every waiting poll's.
                    let _ = Box::pin(write(io, *reply)).await;
                    return AfterPolls::Closed;
                }
                Waited::Left => return AfterPolls::Closed,
            };
            if write_all(io, [&whole.head, &whole.body]).await.is_err() || whole.close {
                let _ = io.shutdown().await;
                return AfterPolls::Closed;
            }
            drop(whole);
            match Box::pin(next_request(state, io.socket(), std::mem::take(&mut early))).await {
                Told::Poll(r) => req = r,
                Told::Stream(r) => return AfterPolls::Stream(r),
                Told::Hyper(read, _) => {
                    io.replay(read);
                    return AfterPolls::Hyper;
                }
                Told::Closed => return AfterPolls::Closed,
            }
        }
    }
}

/// How a poll's wait ended ([`wait_poll`]).
enum Waited {
    /// Answered whole, as a poll is.
    Whole(Whole),
    /// Answered otherwise: written as a stream would be.
    Other(Box<Reply>),
    /// The client left (or sent more than a head's worth meanwhile).
    Left,
}

/// A whole answer, ready to write: the head, the body, and whether the connection closes after
/// it (a shutdown).
struct Whole {
    head: Vec<u8>,
    body: Bytes,
    close: bool,
}

impl Waited {
    fn answered(state: &State, reply: Reply) -> Waited {
        let (parts, body) = reply.into_parts();
        let Either::Left(whole) = body else {
            return Waited::Other(Box::new(Reply::from_parts(parts, body)));
        };
        let close = *state.shutdown.borrow();
        let body = body_bytes(whole);
        Waited::Whole(Whole {
            head: head(&parts, Some(body.len()), close),
            body,
            close,
        })
    }
}

/// Waits for the poll `req`'s answer, reading `io` meanwhile for the client leaving (bytes it
/// sends are kept in `early`). The answer is made into bytes as it comes, and the poll's
/// future (its slot, its registration) dropped before anything is written.
fn wait_poll(
    state: &Arc<State>,
    io: &mut TimedIo,
    peer: &SocketAddr,
    req: Box<Request<()>>,
    early: &mut Vec<u8>,
) -> impl Future<Output = Waited> + Send {
    let mut waiting = Some(router::handle_poll(state.clone(), *peer, *req));
    poll_fn(move |cx| {
        let Some(poll) = waiting.as_mut() else {
            return Poll::Ready(Waited::Left);
        };
        let max = state.config.max_header_bytes;
        if left_or_sent(Pin::new(&mut *io), cx, early, max) {
            waiting = None;
            return Poll::Ready(Waited::Left);
        }
        let Poll::Ready(Ok(reply)) = poll.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        waiting = None;
        Poll::Ready(Waited::answered(state, reply))
    })
}

/// Writes `reply` on `io`, then closes it.
async fn write(io: &mut TimedIo, reply: Reply) -> io::Result<()> {
    let (parts, body) = reply.into_parts();
    let streamed = match body {
        Either::Left(whole) => {
            let whole = body_bytes(whole);
            let mut out = head(&parts, Some(whole.len()), true);
            out.extend_from_slice(&whole);
            io.write_all(&out).await?;
            return io.shutdown().await;
        }
        Either::Right(streamed) => streamed,
    };
    io.write_all(&head(&parts, None, true)).await?;
    drop(parts);
    let mut body = streamed;
    loop {
        let frame = poll_fn(|cx| {
            if client_left(Pin::new(&mut *io), cx) {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::ConnectionAborted)));
            }
            Pin::new(&mut body).poll_frame(cx).map(Ok)
        })
        .await?;
        let Some(Ok(frame)) = frame else { break };
        if let Ok(data) = frame.into_data()
            && !data.is_empty()
        {
            write_chunk(io, &data).await?;
        }
    }
    // The body is done (its slot and counts given back): the last chunk, and the end.
    drop(body);
    io.write_all(b"0\r\n\r\n").await?;
    io.shutdown().await
}

/// The head of a response as hyper writes it (status line, headers, `date`), framed by
/// `length` (else chunked), with `connection: close` when `close`.
fn head(parts: &Parts, length: Option<usize>, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + headers_len(&parts.headers));
    let status = parts.status;
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        let _ = write!(
            out,
            "date: {}\r\n",
            httpdate::fmt_http_date(SystemTime::now())
        );
    }
    let _ = match length {
        Some(n) => write!(out, "content-length: {n}\r\n"),
        None => write!(out, "transfer-encoding: chunked\r\n"),
    };
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn headers_len(h: &HeaderMap) -> usize {
    h.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum()
}

/// Writes `data` as one chunk: its size, the data (from where it is, not copied) and the
/// chunk's end, in one `writev` as far as the socket takes it.
async fn write_chunk(io: &mut TimedIo, data: &[u8]) -> io::Result<()> {
    let mut size = [0u8; 18];
    let n = {
        let mut w = &mut size[..];
        let _ = write!(w, "{:x}\r\n", data.len());
        18 - w.len()
    };
    write_all(io, [&size[..n], data, b"\r\n"]).await
}

/// Writes `bufs` in order, with as few `writev`s as the socket allows. Not an `async fn`: its
/// state (the slices and how much is written) is part of every poll's task, and an `async fn`
/// would keep its arguments twice.
fn write_all<'a, const N: usize>(
    io: &'a mut TimedIo,
    bufs: [&'a [u8]; N],
) -> impl Future<Output = io::Result<()>> + 'a {
    let mut written = 0;
    poll_fn(move |cx| {
        loop {
            // What is left of `bufs`, as slices for one `writev`.
            let mut left = [IoSlice::new(&[]); N];
            let (mut n, mut skip) = (0, written);
            for b in bufs {
                if skip >= b.len() {
                    skip -= b.len();
                    continue;
                }
                left[n] = IoSlice::new(&b[skip..]);
                skip = 0;
                n += 1;
            }
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut *io).poll_write_vectored(cx, &left[..n]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(k)) => written += k,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
}

/// Reads in most this many times per look for the client's EOF: a client that sends bytes
/// after its stream's head cannot keep the task reading.
const READS_PER_LOOK: usize = 8;

/// Whether the client has left (EOF or an error) while its poll waits. What it sends meanwhile
/// (a pipelined request) is kept in `early`, up to `max` bytes; more than that, and the
/// connection is given up as a client's that left.
fn left_or_sent(
    io: Pin<&mut TimedIo>,
    cx: &mut Context<'_>,
    early: &mut Vec<u8>,
    max: usize,
) -> bool {
    read_while_waiting(io, cx, |sent| {
        if early.len() + sent.len() > max {
            return false;
        }
        early.extend_from_slice(sent);
        true
    })
}

/// Whether the client has left (EOF or an error), reading what it sent meanwhile. Bytes after a
/// stream's head are dropped: the response says `connection: close`, so no further request on
/// this connection is answered (a client that pipelines one sends it again elsewhere).
fn client_left(io: Pin<&mut TimedIo>, cx: &mut Context<'_>) -> bool {
    read_while_waiting(io, cx, |_| true)
}

/// Whether the client has left (EOF, an error, or `keep` refusing what it sent), handing what
/// it sends meanwhile to `keep`.
fn read_while_waiting(
    mut io: Pin<&mut TimedIo>,
    cx: &mut Context<'_>,
    mut keep: impl FnMut(&[u8]) -> bool,
) -> bool {
    let mut scratch = [0u8; 512];
    for _ in 0..READS_PER_LOOK {
        let mut rb = ReadBuf::new(&mut scratch);
        match io.as_mut().poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => return true,
            Poll::Ready(Ok(())) => {
                if !keep(rb.filled()) {
                    return true;
                }
            }
            Poll::Ready(Err(_)) => return true,
            Poll::Pending => return false,
        }
    }
    // Still more to read: look again on the next turn rather than now.
    cx.waker().wake_by_ref();
    false
}

#[cfg(test)]
mod tests;
