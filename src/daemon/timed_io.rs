//! [`TimedIo`]: a connection's socket with a deadline on stalled writes, and the bytes the
//! daemon read before hyper took the connection (`lean.rs`) given back to hyper first.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// A TCP stream whose writes fail with `TimedOut` once they have made no progress for
/// `timeout`: a client that stops reading its response cannot hold a connection (and its
/// buffers) for ever. Reads have no timeout here: hyper bounds the wait for request headers,
/// and body reads are bounded by the handler.
pub(crate) struct TimedIo {
    io: TcpStream,
    timeout: Duration,
    stall: Option<Pin<Box<Sleep>>>,
    /// Bytes already read from `io` that reads return first. Boxed: a waiting long-poll's task
    /// holds its connection's `TimedIo`, and this is rarely there.
    replay: Option<Box<Bytes>>,
}

impl TimedIo {
    /// `io`, whose writes fail once stalled for `timeout`.
    pub(crate) fn new(io: TcpStream, timeout: Duration) -> TimedIo {
        TimedIo {
            io,
            timeout,
            stall: None,
            replay: None,
        }
    }

    /// Makes reads return `read` (bytes already read from the socket) first.
    pub(crate) fn replay(&mut self, read: Bytes) {
        debug_assert!(self.replay.is_none());
        self.replay = (!read.is_empty()).then(|| Box::new(read));
    }

    /// The socket, to read a connection's next request head on it (`lean.rs`).
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.io
    }

    fn pending_write<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stall.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(replay) = self.replay.as_mut() {
            let n = replay.len().min(buf.remaining());
            buf.put_slice(&replay[..n]);
            replay.advance(n);
            if replay.is_empty() {
                // Not kept for the connection's life: an empty view still holds the buffer.
                self.replay = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.stall = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.pending_write(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                self.stall = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.pending_write(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
