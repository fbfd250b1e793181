//! A connection's first bytes read the way the daemon reads them before hyper sees the
//! connection (its lean `GET /v1/stream` and `GET /v1/poll` path). Never panics; the lean path
//! takes only a complete `GET /v1/stream` or `GET /v1/poll` HTTP/1.1 head within the size
//! limit with nothing after it (a poll's without `connection: close`); more
//! bytes waited for only below that limit; and once any cut of the bytes is decided (hyper's,
//! or a stream head), the bytes with more after it are hyper's: nothing read is dropped or
//! read again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lms_realtime::fuzzing::{self, FirstBytes};

/// A small `--max-header-bytes`, so that the fuzzer reaches it.
const MAX_HEAD: usize = 512;

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(2 * MAX_HEAD)];
    let whole = fuzzing::first_bytes(data, MAX_HEAD);
    match &whole {
        FirstBytes::Stream(req) | FirstBytes::Poll(req) => {
            assert!(data.len() <= MAX_HEAD);
            // The empty line that ends a head, after a line's end: CRLF or a bare LF each
            // (httparse, and so hyper, take both).
            assert!(data.ends_with(b"\n\r\n") || data.ends_with(b"\n\n"));
            assert_eq!(req.method(), "GET");
            let path = if matches!(whole, FirstBytes::Stream(_)) {
                "/v1/stream"
            } else {
                "/v1/poll"
            };
            assert_eq!(req.uri().path(), path);
            assert_eq!(format!("{:?}", req.version()), "HTTP/1.1");
            if path == "/v1/poll" {
                assert!(
                    req.headers()
                        .get_all("connection")
                        .iter()
                        .all(|v| v.to_str().is_ok_and(|v| v
                            .split(',')
                            .all(|t| t.trim().eq_ignore_ascii_case("keep-alive"))))
                );
            }
        }
        FirstBytes::Partial => assert!(data.len() < MAX_HEAD),
        FirstBytes::Hyper => {}
    }
    for cut in 0..data.len() {
        if !matches!(
            fuzzing::first_bytes(&data[..cut], MAX_HEAD),
            FirstBytes::Partial
        ) {
            assert!(
                matches!(whole, FirstBytes::Hyper),
                "decided at {cut}, not hyper's after {} bytes: {whole:?}",
                data.len()
            );
        }
    }
});
