//! A request head read from the wire by the daemon itself, before hyper sees the connection:
//! [`sniff`] tells whether a connection's first bytes are a `GET /v1/stream` that the lean path
//! (`lean.rs`) serves without hyper, and [`parse`] turns a complete head into the
//! `http::Request` hyper would have built from it (the fuzz targets use it too).
//!
//! Parsed with httparse, the parser hyper itself uses, under hyper's limits (100 headers, the
//! daemon's `--max-header-bytes`), and converted with the same URI and header types: a head
//! either parser refuses goes to hyper, which answers it as it always has (400, 431).

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri, Version};

use super::router;

/// The most headers a request may have: hyper's own limit (`DEFAULT_MAX_HEADERS`), past which
/// it answers 431.
const MAX_HEADERS: usize = 100;

/// What the heads the lean path serves start with.
const STREAM_PREFIX: &[u8] = b"GET /v1/stream";
const POLL_PREFIX: &[u8] = b"GET /v1/poll";

/// A head, as far as the bytes go.
#[derive(Debug)]
pub(crate) enum Head {
    /// A head not finished yet: more bytes may complete it.
    Partial,
    /// Not an HTTP/1.x request head that hyper would pass on.
    Invalid,
    /// A complete head, and how many bytes it took.
    Complete(Box<Request<()>>, usize),
}

/// The head at the start of `buf`.
pub(crate) fn parse(buf: &[u8]) -> Head {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut raw);
    match parsed.parse(buf) {
        Ok(httparse::Status::Partial) => Head::Partial,
        Ok(httparse::Status::Complete(len)) => match request(&parsed) {
            Some(req) => Head::Complete(req, len),
            None => Head::Invalid,
        },
        Err(_) => Head::Invalid,
    }
}

/// A complete head as hyper's types take it: `None` when they refuse a part of it.
fn request(parsed: &httparse::Request<'_, '_>) -> Option<Box<Request<()>>> {
    let mut req = Box::new(Request::new(()));
    *req.method_mut() = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    *req.uri_mut() = parsed.path?.parse::<Uri>().ok()?;
    *req.version_mut() = match parsed.version? {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        _ => return None,
    };
    let headers: &mut HeaderMap = req.headers_mut();
    headers.reserve(parsed.headers.len());
    for h in parsed.headers.iter() {
        headers.append(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    Some(req)
}

/// What a connection's first bytes are to the lean path.
#[derive(Debug)]
pub(crate) enum Sniffed {
    /// They could still become a head the lean path serves: read more.
    Partial,
    /// hyper serves the connection, starting with these bytes.
    Hyper,
    /// A `GET /v1/stream` that the lean path serves: the bytes are exactly its head.
    Stream(Box<Request<()>>),
    /// A `GET /v1/poll` that the lean path serves (the connection kept alive after it): the
    /// bytes are exactly its head.
    Poll(Box<Request<()>>),
}

/// What `buf`, the first bytes of a connection, are: a head of at most `max_head` bytes that
/// is an HTTP/1.1 `GET /v1/stream` (as the router tells it) with nothing after it, no body, no
/// upgrade and no expectation is the lean path's; anything else, complete or not, valid or not,
/// is hyper's as soon as that is certain. Bytes after the head (a pipelined request) go to
/// hyper with it, so that nothing sent is dropped or read twice.
pub(crate) fn sniff(buf: &[u8], max_head: usize) -> Sniffed {
    let starts = |prefix: &[u8]| {
        let n = buf.len().min(prefix.len());
        buf[..n] == prefix[..n]
    };
    if !starts(STREAM_PREFIX) && !starts(POLL_PREFIX) {
        return Sniffed::Hyper;
    }
    match parse(buf) {
        Head::Partial if buf.len() < max_head => Sniffed::Partial,
        Head::Complete(req, len) if len == buf.len() && len <= max_head && lean(&req) => {
            if router::is_stream(req.method(), req.uri().path()) {
                Sniffed::Stream(req)
            } else if router::is_poll(req.method(), req.uri().path()) && !closes(&req) {
                Sniffed::Poll(req)
            } else {
                Sniffed::Hyper
            }
        }
        _ => Sniffed::Hyper,
    }
}

/// Whether the client asks for the connection to end after this request (hyper's to answer).
fn closes(req: &Request<()>) -> bool {
    req.headers().get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().map_or(true, |v| {
            v.split(',')
                .any(|t| !t.trim().eq_ignore_ascii_case("keep-alive"))
        })
    })
}

/// Whether the lean path answers `req` as hyper would: an HTTP/1.1 `GET` without a body (no
/// `Transfer-Encoding`, a `Content-Length` of 0 if any), upgrade or `Expect`.
fn lean(req: &Request<()>) -> bool {
    let h = req.headers();
    req.method() == hyper::Method::GET
        && req.version() == Version::HTTP_11
        && !h.contains_key(header::TRANSFER_ENCODING)
        && !h.contains_key(header::UPGRADE)
        && !h.contains_key(header::EXPECT)
        && h.get_all(header::CONTENT_LENGTH)
            .iter()
            .all(|v| v.as_bytes() == b"0")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] =
        b"GET /v1/stream?channels=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n";

    #[test]
    fn a_stream_head_alone_is_the_lean_paths() {
        let Sniffed::Stream(req) = sniff(HEAD, 16 * 1024) else {
            panic!("not lean");
        };
        assert_eq!(req.uri().query(), Some("channels=1"));
        assert_eq!(req.headers()["authorization"], "Bearer t");
        // Every cut of it waits for more; one byte less room than it takes is hyper's (431).
        for cut in 0..HEAD.len() {
            assert!(
                matches!(sniff(&HEAD[..cut], 16 * 1024), Sniffed::Partial),
                "{cut}"
            );
        }
        assert!(matches!(sniff(HEAD, HEAD.len() - 1), Sniffed::Hyper));
    }

    #[test]
    fn anything_else_is_hyperss() {
        let hyper = |b: &[u8]| matches!(sniff(b, 16 * 1024), Sniffed::Hyper);
        assert!(hyper(b"POST /v1/stream HTTP/1.1\r\n\r\n"));
        assert!(hyper(b"G\x00"));
        assert!(hyper(b"GET /v1/streams HTTP/1.1\r\n\r\n"));
        assert!(hyper(b"GET /v1/stream HTTP/1.0\r\n\r\n"));
        assert!(hyper(b"GET /v1/stream HTTP/1.1\r\nbad header\r\n\r\n"));
        assert!(hyper(
            b"GET /v1/stream HTTP/1.1\r\ncontent-length: 2\r\n\r\nab"
        ));
        assert!(hyper(
            b"GET /v1/stream HTTP/1.1\r\nexpect: 100-continue\r\n\r\n"
        ));
        assert!(hyper(
            b"GET /v1/stream HTTP/1.1\r\nupgrade: websocket\r\n\r\n"
        ));
        // A pipelined request after the head: both are hyper's.
        let mut two = HEAD.to_vec();
        two.extend_from_slice(b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(hyper(&two));
        let many = format!("GET /v1/stream HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(101));
        assert!(hyper(many.as_bytes()));
        assert!(matches!(
            sniff(
                b"GET /v1/stream HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
                1024
            ),
            Sniffed::Stream(_)
        ));
    }
}
