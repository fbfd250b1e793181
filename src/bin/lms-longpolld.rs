//! `lms-longpolld`: the long-poll daemon. Thin by design (mini-redis style): parse the
//! configuration, set up logging, raise the open-file limit, open the store, bind, and hand
//! everything to [`lms_realtime::daemon::run`] with the SIGTERM/SIGINT future.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use lms_realtime::daemon::{self, Config};
use lms_realtime::{EventStore, store};

fn main() -> ExitCode {
    let config = Config::parse();
    // An operator's one-shot command: no token key or runtime needed, and nothing to serve.
    if let Some(path) = config.check_path() {
        return check(path, config.salvage.as_deref());
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: under systemd or with output redirected to a file, escape
    // codes would end up in the journal and the logs.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .init();
    if let Err(e) = config.validate() {
        eprintln!("lms-longpolld: {e}");
        return ExitCode::from(2);
    }
    let (soft, hard) = daemon::raise_nofile_limit();
    tracing::info!(soft, hard, "open-file limit");

    // One worker: a single-threaded runtime, without work-stealing's synchronization.
    let mut rt = if config.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    rt.enable_all()
        .thread_name("lmsrt-worker")
        .event_interval(daemon::RUNTIME_EVENT_INTERVAL)
        .max_blocking_threads(config.store_readers + config.store_writers + 8);
    if config.workers > 1 {
        rt.worker_threads(config.workers);
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lms-longpolld: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let store_config = store::Config {
            durability: config.durability.into(),
            ..store::Config::default()
        };
        let location = config.store_location().map_err(|e| format!("--db: {e}"))?;
        if matches!(location, store::StoreLocation::Redis(_)) {
            // An acknowledged append on Redis survives what the server is configured for
            // (docs/redis.md), not what --durability asks.
            tracing::info!("store on Redis: --durability does not apply; see docs/redis.md");
        }
        let store = EventStore::open_location(&location, store_config)
            .map_err(|e| format!("opening the store {}: {e}", config.db.display()))?;
        let store = Arc::new(store);
        let listener =
            listen(config.listen).map_err(|e| format!("listening on {}: {e}", config.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(db = %store.path().display(), engine = store.engine_name(), "store open");
        if config.demo {
            tracing::info!("demo: open http://{addr}/demo in a browser");
        }
        daemon::run(listener, store.clone(), config, daemon::shutdown::signal())
            .await
            .map_err(|e| e.to_string())?;
        store.close();
        Ok::<(), String>(())
    });
    rt.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lms-longpolld: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--check [--salvage NEW_FILE]`: prints the report as JSON on stdout and a one-line summary
/// on stderr. Exit codes: 0 intact (or salvaged into a file that passes the check), 1 damaged
/// (check only) or salvaged with a damaged result, 2 could not run.
fn check(path: &std::path::Path, salvage: Option<&std::path::Path>) -> ExitCode {
    if let Some(text) = path.to_str()
        && matches!(
            store::StoreLocation::parse(text),
            Ok(store::StoreLocation::Redis(_))
        )
    {
        // (The URL is not echoed: it may hold a password.)
        eprintln!(
            "lms-longpolld: --check and --salvage examine a SQLite file, and the store given is \
             a Redis URL, which has no file here (check the server's own files with \
             redis-check-aof / redis-check-rdb)"
        );
        return ExitCode::from(2);
    }
    let report = match store::check_file(path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lms-longpolld: checking {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let Some(dest) = salvage else {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        if report.ok {
            eprintln!("{}: ok ({} pages)", path.display(), report.page_count);
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "{}: DAMAGED ({} problems); stop the daemon and run again with --salvage <new file>",
            path.display(),
            report.problems.len()
        );
        return ExitCode::from(1);
    };
    match store::salvage_file(path, dest) {
        Ok(s) => {
            let both = serde_json::json!({ "check": report, "salvage": s });
            println!(
                "{}",
                serde_json::to_string_pretty(&both).unwrap_or_default()
            );
            eprintln!(
                "{}: copied {} events into {}, lost {}{} (id ranges {:?}); sequence {}; the new \
                 file {} the integrity check. With the daemon stopped, move it over {} and \
                 remove {}-wal and {}-shm.",
                path.display(),
                s.events_copied,
                dest.display(),
                s.events_lost,
                if s.lost_exact { "" } else { " at most" },
                s.lost_ranges,
                s.sequence,
                if s.dest_ok { "passes" } else { "FAILS" },
                path.display(),
                path.display(),
                path.display(),
            );
            if s.dest_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!(
                "lms-longpolld: salvaging {} into {}: {e}",
                path.display(),
                dest.display()
            );
            ExitCode::from(2)
        }
    }
}

/// Binds `addr` with a listen backlog of 4,096 (capped by `net.core.somaxconn`) rather than
/// the usual 128: when thousands of clients reconnect at once (a restart, a network blip), a
/// short accept queue overflows and the clients that miss it wait for SYN retransmissions,
/// seconds apart.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// jemalloc instead of the system allocator: it keeps its bookkeeping outside the blocks it
/// hands out, so the parts of each connection's 8 KiB buffers that are never written stay out
/// of memory. Measured with 10,000 idle long-polls: glibc's malloc 141 MiB RSS
/// (benches/journal/2026-11-23-daemon-vs-nchan.md), jemalloc 92.8 MiB (benches/README.md).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
