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
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    if let Err(e) = config.validate() {
        eprintln!("lms-longpolld: {e}");
        return ExitCode::from(2);
    }
    let (soft, hard) = daemon::raise_nofile_limit();
    tracing::info!(soft, hard, "open-file limit");

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all()
        .thread_name("lmsrt-worker")
        .max_blocking_threads(config.store_readers + config.store_writers + 8);
    if let Some(n) = config.workers {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lms-longpolld: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let store = EventStore::open(&config.db, store::Config::default())
            .map_err(|e| format!("opening the store {}: {e}", config.db.display()))?;
        let store = Arc::new(store);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("listening on {}: {e}", config.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(db = %config.db.display(), "store open");
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

/// jemalloc instead of the system allocator: it keeps its bookkeeping outside the blocks it
/// hands out, so the parts of each connection's 8 KiB buffers that are never written stay out
/// of memory. Measured with 10,000 idle long-polls (benches/README.md): glibc's malloc 141 MiB
/// RSS, jemalloc 98 MiB.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
