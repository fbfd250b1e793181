//! The checked-in headers, `include/lms_realtime.h` (C) and `php-ext/include/lms_realtime.h`
//! (PHP FFI), are exactly what `build.rs` generates from the current `src/ffi/`, so a change to
//! the ABI cannot ship with a stale header. Also checks what the headers promise: every
//! `ErrorCode` is an `LMSRT_STATUS_*` enum constant of the same value, the ABI version matches
//! the library's, and the PHP variant has no preprocessor line PHP's FFI parser would reject.

use std::path::Path;

use lms_realtime::ErrorCode;

const GENERATED_C: &str = include_str!(concat!(env!("OUT_DIR"), "/lms_realtime.h"));
const GENERATED_PHP: &str = include_str!(concat!(env!("OUT_DIR"), "/lms_realtime_php.h"));

fn checked_in(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn assert_current(rel: &str, generated: &str) {
    let on_disk = checked_in(rel);
    if on_disk != generated {
        let line = on_disk
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or(
                on_disk.lines().count().min(generated.lines().count()),
                |i| i,
            );
        panic!(
            "{rel} is stale (first difference at line {}): run `cargo build` without \
             LMSRT_NO_HEADER_WRITE and commit the result",
            line + 1
        );
    }
}

#[test]
fn c_header_is_current() {
    assert_current("include/lms_realtime.h", GENERATED_C);
}

#[test]
fn php_header_is_current() {
    assert_current("php-ext/include/lms_realtime.h", GENERATED_PHP);
}

#[test]
fn every_error_code_is_a_status_constant_in_both_headers() {
    for c in ErrorCode::ALL {
        let line = format!(
            "LMSRT_STATUS_{} = {},",
            c.name().to_ascii_uppercase(),
            c.as_i32()
        );
        for (name, h) in [("C", GENERATED_C), ("PHP", GENERATED_PHP)] {
            assert!(h.contains(&line), "{name} header lacks `{line}`");
        }
    }
    for (name, h) in [("C", GENERATED_C), ("PHP", GENERATED_PHP)] {
        let n = h
            .lines()
            .filter(|l| l.trim_start().starts_with("LMSRT_STATUS_") && l.contains(" = "))
            .count();
        assert_eq!(
            n,
            ErrorCode::ALL.len(),
            "{name} header: {n} status constants"
        );
    }
}

#[test]
fn abi_version_in_the_header_is_the_librarys() {
    let line = format!(
        "#define LMSRT_ABI_VERSION {}",
        lms_realtime::ffi::LMSRT_ABI_VERSION
    );
    assert!(GENERATED_C.contains(&line), "C header lacks `{line}`");
    assert_eq!(
        lms_realtime::ffi::lmsrt_abi_version(),
        lms_realtime::ffi::LMSRT_ABI_VERSION
    );
    // SAFETY: lmsrt_version returns a static NUL-terminated string.
    let v = unsafe { std::ffi::CStr::from_ptr(lms_realtime::ffi::lmsrt_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    // SAFETY: lmsrt_engines returns a static NUL-terminated string.
    let e = unsafe { std::ffi::CStr::from_ptr(lms_realtime::ffi::lmsrt_engines()) };
    let want = if cfg!(feature = "redis") {
        "sqlite redis"
    } else {
        "sqlite"
    };
    assert_eq!(e.to_str().unwrap(), want);
}

#[test]
fn php_header_has_only_ffi_scope_and_ffi_lib_defines() {
    let directives: Vec<&str> = GENERATED_PHP
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .collect();
    assert_eq!(
        directives,
        [
            "#define FFI_SCOPE \"LMSRT\"",
            "#define FFI_LIB \"liblms_realtime.so\""
        ]
    );
}
