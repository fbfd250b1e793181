//! Cursor parsing on arbitrary input: never panics, and every accepted cursor prints to a
//! string that parses back to the same lane positions.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lms_realtime::Cursor;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Cursor::parse(s) {
        let printed = c.to_string();
        let again = Cursor::parse(&printed).expect("a printed cursor parses");
        assert_eq!(again.lanes(), c.lanes());
        assert_eq!(again.to_string(), printed);
    }
});
