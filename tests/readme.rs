//! The README's Rust example is `examples/quickstart.rs`, word for word: the doc test built from
//! the README (`ReadmeDoctests` in `src/lib.rs`) runs it, and `cargo build --examples` keeps the
//! file compiling outside rustdoc, where hidden `#` lines would render literally.

#[test]
fn readme_rust_example_is_the_quickstart_example() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let example =
        std::fs::read_to_string(format!("{root}/examples/quickstart.rs")).expect("quickstart.rs");
    let start = readme
        .find("```rust\n")
        .expect("README has a ```rust block")
        + "```rust\n".len();
    let len = readme[start..].find("```").expect("the ```rust block ends");
    assert_eq!(
        &readme[start..start + len],
        example,
        "README's Rust example differs from examples/quickstart.rs"
    );
    assert_eq!(
        readme.matches("```rust").count(),
        1,
        "one Rust example in the README"
    );
    assert!(
        !example.lines().any(|l| l.trim_start().starts_with("# ")),
        "no hidden rustdoc lines: they show when pasted"
    );
}

/// Every daemon setting has a row in the README's settings table (the table is what operators
/// read; `--help` is the fallback).
#[test]
fn readme_settings_table_names_every_daemon_setting() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let config =
        std::fs::read_to_string(format!("{root}/src/daemon/config.rs")).expect("daemon config");
    let envs: Vec<&str> = config
        .split("env = \"")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').expect("closing quote")])
        .collect();
    assert!(
        envs.len() > 30,
        "found the daemon's settings ({})",
        envs.len()
    );
    for env in envs {
        let flag = format!(
            "`--{}`",
            env.trim_start_matches("LMSRT_")
                .to_lowercase()
                .replace('_', "-")
        );
        assert!(readme.contains(&format!("`{env}`")), "README lacks {env}");
        assert!(readme.contains(&flag), "README lacks {flag}");
    }
}
