//! A connection's first bytes read the way the daemon reads them before hyper sees the
//! connection (its lean `GET /v1/stream` path). Never panics; the lean path takes only a
//! complete `GET /v1/stream` HTTP/1.1 head within the size limit with nothing after it; more
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
        FirstBytes::Stream(req) => {
            assert!(data.len() <= MAX_HEAD);
            // The empty line that ends a head, after a line's end: CRLF or a bare LF each
            // (httparse, and so hyper, take both).
            assert!(data.ends_with(b"\n\r\n") || data.ends_with(b"\n\n"));
            assert_eq!(req.method(), "GET");
            assert_eq!(req.uri().path(), "/v1/stream");
            assert_eq!(format!("{:?}", req.version()), "HTTP/1.1");
        }
        FirstBytes::Partial => assert!(data.len() < MAX_HEAD),
        FirstBytes::Hyper => {}
    }
    for cut in 0..data.len() {
        if !matches!(fuzzing::first_bytes(&data[..cut], MAX_HEAD), FirstBytes::Partial) {
            assert!(
                matches!(whole, FirstBytes::Hyper),
                "decided at {cut}, not hyper's after {} bytes: {whole:?}",
                data.len()
            );
        }
    }
});
