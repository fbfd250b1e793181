//! The poll request on arbitrary input: a request head (request line and headers, as on the
//! wire) read the way the daemon reads `GET /v1/poll`. Never panics; a query that parses gives
//! 1 to `max_channels` distinct positive channels in order, a limit and timeout within the
//! daemon's caps, valid distinct types, a positive thread, a cursor whose lanes re-render, and
//! prints back to a query (plain or fully percent-encoded) that parses to the same request;
//! a query that does not parse is a 400. The address and token do not depend on the query.
#![no_main]

use std::fmt::Write as _;
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use lms_realtime::event::validate_event_type;
use lms_realtime::fuzzing::{self, PollLimits};
use lms_realtime::store::MAX_TYPES;
use lms_realtime::{Cursor, FetchRequest, Order};

const LIMITS: PollLimits = PollLimits {
    poll_timeout: 30,
    batch: 50,
    max_batch: 200,
    max_channels: 4,
};

fn query_of(r: &FetchRequest, timeout: u64) -> String {
    let channels: Vec<String> = r.channels.iter().map(i64::to_string).collect();
    let mut q = format!(
        "channels={}&cursor={}&timeout={timeout}&limit={}&order={}",
        channels.join(","),
        r.cursor,
        r.limit,
        match r.order {
            Order::Priority => "priority",
            Order::Sequential => "sequential",
        }
    );
    if !r.types.is_empty() {
        write!(q, "&types={}", r.types.join(",")).unwrap();
    }
    if let Some(t) = r.thread_id {
        write!(q, "&thread={t}").unwrap();
    }
    q
}

/// Every byte of every key and value as `%XX`.
fn encoded(q: &str) -> String {
    q.split('&')
        .map(|pair| {
            pair.split('=')
                .map(|s| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>())
                .collect::<Vec<_>>()
                .join("=")
        })
        .collect::<Vec<_>>()
        .join("&")
}

fuzz_target!(|data: &[u8]| {
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let Some(direct) = fuzzing::poll_request(data, peer, false, LIMITS) else {
        return;
    };
    let proxied = fuzzing::poll_request(data, peer, true, LIMITS).expect("the same head");
    assert_eq!(
        direct.ip,
        peer.ip(),
        "proxy headers count only when trusted"
    );
    assert_eq!(
        format!("{:?}", direct.params),
        format!("{:?}", proxied.params)
    );
    assert_eq!(
        format!("{:?}", direct.token),
        format!("{:?}", proxied.token)
    );
    if let Ok(t) = &direct.token {
        assert_eq!(t.trim(), t, "the token is trimmed");
    }
    let (req, timeout) = match direct.params {
        Ok(p) => p,
        Err(e) => {
            assert_eq!(e.status(), 400, "{e:?}");
            return;
        }
    };
    let n = req.channels.len();
    assert!((1..=LIMITS.max_channels).contains(&n), "{n} channels");
    assert!(req.channels[0] > 0);
    assert!(
        req.channels.windows(2).all(|w| w[0] < w[1]),
        "sorted, no duplicate"
    );
    assert!((1..=LIMITS.max_batch).contains(&req.limit));
    assert!(timeout.as_secs() <= LIMITS.poll_timeout);
    assert!(req.types.len() <= MAX_TYPES);
    assert!(req.types.windows(2).all(|w| w[0] < w[1]));
    for t in &req.types {
        validate_event_type(t).unwrap();
    }
    assert!(req.thread_id.is_none_or(|t| t > 0));
    // Lanes survive printing, and the print is a fixed point. The epoch need not: a cursor
    // without one (the start, a legacy integer) prints as epoch 0 and parses back bound to it.
    let printed = req.cursor.to_string();
    let reparsed = Cursor::parse(&printed).unwrap();
    assert_eq!(reparsed.lanes(), req.cursor.lanes(), "{printed}");
    assert_eq!(reparsed.to_string(), printed);

    let q = query_of(&req, timeout.as_secs());
    for q in [q.clone(), encoded(&q)] {
        let (mut again, t) = fuzzing::parse_poll(Some(&q), LIMITS).expect(&q);
        assert_eq!(again.cursor.lanes(), req.cursor.lanes(), "{q}");
        again.cursor = req.cursor;
        assert_eq!((&again, t), (&req, timeout), "{q}");
    }
});
