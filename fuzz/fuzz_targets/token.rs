//! Token and publish-signature verification on arbitrary input: never panics, and anything
//! that verifies round-trips through `issue`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lms_realtime::token::{self, TokenKey};

fuzz_target!(|data: &[u8]| {
    let key = TokenKey::new("k1", b"fuzz-secret-0123456789abcdef0123456789".to_vec()).unwrap();
    let keys = std::slice::from_ref(&key);
    let _ = token::verify_publish(keys, &String::from_utf8_lossy(data), 1_700_000_000, data);
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = TokenKey::parse(s);
    if let Ok(c) = token::verify(keys, s, 0) {
        // Only a MAC made with the key verifies; if the fuzzer ever finds one, the claims must
        // be well-formed enough to issue again.
        let t = token::issue(&key, c.uid, &c.ch, c.exp, "fuzz").unwrap();
        assert_eq!(token::verify(keys, &t, 0).unwrap().ch, c.ch);
    }
});
