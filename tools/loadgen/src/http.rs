//! One kept-alive HTTP/1.1 connection spoken by hand, with the kernel's arrival stamps.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

/// One kept-alive HTTP/1.1 connection, spoken by hand: the request is written as prepared
/// bytes and the response read into a reused buffer. The load generator shares the machine's
/// cores with the server it measures, so it does as little as it can per request (hyper's
/// client costs two tasks and a channel hop per request); Nchan is measured with the same
/// client, so the comparison stays fair.
pub(crate) struct Conn {
    tcp: tokio::net::TcpStream,
    buf: BytesMut,
    /// When the kernel received the bytes of the latest read (µs since the epoch, from
    /// `SO_TIMESTAMPNS`), or 0 if it gave no timestamp.
    pub(crate) arrived_us: i64,
}

/// Asks the kernel to stamp every segment this socket receives with its arrival time.
///
/// One thread reads all 10,000 clients' responses, so the time it gets round to a socket is
/// partly its own queue: with a fan-out it is the generator, not the server, that decides
/// when the last response is "seen". The arrival stamp is when the response reached the
/// client's socket, which is what each of 10,000 browsers, on their own CPUs, would see.
fn stamp_arrivals(tcp: &tokio::net::TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor (owned by `tcp`) and a c_int option value of the
    // length given.
    let r = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One `recvmsg` into the spare capacity of `buf`: the bytes read and, if the kernel stamped
/// them, their arrival time in µs since the epoch.
fn recv_stamped(
    fd: std::os::fd::RawFd,
    buf: &mut BytesMut,
) -> std::io::Result<(usize, Option<i64>)> {
    let spare = buf.spare_capacity_mut();
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    // Room for one SCM_TIMESTAMPNS (a timespec) with its header, aligned as cmsg needs.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header, filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at an iovec over `buf`'s spare capacity and at `control`, both
    // alive and writable for the call and of the lengths given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    let mut stamp = None;
    // SAFETY: the CMSG_* walk stays within `msg_controllen`, which the kernel set to what it
    // wrote into `control`; a timestamp cmsg carries a timespec (read unaligned).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                stamp = Some(ts.tv_sec as i64 * 1_000_000 + ts.tv_nsec as i64 / 1_000);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n, stamp))
}

fn other<E: std::fmt::Display>(e: E) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        stamp_arrivals(&tcp)?;
        Ok(Conn {
            tcp,
            buf: BytesMut::with_capacity(4096),
            arrived_us: 0,
        })
    }

    /// Writes one request (complete, as bytes) and reads its response.
    pub(crate) async fn send(&mut self, req: &[u8]) -> std::io::Result<(u16, HeaderPair, Bytes)> {
        self.tcp.write_all(req).await?;
        loop {
            if let Some(r) = self.parse()? {
                return Ok(r);
            }
            self.fill().await?;
        }
    }

    /// Reads what the socket has (at least one byte, or 0 at its end), noting its arrival time.
    async fn read_stamped(&mut self) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        let fd = self.tcp.as_raw_fd();
        loop {
            self.tcp.readable().await?;
            let buf = &mut self.buf;
            match self
                .tcp
                .try_io(tokio::io::Interest::READABLE, || recv_stamped(fd, buf))
            {
                Ok((n, stamp)) => {
                    if let Some(t) = stamp {
                        self.arrived_us = t;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes one request (complete, as bytes) and reads the head of its response: the status
    /// and how its body is framed. What of the body came with the head stays in the buffer,
    /// for [`Conn::read_body`].
    pub(crate) async fn send_head(&mut self, req: &[u8]) -> std::io::Result<(u16, Framing)> {
        self.tcp.write_all(req).await?;
        loop {
            if let Some(head) = parse_head(&self.buf)? {
                let _ = self.buf.split_to(head.len);
                let framing = if head.chunked {
                    Framing::Chunked
                } else if let Some(n) = head.content_length {
                    Framing::Length(n)
                } else {
                    Framing::UntilClose
                };
                return Ok((head.status, framing));
            }
            self.fill().await?;
        }
    }

    /// The body's bytes read so far, taken out of the buffer; when there are none, what the
    /// socket has next (empty at its end).
    pub(crate) async fn read_body(&mut self) -> std::io::Result<Bytes> {
        if self.buf.is_empty() {
            self.reserve();
            if self.read_stamped().await? == 0 {
                return Ok(Bytes::new());
            }
        }
        Ok(self.buf.split().freeze())
    }

    /// Reads more into the buffer; the socket's end is an error (a response was expected).
    async fn fill(&mut self) -> std::io::Result<()> {
        self.reserve();
        if self.read_stamped().await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    fn reserve(&mut self) {
        if self.buf.capacity() - self.buf.len() < 2048 {
            // Asking for no more than the first allocation lets `BytesMut` move what is
            // left to the front of that allocation (the responses read from it are gone)
            // instead of allocating a larger one: with 8 KiB here, every client allocated
            // and faulted in a new buffer in the same fan-out round (the fourth), and the
            // generator read that round's responses tens of milliseconds after they arrived.
            self.buf.reserve(2048);
        }
    }

    /// A complete response at the start of the buffer, taken out of it.
    fn parse(&mut self) -> std::io::Result<Option<(u16, HeaderPair, Bytes)>> {
        let Some(Head {
            len: head,
            status,
            content_length,
            chunked,
            validators: h,
        }) = parse_head(&self.buf)?
        else {
            return Ok(None);
        };
        let len = content_length.unwrap_or(0);
        if chunked {
            // Chunks: `<hex size>[;ext]\r\n<data>\r\n`, ending with a zero-size chunk and
            // (no trailers expected) `\r\n`.
            let mut body = Vec::new();
            let mut at = head;
            loop {
                let rest = &self.buf[at..];
                let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                let size_str = std::str::from_utf8(&rest[..eol]).map_err(other)?;
                let size =
                    usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(other)?;
                let data = at + eol + 2;
                if self.buf.len() < data + size + 2 {
                    return Ok(None);
                }
                body.extend_from_slice(&self.buf[data..data + size]);
                at = data + size + 2;
                if size == 0 {
                    break;
                }
            }
            let _ = self.buf.split_to(at);
            return Ok(Some((status, h, Bytes::from(body))));
        }
        if self.buf.len() < head + len {
            return Ok(None);
        }
        let mut msg = self.buf.split_to(head + len);
        let body = msg.split_off(head).freeze();
        Ok(Some((status, h, body)))
    }
}

/// How a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Transfer-Encoding: chunked` (the daemon's stream).
    Chunked,
    /// `Content-Length` bytes.
    Length(usize),
    /// At the connection's end (Nchan's EventSource).
    UntilClose,
}

/// A response head: its length in bytes, the status and what the body's framing and the
/// validators need.
struct Head {
    len: usize,
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    validators: HeaderPair,
}

/// The response head at the start of `buf`, if it is complete.
fn parse_head(buf: &[u8]) -> std::io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf).map_err(other)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let mut head = Head {
        len,
        status: resp.code.unwrap_or(0),
        content_length: None,
        chunked: false,
        validators: HeaderPair::default(),
    };
    for x in resp.headers.iter() {
        let name = x.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            head.content_length = Some(
                std::str::from_utf8(x.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| other("bad content-length"))?,
            );
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            head.chunked = x.value.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"last-modified") {
            head.validators.last_modified = Some(String::from_utf8_lossy(x.value).into_owned());
        } else if name.eq_ignore_ascii_case(b"etag") {
            head.validators.etag = Some(String::from_utf8_lossy(x.value).into_owned());
        }
    }
    Ok(Some(head))
}

/// A request's bytes: `method path`, a Host header, `headers`, and `body` with its length.
pub(crate) fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut v = Vec::with_capacity(160 + path.len() + body.len());
    let _ = write!(v, "{method} {path} HTTP/1.1\r\nhost: localhost\r\n");
    for (k, val) in headers {
        let _ = write!(v, "{k}: {val}\r\n");
    }
    if method != "GET" || !body.is_empty() {
        let _ = write!(v, "content-length: {}\r\n", body.len());
    }
    v.extend_from_slice(b"\r\n");
    v.extend_from_slice(body);
    v
}

/// The validators Nchan answers a long poll with, sent back with the next poll.
#[derive(Default)]
pub(crate) struct HeaderPair {
    pub(crate) last_modified: Option<String>,
    pub(crate) etag: Option<String>,
}
