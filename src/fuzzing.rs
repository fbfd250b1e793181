//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, which implies `daemon`).
//!
//! **Not a stable API**: hidden from the docs, changed or removed with the daemon's internals,
//! and of no use outside the fuzz targets. It exposes the daemon's parsers of untrusted
//! input, the poll request (query and the headers a poll reads), the publish body and the
//! first request head of a connection (the lean stream path's), as the daemon calls them.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use crate::daemon::error::ApiError;
use crate::daemon::head::{self, Head, Sniffed};
use crate::daemon::{auth, poll, publish};
use crate::event::NewEvent;
use crate::store::FetchRequest;

/// The daemon's limits a poll query is parsed under (its `Config` fields of the same names).
#[derive(Debug, Clone, Copy)]
pub struct PollLimits {
    /// `--poll-timeout`, seconds: the longest wait, and the default.
    pub poll_timeout: u64,
    /// `--batch`: the default `limit`.
    pub batch: usize,
    /// `--max-batch`: the largest `limit`.
    pub max_batch: usize,
    /// `--max-channels`: the most channels in one poll.
    pub max_channels: usize,
}

/// What the daemon reads of a `GET /v1/poll` before it verifies the token and takes a slot.
#[derive(Debug)]
pub struct Poll {
    /// The address the IP rate limit counts.
    pub ip: IpAddr,
    /// The bearer token, before verification.
    pub token: Result<String, ApiError>,
    /// The parsed query: the request and the wait.
    pub params: Result<(FetchRequest, Duration), ApiError>,
}

/// Reads a request head (request line and headers, as on the wire) the way the daemon reads a
/// poll: `None` when it is not a complete HTTP/1.x head that hyper would pass on (httparse, the
/// parser hyper uses, then its URI and header types: the daemon's own head reader), or not a
/// `GET /v1/poll`.
pub fn poll_request(
    head: &[u8],
    peer: SocketAddr,
    trust_proxy: bool,
    limits: PollLimits,
) -> Option<Poll> {
    let Head::Complete(req, _) = head::parse(head) else {
        return None;
    };
    if req.method() != hyper::Method::GET || req.uri().path() != "/v1/poll" {
        return None;
    }
    let headers = req.headers();
    Some(Poll {
        ip: auth::client_ip(headers, peer, trust_proxy),
        token: auth::bearer_token(headers).map(str::to_owned),
        params: parse_poll(req.uri().query(), limits),
    })
}

/// What the daemon makes of a connection's first bytes (`buf`), with `--max-header-bytes`
/// `max_head`: whether its lean path serves the stream or the poll they ask for.
#[derive(Debug)]
pub enum FirstBytes {
    /// More bytes are needed to tell.
    Partial,
    /// hyper serves the connection, these bytes first.
    Hyper,
    /// A `GET /v1/stream` head, exactly these bytes, served by the lean path as this request.
    Stream(Box<hyper::Request<()>>),
    /// A `GET /v1/poll` head, exactly these bytes, served by the lean path as this request.
    Poll(Box<hyper::Request<()>>),
}

/// Reads a connection's first bytes as the daemon does before hyper sees them.
pub fn first_bytes(buf: &[u8], max_head: usize) -> FirstBytes {
    match head::sniff(buf, max_head) {
        Sniffed::Partial => FirstBytes::Partial,
        Sniffed::Hyper => FirstBytes::Hyper,
        Sniffed::Stream(req) => FirstBytes::Stream(req),
        Sniffed::Poll(req) => FirstBytes::Poll(req),
    }
}

/// The poll query parser alone.
pub fn parse_poll(
    query: Option<&str>,
    limits: PollLimits,
) -> Result<(FetchRequest, Duration), ApiError> {
    poll::parse_poll(
        query,
        limits.poll_timeout,
        limits.batch,
        limits.max_batch,
        limits.max_channels,
    )
    .map(|p| (p.req, p.timeout))
}

/// The publish body parser: one event object, or `{"events": [...]}`.
pub fn parse_events(body: &[u8]) -> Result<Vec<NewEvent>, ApiError> {
    publish::parse_events(body)
}
