//! Generates the C header and its PHP FFI variant from `src/ffi/` with cbindgen.
//!
//! Both go to `OUT_DIR` (where `tests/header_current.rs` compares them with the checked-in
//! copies) and, unless `LMSRT_NO_HEADER_WRITE=1`, are copied into the source tree as
//! `include/lms_realtime.h` and `php-ext/include/lms_realtime.h`, only when they changed.
//! Packaging steps set `LMSRT_NO_HEADER_WRITE=1`: a build must not write into the source of a
//! packaged crate.

use std::fs;
use std::path::{Path, PathBuf};

fn generate(crate_dir: &Path, config_file: &str, out: &Path) {
    let config = cbindgen::Config::from_file(crate_dir.join(config_file))
        .unwrap_or_else(|e| panic!("reading {config_file}: {e}"));
    cbindgen::Builder::new()
        .with_config(config)
        // Only the ffi module: nothing the rest of the crate declares leaks into the ABI.
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen ({config_file}): {e}"))
        .write_to_file(out);
}

/// PHP's FFI parser understands no preprocessor lines except `FFI_SCOPE` and `FFI_LIB`.
fn check_php_header(path: &Path) {
    let text = fs::read_to_string(path).expect("reading the PHP header");
    for (n, line) in text.lines().enumerate() {
        let l = line.trim_start();
        if l.starts_with('#')
            && !l.starts_with("#define FFI_SCOPE ")
            && !l.starts_with("#define FFI_LIB ")
        {
            panic!(
                "{}:{}: PHP's FFI cannot parse preprocessor line {line:?}",
                path.display(),
                n + 1
            );
        }
    }
}

fn copy_if_changed(from: &Path, to: &Path) {
    let new = fs::read(from).expect("reading a generated header");
    if fs::read(to).ok().as_deref() == Some(&new[..]) {
        return;
    }
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).expect("creating the header directory");
    }
    fs::write(to, new).unwrap_or_else(|e| panic!("writing {}: {e}", to.display()));
}

fn main() {
    for p in [
        "src/ffi",
        "src/error.rs",
        "cbindgen.toml",
        "cbindgen-php.toml",
        "build.rs",
    ] {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-env-changed=LMSRT_NO_HEADER_WRITE");

    let crate_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let c_header = out_dir.join("lms_realtime.h");
    let php_header = out_dir.join("lms_realtime_php.h");
    generate(&crate_dir, "cbindgen.toml", &c_header);
    generate(&crate_dir, "cbindgen-php.toml", &php_header);
    check_php_header(&php_header);

    if std::env::var_os("LMSRT_NO_HEADER_WRITE").is_some_and(|v| v == "1") {
        return;
    }
    copy_if_changed(&c_header, &crate_dir.join("include/lms_realtime.h"));
    copy_if_changed(
        &php_header,
        &crate_dir.join("php-ext/include/lms_realtime.h"),
    );
}
