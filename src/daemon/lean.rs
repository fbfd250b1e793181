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
//! (`daemon::serve`), so a waiting poll's task holds no room for them. While a poll waits the socket is read for EOF (the client left: the poll and its slot go at once); bytes
//! the client sends meanwhile are kept for after it. During a shutdown the poll's answer says
//! `connection: close`.
//!
//! [`first_request`] reads the connection's first bytes into a short-lived buffer, at most
//! the header timeout after the accept (a head that never finishes is closed then, as hyper
//! closes it), until `head::sniff` can tell. Anything but a `GET /v1/stream` head alone goes to
//! hyper with those bytes replayed first ([`TimedIo::replaying`]), so hyper sees the
//! connection as it always did: other routes, streams on reused kept-alive connections,
//! pipelined requests, malformed or oversized heads. A stream head is served by [`serve`]:
//! the router's own entry (`router::handle_stream`: the per-address count behind a proxy,
//! then `stream::serve`, the checks and the body hyper would get), written here as hyper writes
//! it (`date`, chunked frames) with `connection: close`: the connection ends with the stream.
//! The head and the chunk sizes are written from short-lived buffers and the frames straight
//! from the hub's shared rendering (one `writev` per frame). While the body waits the socket is
//! read for EOF, as hyper does, so a client that leaves frees its slot at once; stalled writes
//! fail after `--idle-timeout` ([`TimedIo`]).

use std::future::poll_fn;
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
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
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
    next_request(state, tcp, Vec::new()).await
}

/// Reads a request head on `tcp`, after the bytes of it already read (`buf`), until it tells
/// who serves the connection, within the header timeout.
async fn next_request(state: &State, tcp: TcpStream, mut buf: Vec<u8>) -> Opened {
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
            _ = shutdown.wait_for(|s| *s) => return Opened::Closed,
        };
        if !matches!(readable, Ok(Ok(()))) {
            return Opened::Closed;
        }
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len().max(FIRST_READ));
        }
        match tcp.try_read_buf(&mut buf) {
            Ok(0) => return Opened::Closed,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return Opened::Closed,
        }
        told = Some(head::sniff(&buf, max));
    };
    let io = TimedIo::new(tcp, Duration::from_secs(state.config.idle_timeout));
    match sniffed {
        Sniffed::Stream(req) => Opened::Stream(io, req),
        Sniffed::Poll(req) => Opened::Poll(io, req),
        _ => Opened::Hyper(
            io.replaying(Bytes::from(buf)),
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

/// Serves the long-polls of a connection whose first request is `req`, a `GET /v1/poll`
/// (see the module doc): each answered with `content-length` on a connection kept alive,
/// while the next head is another poll. Returns how the connection goes on: a stream
/// ([`Opened::Stream`]) or hyper ([`Opened::Hyper`], its bytes to be replayed), which the
/// caller serves in a task of its own, or [`Opened::Closed`] when it is done (closed, or the
/// client left); never [`Opened::Poll`].
///
/// Thousands of these wait at once, each in a task as large as this future's largest state:
/// the reading of the next head (a timer, the readiness, the shutdown watch) is boxed, so the
/// state kept while a poll waits is the largest.
pub(crate) async fn serve_polls(
    state: Arc<State>,
    mut io: TimedIo,
    peer: SocketAddr,
    mut req: Box<Request<()>>,
) -> Opened {
    loop {
        let Some((tcp, early)) = serve_poll(&state, io, peer, req).await else {
            return Opened::Closed;
        };
        match Box::pin(next_request(&state, tcp, early)).await {
            Opened::Poll(next, r) => {
                io = next;
                req = r;
            }
            other => return other,
        }
    }
}

/// Answers the poll `req` on `io`. Returns the socket and the bytes the client sent while the
/// poll waited (the start of its next request) when the connection stays open, `None` when it
/// is done.
async fn serve_poll(
    state: &Arc<State>,
    mut io: TimedIo,
    peer: SocketAddr,
    req: Box<Request<()>>,
) -> Option<(TcpStream, Vec<u8>)> {
    let mut waiting = router::handle_poll(state.clone(), peer, *req);
    // Bytes the client sends while its poll waits (a pipelined request): kept for after.
    let mut early = Vec::new();
    let max = state.config.max_header_bytes;
    let answered = poll_fn(|cx| {
        if left_or_sent(Pin::new(&mut io), cx, &mut early, max) {
            return Poll::Ready(None);
        }
        waiting.as_mut().poll(cx).map(Some)
    })
    .await;
    // The poll's future (its slot, its registration) goes before anything is written.
    drop(waiting);
    let Some(Ok(reply)) = answered else {
        return None;
    };
    let (parts, body) = reply.into_parts();
    let Either::Left(whole) = body else {
        // A poll is answered whole; anything else is written as a stream would be (boxed:
        // never taken, and its state would make every waiting poll's task larger).
        let _ = Box::pin(write(&mut io, Reply::from_parts(parts, body))).await;
        return None;
    };
    let close = *state.shutdown.borrow();
    let whole = body_bytes(whole);
    let head = head(&parts, Some(whole.len()), close);
    drop(parts);
    if write_all(&mut io, &[&head, &whole]).await.is_err() || close {
        let _ = io.shutdown().await;
        return None;
    }
    Some((io.into_socket(), early))
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
    write_all(io, &[&size[..n], data, b"\r\n"]).await
}

/// Writes `bufs` in order, with as few `writev`s as the socket allows.
async fn write_all(io: &mut TimedIo, bufs: &[&[u8]]) -> io::Result<()> {
    let mut parts: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
    let mut left = &mut parts[..];
    while !left.is_empty() {
        let written = io.write_vectored(left).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut left, written);
    }
    Ok(())
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
