//! The C ABI as a C program sees it: `tests/c/abi_test.c`, compiled against the checked-in
//! `include/lms_realtime.h` and the cdylib this `cargo test` built, calls every exported
//! function on its success and error paths. When `valgrind` is on the PATH (and
//! `LMSRT_VALGRIND` is not `0`) it runs under memcheck and must finish with no invalid access and
//! no definite or indirect leak. `LMSRT_VALGRIND=1` makes a missing valgrind a failure, for CI.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory holding the cdylib `cargo test` built for this test: the test binary lives in
/// `target/<profile>/deps`, beside `liblms_realtime.so` (cargo does not always copy it up to
/// `target/<profile>` during `cargo test`).
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    for dir in [deps.clone(), deps.parent().unwrap().to_path_buf()] {
        if dir.join("liblms_realtime.so").exists() {
            return dir;
        }
    }
    panic!("liblms_realtime.so not found beside {}", exe.display());
}

fn compile(out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = library_dir();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-g", "-O1"])
        .args(["-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/c/abi_test.c"))
        .arg("-o")
        .arg(out)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-llms_realtime", "-lpthread"])
        .status()
        .unwrap_or_else(|e| panic!("running the C compiler {cc:?}: {e}"));
    assert!(status.success(), "compiling tests/c/abi_test.c failed");
}

fn valgrind_wanted() -> bool {
    let setting = std::env::var("LMSRT_VALGRIND").unwrap_or_default();
    if setting == "0" {
        return false;
    }
    let found = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found || setting != "1",
        "LMSRT_VALGRIND=1 but valgrind is not installed"
    );
    if !found {
        eprintln!("valgrind not found: running the C ABI test without the leak check");
    }
    found
}

#[test]
fn c_program_exercises_the_whole_abi() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("abi_test");
    compile(&exe);
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();

    let mut cmd = if valgrind_wanted() {
        let mut c = Command::new("valgrind");
        c.args([
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect",
            "--error-exitcode=99",
        ])
        .arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let out = cmd.arg(&scratch).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "abi_test failed ({}): see the output above",
        out.status
    );
    assert!(stdout.contains("checks passed"));
    if stderr.contains("Memcheck") {
        assert!(
            stderr.contains("ERROR SUMMARY: 0 errors"),
            "valgrind reported errors"
        );
        assert!(
            stderr.contains("definitely lost: 0 bytes") || stderr.contains("no leaks are possible")
        );
    }
}
